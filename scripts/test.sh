#!/usr/bin/env bash
# Runs every test: installs dependencies, builds, then CTest runs the
# GoogleTest unit tests and the end-to-end suites (the real server on
# loopback, driven by Node's ws and Python's websockets). Arguments go to ctest
# (e.g. -L unit, -R e2e.dm).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh --test
# A build dir configured by ./run.sh before the test tools were installed
# has no tests yet: configure again so CMake finds GoogleTest, node, python.
if [ -f "${BUILD_DIR:-build}/CMakeCache.txt" ]; then
  cmake -S . -B "${BUILD_DIR:-build}" >/dev/null
fi
./scripts/build.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure -j "$(nproc)" "$@"
