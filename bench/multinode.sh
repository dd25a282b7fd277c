#!/usr/bin/env bash
# Several Parley nodes on one PostgreSQL and one Redis, on loopback, under
# parley-bench (docs/benchmarks.md, "Several nodes and PostgreSQL"):
#
#   bench/multinode.sh [--parley PATH] [--bench PATH] [--duration S] [--only CASE,…] [--perf DIR]
#
# Cases (each with a fresh database or data dir, seeded by `parley seed`,
# and fresh server processes):
#   fanout-1   fanout, 1000 users in groups of 100, 20 senders, one node on PostgreSQL
#   fanout-2   the same load with the connections split over two nodes on
#              PostgreSQL + Redis (parley-bench --port A,B: user u on node u mod 2)
#   dm-sqlite  dm, 500 pairs, one node on SQLite (durable acks/s)
#   dm-pg      the same on PostgreSQL; also reports the writer's statements
#              per group commit (pg_stat_statements: the writer's statements
#              over its transactions, those that lock the commit clock; a run
#              of appends is sent pipelined, 64 statements a round trip)
# Starts PostgreSQL (tests/db/pg.sh, with pg_stat_statements preloaded) and
# Redis (scripts/redis-test.sh) on free loopback ports in temporary
# directories; stops every process it started, by PID, on the way out.
# --perf DIR: `perf record -e cpu-clock -g` of the nodes (and, on PostgreSQL,
# of their database backends) during each run; DIR/CASE.txt gets the top of
# `perf report` by command, library and symbol.
# One JSON line per case (parley-bench's report plus "case", "loadavg" and,
# for dm-pg, "pg_writer") on stdout and in bench/results/multinode-<date>.jsonl.
# Exits 1 when a case failed its delivery checks.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PARLEY=$ROOT/build/parley
BENCH=$ROOT/build/parley-bench
DURATION=8
ONLY=fanout-1,fanout-2,dm-sqlite,dm-pg
PERF_DIR=""
while (($#)); do
  case $1 in
    --parley) PARLEY=$2; shift 2 ;;
    --bench) BENCH=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --perf) PERF_DIR=$2; shift 2 ;;
    *) sed -n '2,24p' "$0" >&2; exit 2 ;;
  esac
done
[[ -x $PARLEY && -x $BENCH ]] || { echo "multinode: build parley and parley-bench first (or pass --parley/--bench)" >&2; exit 2; }

TMP=$(mktemp -d /tmp/parley-multinode.XXXXXX)
chmod 755 "$TMP"
SECRET="mn-$$-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
PIDS=()
mkdir -p bench/results
OUT=bench/results/multinode-$(date -u +%Y-%m-%dT%H%M%SZ).jsonl

