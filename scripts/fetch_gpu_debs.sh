#!/usr/bin/env bash
# Downloads the Debian packages a GPU machine lacks (it has PyTorch, CUDA and
# NCCL but no package registry) into .deps/debs, to be carried there and
# unpacked by scripts/build_gpu_machine.sh. About 21 MB.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$ROOT/.deps/debs"
cd "$ROOT/.deps/debs"
apt-get download libgrpc++-dev libgrpc++1.51 libgrpc29 libgrpc-dev libprotobuf-dev \
  libprotobuf32 libprotoc32 protobuf-compiler protobuf-compiler-grpc libabsl-dev \
  libabsl20220623 libre2-9 libre2-dev libc-ares2 libc-ares-dev prometheus-cpp-dev \
  libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libprometheus-cpp-push1.0 \
  libcivetweb1 libcivetweb-dev civetweb libupb-dev libyaml-cpp-dev libyaml-cpp0.7 \
  libcli11-dev nlohmann-json3-dev libsqlite3-dev libsqlite3-0 libgtest-dev libgmock-dev \
  libicu-dev libicu72 libssl-dev libssl3 libpq-dev libpq5 \
  libldap-2.5-0 libsasl2-2 libsasl2-modules-db  # libpq's own, absent there too
ls "$ROOT/.deps/debs"
