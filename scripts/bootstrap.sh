#!/usr/bin/env bash
# One entry point for a fresh machine: installs what is missing, builds, and
# then runs the main job or the whole test suite.
#
#   scripts/bootstrap.sh demo   # deps + build + a real sweep on the embedded default
#   scripts/bootstrap.sh test   # deps + build + every test (what .ci/run calls)
#   scripts/bootstrap.sh build  # deps + build only
#   scripts/bootstrap.sh deps   # deps only
#
# Debian packages come from apt; LibTorch, transformers and tokenizers from
# the PyTorch wheel, and the Python client (client/python, with grpcio and
# pandas), in a virtual environment kept OUTSIDE the clone
# ($LAYERFLOW_CACHE, default ~/.cache/layerflow) so repeated CI runs reuse it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${LAYERFLOW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/layerflow}"
VENV="$CACHE/venv"
BUILD="${LAYERFLOW_BUILD_DIR:-$ROOT/build}"
# Pinned to the versions on the GPU machines so one LibTorch API serves the
# CPU build here and the CUDA build there (DESIGN.md).
PY_PINS=(torch==2.11.0 transformers==5.17.0 tokenizers==0.23.3 safetensors==0.8.0 numpy)
APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config python3-venv
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev prometheus-cpp-dev libgtest-dev libgmock-dev libyaml-cpp-dev
  libcli11-dev nlohmann-json3-dev libsqlite3-dev libpq-dev curl prometheus
  libicu-dev libssl-dev libcairo2-dev libcivetweb-dev fonts-dejavu-core
)
# Only for the tests (and `deps`), so that the images stay small: the results
# page's browser test (tests/integration/results_page_e2e_test.sh), the
# deployment checks (scripts/check_deploy.sh), with their Python validator,
# and clang with libFuzzer for the fuzz targets (tests/fuzz, built apart from
# the main g++ build by their ctest fuzz_build).
TEST_APT_PACKAGES=(chromium shellcheck docker-compose clang libclang-rt-dev)
PY_TEST_PACKAGES=(kubernetes-validate==1.37.0)

# The store tests run the conformance suite against a real PostgreSQL server
# that they start on loopback (tests/server/postgres_harness.h): its binaries
# (initdb, postgres) come from the Debian postgresql package, which puts them
# in /usr/lib/postgresql/<major>/bin, unless this machine already has them.
have_postgres_server() {
  local dir
  for dir in /usr/lib/postgresql/*/bin /usr/local/bin; do
    [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ] && return 0
  done
  return 1
}

log() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install_debian_packages() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

install_python_env() {
  local stamp="$VENV/.layerflow-pins"
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "${PY_PINS[*]}" ]; then
    return
  fi
  log "creating $VENV with ${PY_PINS[*]} (first run only; several GB)"
  mkdir -p "$CACHE"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "${PY_PINS[@]}"
  echo "${PY_PINS[*]}" > "$stamp"
}

# The Python client (client/python; docs/python.md) in the same venv, its
# gRPC stubs generated from proto/ by pip's build. Reinstalled only when its
# sources or the protos change (the stamp is their checksum).
install_python_client() {
  local stamp="$VENV/.layerflow-python-client" sum
  sum="$(cd "$ROOT" && find client/python proto \
           \( -name build -o -name '*.egg-info' -o -name __pycache__ \) -prune -o \
           -type f \( -name '*.py' -o -name '*.toml' -o -name '*.proto' \) \
           ! -name '*_pb2*.py' -print | LC_ALL=C sort | xargs sha256sum | sha256sum)"
  if [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ] &&
     "$VENV/bin/python" -c 'import layerflow' 2>/dev/null; then
    return
  fi
  log "installing the Python client (pip install ./client/python)"
  "$VENV/bin/python" -m pip install -q "$ROOT/client/python"
  echo "$sum" > "$stamp"
}

install_python_test_packages() {
  local stamp="$VENV/.layerflow-test-packages"
  [ "$(cat "$stamp" 2>/dev/null)" = "${PY_TEST_PACKAGES[*]}" ] && return
  log "installing ${PY_TEST_PACKAGES[*]} for the tests"
  "$VENV/bin/python" -m pip install -q "${PY_TEST_PACKAGES[@]}"
  echo "${PY_TEST_PACKAGES[*]}" > "$stamp"
}

build() {
  local torch_prefix
  torch_prefix="$("$VENV/bin/python" -c 'import torch;print(torch.utils.cmake_prefix_path)')"
  if [ ! -f "$BUILD/build.ninja" ]; then
    log "configuring $BUILD"
    cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_PREFIX_PATH="$torch_prefix" -DLAYERFLOW_PYTHON="$VENV/bin/python" >&2
  fi
  log "building ($(nproc) jobs)"
  cmake --build "$BUILD" -j"$(nproc)" >&2
}

mode="${1:-demo}"
shift || true
case "$mode" in
  test|deps)
    APT_PACKAGES+=("${TEST_APT_PACKAGES[@]}")
    have_postgres_server || APT_PACKAGES+=(postgresql)
    ;;
esac
install_debian_packages
install_python_env
install_python_client
case "$mode" in test|deps) install_python_test_packages ;; esac
[ "$mode" = deps ] && exit 0
build
case "$mode" in
  build) ;;
  demo)
    log "running the default sweep (embedded coordinator + worker + SQLite)"
    exec "$BUILD/client/layerflow" run "$@" ;;
  test)
    log "running the test suite"
    cd "$BUILD"
    exec ctest --output-on-failure --timeout 1500 -j"$(nproc)" "$@" ;;
  *) echo "usage: $0 demo|test|build|deps" >&2; exit 2 ;;
esac
