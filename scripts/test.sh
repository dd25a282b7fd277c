#!/usr/bin/env bash
# Runs every test: installs dependencies, builds, then CTest runs the
# GoogleTest unit tests and the end-to-end suites (the real server on
# loopback, driven by Node's ws and Python's websockets). Arguments go to ctest
# (e.g. -L unit, -R e2e.dm).
#
# With a sanitizer (docs/security.md), the same in its own build dir:
#   --sanitize=address,undefined  ASan + UBSan (clang, -O1 -g1) into
#                                 build-fuzz, the build dir scripts/fuzz.sh
#                                 uses (scripts/configure-asan.sh): parley
#                                 and the unit tests; every unit and e2e
#                                 test of the server against that build (or
#                                 what the ctest arguments select).
#   --sanitize=thread             TSan (gcc, -O1 -g1) into build-tsan: parley
#                                 and the unit tests; the unit tests and a
#                                 multi-threaded e2e stress (send_order and
#                                 group_fanout with two event loops).
# Any sanitizer report fails the run, also one from a server that a test
# stopped without looking at its exit status: reports are written to
# BUILD_DIR/sanitizer-reports/ and the run fails if any is there.
set -euo pipefail
cd "$(dirname "$0")/.."

SANITIZE=""
ctest_args=()
for arg in "$@"; do
  case "$arg" in
    --sanitize=*) SANITIZE=${arg#--sanitize=} ;;
    *) ctest_args+=("$arg") ;;
  esac
done

case "$SANITIZE" in
  "") ;;
  address,undefined|undefined,address|address)
    SANITIZE=address,undefined
    export BUILD_DIR=${BUILD_DIR:-build-fuzz}
    # Every unit and e2e test but those of the clients: bench.smoke* (needs
    # parley-bench) and the parley-cli suites (clang 14 cannot compile
    # parley-cli's precompiled Beast header with the fuzzer's coverage
    # hooks: "Cannot represent a difference across sections").
    [ ${#ctest_args[@]} -gt 0 ] || ctest_args=(-LE '^bench$' -E '^e2e\.(pg\.)?node\.cli$')
    build_targets=(parley unit_tests) ;;
  thread)
    export BUILD_DIR=${BUILD_DIR:-build-tsan}
    # A stress with two event loops and the worker pools: the unit tests plus
    # the two suites whose traffic crosses threads most.
    [ ${#ctest_args[@]} -gt 0 ] || ctest_args=(-R '^unit\.|^e2e\.node\.(send_order|group_fanout)$')
    export PARLEY_THREADS=2
    build_targets=(parley unit_tests) ;;
  *) echo "test.sh: --sanitize takes address,undefined or thread, not $SANITIZE" >&2; exit 64 ;;
esac

./scripts/install-deps.sh --test
BUILD_DIR=${BUILD_DIR:-build}
if [ "$SANITIZE" = address,undefined ]; then
  ./scripts/configure-asan.sh "$BUILD_DIR"
elif [ -n "$SANITIZE" ] && [ ! -f "$BUILD_DIR/build.ninja" ]; then
  # -O1 -g1: what sanitizers want (line numbers in reports, frames kept), and
  # much cheaper to compile than -O2 -g on a 2-core CI machine.
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
    -DPARLEY_SANITIZE="$SANITIZE" >/dev/null
fi
# A build dir configured by ./run.sh before the test tools were installed
# has no tests yet: configure again so CMake finds GoogleTest, node, python.
if [ -f "$BUILD_DIR/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD_DIR" >/dev/null
fi
if [ -n "$SANITIZE" ]; then
  # Only what the tests run: not parley-bench or the fuzz targets.
  BUILD_DIR=$BUILD_DIR ./scripts/build.sh --target "${build_targets[@]}"
else
  BUILD_DIR=$BUILD_DIR ./scripts/build.sh
fi

reports=""
if [ -n "$SANITIZE" ]; then
  reports=$PWD/$BUILD_DIR/sanitizer-reports
  rm -rf "$reports"
  mkdir -p "$reports"
  # Suppressions: each entry in scripts/sanitizers/ says why it is a false positive.
  export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1:log_path=$reports/asan-ubsan"
  export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$reports/asan-ubsan:suppressions=$PWD/scripts/sanitizers/ubsan.supp"
  export LSAN_OPTIONS="suppressions=$PWD/scripts/sanitizers/lsan.supp"
  export TSAN_OPTIONS="halt_on_error=0:second_deadlock_stack=1:log_path=$reports/tsan:suppressions=$PWD/scripts/sanitizers/tsan.supp"
fi

# Two tests per core: most of a test's time is spent waiting on sockets and
# timers (the full suite at -j 2: 709 s, the cores often idle; at -j 4:
# 463 s, the cores busy). TSan's servers run several times slower: one per core.
jobs=$(( $(nproc) * 2 ))
[ "$SANITIZE" = thread ] && jobs=$(nproc)
cd "$BUILD_DIR"
status=0
ctest --output-on-failure -j "$jobs" "${ctest_args[@]}" || status=$?
if [ -n "$reports" ] && [ -n "$(ls -A "$reports")" ]; then
  echo "test.sh: sanitizer reports ($reports):" >&2
  for f in "$reports"/*; do echo "== $f" >&2; head -60 "$f" >&2; done
  status=1
fi
exit $status
