#!/usr/bin/env bash
# The SSM GPU benchmark (issue 11), on a GPU machine through the device tool
# (with .deps carried):
#   LF_COMMIT=$(git rev-parse --short HEAD) bash bench/ssm_gpu.sh
# 1. The fused SSM kernels against the ATen path and float64
#    (tests/worker/ssm_kernels_gpu_test.cc).
# 2. bench_ssm_gpu: pythia-1.4b, mamba-1.4b, mamba2-1.3b at 8 x 2048 bf16,
#    random init: forward, + adjacent_cos/intertoken_cos/cka_unbiased, + all
#    8 per-layer metrics, tokens/s, MFU, peak memory; mamba-2.8b and
#    mamba2-2.7b forward. LF_SSM_ATEN=1 also times the ATen path.
# 3. The transformers peer of each (bench/peer_hf_ssm.py), same GPU.
# Writes $OUT/ssm_gpu.json (copy it to bench/results/ssm_gpu.json).
export LAYERFLOW_SSM_KERNELS=1  # off by default until verified on a GPU (ssm_ops.cc)
export LF_TARGETS="${LF_TARGETS:-bench_ssm_gpu worker_ssm_kernels_gpu_test}"
source "$(dirname "$0")/gpu_prelude.sh"
echo "== 1. SSM kernels vs the ATen path and float64"
build-gpu/tests/worker/worker_ssm_kernels_gpu_test 2>&1 | tail -30
echo "== 2. bench_ssm_gpu"
build-gpu/bench/bench_ssm_gpu --models "${LF_MODELS:-pythia-1.4b,mamba-1.4b,mamba2-1.3b}" \
  --forward-only-models "${LF_FORWARD_ONLY:-mamba-2.8b,mamba2-2.7b}" \
  --aten "${LF_SSM_ATEN:-0}" --reps "${LF_REPS:-5}" --json "$OUT/layerflow.json"
echo "== 3. the transformers peer"
: > "$OUT/peer.jsonl"
if [ "${LF_PEER:-1}" = 1 ]; then
  python3 bench/peer_hf_ssm.py --arch gpt_neox --name pythia-1.4b --layers 24 --heads 16 --reps 3 >> "$OUT/peer.jsonl"
  python3 bench/peer_hf_ssm.py --arch mamba --name mamba-1.4b --layers 48 --reps 1 >> "$OUT/peer.jsonl"
  python3 bench/peer_hf_ssm.py --arch mamba2 --name mamba2-1.3b --layers 48 --reps 1 >> "$OUT/peer.jsonl"
  python3 bench/peer_hf_ssm.py --arch mamba2 --name mamba2-1.3b --layers 48 --prompts 2 --reps 1 >> "$OUT/peer.jsonl"
  cat "$OUT/peer.jsonl"
fi
python3 - "$OUT" <<'PY'
import datetime, json, os, subprocess, sys
out = sys.argv[1]
report = json.load(open(f"{out}/layerflow.json"))
peers = [json.loads(l) for l in open(f"{out}/peer.jsonl") if l.strip()]
gpu = open(f"{out}/gpus.txt").read().strip()
result = {"benchmark": "ssm_gpu", "command": "LF_COMMIT=... bash bench/ssm_gpu.sh",
          "gpu": gpu, "date": datetime.date.today().isoformat(),
          "commit": os.environ.get("LF_COMMIT", "unknown"), "layerflow": report, "peer": peers}
for m in report["models"]:
    for p in peers:
        if p.get("model") == m["model"] and p.get("prompts") == report["prompts"] and "forward_ms" in p:
            m["peer_forward_ms"] = p["forward_ms"]
            m["peer_three_metrics_ms"] = p.get("three_metrics_ms")
            if "forward_ms" in m:
                m["speedup_vs_peer_forward"] = p["forward_ms"] / m["forward_ms"]
json.dump(result, open(f"{out}/ssm_gpu.json", "w"), indent=2)
print(json.dumps({m["model"]: {k: m.get(k) for k in ("forward_ms", "three_metrics_overhead",
      "all_8_metrics_overhead", "speedup_vs_peer_forward")} for m in report["models"]}, indent=1))
PY
