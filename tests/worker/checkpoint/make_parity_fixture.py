#!/usr/bin/env python3
"""Writes the transformers-parity fixture of the C++ checkpoint loaders and
models, every architecture at once (GPT-NeoX, GPT-Neo, Mamba, Mamba-2).

Builds tiny random GPTNeoXForCausalLM, GPTNeoForCausalLM, MambaForCausalLM
and Mamba2ForCausalLM models with the reference `transformers` library,
saves each as a checkpoint folder, runs a fixed batch of input_ids, and
writes into --out:

  manifest.json   {"configs": {name: {"architecture": "gpt_neox"|"gpt_neo"|
                                                      "mamba"|"mamba2",
                                      "layers": L,
                                      "dtype": "float32"|"bfloat16"|"float16",
                                      "format": "safetensors"|"bin",
                                      "naming": "hf"|"mamba_ssm",
                                      "sharded": bool,
                                      "renamed_head": bool,
                                      "tokenizer": bool,
                                      "has_lm_head": bool}}}
  <name>/checkpoint/          the checkpoint folder (see below)
  <name>/reference.safetensors
      input_ids  I64 [batch, seq]
      point.K    F32 [batch, seq, hidden]  K = 0..L+1, in OUR layout:
                   point.0     residual stream after the embedding
                               (GPT-Neo: wte + wpe; others: the embedding)
                   point.k     output of block k-1, k = 1..L
                   point.L+1   final-norm output
      logits     F32 [batch, seq, vocab]

The points are captured with forward hooks on the blocks and asserted equal
(torch.equal) to HF's output_hidden_states where the two overlap, so
checking a point checks HF's hidden state too. HF's layouts differ: GPT-NeoX's
and GPT-Neo's hidden_states are [embedding, blocks 1..L-1,
final_norm(block L)], while Mamba / Mamba-2 (transformers 5.x) give
[block 1 .. block L-1, block L, final_norm(block L)] with no embedding entry;
neither has both the embedding and block L, which the hooks add.

GPT-NeoX options: parallel residual on/off, rotary_pct 0.25 and 1.0,
attention bias on/off, a sharded checkpoint (max_shard_size, with
model.safetensors.index.json), one whose head is re-saved as lm_head.weight
(transformers 5 re-saves call it so), and one with a tokenizer.json (a tiny
byte-level BPE) for layerflow-inspect's tokenizer path.

Checkpoint formats:
  format "safetensors", naming "hf": what save_pretrained wrote
      (config.json, generation_config.json, model.safetensors).
  format "bin", naming "hf": the same config.json, and pytorch_model.bin =
      torch.save of exactly the tensors save_pretrained put into
      model.safetensors (tied weights left out, as save_pretrained does).
      transformers 5 ignores safe_serialization=False (it always writes
      safetensors), hence the manual conversion. The script reloads these
      with from_pretrained and checks the logits.
  format "bin", naming "mamba_ssm": the layout of the original state-spaces
      checkpoints (e.g. state-spaces/mamba-130m, mamba2-130m):
        config.json  {"d_model", "n_layer", "vocab_size", "ssm_cfg",
                      "rms_norm", "residual_in_fp32", "fused_add_norm",
                      "pad_vocab_size_multiple", ...}; no "model_type".
                      ssm_cfg is empty for Mamba-1 (mamba_ssm defaults:
                      d_state 16, d_conv 4, expand 2, dt_rank
                      ceil(d_model/16), conv_bias True, bias False) and
                      {"layer": "Mamba2", "d_state", "headdim", "ngroups",
                      "chunk_size"} for Mamba-2 (defaults expand 2, d_conv 4,
                      conv_bias True, bias False; nheads = expand*d_model /
                      headdim).
        pytorch_model.bin  torch.save of a flat state dict whose names are
                      HF's except "backbone.embeddings.weight" is called
                      "backbone.embedding.weight"; "lm_head.weight" is
                      present (a copy of the embedding, the head being tied).
                      backbone.layers.i.{norm.weight, mixer.*},
                      backbone.norm_f.weight as in HF.
      The script checks that renaming the embedding back and loading the
      state dict strictly into the HF model gives the reference logits.
Every "hf" checkpoint is reloaded with from_pretrained (as float32) and must
give the reference logits; Mamba-2's must not depend on the chunk size.

Tensor layouts worth knowing (HF = mamba_ssm):
  Mamba:   in_proj [2*I, H] rows = [x, z]; conv1d [I, 1, K]; x_proj
           [R + 2N, I] rows = [dt, B, C]; dt_proj [I, R] + bias [I];
           A_log [I, N] (A = -exp(A_log)); D [I].
  Mamba-2: in_proj [2*I + 2*G*N + nH, H] rows = [z, x, B, C, dt];
           conv1d over [x, B, C] ([I + 2*G*N, 1, K]); dt_bias, A_log, D
           [nH]; mixer.norm.weight [I] is the gated RMSNorm
           (norm(y * silu(z))). HF's gated norm normalises over all of I
           even when n_groups > 1 (mamba_ssm normalises per group of
           I / n_groups), so mamba2_groups follows HF's semantics.

Every parameter is drawn at random, norms and biases included (HF's own
init leaves norms at 1 and biases at 0, which would hide a swapped
weight/bias: norms 1 + 0.2*randn, biases 0.05*randn, other weights
0.08*randn), except the
state-space parameters, which keep a stable recurrence: A_log =
log(1..N) + 0.1*randn, D = 1 + 0.2*randn, dt bias = inverse softplus of
values log-uniform in [0.001, 0.1], conv1d weights 0.3*randn. The fp16 /
bf16 checkpoints are the fp32 model cast down; their reference runs in
float32 on the cast-down values upcast, which is what the C++ loader gives
when it loads them as fp32 (a fresh fp32 model with its parameters
rounded, not saved.float(): .to(dtype) also rounds GPT-NeoX's rotary
inv_freq buffer, which a checkpoint does not carry). Models run in eval
mode, float32, no_grad, eager attention, pure-torch Mamba paths.
Deterministic (fixed seeds).
"""

