#!/usr/bin/env bash
# The deployment files and the project's shell scripts, checked offline with
# the tools that validate them (installed by `scripts/bootstrap.sh test`):
#   ShellCheck (warnings and errors) on scripts/, bench/, .ci/run and the
#     Slurm script;
#   docker-compose.yml against the Compose schema (`docker-compose config`);
#   deploy/k8s/*.yaml against Kubernetes' OpenAPI schemas, strictly
#     (kubernetes-validate, which carries the schemas: no network);
#   deploy/prometheus/prometheus.yml with promtool;
#   the Grafana dashboards (JSON with panels, each with a query) and
#     provisioning files (YAML);
#   every path the Dockerfiles COPY and the compose file builds or mounts
#     exists in the tree.
#   scripts/check_deploy.sh [ROOT] [PYTHON]   (exit 1 on any finding)
set -uo pipefail
ROOT="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
PY="${2:-python3}"
cd "$ROOT" || exit 2
status=0
check() {  # check LABEL CMD...: runs CMD, reports and records a failure
  local label=$1; shift
  if "$@"; then echo "ok: $label"; else echo "FAIL: $label"; status=1; fi
}
shopt -s nullglob
scripts=(scripts/*.sh bench/*.sh .ci/run deploy/slurm/*.sbatch)
check "shellcheck (${#scripts[@]} scripts)" shellcheck -S warning "${scripts[@]}"
check "docker-compose.yml (Compose schema)" docker-compose -f docker-compose.yml config -q
manifests=(deploy/k8s/*.yaml)
check "Kubernetes manifests (${#manifests[@]}, strict)" \
  "$PY" -m kubernetes_validate --strict --quiet "${manifests[@]}"
check "Prometheus configuration" promtool check config --syntax-only deploy/prometheus/prometheus.yml
check "Grafana dashboards and provisioning, paths the images and compose use" "$PY" - <<'PYEOF'
import glob, json, os, re, sys
import yaml  # PyYAML: a dependency of docker-compose and kubernetes-validate
ok = True
def bad(msg):
    global ok
    print(f"  {msg}"); ok = False
for path in glob.glob("deploy/grafana/dashboards/*.json"):
    board = json.load(open(path))
    panels = board.get("panels") or bad(f"{path}: no panels") or []
    for p in panels:
        if p.get("type") != "row" and not any(t.get("expr") for t in p.get("targets", [])):
            bad(f"{path}: panel '{p.get('title')}' has no query")
for path in glob.glob("deploy/grafana/provisioning/*.yml"):
    if not isinstance(yaml.safe_load(open(path)), dict):
        bad(f"{path}: not a YAML mapping")
for path in glob.glob("deploy/docker/Dockerfile*"):
    for line in open(path):
        m = re.match(r"\s*COPY\s+(?:--\S+\s+)*(.+)\s+\S+\s*$", line)
        for src in (m.group(1).split() if m else []):
            if not os.path.exists(src):
                bad(f"{path}: COPY source {src} does not exist")
compose = yaml.safe_load(open("docker-compose.yml"))
for name, svc in compose.get("services", {}).items():
    build = svc.get("build")
    if isinstance(build, dict) and not os.path.exists(os.path.join(build.get("context", "."), build.get("dockerfile", "Dockerfile"))):
        bad(f"docker-compose.yml: service {name} builds from a missing Dockerfile")
    for vol in svc.get("volumes", []):
        src = vol.split(":")[0]
        if src.startswith("./") and not os.path.exists(src):
            bad(f"docker-compose.yml: service {name} mounts missing {src}")
sys.exit(0 if ok else 1)
PYEOF
exit "$status"
