#!/usr/bin/env bash
# Run on a GPU machine through the device tool (see bench/RESULTS.md):
#   bash bench/gpu_run.sh   (with .deps carried; $OUT collects logs)
# Builds with the machine's PyTorch (CUDA) and carried Debian packages, runs a
# sweep on CUDA and the same sweep on the CPU and compares them, then times a
# pythia-1.4b bf16 sweep at 2048 tokens.
source "$(dirname "$0")/gpu_prelude.sh"
LF=build-gpu/client/layerflow
grep -E "CUDA \+ NCCL" "$OUT/build.log"
echo "== CUDA vs CPU parity"
timed "cuda run" $LF run bench/sweeps/parity_small.yaml --format csv > "$OUT/cuda.csv" 2> "$OUT/cuda.log"; grep -m1 "registered" "$OUT/cuda.log"
CUDA_VISIBLE_DEVICES= timed "cpu run" $LF run bench/sweeps/parity_small.yaml --format csv > "$OUT/cpu.csv" 2> "$OUT/cpu.log"; grep -m1 "registered" "$OUT/cpu.log"
python3 bench/compare_csv.py "$OUT/cpu.csv" "$OUT/cuda.csv" 1e-4
echo "== pythia-1.4b bf16, 8 prompts x 2048 tokens"
timed "pythia-1.4b run" $LF run bench/sweeps/gpu_1p4b.yaml > "$OUT/1p4b.txt" 2> "$OUT/1p4b.log"; grep -E "registered|leased|done|error" "$OUT/1p4b.log" | head; head -30 "$OUT/1p4b.txt"
