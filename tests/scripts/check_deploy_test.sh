#!/usr/bin/env bash
# scripts/check_deploy.sh itself: passes the tree as it is, and fails, naming
# the check, on each kind of broken file planted in a copy of the tree.
#   check_deploy_test.sh CHECK_SCRIPT ROOT PYTHON
set -uo pipefail
CHECK="$1" ROOT="$2" PY="$3"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
failures=0
fresh() {  # a copy of what the check reads
  rm -rf "$tmp/tree"; mkdir -p "$tmp/tree/.ci" "$tmp/tree/bench"
  cp -r "$ROOT/scripts" "$ROOT/deploy" "$tmp/tree/"
  cp "$ROOT"/bench/*.sh "$tmp/tree/bench/"
  cp "$ROOT/.ci/run" "$tmp/tree/.ci/"
  cp "$ROOT/docker-compose.yml" "$tmp/tree/"
}
expect() {  # expect pass|LABEL: runs the check on the copy
  local want=$1 out rc
  out="$(bash "$CHECK" "$tmp/tree" "$PY" 2>&1)"; rc=$?
  if [ "$want" = pass ]; then
    if [ $rc -ne 0 ]; then echo "want pass, got rc $rc:"; echo "$out"; failures=$((failures + 1)); fi
  elif [ $rc -eq 0 ] || ! grep -q "^FAIL: $want" <<<"$out"; then
    echo "want 'FAIL: $want', got rc $rc:"; echo "$out"; failures=$((failures + 1))
  fi
}
fresh; expect pass
fresh; printf '#!/bin/bash\nrm -rf $1/*\n' > "$tmp/tree/scripts/planted.sh"; expect shellcheck
fresh; sed -i 's/^  worker:$/  worker:\n    bogus_key: 1/' "$tmp/tree/docker-compose.yml"; expect docker-compose.yml
fresh; sed -i 's/^  selector: {matchLabels: {app: layerflow-worker}}$/&\n  replicaz: 2/' \
  "$tmp/tree/deploy/k8s/layerflow.yaml"; expect Kubernetes
fresh; sed -i 's/scrape_interval:/scrape_intervall:/' "$tmp/tree/deploy/prometheus/prometheus.yml"; expect Prometheus
fresh; "$PY" - "$tmp/tree/deploy/grafana/dashboards/layerflow.json" <<'PYEOF'
import json, sys
board = json.load(open(sys.argv[1]))
board["panels"].append({"type": "timeseries", "title": "planted", "targets": []})
json.dump(board, open(sys.argv[1], "w"))
PYEOF
expect Grafana
fresh; sed -i 's|./deploy/prometheus/prometheus.yml:|./deploy/prometheus/missing.yml:|' "$tmp/tree/docker-compose.yml"; expect Grafana
[ $failures -eq 0 ] && echo "check_deploy: every planted fault caught"
exit $((failures > 0))
