#!/usr/bin/env bash
# Run on a GPU machine through the device tool (see bench/RESULTS.md):
#   bash bench/gpu_analysis_run.sh   (with .deps carried)
# 1. Metric overhead on pythia-1.4b bf16, 8 x 2048 tokens (Analysis issue:
#    all metrics <= +15% of the forward), with the transformers peer.
# 2. Spectra cost on a 1.4B-size model of each architecture, 1 x 2048 tokens.
# 3. Probing 2,000 examples x 33 points x d = 2560, 150 epochs x 3 seeds
#    (Probing issue: under 60 s).
source "$(dirname "$0")/gpu_prelude.sh"
B=build-gpu/bench
echo "== 1. metric overhead, pythia-1.4b bf16 8 x 2048"
$B/bench_metrics_overhead --model pythia-1.4b --dtype bf16 --prompts 8 --tokens 2048 --reps 5
echo "== peer (transformers), same shape"
python3 bench/peer_hf_forward.py --hidden 2048 --layers 24 --heads 16 --prompts 8 --tokens 2048 --reps 5
echo "== 2. spectra, 1 x 2048, bf16"
for m in pythia-1.4b gpt-neo-1.3b mamba-1.4b mamba2-1.3b; do
  $B/bench_metrics_overhead --model "$m" --dtype bf16 --prompts 1 --tokens 2048 --reps 3 --spectra 1
done
echo "== 3. probing 2000 x 33 x 2560, 150 epochs x 3 seeds"
$B/bench_probe --examples 2000 --points 33 --dim 2560 --epochs 150 --seeds 3 --device cuda
