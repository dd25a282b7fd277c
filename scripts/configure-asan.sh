#!/usr/bin/env bash
# Configures BUILD_DIR (once) as the one clang build with ASan + UBSan that
# both scripts/fuzz.sh (the libFuzzer targets) and
# scripts/test.sh --sanitize=address,undefined (parley and the
# unit tests) build into, so CI compiles the instrumented objects once.
# PARLEY_FUZZ=ON adds -fsanitize=fuzzer-no-link (coverage hooks) to every
# object; in binaries linked without libFuzzer the ASan runtime answers those
# hooks, so the server and the unit tests run as in a plain ASan build.
# -O1 -g1: what sanitizers want (line numbers in reports, frames kept), and
# much cheaper to compile than -O2 -g on a 2-core CI machine.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${1:?usage: scripts/configure-asan.sh BUILD_DIR}
CXX_FUZZ=${CXX_FUZZ:-clang++-14}
if ! command -v "$CXX_FUZZ" >/dev/null || ! dpkg-query -W -f='${Status}' libfuzzer-14-dev 2>/dev/null | grep -q "ok installed"; then
  ./scripts/install-deps.sh --fuzz
fi
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  CXX=$CXX_FUZZ cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DPARLEY_FUZZ=ON >/dev/null
fi
