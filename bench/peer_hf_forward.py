"""The peer: what a notebook does with Hugging Face transformers.

Random-init GPT-NeoX of a Pythia preset size, forward with
output_hidden_states=True (all layers kept, as notebooks do), then
adjacent_cos and intertoken_cos per layer in float64 with torch. Timed the
same way as bench_metrics_overhead (median of --reps after 2 warm-ups, each
run ending on a device-to-host copy), so the two print comparable numbers.

    python bench/peer_hf_forward.py --hidden 2048 --layers 24 --heads 16
"""
import argparse

import torch
from transformers import GPTNeoXConfig, GPTNeoXModel

import peer_hf_ssm  # the same metrics and timer as the SSM peer


def metrics(hidden_states):
    return peer_hf_ssm.metrics(hidden_states, cka=False)


def median_ms(reps, fn):
    return peer_hf_ssm.median_ms(reps, 2, fn)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--layers", type=int, default=24)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--dtype", default="bf16")
    a = p.parse_args()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.dtype]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = GPTNeoXConfig(
        vocab_size=50304, hidden_size=a.hidden, num_hidden_layers=a.layers,
        num_attention_heads=a.heads, intermediate_size=4 * a.hidden, rotary_pct=0.25,
        max_position_embeddings=max(2048, a.tokens), use_parallel_residual=True,
        attn_implementation="sdpa")
    torch.manual_seed(0)
    model = GPTNeoXModel(config).to(device=device, dtype=dtype).eval()
    ids = torch.randint(0, 256, (a.prompts, a.tokens), device=device)

    with torch.inference_mode():
        fwd = median_ms(a.reps, lambda: model(ids, output_hidden_states=True)
                        .last_hidden_state.sum().item())
        both = median_ms(a.reps, lambda: metrics(
            model(ids, output_hidden_states=True).hidden_states).cpu())
    print(f"peer transformers {torch.__version__}: hidden {a.hidden}, {a.layers} layers, "
          f"{a.dtype}, {a.prompts} prompts x {a.tokens} tokens, device {device}, median of {a.reps}")
    print(f"forward (hidden states kept)  {fwd:9.1f} ms")
    print(f"forward + default metrics     {both:9.1f} ms  (+{100 * (both / fwd - 1):.1f}%)")


if __name__ == "__main__":
    main()
