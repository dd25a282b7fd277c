#!/usr/bin/env bash
# CI smoke test of the benchmark tools (about 10 s):
#   bench/smoke.sh PATH/TO/parley PATH/TO/parley-bench [native|socketio]
# (socketio: the same runs with parley-bench --protocol socketio, against
# Parley's Engine.IO/Socket.IO endpoint; a wrong secret is a CONNECT_ERROR.)
# Starts parley on port 0 with a temporary data dir seeded by `parley seed`
# (120 users, groups of 10), runs parley-bench fanout (users 0-59) and dm
# (users 60-119: threads without history, so Socket.IO's catch-up on connect
# replays nothing of the fanout run into them) for 2 s each and
# requires exit 0 with "missing":0 and "duplicates":0; also checks that a bad
# secret fails the run and that a non-loopback --host is refused. Kills the
# server (by its PID) on the way out.
set -euo pipefail

PARLEY=${1:?usage: smoke.sh PARLEY_BIN BENCH_BIN}
BENCH=${2:?usage: smoke.sh PARLEY_BIN BENCH_BIN}
PROTOCOL=${3:-native}
[[ $PROTOCOL == native || $PROTOCOL == socketio ]] || { echo "smoke: protocol must be native or socketio" >&2; exit 2; }
TMP=$(mktemp -d /tmp/parley-bench-smoke.XXXXXX)
SECRET="smoke-$$-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
PID=""

cleanup() {
  if [[ -n $PID ]]; then
    kill "$PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

fail() {
  echo "smoke: FAIL: $*" >&2
  [[ -f $TMP/server.log ]] && tail -20 "$TMP/server.log" >&2
  exit 1
}

"$PARLEY" seed --data-dir "$TMP/data" --users 120 --group-size 10 --log-level warn >"$TMP/seed.json" 2>"$TMP/seed.log" \
  || fail "parley seed"
grep -q '"users_created":120' "$TMP/seed.json" || fail "seed summary: $(cat "$TMP/seed.json")"
# Seeding again is a no-op.
"$PARLEY" seed --data-dir "$TMP/data" --users 120 --group-size 10 --log-level warn 2>/dev/null | grep -q '"users_existing":120' \
  || fail "second seed was not idempotent"

"$PARLEY" serve --port 0 --bind 127.0.0.1 --data-dir "$TMP/data" --jwt-secret "$SECRET" >"$TMP/server.log" 2>&1 &
PID=$!
PORT=""
for _ in $(seq 100); do
  PORT=$(sed -n 's/.*event=listening.*port=\([0-9][0-9]*\).*/\1/p' "$TMP/server.log" | head -1)
  [[ -n $PORT ]] && break
  kill -0 "$PID" 2>/dev/null || fail "server exited"
  sleep 0.1
done
[[ -n $PORT ]] || fail "server did not report its port"

check_run() {  # NAME JSON_FILE EXIT_CODE
  local name=$1 json=$2 rc=$3
  (( rc == 0 )) || fail "$name exited $rc: $(cat "$json")"
  grep -q '"ok":true' "$json" || fail "$name not ok: $(cat "$json")"
  grep -q "\"protocol\":\"$PROTOCOL\"" "$json" || fail "$name did not run over $PROTOCOL: $(cat "$json")"
  grep -q '"missing":0' "$json" || fail "$name missing deliveries: $(cat "$json")"
  grep -q '"duplicates":0' "$json" || fail "$name duplicate deliveries: $(cat "$json")"
  grep -q '"acked":[1-9]' "$json" || fail "$name acknowledged nothing: $(cat "$json")"
  echo "smoke: $PROTOCOL $name ok: $(grep -o '"acked":[0-9]*' "$json") $(grep -o '"expected":[0-9]*' "$json")"
}

COMMON=(--port "$PORT" --jwt-secret "$SECRET" --users 60 --group-size 10 --server-pid "$PID" --warmup 0.5 --duration 2
        --protocol "$PROTOCOL")
rc=0
timeout 60 "$BENCH" fanout "${COMMON[@]}" --senders 6 >"$TMP/fanout.json" 2>"$TMP/fanout.err" || rc=$?
check_run fanout "$TMP/fanout.json" "$rc"
rc=0
timeout 60 "$BENCH" dm "${COMMON[@]}" --user-offset 60 >"$TMP/dm.json" 2>"$TMP/dm.err" || rc=$?
check_run dm "$TMP/dm.json" "$rc"

# A wrong secret: every upgrade (Socket.IO: every CONNECT) is refused, the run
# fails (exit 1) and says so.
rc=0
timeout 60 "$BENCH" connect --port "$PORT" --jwt-secret "not-$SECRET" --users 5 --group-size 5 \
  --connect-timeout 10 --protocol "$PROTOCOL" >"$TMP/bad.json" 2>/dev/null || rc=$?
(( rc == 1 )) || fail "bad secret: exit $rc, expected 1"
grep -q '"connect_failures":5' "$TMP/bad.json" || fail "bad secret not reported: $(cat "$TMP/bad.json")"

# Loopback only: any other address is refused before a socket is opened.
rc=0
"$BENCH" connect --host 192.0.2.1 --port "$PORT" --jwt-secret x --users 1 >/dev/null 2>&1 || rc=$?
(( rc == 2 )) || fail "non-loopback --host was not refused (exit $rc)"

kill -0 "$PID" 2>/dev/null || fail "server died during the smoke test"
echo "smoke: $PROTOCOL: 4 passed, 0 failed"
