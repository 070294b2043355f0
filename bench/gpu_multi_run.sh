#!/usr/bin/env bash
# Run on a 2-GPU machine through the device tool (see bench/RESULTS.md):
#   bash bench/gpu_multi_run.sh   (with .deps carried)
# The same sweep on one GPU and on two (each chunk's prompts split across the
# GPUs, statistics summed with NCCL) must agree; then a timing on both.
source "$(dirname "$0")/gpu_prelude.sh"
LF=build-gpu/client/layerflow
echo "== 1 GPU vs 2 GPUs (NCCL), fp32"
CUDA_VISIBLE_DEVICES=0 timed "1 gpu" $LF run bench/sweeps/parity_small.yaml --format csv > "$OUT/gpu1.csv" 2> "$OUT/gpu1.log"; grep -m1 registered "$OUT/gpu1.log"
timed "2 gpus" $LF run bench/sweeps/parity_small.yaml --format csv > "$OUT/gpu2.csv" 2> "$OUT/gpu2.log"; grep -m1 registered "$OUT/gpu2.log"; grep -iE "error|fail" "$OUT/gpu2.log" | head -5
python3 bench/compare_csv.py "$OUT/gpu1.csv" "$OUT/gpu2.csv" 1e-6
echo "== pythia-1.4b bf16, 8 prompts x 2048 tokens"
CUDA_VISIBLE_DEVICES=0 timed "1 gpu" $LF run bench/sweeps/gpu_1p4b.yaml --format csv > "$OUT/1p4b_gpu1.csv" 2> "$OUT/1p4b_gpu1.log"
timed "2 gpus" $LF run bench/sweeps/gpu_1p4b.yaml --format csv > "$OUT/1p4b_gpu2.csv" 2> "$OUT/1p4b_gpu2.log"
grep -iE "error|fail" "$OUT/1p4b_gpu2.log" | head -5
python3 bench/compare_csv.py "$OUT/1p4b_gpu1.csv" "$OUT/1p4b_gpu2.csv" 1e-2
