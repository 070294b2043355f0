#!/usr/bin/env bash
# Builds layerflow on a GPU machine that has PyTorch (CUDA), the CUDA toolkit
# and NCCL but no package registry (DESIGN.md, build rules): the Debian
# packages fetched by scripts/fetch_gpu_debs.sh are unpacked into a prefix and
# the build uses the LibTorch inside the machine's PyTorch wheel.
#   scripts/build_gpu_machine.sh [BUILD_DIR [TARGET...]]   (no target: everything)
# Then: source "$BUILD_DIR/env.sh" before running the binaries.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:-$ROOT/build-gpu}"
shift || true
TARGETS=("$@")
PREFIX="${LAYERFLOW_DEPS_PREFIX:-/opt/deps}"
PYTHON="${LAYERFLOW_PYTHON:-python3}"
mkdir -p "$PREFIX" "$BUILD"
for deb in "$ROOT"/.deps/debs/*.deb; do dpkg -x "$deb" "$PREFIX"; done
LIB="$PREFIX/usr/lib/x86_64-linux-gnu"
cat > "$BUILD/env.sh" <<ENV
export PATH="$PREFIX/usr/bin:\$PATH"
export LD_LIBRARY_PATH="$LIB:\${LD_LIBRARY_PATH:-}"
# Some imported targets name bare libraries (-lre2): let the linker find them.
export LIBRARY_PATH="$LIB:\${LIBRARY_PATH:-}"
export PKG_CONFIG_PATH="$LIB/pkgconfig:$PREFIX/usr/share/pkgconfig"
export PKG_CONFIG_SYSROOT_DIR=/
ENV
# shellcheck disable=SC1091
source "$BUILD/env.sh"
TORCH_PREFIX="$("$PYTHON" -c 'import torch;print(torch.utils.cmake_prefix_path)')"
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$PREFIX/usr;$LIB/cmake;$PREFIX/usr/share/cmake;$TORCH_PREFIX" \
  -DProtobuf_PROTOC_EXECUTABLE="$PREFIX/usr/bin/protoc" \
  -DLAYERFLOW_PYTHON="$(command -v "$PYTHON")" -DTORCH_CUDA_ARCH_LIST=9.0
if [ ${#TARGETS[@]} -gt 0 ]; then
  cmake --build "$BUILD" -j"$(nproc)" --target "${TARGETS[@]}"
else
  cmake --build "$BUILD" -j"$(nproc)"
fi