import argparse
import json
import math
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import (GPTNeoConfig, GPTNeoForCausalLM, GPTNeoXConfig,
                          GPTNeoXForCausalLM, Mamba2Config, Mamba2ForCausalLM,
                          MambaConfig, MambaForCausalLM)

VOCAB = 300
HIDDEN = 64



def neox(layers, parallel, rotary, bias, seed, **extra):
    """A GPT-NeoX spec: parallel residual, rotary_pct, attention bias."""
    return dict(arch="gpt_neox", layers=layers, seed=seed,
                cfg=dict(use_parallel_residual=parallel, rotary_pct=rotary,
                         attention_bias=bias), **extra)


# name: spec. "arch", "layers", per-architecture config kwargs in "cfg",
# "seed" (of the weights), optional "dtype" (default float32), "format"
# (default safetensors), "naming" (default hf; mamba_ssm also carries
# "ssm_config"), "shard" (a max_shard_size), "rename_head" (embed_out.weight
# saved as lm_head.weight), "tokenizer" (write a tokenizer.json).
CONFIGS = {
    "parallel_rot025_bias": neox(2, True, 0.25, True, seed=100, tokenizer=True),
    "serial_rot100_nobias": neox(3, False, 1.0, False, seed=101),
    "parallel_rot100_nobias_sharded": neox(3, True, 1.0, False, seed=102,
                                           shard="20KB"),
    "serial_rot025_bias_lm_head": neox(2, False, 0.25, True, seed=103,
                                       rename_head=True),
    "parallel_rot025_bias_fp16": neox(2, True, 0.25, True, seed=104,
                                      dtype="float16"),
    "serial_rot100_nobias_bf16": neox(3, False, 1.0, False, seed=105,
                                      dtype="bfloat16"),
    "gpt_neo_global_local": dict(
        arch="gpt_neo", seed=200, layers=2,
        cfg=dict(attention_types=[[["global", "local"], 1]], window_size=4,
                 tie_word_embeddings=True)),
    "gpt_neo_local_global_bin": dict(
        arch="gpt_neo", seed=201, layers=3, format="bin",
        cfg=dict(attention_types=[[["local", "global"], 1], [["local"], 1]],
                 window_size=3)),
    "mamba_hf": dict(
        arch="mamba", seed=202, layers=2,
        cfg=dict(state_size=8, expand=2, conv_kernel=4, time_step_rank="auto",
                 use_bias=False, use_conv_bias=True, residual_in_fp32=True)),
    "mamba_bias_bin": dict(
        arch="mamba", seed=203, layers=3, format="bin",
        cfg=dict(state_size=4, expand=2, conv_kernel=3, time_step_rank=5,
                 use_bias=True, use_conv_bias=True, residual_in_fp32=True)),
    # mamba_ssm defaults for an empty ssm_cfg: d_state 16, d_conv 4, expand 2,
    # dt_rank ceil(64/16) = 4, conv_bias True, bias False.
    "mamba_ssm_bin": dict(
        arch="mamba", seed=204, layers=2, format="bin", naming="mamba_ssm",
        cfg=dict(state_size=16, expand=2, conv_kernel=4, time_step_rank="auto",
                 use_bias=False, use_conv_bias=True, residual_in_fp32=True,
                 tie_word_embeddings=True),
        ssm_config={"d_model": HIDDEN, "n_layer": 2, "vocab_size": VOCAB,
                    "ssm_cfg": {}, "rms_norm": True, "residual_in_fp32": True,
                    "fused_add_norm": True, "pad_vocab_size_multiple": 1}),
    "mamba2_hf": dict(
        arch="mamba2", seed=205, layers=2,
        cfg=dict(expand=2, head_dim=16, num_heads=8, n_groups=1,
                 state_size=16, chunk_size=4, conv_kernel=4)),
    "mamba2_groups": dict(
        arch="mamba2", seed=206, layers=2,
        cfg=dict(expand=2, head_dim=16, num_heads=8, n_groups=2,
                 state_size=8, chunk_size=8, conv_kernel=4, use_bias=True)),
    "mamba2_ssm_bin": dict(
        arch="mamba2", seed=207, layers=2, format="bin", naming="mamba_ssm",
        cfg=dict(expand=2, head_dim=16, num_heads=8, n_groups=1,
                 state_size=16, chunk_size=4, conv_kernel=4,
                 use_conv_bias=True, use_bias=False,
                 tie_word_embeddings=True),
        ssm_config={"d_model": HIDDEN, "n_layer": 2, "d_intermediate": 0,
                    "vocab_size": VOCAB,
                    "ssm_cfg": {"layer": "Mamba2", "d_state": 16,
                                "headdim": 16, "ngroups": 1, "chunk_size": 4},
                    "rms_norm": True, "residual_in_fp32": True,
                    "fused_add_norm": True, "pad_vocab_size_multiple": 1,
                    "tie_embeddings": True}),
    "gpt_neo_global_local_bf16": dict(
        arch="gpt_neo", seed=208, layers=2, dtype="bfloat16",
        cfg=dict(attention_types=[[["global", "local"], 1]], window_size=4,
                 tie_word_embeddings=True)),
    "mamba_hf_fp16": dict(
        arch="mamba", seed=209, layers=2, dtype="float16",
        cfg=dict(state_size=8, expand=2, conv_kernel=4, time_step_rank="auto",
                 use_bias=False, use_conv_bias=True, residual_in_fp32=True)),
}


