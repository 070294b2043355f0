#!/usr/bin/env python3
"""Writes the parity fixture of the C++ GPT-NeoX checkpoint loader.

Builds tiny random GPTNeoXForCausalLM models with the reference
`transformers` library, saves each with save_pretrained (safetensors), runs a
fixed batch of input_ids, and writes into --out:

  manifest.json               {"configs": {name: {"layers": L, "dtype": ...}}}
  <name>/checkpoint/          what save_pretrained wrote (config.json, weights;
                              parallel_rot025_bias also a tokenizer.json)
  <name>/reference.safetensors
      input_ids   I64 [batch, seq]
      hf.hidden.K F32 [batch, seq, hidden]  HF's hidden_states[K], K = 0..L
      logits      F32 [batch, seq, vocab]

HF GPT-NeoX's hidden_states are [embedding, blocks 1..L-1, final_norm(block
L)]; the C++ test maps them onto our layout (layer.0 .. layer.L, final).

Every parameter is drawn at random, layer norms and biases included (HF's
own init leaves norms at 1 and biases at 0, which would hide a swapped
weight/bias). The fp16 / bf16 checkpoints are the fp32 model cast down; their
reference runs in float32 on the cast-down values upcast, which is what the
C++ loader gives when it loads them as fp32. Deterministic (fixed seeds).
"""

import argparse
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

VOCAB = 300

# name: (layers, parallel residual, rotary_pct, attention_bias, extra)
CONFIGS = {
    "parallel_rot025_bias": dict(layers=2, parallel=True, rotary=0.25, bias=True),
    "serial_rot100_nobias": dict(layers=3, parallel=False, rotary=1.0, bias=False),
    "parallel_rot100_nobias_sharded": dict(layers=3, parallel=True, rotary=1.0,
                                           bias=False, shard="20KB"),
    "serial_rot025_bias_lm_head": dict(layers=2, parallel=False, rotary=0.25,
                                       bias=True, lm_head=True),
    "parallel_rot025_bias_fp16": dict(layers=2, parallel=True, rotary=0.25,
                                      bias=True, dtype="float16"),
    "serial_rot100_nobias_bf16": dict(layers=3, parallel=False, rotary=1.0,
                                      bias=False, dtype="bfloat16"),
}


def build(name, spec, seed):
    config = GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=spec["layers"],
        num_attention_heads=4, intermediate_size=256,
        rotary_pct=spec["rotary"], use_parallel_residual=spec["parallel"],
        attention_bias=spec["bias"], max_position_embeddings=128,
        tie_word_embeddings=False)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(config).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname and pname.endswith(".weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif pname.endswith(".bias"):
                p.copy_(0.05 * torch.randn_like(p))
            else:
                p.copy_(0.08 * torch.randn_like(p))
    return model


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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(1234)
    input_ids = torch.randint(0, VOCAB, (2, 11), dtype=torch.long)
    manifest = {"configs": {}}
    for i, (name, spec) in enumerate(CONFIGS.items()):
        model = build(name, spec, seed=100 + i)
        dtype = spec.get("dtype", "float32")
        ckpt = os.path.join(args.out, name, "checkpoint")
        saved = model.to(getattr(torch, dtype))
        saved.save_pretrained(ckpt, safe_serialization=True,
                              max_shard_size=spec.get("shard", "5GB"))
        if spec.get("lm_head"):
            # Re-saved checkpoints may call the head lm_head.weight.
            path = os.path.join(ckpt, "model.safetensors")
            tensors = load_file(path)
            tensors["lm_head.weight"] = tensors.pop("embed_out.weight")
            save_file(tensors, path, metadata={"format": "pt"})
        if name == "parallel_rot025_bias":
            write_tokenizer(os.path.join(ckpt, "tokenizer.json"))
        if spec.get("shard"):
            assert os.path.exists(os.path.join(ckpt, "model.safetensors.index.json")), \
                f"{name}: expected a sharded checkpoint"
        # The reference runs in float32 on the saved (possibly cast-down)
        # values: a fresh fp32 model with its parameters rounded. Not
        # saved.float(): .to(dtype) also rounds the rotary inv_freq buffer,
        # which a checkpoint does not carry (a bf16 one would then differ).
        model = build(name, spec, seed=100 + i)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(getattr(torch, dtype)).float())
        with torch.no_grad():
            out = model(input_ids=input_ids, output_hidden_states=True)
        hidden = out.hidden_states
        assert len(hidden) == spec["layers"] + 1, len(hidden)
        ref = {"input_ids": input_ids.contiguous(),
               "logits": out.logits.float().contiguous()}
        for k, h in enumerate(hidden):
            ref[f"hf.hidden.{k}"] = h.float().contiguous()
        save_file(ref, os.path.join(args.out, name, "reference.safetensors"))
        manifest["configs"][name] = {"layers": spec["layers"], "dtype": dtype,
                                     "sharded": bool(spec.get("shard")),
                                     "lm_head": bool(spec.get("lm_head"))}
        print(f"{name}: {spec['layers']} layers, {dtype}, files: "
              f"{sorted(os.listdir(ckpt))}")
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
