#!/usr/bin/env bash
# Parley against two peers (Bun, Node + ws) on the same load, same machine.
#
#   bench/compare.sh            full run (3 repetitions, < 15 minutes)
#   bench/compare.sh --quick    one short repetition of everything (~3 minutes)
#   bench/compare.sh --socketio also the Socket.IO cases (adds about 8 minutes, --quick about 2)
#   bench/compare.sh --only sio only the Socket.IO cases (or --only sio-fanout,sio-idle)
#   options: --reps N  --only fanout,dm,...  --skip-build
#            --parley PATH  --bench PATH (use these binaries, build nothing)
#            --threads N (Parley's network event loops, PARLEY_THREADS; default one per core)
#
# Builds Release into build-release/, installs the peers' npm packages, then
# for each scenario runs Parley, Bun and Node interleaved (P, B, N, P, B, N…),
# and for the Socket.IO cases (sio-*) Parley over Socket.IO, Node's socket.io
# server and Parley native, interleaved the same way;
# every server started fresh for its run (Parley: new data dir seeded with
# `parley seed`, persistence on, default settings) and killed by PID after it.
# Raw JSON lines go to bench/results/<date>.jsonl, the table of medians to
# bench/results/<date>.md and to stdout, its charts to bench/results/<date>-*.svg
# (bench/charts.py; `bench/charts.py RESULTS --docs` writes them to
# docs/benchmarks/ for committing). Loopback only. See docs/benchmarks.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$ROOT/build-release
PEERS=$ROOT/bench/peers
RESULTS_DIR=$ROOT/bench/results

QUICK=0
REPS=3
ONLY=""
SKIP_BUILD=0
SOCKETIO=0
PARLEY=""
BENCH=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) QUICK=1; REPS=1 ;;
    --reps) REPS=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --skip-build) SKIP_BUILD=1 ;;
    --threads) export PARLEY_THREADS=$2; shift ;;
    --socketio) SOCKETIO=1 ;;
    --parley) PARLEY=$(realpath "$2"); SKIP_BUILD=1; shift ;;
    --bench) BENCH=$(realpath "$2"); SKIP_BUILD=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

# The runs stay under 13.5 minutes (plus the build, incremental normally): past
# this, the remaining cases are skipped and the table says so.
BUDGET_S=$(( QUICK ? 480 : 810 ))
# Socket.IO cases run with --socketio, or when --only names them.
if [[ ",$ONLY," == *",sio"* ]]; then SOCKETIO=1; fi
if (( SOCKETIO )); then BUDGET_S=$(( BUDGET_S + (QUICK ? 240 : 540) )); fi

# Sizes (see docs/benchmarks.md). Quick mode keeps every case, shorter and smaller.
if (( QUICK )); then
  DUR=2; WARM=1; HOLD=3
  IDLE_USERS=4000; CONNECT_USERS=2000; GROWTH_BIG=4000
else
  DUR=5; WARM=2; HOLD=5
  IDLE_USERS=19000; CONNECT_USERS=5000; GROWTH_BIG=19000
fi

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (( $(ulimit -n) < IDLE_USERS + 200 )); then
  echo "compare.sh: open-file limit $(ulimit -n) is too low for $IDLE_USERS connections" >&2
  exit 2
fi

log() { echo "compare: $*" >&2; }

# ---------------------------------------------------------------- build
mkdir -p "$RESULTS_DIR"
if (( ! SKIP_BUILD )); then
  log "building Release into $BUILD"
  if ! cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >"$RESULTS_DIR/cmake.log" 2>&1; then
    cat "$RESULTS_DIR/cmake.log" >&2
    exit 1
  fi
  rm -f "$RESULTS_DIR/cmake.log"
  ninja -C "$BUILD" parley parley-bench >&2
fi
PARLEY=${PARLEY:-$BUILD/parley}
BENCH=${BENCH:-$BUILD/parley-bench}
[[ -x $PARLEY && -x $BENCH ]] || { echo "compare.sh: $PARLEY or $BENCH missing" >&2; exit 1; }

log "installing peer packages"
(cd "$PEERS" && npm ci --no-audit --no-fund --loglevel=error >&2)
BUN=$PEERS/node_modules/.bin/bun
TARGETS=(parley)
if "$BUN" --version >/dev/null 2>&1; then
  TARGETS+=(bun)
