#!/usr/bin/env bash
# Run on a GPU machine through the device tool (see bench/RESULTS.md):
#   bash bench/gpu_run.sh   (with .deps carried; $OUT collects logs)
# Builds with the machine's PyTorch (CUDA) and carried Debian packages, runs a
# sweep on CUDA and the same sweep on the CPU and compares them, then times a
# pythia-1.4b bf16 sweep at 2048 tokens.
set -uo pipefail
OUT="${OUT:-/tmp/layerflow-out}"; mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi -L | tee "$OUT/gpus.txt"
start=$(date +%s)
scripts/build_gpu_machine.sh build-gpu > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - start )) s"
source build-gpu/env.sh
LF=build-gpu/client/layerflow
exec 3>&1  # timings go to the original stdout even when a command's is redirected
# timed LABEL CMD...: runs CMD and prints its wall time.
timed() { local label=$1; shift; local t0; t0=$(date +%s.%N); "$@"; local rc=$?
  echo >&3 "$label: $(python3 -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.2f}')" "$t0" "$(date +%s.%N)") s (rc=$rc)"; }
grep -E "CUDA \+ NCCL" "$OUT/build.log"
echo "== CUDA vs CPU parity"
timed "cuda run" $LF run bench/sweeps/parity_small.yaml --format csv > "$OUT/cuda.csv" 2> "$OUT/cuda.log"; grep -m1 "registered" "$OUT/cuda.log"
CUDA_VISIBLE_DEVICES= timed "cpu run" $LF run bench/sweeps/parity_small.yaml --format csv > "$OUT/cpu.csv" 2> "$OUT/cpu.log"; grep -m1 "registered" "$OUT/cpu.log"
python3 bench/compare_csv.py "$OUT/cpu.csv" "$OUT/cuda.csv" 1e-4
echo "== pythia-1.4b bf16, 8 prompts x 2048 tokens"
timed "pythia-1.4b run" $LF run bench/sweeps/gpu_1p4b.yaml > "$OUT/1p4b.txt" 2> "$OUT/1p4b.log"; grep -E "registered|leased|done|error" "$OUT/1p4b.log" | head; head -30 "$OUT/1p4b.txt"
