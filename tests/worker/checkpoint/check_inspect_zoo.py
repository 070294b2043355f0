#!/usr/bin/env python3
"""Checks a layerflow-inspect output file of a GPT-Neo, Mamba or Mamba-2
checkpoint against transformers.

Loads --checkpoint with AutoModelForCausalLM (float32, eager attention), runs
the file's input_ids, captures the residual stream at every point of OUR
layout (embedding, each block through forward hooks, the final norm) and the
logits, and fails (exit 1) when any differs by more than 1e-4 x the
reference's max |value|, or when the file lacks a point.
"""

import argparse
import sys

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--states", required=True)
    args = p.parse_args()
    model = AutoModelForCausalLM.from_pretrained(
        args.checkpoint, dtype=torch.float32, attn_implementation="eager").eval()
    blocks = model.transformer.h if hasattr(model, "transformer") else model.backbone.layers
    points = {}
    for i, block in enumerate(blocks):
        block.register_forward_hook(
            lambda _m, _i, out, i=i: points.__setitem__(i + 1, out[0] if isinstance(out, tuple) else out))
    with safe_open(args.states, "pt") as f:
        states = {k: f.get_tensor(k) for k in f.keys()}
    ids = states["input_ids"].unsqueeze(0)
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    L = len(blocks)
    points[0] = (model.backbone.embeddings(ids) if hasattr(model, "backbone")
                 else out.hidden_states[0])
    points[L + 1] = out.hidden_states[-1]
    ok = True
    pairs = [(f"layer.{k}", points[k][0]) for k in range(L + 1)]
    pairs += [("final", points[L + 1][0]), ("logits", out.logits[0])]
    for name, ref in pairs:
        if name not in states:
            print(f"{name}: missing from {args.states}")
            ok = False
            continue
        err = ((states[name] - ref).abs().max() / ref.abs().max()).item()
        print(f"{name}: max rel err {err:.2e}")
        ok &= err <= 1e-4
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