else
  log "WARNING: Bun is not runnable ($BUN); comparing with Node only"
fi
TARGETS+=(node)

START=$(date +%s)
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
[[ -n ${PARLEY_THREADS:-} ]] && STAMP+="-threads$PARLEY_THREADS"
OUT=$RESULTS_DIR/$STAMP.jsonl
TABLE=$RESULTS_DIR/$STAMP.md
: >"$OUT"

TMP=$(mktemp -d /tmp/parley-compare.XXXXXX)
SECRET="compare-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
SERVER_PID=""
SERVER_PORT=""

# Only the server this script started, by its PID.
stop_server() {
  [[ -n $SERVER_PID ]] || return 0
  kill "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
cleanup() {
  stop_server
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server TARGET USERS GROUP_SIZE -> SERVER_PID, SERVER_PORT
start_server() {
  local target=$1 users=$2 group=$3 dir
  dir=$(mktemp -d "$TMP/$target.XXXX")
  case $target in
    parley|parley-sio)
      "$PARLEY" seed --data-dir "$dir/data" --users "$users" --group-size "$group" --log-level warn \
        >"$dir/seed.json" 2>"$dir/seed.log" || { cat "$dir/seed.log" >&2; return 1; }
      "$PARLEY" serve --port 0 --bind 127.0.0.1 --data-dir "$dir/data" --jwt-secret "$SECRET" >"$dir/server.log" 2>&1 &
      ;;
    bun)
      PORT=0 HOST=127.0.0.1 JWT_SECRET=$SECRET GROUP_SIZE=$group "$BUN" "$PEERS/bun/server.js" >"$dir/server.log" 2>&1 &
      ;;
    node)
      PORT=0 HOST=127.0.0.1 JWT_SECRET=$SECRET GROUP_SIZE=$group node "$PEERS/node/server.js" >"$dir/server.log" 2>&1 &
      ;;
    node-sio)
      PORT=0 HOST=127.0.0.1 JWT_SECRET=$SECRET GROUP_SIZE=$group node "$PEERS/socketio/server.js" >"$dir/server.log" 2>&1 &
      ;;
  esac
  SERVER_PID=$!
  SERVER_PORT=""
  for _ in $(seq 100); do
    SERVER_PORT=$(sed -n 's/.*listening.*port=\([0-9][0-9]*\).*/\1/p' "$dir/server.log" 2>/dev/null | head -1)
    [[ -n $SERVER_PORT ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z $SERVER_PORT ]]; then
    log "$target did not start:"; cat "$dir/server.log" >&2
    stop_server
    return 1
  fi
}

