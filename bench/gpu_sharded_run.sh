#!/usr/bin/env bash
# Run on a 2-GPU machine through the device tool (see bench/RESULTS.md):
#   bash bench/gpu_sharded_run.sh [SWEEP]   (kind nvidia-h200-x2, .deps carried)
# Every analysis (spectra, all-pair CKA, heat maps included) of all four
# architectures on one GPU and on two (NCCL): the rows must agree to 1e-6.
# SWEEP: default bench/sweeps/sharded_all.yaml; bench/sweeps/
# sharded_fixed_batches.yaml runs the same with fixed batches (batch_prompts).
source "$(dirname "$0")/gpu_prelude.sh"
LF=build-gpu/client/layerflow
SWEEP="${1:-bench/sweeps/sharded_all.yaml}"
CUDA_VISIBLE_DEVICES=0 $LF run "$SWEEP" --format csv > "$OUT/one.csv" 2> "$OUT/one.log"
grep -m1 registered "$OUT/one.log"; tail -1 "$OUT/one.log"
$LF run "$SWEEP" --format csv > "$OUT/two.csv" 2> "$OUT/two.log"
grep -m1 registered "$OUT/two.log"; tail -1 "$OUT/two.log"
wc -l "$OUT/one.csv" "$OUT/two.csv"
python3 bench/compare_csv.py "$OUT/one.csv" "$OUT/two.csv" 1e-6
