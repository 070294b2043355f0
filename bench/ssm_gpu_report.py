"""Merges bench_ssm_gpu's JSON and the transformers peer's lines into
$OUT/ssm_gpu.json (figures, command, GPU, date, commit) and prints the
headline figures: bench/gpu.sh ssm runs it as `python3 bench/ssm_gpu_report.py $OUT`."""
import datetime, json, os, subprocess, sys
out = sys.argv[1]
report = json.load(open(f"{out}/layerflow.json"))
peers = [json.loads(l) for l in open(f"{out}/peer.jsonl") if l.strip()]
gpu = open(f"{out}/gpus.txt").read().strip()
result = {"benchmark": "ssm_gpu", "command": "LF_COMMIT=... bash bench/gpu.sh ssm",
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
