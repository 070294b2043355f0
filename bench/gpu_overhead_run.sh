#!/usr/bin/env bash
# Run on a GPU machine through the device tool (see bench/RESULTS.md):
#   bash bench/gpu_overhead_run.sh   (with .deps carried)
# Metric overhead on pythia-1.4b bf16, 8 x 2048 tokens, next to the Hugging Face
# peer of the same size in the same run; then pythia-2.8b, one 2048-token forward.
source "$(dirname "$0")/gpu_prelude.sh"
B=build-gpu/bench/bench_metrics_overhead
echo "== layerflow"
$B --model pythia-1.4b --dtype bf16 --prompts 8 --tokens 2048 --reps 5
echo "== peer (transformers)"
python3 bench/peer_hf_forward.py --hidden 2048 --layers 24 --heads 16 --prompts 8 --tokens 2048 --reps 5
echo "== pythia-2.8b bf16, one 2048-token forward"
$B --model pythia-2.8b --dtype bf16 --prompts 1 --tokens 2048 --reps 5