stop_nodes() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  PIDS=()
}
cleanup() {
  stop_nodes
  scripts/redis-test.sh stop "$TMP/redis" >/dev/null 2>&1 || true
  tests/db/pg.sh stop "$TMP/pg" >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

tests/db/pg.sh start "$TMP/pg" >/dev/null
PG_ROOT=$(cat "$TMP/pg/root")
# Round trips per commit need pg_stat_statements, which must be preloaded.
echo "shared_preload_libraries = 'pg_stat_statements'" >>"$PG_ROOT/data/postgresql.conf"
tests/db/pg.sh restart "$TMP/pg" >/dev/null
REDIS_PORT=$(scripts/redis-test.sh start "$TMP/redis")

start_node() {  # NAME ARGS… ; sets PORT and appends the PID
  local name=$1; shift
  "$PARLEY" serve --port 0 --bind 127.0.0.1 --jwt-secret "$SECRET" --log-level info "$@" >"$TMP/$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  PORT=""
  for _ in $(seq 200); do
    PORT=$(sed -n 's/.*event=listening.*port=\([0-9][0-9]*\).*/\1/p' "$TMP/$name.log" 2>/dev/null | head -1 || true)
    [[ -n $PORT ]] && return 0
    kill -0 "$pid" 2>/dev/null || { echo "multinode: node $name exited:" >&2; tail -20 "$TMP/$name.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "multinode: node $name did not come up" >&2
  exit 1
}

run_case() {  # CASE
  local case=$1 users group senders scenario db="" store_args=() ports pids
  case $case in
    # Smaller than compare.sh's 2000 in groups of 500: at connect every user's
    # presence goes to its group (2000 x 499 frames there), which on a shared
    # 2-core machine took longer than the warm-up.
    fanout-*) scenario=fanout; users=1000; group=100; senders=20 ;;
    dm-*) scenario=dm; users=1000; group=2; senders=0 ;;
    *) echo "multinode: unknown case $case" >&2; exit 2 ;;
  esac
  if [[ $case == dm-sqlite ]]; then
    store_args=(--data-dir "$TMP/data-$case")
  else
    db=$(tests/db/pg.sh createdb "$TMP/pg" "b_${case//-/_}")
    psql -qtA "$db" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
    store_args=(--database "$db" --data-dir "$TMP/data-$case")
  fi
  "$PARLEY" seed "${store_args[@]}" --users "$users" --group-size "$group" --log-level warn >/dev/null 2>&1
  if [[ $case == fanout-2 ]]; then
    start_node "$case-a" "${store_args[@]}" --redis "redis://127.0.0.1:$REDIS_PORT"; local pa=$PORT
    start_node "$case-b" "${store_args[@]}" --redis "redis://127.0.0.1:$REDIS_PORT"; local pb=$PORT
    ports="$pa,$pb"; pids="${PIDS[0]},${PIDS[1]}"
  else
    start_node "$case" "${store_args[@]}"; ports=$PORT; pids=${PIDS[0]}
  fi
  [[ -n $db ]] && psql -qtA "$db" -c "SELECT pg_stat_statements_reset()" >/dev/null
  local perf_pid=""
  if [[ -n $PERF_DIR ]]; then
    mkdir -p "$PERF_DIR"
    local targets=$pids
    [[ -n $db ]] && targets+=",$(psql -qtA "$db" -c "SELECT string_agg(pid::text, ',') FROM pg_stat_activity
                                                       WHERE datname = current_database() AND pid <> pg_backend_pid()")"
    perf record -q -e cpu-clock -g -p "$targets" -o "$TMP/$case.perf" -- sleep $((DURATION + 3)) >/dev/null 2>&1 &
    perf_pid=$!
  fi
  local load json rc=0
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  local extra=()
  (( senders > 0 )) && extra=(--senders "$senders")
  json=$("$BENCH" "$scenario" --port "$ports" --server-pid "$pids" --jwt-secret "$SECRET" --users "$users" \
    --group-size "$group" "${extra[@]}" --duration "$DURATION" --warmup 3 --drain-timeout 15 --target-name "$case" \
    2>"$TMP/$case.bench.log") || rc=$?
  local trips=null
  if [[ $case == dm-pg ]]; then
    # The writer's statements per group commit (appends are pipelined, 64 to
    # a round trip; every other statement is a round trip of its own). Writer transactions are the ones that lock the commit clock;
    # the readers' BEGIN/COMMIT (REPEATABLE READ snapshots) do not count.
    trips=$(psql -qtA "$db" -c "WITH s AS (SELECT query, calls FROM pg_stat_statements
          WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())),
        c AS (SELECT SUM(calls) AS commits FROM s WHERE query LIKE 'SELECT last_created_at FROM commit_clock%'),
        w AS (SELECT SUM(calls) AS statements FROM s WHERE query = 'BEGIN'
          OR query ~ '^(SAVEPOINT|RELEASE|ROLLBACK TO|UPDATE threads SET last_seq|INSERT INTO messages|UPDATE participants SET last_read_seq|UPDATE commit_clock|SELECT last_created_at FROM commit_clock|WITH t AS [(]UPDATE threads SET last_seq)'
          OR query ~ 'client_msg_id = [\$]3'),
        m AS (SELECT SUM(calls) AS messages FROM s WHERE query LIKE 'INSERT INTO messages%'
          OR query LIKE 'WITH t AS (UPDATE threads SET last_seq%')
      SELECT json_build_object('writer_commits', c.commits,
        'messages_per_commit', round(m.messages / NULLIF(c.commits, 0), 1),
        'statements_per_commit', round((w.statements + c.commits) / NULLIF(c.commits, 0), 1))
      FROM c, w, m")
    [[ -n $PERF_DIR ]] && psql -qtA "$db" -c "SELECT calls, left(regexp_replace(query, '\s+', ' ', 'g'), 100)
      FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
      ORDER BY calls DESC LIMIT 15" >"$PERF_DIR/$case.statements.txt"
  fi
  if [[ -n $perf_pid ]]; then
    wait "$perf_pid" || true
    { perf report -i "$TMP/$case.perf" --stdio --no-children --sort comm -g none 2>/dev/null | grep -E '^ +[0-9.]+%'
      echo
      perf report -i "$TMP/$case.perf" --stdio --no-children --sort comm,dso,sym -g none 2>/dev/null |
        grep -E '^ +[0-9.]+%' | head -40; } >"$PERF_DIR/$case.txt" || true
  fi
  stop_nodes
  local line
  line=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r["case"]=sys.argv[2]; r["loadavg"]=sys.argv[3]; r["pg_writer"]=json.loads(sys.argv[4]); print(json.dumps(r))' \
    "$json" "$case" "$load" "$trips")
  echo "$line" | tee -a "$OUT"
  if ((rc != 0)); then echo "multinode: $case failed its checks (exit $rc); see the JSON" >&2; FAILED=1; fi
}

FAILED=0
IFS=, read -ra CASES <<<"$ONLY"
for c in "${CASES[@]}"; do run_case "$c"; done
echo "multinode: results in $OUT" >&2
exit $FAILED
