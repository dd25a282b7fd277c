#!/usr/bin/env bash
# Runs the libFuzzer targets of fuzz/ (docs/security.md).
#
#   scripts/fuzz.sh TARGET|all SECONDS [libFuzzer flags...]
#
# Builds what it needs into ./build-fuzz (clang, ASan + UBSan + libFuzzer,
# -O1 -g1; scripts/configure-asan.sh),
# then runs one target, or every target (one per core at a time, FUZZ_JOBS to
# change that), for SECONDS each, starting from the
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

# One target, its output in its log; the exit status says whether it is clean.
run_target() {
  local t=$1 corpus="$BUILD_DIR/corpus/$1" artifacts="$BUILD_DIR/artifacts/$1"
  mkdir -p "$corpus" "$artifacts"
  local seeds=(fuzz/corpus/$t)
  [ -d "fuzz/regressions/$t" ] && seeds+=("fuzz/regressions/$t")
  # -max_len 64 KiB: the server's frame limit; -timeout per input; -rss_limit_mb for the process.
  "$BUILD_DIR/fuzz/fuzz_$t" "$corpus" "${seeds[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -max_len=65536 -print_final_stats=1 -artifact_prefix="$artifacts/" "${extra[@]}" >"$BUILD_DIR/fuzz-$t.log" 2>&1
}

report() {
  local t=$1 status=$2 log="$BUILD_DIR/fuzz-$1.log"
  if [ "$status" -eq 0 ]; then
    echo "fuzz: $t clean: $(grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)' "$log" | tr '\n' ' ')"
  else
    echo "fuzz: $t FAILED (log $log)"
    grep -E 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|runtime error|SUMMARY|Test unit written to' "$log" | head -20 || true
    failed+=("$t")
  fi
}

# One target per core at a time: each is a single process, so on a 2-core
# CI machine seven 30 s targets take four rounds instead of seven.
extra=("$@")
parallel=${FUZZ_JOBS:-$(nproc)}
failed=()
pids=()
names=()
for t in "${selected[@]}"; do
  echo "fuzz: $t for ${seconds}s"
  run_target "$t" &
  pids+=($!)
  names+=("$t")
  if [ ${#pids[@]} -ge "$parallel" ]; then
    status=0
    wait "${pids[0]}" || status=$?
    report "${names[0]}" $status
    pids=("${pids[@]:1}")
    names=("${names[@]:1}")
  fi
done
for i in "${!pids[@]}"; do
  status=0
  wait "${pids[$i]}" || status=$?
  report "${names[$i]}" $status
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failures in ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ${#selected[@]} target(s) clean"
