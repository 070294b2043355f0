#!/usr/bin/env bash
# scripts/check_layers.sh on small trees made here: a clean one passes, each
# kind of crossing fails naming the file and line, and what is not an include
# (a comment, a string) does not count.
#
#   tests/scripts/check_layers_test.sh SCRIPT
set -euo pipefail

SCRIPT="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
failures=0

fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

# A tree with the allowed includes of every layer.
make_clean_tree() {
  local root="$1"
  mkdir -p "$root"/{server/spec,client,common,catalog,worker/model}
  cat >"$root/server/spec/sweep_spec.cc" <<'SRC'
#include "server/spec/sweep_spec.h"
#include "catalog/model_config.h"
// Once built a worker data set (worker/data/datasets.h); no more.
const char* kNote = "#include \"worker/data/datasets.h\"";
SRC
  cat >"$root/client/output.cc" <<'SRC'
#include "client/output.h"
#include "catalog/model_config.h"
#include <string>
SRC
  cat >"$root/catalog/model_config.cc" <<'SRC'
#include "catalog/model_config.h"
#include "absl/strings/str_cat.h"
SRC
  cat >"$root/worker/model/gpt_neox.cc" <<'SRC'
#include <ATen/ATen.h>
#include "worker/model/model_config.h"
#include "catalog/model_config.h"
SRC
}

# expect_fail NAME FILE LINE CONTENT: FILE (relative) gets CONTENT appended at
# line LINE of a fresh clean tree; the script must exit 1 naming FILE:LINE.
expect_fail() {
  local name="$1" file="$2" line="$3" content="$4" root="$TMP/$1"
  make_clean_tree "$root"
  mkdir -p "$(dirname "$root/$file")"
  touch "$root/$file"
  while [ "$(wc -l <"$root/$file")" -lt $((line - 1)) ]; do echo "" >>"$root/$file"; done
  echo "$content" >>"$root/$file"
  local out rc=0
  out="$(bash "$SCRIPT" "$root" 2>&1)" || rc=$?
  if [ "$rc" -ne 1 ]; then
    fail "$name: exit $rc, want 1; output: $out"
  elif ! grep -qF "$file:$line:" <<<"$out"; then
    fail "$name: output does not name $file:$line: $out"
  elif ! grep -qF "1 include(s) cross a layer wall" <<<"$out"; then
    fail "$name: output does not count one crossing: $out"
  else
    echo "ok: $name"
  fi
}

# The clean tree passes (worker/ may include what it likes).
make_clean_tree "$TMP/clean"
if out="$(bash "$SCRIPT" "$TMP/clean" 2>&1)"; then
  echo "ok: clean tree"
else
  fail "clean tree: exit $?, output: $out"
fi

expect_fail server_includes_worker server/spec/sweep_spec.cc 5 '#include "worker/data/datasets.h"'
expect_fail client_includes_worker client/output.cc 4 '#include "worker/model/model_config.h"'
expect_fail angle_brackets_count client/new_file.h 1 '#include <worker/tokenizer/tokenizer.h>'
expect_fail spaces_after_hash server/core/core.cc 3 '  #  include "worker/runtime/job_runner.h"'
expect_fail common_includes_worker common/helper.h 2 '#include "worker/service/worker_loop.h"'
expect_fail catalog_includes_worker catalog/datasets.cc 3 '#include "worker/data/kvpr.h"'
expect_fail catalog_includes_server catalog/defaults.h 1 '#include "server/spec/sweep_spec.h"'
expect_fail catalog_includes_proto catalog/analyses.h 1 '#include "layerflow/v1/experiment.pb.h"'
expect_fail catalog_includes_torch catalog/dtypes.cc 1 '#include <ATen/ATen.h>'
expect_fail catalog_includes_grpc catalog/names.cc 1 '#include <grpcpp/grpcpp.h>'

# The repository itself passes (the script's default root).
if out="$(bash "$SCRIPT" 2>&1)"; then
  echo "ok: this repository"
else
  fail "this repository: $out"
fi

if [ "$failures" -gt 0 ]; then
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "all passed"