def make_config(spec):
    arch, cfg = spec["arch"], dict(spec["cfg"])
    if arch == "gpt_neox":
        config = GPTNeoXConfig(
            vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=spec["layers"],
            num_attention_heads=4, intermediate_size=4 * HIDDEN,
            max_position_embeddings=128, tie_word_embeddings=False, **cfg)
        config._attn_implementation = "eager"
    elif arch == "gpt_neo":
        config = GPTNeoConfig(
            vocab_size=VOCAB, hidden_size=HIDDEN, num_layers=spec["layers"],
            num_heads=4, intermediate_size=4 * HIDDEN,
            max_position_embeddings=128, bos_token_id=0, eos_token_id=0,
            **cfg)
        config._attn_implementation = "eager"
    elif arch == "mamba":
        config = MambaConfig(
            vocab_size=VOCAB, hidden_size=HIDDEN,
            num_hidden_layers=spec["layers"], use_mambapy=False,
            bos_token_id=0, eos_token_id=0, pad_token_id=0, **cfg)
    elif arch == "mamba2":
        config = Mamba2Config(
            vocab_size=VOCAB, hidden_size=HIDDEN,
            num_hidden_layers=spec["layers"], rms_norm=True,
            residual_in_fp32=True, bos_token_id=0, eos_token_id=0,
            pad_token_id=0, **cfg)
    else:
        raise ValueError(arch)
    return config


