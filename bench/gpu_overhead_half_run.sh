#!/usr/bin/env bash
# Run on a GPU machine through the device tool (see bench/RESULTS.md):
#   bash bench/gpu_overhead_half_run.sh   (with .deps carried)
# The Analysis issue's overhead target (all metrics <= +15% of the forward,
# pythia-1.4b bf16, 8 x 2048 tokens) with the half-precision analysis path,
# each analysis alone, the accuracy of that path against float64 on the
# same states, and the transformers peer of the same shape; first the GPU
# tests of its fused kernels (tests/worker/half_state_ops_gpu_test.cc).
source "$(dirname "$0")/gpu_prelude.sh"
B=build-gpu/bench
echo "== fused half-state kernels against their ATen reference"
build-gpu/tests/worker/worker_half_state_ops_gpu_test 2>&1 | tail -25
echo "== metric overhead, pythia-1.4b bf16 8 x 2048"
$B/bench_metrics_overhead --model pythia-1.4b --dtype bf16 --prompts 8 --tokens 2048 --reps 5 --each 1 --check-half 1
echo "== metric overhead, pythia-1.4b fp16 8 x 2048"
$B/bench_metrics_overhead --model pythia-1.4b --dtype fp16 --prompts 8 --tokens 2048 --reps 5 --check-half 1
echo "== peer (transformers), same shape"
python3 bench/peer_hf_forward.py --hidden 2048 --layers 24 --heads 16 --prompts 8 --tokens 2048 --reps 5
