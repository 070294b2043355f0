#!/usr/bin/env bash
# The GPU conformance suite (issue 11, point 2), one command on a GPU machine
# through the device tool, build included (see bench/RESULTS.md), .deps carried:
#   LAYERFLOW_COMMIT=<git sha> bash bench/gpu_conformance.sh [extra flags]
# Builds the tree into build-gpu (bench/gpu_prelude.sh), runs the GPU tests
# of the kernels (tests/worker/ssm_kernels_gpu_test.cc,
# half_state_ops_gpu_test.cc) with LAYERFLOW_SSM_KERNELS=1, then
# build-gpu/bench/bench_gpu_conformance: pythia-1.4b, gpt-neo-1.3b, mamba-1.4b
# and mamba2-1.3b (random init, seed 0) x every analysis (11 layer metrics,
# spectrum, spectrum_dsf, the probe's last-token features) x fp32 / bf16 /
# fp16 x batch 1 and 8, 8 MQAR prompts x 2048 tokens, and Mamba-2 also at
# 2000 tokens (not a multiple of its chunk size 256); each job through the
# worker's job runner against the same job in float64 on the GPU, with the
# tolerances of the table at the top of bench/gpu_conformance.cc. Extra
# flags go to the binary (e.g. --models mamba2-1.3b --dtypes bf16).
# Writes $OUT/gpu_conformance.json (every figure, the command, GPU, date,
# commit) and $OUT/gpu_conformance.log; exits with the binary's status
# (0 all pass, 1 a FAIL, 2 a setup error). Record the run in
# bench/RESULTS.md and copy the JSON to bench/results/gpu_conformance.json.
# The logic can be checked on a CPU machine without this script:
#   build/bench/bench_gpu_conformance --device cpu --small 1
# The kernels written without a GPU (worker/kernels/kernel_switch.h) are
# what this suite must check: on unless the caller says otherwise.
export LAYERFLOW_SSM_KERNELS="${LAYERFLOW_SSM_KERNELS:-1}"
export LF_TARGETS="${LF_TARGETS:-bench_gpu_conformance worker_ssm_kernels_gpu_test worker_half_state_ops_gpu_test}"
source "$(dirname "$0")/gpu_prelude.sh"
echo "== GPU kernel tests (SSM kernels; fused analysis passes)"
build-gpu/tests/worker/worker_ssm_kernels_gpu_test 2>&1 | tail -25 | tee "$OUT/ssm_kernels_gpu_test.log"
build-gpu/tests/worker/worker_half_state_ops_gpu_test 2>&1 | tail -25 | tee "$OUT/half_state_ops_gpu_test.log"
commit="${LAYERFLOW_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
echo "== GPU conformance (commit $commit, $gpu)"
t0=$(date +%s)
build-gpu/bench/bench_gpu_conformance --device cuda --json "$OUT/gpu_conformance.json" \
  --commit "$commit" --gpu-name "$gpu" --date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$@" \
  2>&1 | tee "$OUT/gpu_conformance.log"
rc=${PIPESTATUS[0]}
echo "conformance: $(( $(date +%s) - t0 )) s (rc=$rc)"
exit "$rc"