RUN_NO=0
SKIPPED=0
# run_case LABEL SCENARIO TARGET REP USERS GROUP [bench options...]
run_case() {
  local label=$1 scenario=$2 target=$3 rep=$4 users=$5 group=$6
  shift 6
  RUN_NO=$((RUN_NO + 1))
  if (( $(date +%s) - START > BUDGET_S )); then
    SKIPPED=$((SKIPPED + 1))
    log "[$RUN_NO] $label $target rep$rep: skipped (time budget)"
    return 0
  fi
  local t0 line rc=0 err=$TMP/bench.err proto=()
  [[ $target == *-sio ]] && proto=(--protocol socketio)
  t0=$(date +%s)
  if ! start_server "$target" "$users" "$group"; then
    echo "{\"label\":\"$label\",\"rep\":$rep,\"scenario\":\"$scenario\",\"target\":\"$target\",\"ok\":false,\"error\":\"server did not start\"}" >>"$OUT"
    return 0
  fi
  line=$(timeout 400 "$BENCH" "$scenario" --port "$SERVER_PORT" --jwt-secret "$SECRET" --users "$users" \
    --group-size "$group" --server-pid "$SERVER_PID" --target-name "$target" "${proto[@]}" "$@" 2>"$err") || rc=$?
  stop_server
  if [[ $line != \{* ]]; then
    line="{\"scenario\":\"$scenario\",\"target\":\"$target\",\"ok\":false,\"error\":\"bench exit $rc, no JSON\"}"
  fi
  echo "${line/#\{/{\"label\":\"$label\",\"rep\":$rep,}" >>"$OUT"
  log "[$RUN_NO] $label $target rep$rep: exit $rc, $(( $(date +%s) - t0 ))s"
  if (( rc != 0 )); then tail -5 "$err" >&2; fi
}

wanted() { [[ -z $ONLY || ",$ONLY," == *",$1,"* ]]; }

# each_target LABEL SCENARIO USERS GROUP [bench options...]: REPS x (parley, bun, node)
each_target() {
  local label=$1 scenario=$2 users=$3 group=$4
  shift 4
  wanted "$label" || wanted "${label%%-*}" || return 0
  for rep in $(seq "$REPS"); do
    for target in "${TARGETS[@]}"; do
      run_case "$label" "$scenario" "$target" "$rep" "$users" "$group" "$@"
    done
  done
}

# each_sio_target LABEL SCENARIO USERS GROUP [bench options...]:
# REPS x (Parley over Socket.IO, Node socket.io, Parley native)
SIO_TARGETS=(parley-sio node-sio parley)
each_sio_target() {
  local label=$1 scenario=$2 users=$3 group=$4
  shift 4
  (( SOCKETIO )) || return 0
  wanted "$label" || wanted "${label%%-*}" || return 0
  for rep in $(seq "$REPS"); do
    for target in "${SIO_TARGETS[@]}"; do
      run_case "$label" "$scenario" "$target" "$rep" "$users" "$group" "$@"
    done
  done
}

# The drain ends as soon as every reply and delivery is in; the long bound only
# matters for an overloaded server still working through its backlog.
MSG=(--duration "$DUR" --warmup "$WARM" --drain-timeout 15 --connect-timeout 120)
each_target fanout fanout 2000 500 --senders 40 "${MSG[@]}"
each_target latency latency 2000 100 --rate 2000 "${MSG[@]}"
each_target dm dm 2000 2 "${MSG[@]}"
each_target idle idle "$IDLE_USERS" 2 --duration "$HOLD" --connect-timeout 120
each_target connect connect "$CONNECT_USERS" 2 --concurrency 200 --connect-timeout 120
each_target growth-1000 fanout 1000 500 --senders 40 "${MSG[@]}"
each_target "growth-$GROWTH_BIG" fanout "$GROWTH_BIG" 500 --senders 40 "${MSG[@]}"
# Socket.IO (issue 9's targets: fanout and idle); the same loads as above.
each_sio_target sio-fanout fanout 2000 500 --senders 40 "${MSG[@]}"
each_sio_target sio-idle idle "$IDLE_USERS" 2 --duration "$HOLD" --connect-timeout 120
each_sio_target sio-dm dm 2000 2 "${MSG[@]}"
each_sio_target sio-connect connect "$CONNECT_USERS" 2 --concurrency 200 --connect-timeout 120

# ---------------------------------------------------------------- table
node - "$OUT" "$(( $(date +%s) - START ))" "$SKIPPED" "$QUICK" >"$TABLE" <<'EOF'
const fs = require('node:fs');
const [file, elapsed, skipped, quick] = process.argv.slice(2);
const runs = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
const get = (o, path) => path.split('.').reduce((v, k) => (v == null ? undefined : v[k]), o);
const median = (xs) => {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return undefined;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
};
const fmt = (x) => {
  if (x === undefined) return '–';
  const a = Math.abs(x);
  if (a >= 1e6) return (x / 1e6).toFixed(2) + 'M';
  if (a >= 1e4) return (x / 1e3).toFixed(1) + 'k';
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  return x.toFixed(2);
};
// [label prefix, metric path, shown name, higher is better]
const metrics = {
  fanout: [['deliveries_per_s', 'deliveries/s', 1], ['delivery_latency_ms.p99', 'delivery p99 ms', 0],
           ['deliveries_per_cpu_s', 'deliveries per server CPU-s', 1]],
  latency: [['delivery_latency_ms.p50', 'delivery p50 ms', 0], ['delivery_latency_ms.p99', 'delivery p99 ms', 0],
            ['delivery_latency_ms.p999', 'delivery p99.9 ms', 0], ['deliveries_per_cpu_s', 'deliveries per server CPU-s', 1]],
  dm: [['acked_per_s', 'acked msgs/s', 1], ['ack_latency_ms.p99', 'ack p99 ms', 0],
       ['acked_per_cpu_s', 'acked per server CPU-s', 1]],
  idle: [['rss_per_connection_kb', 'RSS KiB per connection', 0]],
  connect: [['connects_per_s', 'connections/s', 1], ['connects_per_cpu_s', 'connections per server CPU-s', 1]],
  growth: [['deliveries_per_cpu_s', 'deliveries per server CPU-s', 1], ['deliveries_per_s', 'deliveries/s', 1]],
};
const out = [];
// One table per family: [targets in column order, the one the ratios are of].
const families = [
  { labels: (l) => !l.startsWith('sio-'), order: ['parley', 'bun', 'node'], base: 'parley',
    title: 'WebSocket: Parley against the Bun and Node (ws) peers' },
  { labels: (l) => l.startsWith('sio-'), order: ['parley-sio', 'node-sio', 'parley'], base: 'parley-sio',
    title: 'Socket.IO: Parley over Socket.IO (parley-sio) against Node socket.io (node-sio) and Parley native (parley)' },
];
for (const fam of families) {
  const labels = [...new Set(runs.map((r) => r.label))].filter(fam.labels);
  if (!labels.length) continue;
  const famRuns = runs.filter((r) => labels.includes(r.label));
  const targets = fam.order.filter((t) => famRuns.some((r) => r.target === t));
  const peers = targets.filter((t) => t !== fam.base);
  if (out.length) out.push('');
  out.push(`${fam.title}. Medians over repetitions${quick === '1' ? ' (--quick: one short repetition)' : ''}; ` +
           `ratio = ${fam.base} / other (for latency and RSS, lower is better). ok = runs that passed the delivery ` +
           `check; medians include failed runs that still measured something (marked *), see the list below.`);
  out.push('');
  out.push(`| case | metric | ${targets.join(' | ')} | ${peers.map((p) => `${fam.base}/${p}`).join(' | ')} |`);
  out.push(`|---|---|${targets.map(() => '---:').join('|')}|${peers.map(() => '---:').join('|')}|`);
  for (const label of labels) {
    const ms = metrics[label.replace(/^sio-/, '').split('-')[0]] || [];
    const of = (t) => famRuns.filter((r) => r.label === label && r.target === t);
    const okCount = targets.map((t) => `${of(t).filter((r) => r.ok).length}/${of(t).length}`);
    out.push(`| ${label} | ok | ${okCount.join(' | ')} |${peers.map(() => '').join(' |')} |`);
    for (const [path, name] of ms) {
      // A run that connected nobody measured nothing (its empty histograms read 0).
      const measured = (t) => of(t).filter((r) => r.ok || r.connections > 0);
      const med = Object.fromEntries(targets.map((t) => [t, median(measured(t).map((r) => get(r, path)))]));
      const mark = (t) => (measured(t).some((r) => !r.ok && get(r, path) !== undefined) ? '*' : '');
      const ratios = peers.map((p) => (med[fam.base] !== undefined && med[p] ? (med[fam.base] / med[p]).toFixed(2) : '–'));
      out.push(`| ${label} | ${name} | ${targets.map((t) => fmt(med[t]) + mark(t)).join(' | ')} | ${ratios.join(' | ')} |`);
    }
  }
}
const failed = runs.filter((r) => !r.ok);
if (failed.length) {
  out.push('');
  out.push('Failed runs:');
  for (const r of failed) out.push(`- ${r.label} ${r.target} rep ${r.rep}: ${r.error || 'failed'}`);
}
out.push('');
out.push(`${runs.length} runs in ${elapsed} s${skipped !== '0' ? `, ${skipped} skipped for the time budget` : ''}; raw: ${file}`);
console.log(out.join('\n'));
EOF
cat "$TABLE"
# The same results as pictures: bench/results/<date>-*.svg (docs/benchmarks.md).
if ! python3 "$ROOT/bench/charts.py" "$OUT" >"$TMP/charts.out" 2>&1; then
  log "charts: $(cat "$TMP/charts.out")"
else
  log "charts: $(tr '\n' ' ' <"$TMP/charts.out")"
fi
FAILED=$(grep -c '"ok":false' "$OUT" || true)
if (( FAILED > 0 )); then
  log "$FAILED run(s) failed their checks (see $OUT)"
  exit 1
fi
