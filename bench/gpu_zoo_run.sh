#!/usr/bin/env bash
# Run on a GPU machine through the device tool (see bench/RESULTS.md):
#   bash bench/gpu_zoo_run.sh   (with .deps carried)
# 1. The model-zoo fixture (GPT-Neo, Mamba, Mamba-2; safetensors and .bin,
#    HF and mamba_ssm naming) loaded straight onto the GPU vs transformers.
# 2. A mid-size shape of each architecture, fp32 and bf16, layerflow-inspect
#    on the GPU vs transformers on the same GPU (bench/gpu_zoo_parity.py).
# 3. The 2.8B-size preset of each architecture: one 2048-token bf16 forward.
source "$(dirname "$0")/gpu_prelude.sh"
echo "== 1. zoo fixture on CUDA"
python3 tests/worker/checkpoint/make_model_zoo_fixture.py --out /tmp/zoo > /dev/null
LAYERFLOW_ZOO_FIXTURE_DIR=/tmp/zoo build-gpu/tests/worker/checkpoint/worker_checkpoint_parity_test \
  --gtest_filter='ZooParityCuda.*' | grep -E "cuda|OK|FAILED|Failure|error"
echo "== 2. mid-size shapes, GPU, layerflow-inspect vs transformers"
python3 bench/gpu_zoo_parity.py --inspect build-gpu/worker/layerflow-inspect
echo "== 3. 2.8B-size presets, bf16, 1 x 2048 tokens"
for m in pythia-2.8b gpt-neo-2.7b mamba-2.8b mamba2-2.7b; do
  build-gpu/bench/bench_metrics_overhead --model "$m" --dtype bf16 --prompts 1 --tokens 2048 \
    --reps 5 --forward-only 1
done