MODEL_CLASSES = {"gpt_neox": GPTNeoXForCausalLM, "gpt_neo": GPTNeoForCausalLM,
                 "mamba": MambaForCausalLM, "mamba2": Mamba2ForCausalLM}


def inv_softplus_dt(shape):
    dt = torch.exp(torch.rand(shape) * (math.log(0.1) - math.log(0.001))
                   + math.log(0.001))
    return dt + torch.log(-torch.expm1(-dt))


def build(spec):
    config = make_config(spec)
    torch.manual_seed(spec["seed"])
    model = MODEL_CLASSES[spec["arch"]](config).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            leaf = pname.rsplit(".", 1)[-1]
            if leaf == "A_log":
                n = p.shape[-1] if p.dim() == 2 else p.shape[0]
                a = torch.log(torch.arange(1, n + 1, dtype=torch.float32))
                p.copy_(a.expand_as(p) + 0.1 * torch.randn_like(p))
            elif leaf == "D":
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif leaf == "dt_bias" or pname.endswith("dt_proj.bias"):
                p.copy_(inv_softplus_dt(p.shape))
            elif pname.endswith("conv1d.weight"):
                p.copy_(0.3 * torch.randn_like(p))
            elif (("norm" in pname or ".ln_" in pname)
                  and pname.endswith(".weight")):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif leaf == "bias":
                p.copy_(0.05 * torch.randn_like(p))
            else:
                p.copy_(0.08 * torch.randn_like(p))
    return model


class Modules:
    """Where an architecture keeps what reference_points needs."""

    def __init__(self, model):
        if hasattr(model, "gpt_neox"):
            self.blocks = model.gpt_neox.layers
            self.embed = model.gpt_neox.embed_in
            self.final_norm = model.gpt_neox.final_layer_norm
        elif hasattr(model, "transformer"):  # GPT-Neo: wte + wpe
            t = model.transformer
            self.blocks = t.h
            self.embed = lambda ids: t.wte(ids) + t.wpe(torch.arange(ids.shape[1])[None])
            self.final_norm = t.ln_f
        else:  # Mamba, Mamba-2
            self.blocks = model.backbone.layers
            self.embed = model.backbone.embeddings
            self.final_norm = model.backbone.norm_f
        self.ssm = hasattr(model, "backbone")


def reference_points(model, input_ids):
    """Runs `model` (eval, float32) on input_ids [batch, seq]; returns
    (points, logits), points[k] for k = 0..L+1 in our layout. Asserts that
    HF's hidden_states equal the hooked points where the two overlap, and
    that the final norm of point L is point L+1."""
    m = Modules(model)
    layers = len(m.blocks)
    captured = {}

    def hook(i):
        def fn(_module, _inputs, output):
            captured[i] = output[0] if isinstance(output, tuple) else output
        return fn

    handles = [b.register_forward_hook(hook(i)) for i, b in enumerate(m.blocks)]
    try:
        with torch.no_grad():
            kwargs = dict(input_ids=input_ids, output_hidden_states=True)
            if m.ssm:
                kwargs["use_cache"] = False
            out = model(**kwargs)
            emb = m.embed(input_ids)
    finally:
        for h in handles:
            h.remove()
    assert sorted(captured) == list(range(layers)), sorted(captured)
    points = [emb] + [captured[i] for i in range(layers)] + [out.hidden_states[-1]]
    hidden = out.hidden_states
    assert len(hidden) == layers + 1, len(hidden)
    # Where HF's hidden_states overlap the hooked points, they must agree.
    if m.ssm:
        pairs = [(k, k + 1) for k in range(layers)]       # [blocks 1..L]
    else:
        pairs = [(k, k) for k in range(layers)]           # [emb, blocks 1..L-1]
    pairs.append((layers, layers + 1))                    # final norm
    for hk, pk in pairs:
        assert torch.equal(hidden[hk], points[pk]), (hk, pk)
    with torch.no_grad():
        assert torch.allclose(m.final_norm(points[layers]), points[layers + 1],
                              atol=1e-6)
    return [p.float().contiguous() for p in points], out.logits.float().contiguous()


