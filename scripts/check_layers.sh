#!/usr/bin/env bash
# The include walls between the layers (docs/architecture.md), checked on the
# source tree: exit 1 listing every #include that crosses one, 0 otherwise.
#
#   scripts/check_layers.sh [ROOT]   # ROOT: the repository (default: this one)
#
# - server/, client/, common/ and catalog/ never include worker/ headers
#   (what they share with the worker lives in catalog/);
# - catalog/ includes nothing of server/, client/ or proto (layerflow/v1), and
#   no LibTorch (ATen/, c10/, torch/) or gRPC (grpc/, grpcpp/) header: it is
#   plain C++ below everything.
# - report/ (tables, CSV / JSON, figures: what the CLI and the coordinator's
#   results page both show) includes nothing of server/ or client/ and no
#   gRPC, so that either side may use it;
# - report/plot/ (the drawing library) includes no protos, gRPC, server/ or
#   worker/: plain C++ series in, files out, testable without a server.
# Both spellings count: #include "worker/..." and #include <worker/...>.
# ctest runs it (tests/scripts/CMakeLists.txt), so .ci/run catches a new one.
set -euo pipefail

ROOT="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
cd "$ROOT"

violations=0
# check FOLDER... -- PATTERN WHY: every include line under the folders whose
# path matches PATTERN (an extended regex on the included path).
check() {
  local folders=() pattern why
  while [ "$1" != "--" ]; do folders+=("$1"); shift; done
  shift
  pattern="$1" why="$2"
  local existing=()
  for f in "${folders[@]}"; do [ -d "$f" ] && existing+=("$f"); done
  [ ${#existing[@]} -eq 0 ] && return 0
  local hits
  hits="$(grep -rnE --include='*.h' --include='*.cc' --include='*.cpp' --include='*.cu' \
            --include='*.cuh' --include='*.hpp' \
            "^[[:space:]]*#[[:space:]]*include[[:space:]]*[\"<](${pattern})" \
            "${existing[@]}" || true)"
  if [ -n "$hits" ]; then
    printf '%s\n' "$hits" | sed "s|\$|    <- ${why}|"
    violations=$((violations + $(printf '%s\n' "$hits" | wc -l)))
  fi
}

check server client common catalog report -- 'worker/' \
  'server/, client/, common/, catalog/ and report/ never include worker/ (share through catalog/)'
check catalog -- 'server/|client/|layerflow/v1/' \
  'catalog/ is below server/, client/ and the protos'
check catalog -- 'ATen/|c10/|torch/|grpc/|grpcpp/|grpc\+\+/' \
  'catalog/ is plain C++: no LibTorch, no gRPC'
check report -- 'server/|client/|grpc/|grpcpp/|grpc\+\+/' \
  'report/ sits below server/ and client/, which both use it (no gRPC either)'
check report/plot -- 'layerflow/v1/|grpc/|grpcpp/|grpc\+\+/|server/|worker/' \
  'report/plot/ is plain C++: series in, files out (no protos, gRPC, server or worker)'

if [ "$violations" -gt 0 ]; then
  echo "check_layers: ${violations} include(s) cross a layer wall (docs/architecture.md)" >&2
  exit 1
fi
echo "check_layers: no include crosses a layer wall"
