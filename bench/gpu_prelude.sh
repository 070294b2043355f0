# shellcheck shell=bash
# Sourced by the bench/gpu_*.sh scripts, run on a GPU machine through the
# device tool (see bench/RESULTS.md) with .deps carried: OUT for logs, the
# environment every run there needs (offline Hugging Face; NVLink multicast
# off, which the device notes require), the GPUs' names, the CUDA build in
# build-gpu (incremental when it is already there) and its environment, and
# `timed LABEL CMD...`, which prints CMD's wall time.
set -uo pipefail
OUT="${OUT:-/tmp/layerflow-out}"; mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi -L | tee "$OUT/gpus.txt"
# Always (incremental on a warm machine): the binaries must be this tree's.
start=$(date +%s)
# LF_TARGETS (optional): only these targets and what they need.
# shellcheck disable=SC2086
scripts/build_gpu_machine.sh build-gpu ${LF_TARGETS:-} > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - start )) s"
source build-gpu/env.sh
exec 3>&1  # timings go to the original stdout even when a command's is redirected
timed() { local label=$1; shift; local t0; t0=$(date +%s.%N); "$@"; local rc=$?
  echo >&3 "$label: $(python3 -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.2f}')" "$t0" "$(date +%s.%N)") s (rc=$rc)"; }
