#!/usr/bin/env bash
# Run on a GPU machine through the device tool (see bench/RESULTS.md):
#   bash bench/gpu_checkpoint_parity.sh   (with .deps carried)
# Tiny GPT-NeoX checkpoints made by transformers (fp32, sharded, bf16) loaded
# straight onto the GPU and compared with transformers (GptNeoXParityCuda).
source "$(dirname "$0")/gpu_prelude.sh"
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python3 tests/worker/checkpoint/make_gpt_neox_fixture.py --out /tmp/ckpt_fixture
LAYERFLOW_CKPT_FIXTURE_DIR=/tmp/ckpt_fixture build-gpu/tests/worker/checkpoint/worker_checkpoint_parity_test
