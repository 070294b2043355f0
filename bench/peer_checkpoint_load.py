"""The peers of bench_checkpoint_load, on the checkpoints it wrote: safetensors'
load_file straight onto cuda:0, and transformers' from_pretrained onto the GPU
(device_map="cuda" where accelerate is installed, else loaded then .to("cuda")).
One JSON line per (model, loader): median milliseconds and GB/s.

  python3 bench/peer_checkpoint_load.py --dir /tmp/lf_checkpoint_load \
      --models pythia-2.8b,mamba-2.8b --reps 3
"""
import argparse
import json
import os
import statistics
import time

import torch


def timed(reps, run):
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = run()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
        del out
        torch.cuda.empty_cache()
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    from safetensors.torch import load_file
    import transformers

    for name in args.models.split(","):
        folder = os.path.join(args.dir, name)
        path = os.path.join(folder, "model.safetensors")
        gb = os.path.getsize(path) / 1e9
        ms = timed(args.reps, lambda: load_file(path, device="cuda:0"))
        print(json.dumps({"model": name, "peer": "safetensors.load_file(device='cuda:0')",
                          "ms": ms, "gb_s": gb / (ms / 1e3), "file_gb": gb}), flush=True)

        def from_pretrained():
            try:
                return transformers.AutoModelForCausalLM.from_pretrained(
                    folder, dtype=torch.bfloat16, device_map="cuda")
            except (ImportError, ValueError):
                return transformers.AutoModelForCausalLM.from_pretrained(
                    folder, dtype=torch.bfloat16).to("cuda")
        try:
            ms = timed(args.reps, from_pretrained)
            print(json.dumps({"model": name, "peer": "transformers from_pretrained (GPU)",
                              "ms": ms, "gb_s": gb / (ms / 1e3), "file_gb": gb,
                              "transformers": transformers.__version__}), flush=True)
        except Exception as e:  # a peer that cannot load is reported, not fatal
            print(json.dumps({"model": name, "peer": "transformers from_pretrained (GPU)",
                              "error": str(e)[:300]}), flush=True)


if __name__ == "__main__":
    main()