def write_tokenizer(path):
    """A tiny byte-level BPE (vocab <= VOCAB) as tokenizer.json, so that
    layerflow-inspect's tokenizer.json path is exercised end to end."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB - 8, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"])
    corpus = ["layer-wise analysis of language models, layer by layer"] * 20 + \
             ["the residual stream after each block", "hidden states 12345"] * 10
    tok.train_from_iterator(corpus, trainer)
    assert tok.get_vocab_size() <= VOCAB, tok.get_vocab_size()
    tok.save(path)


def to_ssm_state_dict(model):
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    sd["backbone.embedding.weight"] = sd.pop("backbone.embeddings.weight")
    assert "lm_head.weight" in sd
    return sd


def hf_config_from_ssm(ssm):
    """The HF config the mamba_ssm config.json stands for (mamba_ssm
    defaults filled in); used to check the checkpoint loads into HF."""
    cfg = ssm.get("ssm_cfg", {})
    d_model, expand = ssm["d_model"], cfg.get("expand", 2)
    common = dict(vocab_size=ssm["vocab_size"], hidden_size=d_model,
                  num_hidden_layers=ssm["n_layer"], expand=expand,
                  conv_kernel=cfg.get("d_conv", 4),
                  use_conv_bias=cfg.get("conv_bias", True),
                  use_bias=cfg.get("bias", False),
                  residual_in_fp32=ssm["residual_in_fp32"],
                  tie_word_embeddings=ssm.get("tie_embeddings", True),
                  bos_token_id=0, eos_token_id=0, pad_token_id=0)
    if cfg.get("layer", "Mamba1") == "Mamba2":
        headdim = cfg.get("headdim", 64)
        return Mamba2Config(state_size=cfg.get("d_state", 128),
                            head_dim=headdim,
                            num_heads=expand * d_model // headdim,
                            n_groups=cfg.get("ngroups", 1),
                            chunk_size=cfg.get("chunk_size", 256),
                            rms_norm=True, **common)
    return MambaConfig(state_size=cfg.get("d_state", 16),
                       time_step_rank=cfg.get("dt_rank", "auto"),
                       use_mambapy=False, **common)


def check_reload(name, spec, ckpt, input_ids, logits):
    """Reload the checkpoint as the C++ loader would see it (as float32) and
    check it reproduces the reference logits."""
    arch = spec["arch"]
    ssm = arch in ("mamba", "mamba2")
    if spec.get("naming", "hf") == "hf":
        kwargs = dict(dtype=torch.float32)
        if not ssm:
            kwargs["attn_implementation"] = "eager"
        model = MODEL_CLASSES[arch].from_pretrained(ckpt, **kwargs).eval()
    else:
        with open(os.path.join(ckpt, "config.json")) as f:
            config = hf_config_from_ssm(json.load(f))
        model = MODEL_CLASSES[arch](config).eval()
        sd = torch.load(os.path.join(ckpt, "pytorch_model.bin"),
                        weights_only=True)
        sd["backbone.embeddings.weight"] = sd.pop("backbone.embedding.weight")
        model.load_state_dict(sd, strict=True)
    for p in model.parameters():
        assert p.dtype == torch.float32, (name, p.dtype)
    with torch.no_grad():
        kwargs = dict(use_cache=False) if ssm else {}
        got = model(input_ids=input_ids, **kwargs).logits
    assert torch.allclose(got, logits, atol=1e-5, rtol=0), \
        (name, (got - logits).abs().max().item())


def check_chunking(spec, input_ids, logits):
    """Mamba-2's chunked scan must not depend on the chunk size (one chunk
    covering the whole sequence gives the same result)."""
    model = build(spec)
    for layer in model.backbone.layers:
        layer.mixer.chunk_size = 16
    with torch.no_grad():
        got = model(input_ids=input_ids, use_cache=False).logits
    assert torch.allclose(got, logits, atol=1e-4, rtol=0), \
        (got - logits).abs().max().item()


def save_checkpoint(spec, model, ckpt):
    """Writes the checkpoint folder; returns the tensor names it holds."""
    dtype = getattr(torch, spec.get("dtype", "float32"))
    if spec.get("naming", "hf") == "mamba_ssm":
        os.makedirs(ckpt)
        sd = to_ssm_state_dict(model.to(dtype))
        torch.save(sd, os.path.join(ckpt, "pytorch_model.bin"))
        with open(os.path.join(ckpt, "config.json"), "w") as f:
            json.dump(spec["ssm_config"], f, indent=1)
        return set(sd)
    model.to(dtype).save_pretrained(ckpt, max_shard_size=spec.get("shard", "5GB"))
    st_path = os.path.join(ckpt, "model.safetensors")
    if spec.get("shard"):
        assert os.path.exists(os.path.join(ckpt, "model.safetensors.index.json")), \
            f"{ckpt}: expected a sharded checkpoint"
        return {k for f in os.listdir(ckpt) if f.endswith(".safetensors")
                for k in load_file(os.path.join(ckpt, f))}
    tensors = load_file(st_path)
    if spec.get("rename_head"):
        # Re-saved checkpoints may call GPT-NeoX's head lm_head.weight.
        tensors["lm_head.weight"] = tensors.pop("embed_out.weight")
        save_file(tensors, st_path, metadata={"format": "pt"})
    if spec.get("format", "safetensors") == "bin":
        # transformers 5 always writes safetensors; convert.
        torch.save(tensors, os.path.join(ckpt, "pytorch_model.bin"))
        os.remove(st_path)
    return set(tensors)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(1234)
    input_ids = torch.randint(0, VOCAB, (2, 11), dtype=torch.long)
    manifest = {"configs": {}}
    for name, spec in CONFIGS.items():
        arch, layers = spec["arch"], spec["layers"]
        dtype = spec.get("dtype", "float32")
        ckpt = os.path.join(args.out, name, "checkpoint")
        if os.path.isdir(ckpt):
            shutil.rmtree(ckpt)
        names = save_checkpoint(spec, build(spec), ckpt)
        if spec.get("tokenizer"):
            write_tokenizer(os.path.join(ckpt, "tokenizer.json"))
        # The reference runs in float32 on the saved (possibly cast-down)
        # values: a fresh fp32 model with its parameters rounded.
        model = build(spec)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(getattr(torch, dtype)).float())
        points, logits = reference_points(model, input_ids)
        assert len(points) == layers + 2, (name, len(points))
        assert torch.isfinite(logits).all(), name
        ref = {"input_ids": input_ids.contiguous(), "logits": logits}
        for k, pt in enumerate(points):
            ref[f"point.{k}"] = pt
        save_file(ref, os.path.join(args.out, name, "reference.safetensors"))
        check_reload(name, spec, ckpt, input_ids, logits)
        if arch == "mamba2":
            check_chunking(spec, input_ids, logits)
        manifest["configs"][name] = {
            "architecture": arch, "layers": layers, "dtype": dtype,
            "format": spec.get("format", "safetensors"),
            "naming": spec.get("naming", "hf"),
            "sharded": bool(spec.get("shard")),
            "renamed_head": bool(spec.get("rename_head")),
            "tokenizer": bool(spec.get("tokenizer")),
            "has_lm_head": "lm_head.weight" in names}
        print(f"{name}: {manifest['configs'][name]}, files: {sorted(os.listdir(ckpt))}")
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
