#!/usr/bin/env python3
"""Checks TRAIN exports against transformers.

For each <dir>/<arch>/ that trainer_test's ExportForTransformers wrote
(config.json, model.safetensors and probe.safetensors with input_ids and
our logits), loads the checkpoint with AutoModelForCausalLM.from_pretrained
and compares its logits on input_ids with ours. Fails (exit 1) when max
|diff| > 1e-4 x max |reference|, when loading reports missing or unexpected
weights, or when an architecture's folder is missing.
"""

import argparse
import os
import sys

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--arch", action="append", required=True)
    args = p.parse_args()
    ok = True
    for arch in args.arch:
        folder = os.path.join(args.dir, arch)
        model, info = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch.float32, output_loading_info=True)
        model.eval()
        if model.config.model_type != arch:
            print(f"{arch}: model_type {model.config.model_type}")
            ok = False
        for key in ("missing_keys", "unexpected_keys", "mismatched_keys"):
            if info.get(key):
                print(f"{arch}: {key} {info[key]}")
                ok = False
        with safe_open(os.path.join(folder, "probe.safetensors"), "pt") as f:
            ids = f.get_tensor("input_ids")
            ours = f.get_tensor("logits")
        with torch.no_grad():
            ref = model(input_ids=ids).logits.float()
        err = (ours - ref).abs().max().item() / ref.abs().max().item()
        print(f"{arch}: logits {tuple(ref.shape)}, max rel diff {err:.2e}")
        if ours.shape != ref.shape or not err <= 1e-4:
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
