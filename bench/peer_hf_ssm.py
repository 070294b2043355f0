"""The peer of bench_ssm_gpu: what a notebook does with Hugging Face
transformers for the state-space models (and Pythia), on the same GPU.

Random-init MambaModel / Mamba2Model / GPTNeoXModel of a preset size, eager,
forward with output_hidden_states=True (every layer kept, as notebooks do),
then adjacent_cos, intertoken_cos and cka_unbiased (adjacent layers, per
prompt, float64) in torch. Timed as bench_ssm_gpu (median of --reps after
--warmups, each run ending on a device-to-host copy). Prints one JSON line.
Without mamba_ssm / causal_conv1d installed (the GPU machines have neither)
transformers runs its torch path: that is the peer measured here.

    python bench/peer_hf_ssm.py --arch mamba --hidden 2048 --layers 48
"""
import argparse
import json
import statistics
import time

import torch


def unbiased_cka(x, y):
    n = x.shape[0]
    k, l = x @ x.T, y @ y.T
    k.fill_diagonal_(0)
    l.fill_diagonal_(0)

    def hsic(a, b):
        return ((a * b).sum() + a.sum() * b.sum() / ((n - 1) * (n - 2))
                - 2.0 / (n - 2) * (a.sum(0) * b.sum(0)).sum()) / (n * (n - 3))
    return hsic(k, l) / torch.sqrt(hsic(k, k) * hsic(l, l))


def metrics(hidden_states, cka):
    out = []
    hs = [h.double() for h in hidden_states]
    for i, h in enumerate(hs):
        u = torch.nn.functional.normalize(h, dim=-1)
        n = h.shape[1]
        s = u.sum(dim=1).pow(2).sum(-1)
        out.append(((s - n) / (n * (n - 1))).mean())
        if i + 1 < len(hs):
            out.append(torch.nn.functional.cosine_similarity(h, hs[i + 1], dim=-1).mean())
            if cka:
                out.append(torch.stack([unbiased_cka(h[b], hs[i + 1][b])
                                        for b in range(h.shape[0])]).mean())
    return torch.stack(out)


def median_ms(reps, warmups, fn):
    for _ in range(warmups):
        fn()
    times = []
    for _ in range(reps):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def build(a):
    import transformers as tf
    if a.arch == "mamba":
        config = tf.MambaConfig(vocab_size=50280, hidden_size=a.hidden, num_hidden_layers=a.layers,
                                state_size=16, expand=2, conv_kernel=4)
        return tf.MambaModel(config)
    if a.arch == "mamba2":
        config = tf.Mamba2Config(vocab_size=50280, hidden_size=a.hidden, num_hidden_layers=a.layers,
                                 state_size=128, expand=2, head_dim=64,
                                 num_heads=2 * a.hidden // 64, n_groups=1, chunk_size=256)
        return tf.Mamba2Model(config)
    config = tf.GPTNeoXConfig(vocab_size=50304, hidden_size=a.hidden, num_hidden_layers=a.layers,
                              num_attention_heads=a.heads, intermediate_size=4 * a.hidden,
                              rotary_pct=0.25, max_position_embeddings=max(2048, a.tokens),
                              use_parallel_residual=True, attn_implementation="eager")
    return tf.GPTNeoXModel(config)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="mamba", choices=["mamba", "mamba2", "gpt_neox"])
    p.add_argument("--name", default="")
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--layers", type=int, default=48)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmups", type=int, default=1)
    p.add_argument("--dtype", default="bf16")
    a = p.parse_args()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.dtype]
    import transformers
    out = {"peer": f"transformers {transformers.__version__} eager, torch {torch.__version__}",
           "model": a.name or a.arch, "prompts": a.prompts, "tokens": a.tokens, "dtype": a.dtype}
    try:
        torch.manual_seed(0)
        model = build(a).to(device="cuda", dtype=dtype).eval()
        ids = torch.randint(0, 256, (a.prompts, a.tokens), device="cuda")
        torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode():
            out["forward_ms"] = median_ms(a.reps, a.warmups, lambda: model(
                ids, output_hidden_states=True).last_hidden_state.sum().item())
            out["forward_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            out["three_metrics_ms"] = median_ms(a.reps, a.warmups, lambda: metrics(
                model(ids, output_hidden_states=True).hidden_states, True).cpu())
        out["tokens_per_s"] = a.prompts * a.tokens / (out["forward_ms"] / 1e3)
    except torch.cuda.OutOfMemoryError as e:
        out["error"] = "out of memory: " + str(e).split("\n")[0]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
