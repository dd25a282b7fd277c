#!/usr/bin/env bash
# Runs the libFuzzer targets of fuzz/ (docs/security.md).
#
#   scripts/fuzz.sh TARGET|all SECONDS [libFuzzer flags...]
#
# Builds what it needs into ./build-fuzz (clang, ASan + UBSan + libFuzzer,
# -O1 -g1; scripts/configure-asan.sh),
# then runs one target, or every target, for SECONDS each, starting from the
# committed seeds (fuzz/corpus/TARGET) and the saved crash inputs
# (fuzz/regressions/TARGET). New corpus entries go to build-fuzz/corpus/TARGET,
# not into the repository. Exits non-zero on any crash, leak, timeout
# (one input over 10 s) or out-of-memory (over 2 GB): the failing input is
# written to build-fuzz/artifacts/TARGET/ and its path printed. Keep such an
# input as fuzz/regressions/TARGET/NAME once it is fixed.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(client_frame ws_reader http jwt utf8 engineio socketio)
if [ $# -lt 2 ]; then
  echo "usage: scripts/fuzz.sh TARGET|all SECONDS [libFuzzer flags]   (targets: ${TARGETS[*]})" >&2
  exit 64
fi
which_target=$1
seconds=$2
shift 2
if [ "$which_target" = all ]; then
  selected=("${TARGETS[@]}")
else
  [[ " ${TARGETS[*]} " == *" $which_target "* ]] || { echo "fuzz: unknown target $which_target (${TARGETS[*]})" >&2; exit 64; }
  selected=("$which_target")
fi

BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
# The same build dir as scripts/test.sh --sanitize=address,undefined.
./scripts/configure-asan.sh "$BUILD_DIR"
cmake --build "$BUILD_DIR" -j "$(nproc)" --target "${selected[@]/#/fuzz_}"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
for t in "${selected[@]}"; do
  corpus="$BUILD_DIR/corpus/$t"
  artifacts="$BUILD_DIR/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  seeds=(fuzz/corpus/$t)
  [ -d "fuzz/regressions/$t" ] && seeds+=("fuzz/regressions/$t")
  echo "fuzz: $t for ${seconds}s"
  log="$BUILD_DIR/fuzz-$t.log"
  # -max_len 64 KiB: the server's frame limit; -timeout per input; -rss_limit_mb for the process.
  if "$BUILD_DIR/fuzz/fuzz_$t" "$corpus" "${seeds[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
       -max_len=65536 -print_final_stats=1 -artifact_prefix="$artifacts/" "$@" >"$log" 2>&1; then
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)' "$log" | tr '\n' ' ' || true
    echo
  else
    echo "fuzz: $t FAILED (log $log)"
    grep -E 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|runtime error|SUMMARY|Test unit written to' "$log" | head -20 || true
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failures in ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ${#selected[@]} target(s) clean"
