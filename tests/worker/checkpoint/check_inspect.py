#!/usr/bin/env python3
"""Checks a layerflow-inspect output file against transformers, for any
architecture of the parity fixture (make_parity_fixture.py).

Reads --states (written by layerflow-inspect --logits on --checkpoint, an
fp32 checkpoint), loads the checkpoint with AutoModelForCausalLM (float32,
eager attention), runs the file's input_ids and compares every point of OUR
layout (embedding, each block through forward hooks, the final norm; the
fixture's reference_points) and the logits. Fails (exit 1) when max |diff| >
1e-4 x max |reference| anywhere, or when the file's layout (names, shapes,
dtypes, metadata) is not the documented one, or (with --text and a
tokenizer.json in --checkpoint) input_ids differ from the reference
`tokenizers` encoding. Also checks that the file opens with the reference
safetensors library, i.e. that our writer is valid.
"""

import argparse
import os
import sys

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from make_parity_fixture import reference_points


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--states", required=True)
    p.add_argument("--text", help="the text given to layerflow-inspect: with a "
                   "tokenizer.json in --checkpoint, input_ids must be its encoding")
    args = p.parse_args()
    model = AutoModelForCausalLM.from_pretrained(
        args.checkpoint, dtype=torch.float32, attn_implementation="eager").eval()
    with safe_open(args.states, "pt") as f:
        meta = f.metadata()
        names = set(f.keys())
        states = {k: f.get_tensor(k) for k in names}
    ids = states["input_ids"]
    assert ids.dtype == torch.int64 and ids.dim() == 1, ids
    points, logits = reference_points(model, ids.unsqueeze(0))
    L = len(points) - 2
    ok = True
    expected = {"input_ids", "final", "logits"} | {f"layer.{k}" for k in range(L + 1)}
    if names != expected:
        print(f"names: got {sorted(names)}, expected {sorted(expected)}")
        ok = False
    for key in ("model", "dtype", "layout", "tokenizer", "layers"):
        if key not in meta:
            print(f"__metadata__ lacks {key}: {meta}")
            ok = False
    tok_path = os.path.join(args.checkpoint, "tokenizer.json")
    if args.text is not None and os.path.exists(tok_path):
        from tokenizers import Tokenizer
        want = Tokenizer.from_file(tok_path).encode(args.text).ids
        print(f"input_ids: {ids.tolist()} (tokenizers: {want})")
        if ids.tolist() != want or meta.get("tokenizer") != tok_path:
            print(f"input_ids / tokenizer metadata do not match {tok_path}")
            ok = False
    pairs = [(f"layer.{k}", points[k][0]) for k in range(L + 1)]
    pairs += [("final", points[L + 1][0]), ("logits", logits[0])]
    for name, ref in pairs:
        ours = states.get(name)
        if ours is None:
            print(f"{name}: missing from {args.states}")
            ok = False
            continue
        if ours.dtype != torch.float32 or ours.shape != ref.shape:
            print(f"{name}: {ours.dtype} {tuple(ours.shape)}, expected float32 "
                  f"{tuple(ref.shape)}")
            ok = False
            continue
        err = ((ours - ref).abs().max() / ref.abs().max()).item()
        print(f"{name}: max rel err {err:.2e}")
        ok &= err <= 1e-4
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
