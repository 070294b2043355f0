#!/usr/bin/env bash
# A real Prometheus server, on loopback, scrapes a real coordinator while a
# sweep runs: jobs by state, workers connected and chunks committed must
# reach Prometheus with the right values.
#   prometheus_scrape_test.sh COORDINATOR_BIN WORKER_BIN CLI_BIN
set -euo pipefail
coordinator_bin=$1 worker_bin=$2 cli_bin=$3
command -v prometheus >/dev/null || { echo "FAIL: prometheus not installed (scripts/bootstrap.sh installs it)"; exit 1; }

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
grpc_port=$(free_port) metrics_port=$(free_port) prom_port=$(free_port)

"$coordinator_bin" --listen "127.0.0.1:$grpc_port" --metrics "127.0.0.1:$metrics_port" \
  --db "$tmp/store.db" --heartbeat-interval-ms 200 >"$tmp/coordinator.log" 2>&1 &
pids+=($!)
cat >"$tmp/prometheus.yml" <<YAML
global: {scrape_interval: 1s}
scrape_configs:
  - job_name: layerflow
    static_configs: [{targets: ["127.0.0.1:$metrics_port"]}]
YAML
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" >"$tmp/prometheus.log" 2>&1 &
pids+=($!)

# query EXPR -> the scalar value of the first sample, or "none"
query() {
  curl -sf --get "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$1" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "none")' ||
    echo none
}
# expect EXPR VALUE: waits up to 60 s for Prometheus to report VALUE.
expect() {
  local got=none
  for _ in $(seq 1 120); do
    got=$(query "$1")
    [ "$got" = "$2" ] && { echo "ok: $1 = $2"; return 0; }
    sleep 0.5
  done
  echo "FAIL: $1 = $got, expected $2"
  echo "--- coordinator log"; tail -20 "$tmp/coordinator.log"
  echo "--- prometheus log"; tail -20 "$tmp/prometheus.log"
  exit 1
}

expect 'up{job="layerflow"}' 1
cat >"$tmp/sweep.yaml" <<YAML
name: scrape-test
models: [pythia-tiny]
seeds: [0, 1]
datasets: [{name: kvpr, num_classes: 2}]
context_lengths: [512]
num_prompts: 2
prompts_per_chunk: 1
YAML
"$cli_bin" --coordinator "127.0.0.1:$grpc_port" submit "$tmp/sweep.yaml"
expect 'layerflow_jobs{state="queued"}' 2
expect 'layerflow_workers_connected' 0
# The pool gauges, read at each scrape: the sweep's owner (auth off).
expect 'layerflow_user_jobs{state="queued",user="anonymous"}' 2

"$worker_bin" --coordinator "127.0.0.1:$grpc_port" --device cpu --idle-poll-ms 100 \
  >"$tmp/worker.log" 2>&1 &
pids+=($!)
expect 'layerflow_workers_connected' 1
expect 'layerflow_workers_quarantined' 0
expect 'layerflow_jobs{state="succeeded"}' 2
expect 'layerflow_jobs{state="queued"}' 0
expect 'layerflow_chunks_committed_total' 4
# Two jobs: two first leases, two successful ends, two CompleteJob calls.
expect 'sum(layerflow_queue_wait_seconds_count)' 2
expect 'layerflow_job_duration_seconds_count{kind="extract",outcome="succeeded"}' 2
expect 'sum(layerflow_rpc_duration_seconds_count{service="WorkerProtocol",method="CompleteJob",code="OK"})' 2
expect 'layerflow_user_jobs{state="queued",user="anonymous"}' 0
expect 'layerflow_workers_busy' 0

# Every panel of the Grafana dashboard (deploy/grafana/dashboards) asks the
# same Prometheus for something it has: a query naming a metric nobody
# exports, or a label nobody sets, comes back empty and the panel would show
# "No data" (waits, like expect, for the rates' windows to fill).
dashboards="$(cd "$(dirname "$0")/../.." && pwd)/deploy/grafana/dashboards"
python3 - "$dashboards" "$prom_port" <<'PYEOF'
import glob, json, sys, time, urllib.parse, urllib.request
folder, port = sys.argv[1], sys.argv[2]
exprs = [(p.get("title"), t["expr"]) for path in sorted(glob.glob(folder + "/*.json"))
         for p in json.load(open(path)).get("panels", []) for t in p.get("targets", []) if t.get("expr")]
assert exprs, "no dashboard queries found in " + folder
failed = 0
for title, expr in exprs:
    result = []
    for _ in range(60):
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        result = json.load(urllib.request.urlopen(url))["data"]["result"]
        if result:
            break
        time.sleep(0.5)
    print(("ok" if result else "FAIL") + f": dashboard panel '{title}': {expr} ({len(result)} series)")
    failed += not result
sys.exit(1 if failed else 0)
PYEOF
echo "1 passed, 0 failed"
