#!/usr/bin/env bash
# A throwaway PostgreSQL for tests: Debian's postgresql package, on a free
# loopback port (one of PARLEY_TEST_PORTS=LO-HI when set, as for the rest of
# a test run: scripts/free-port.py), its data and socket in a temporary
# directory, stopped by PID.
#
#   pg.sh start STATE_DIR      start a server; STATE_DIR/url holds its base URL
#                              (postgres://parley@127.0.0.1:PORT), STATE_DIR/root its temp dir
#   pg.sh createdb STATE_DIR [NAME]   create a fresh database, print its URL
#   pg.sh restart STATE_DIR    stop the server and start it again on the same port
#                              (fault tests; the data survives)
#   pg.sh halt STATE_DIR       stop the server, keeping its data (resume starts it again)
#   pg.sh resume STATE_DIR     start a halted server on its port
#   pg.sh stop STATE_DIR       stop the server (SIGINT to the postmaster) and delete its files
#   pg.sh url STATE_DIR        print the base URL
#
# PostgreSQL refuses to run as root: as root, initdb and postgres run as the
# `postgres` user (created by the package) in a directory it owns. Only
# 127.0.0.1 is listened on; authentication is `trust` (loopback, tests only).
set -euo pipefail

PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
[ -x "$PG_BIN/postgres" ] || { echo "pg.sh: PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }

cmd=${1:-}
state=${2:-}
[ -n "$cmd" ] && [ -n "$state" ] || { sed -n '2,16p' "$0" >&2; exit 2; }

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() { "$(dirname "$0")/../../scripts/free-port.py"; }

pid_of() { head -1 "$1/data/postmaster.pid" 2>/dev/null || true; }

launch() {  # root port
  local root=$1 port=$2 pid
  as_pg "$PG_BIN/postgres" -D "$root/data" -p "$port" -k "$root" -c listen_addresses=127.0.0.1 \
    -c fsync=off -c synchronous_commit=on -c full_page_writes=off -c max_connections=200 \
    -c shared_buffers=64MB -c log_min_messages=warning \
    >>"$root/server.log" 2>&1 </dev/null &
  pid=$!
  for _ in $(seq 1 150); do
    if as_pg "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port"; then return 0; fi
    kill -0 "$pid" 2>/dev/null || break  # exited: the port was taken meanwhile, say
    sleep 0.1
  done
  echo "pg.sh: server did not start on port $port; log:" >&2
  tail -20 "$root/server.log" >&2
  return 1
}

stop_server() {  # root
  local root=$1 pid
  pid=$(pid_of "$root")
  [ -n "$pid" ] || return 0
  kill -INT "$pid" 2>/dev/null || return 0  # fast shutdown: active sessions are cut
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

case "$cmd" in
  start)
    mkdir -p "$state"
    [ -f "$state/root" ] && "$0" stop "$state"  # a server left over from an interrupted run
    root=$(mktemp -d "${TMPDIR:-/tmp}/parley-pg-XXXXXX")
    chmod 755 "$root"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$root"
    as_pg "$PG_BIN/initdb" -D "$root/data" -U parley --auth=trust -E UTF8 --locale=C.UTF-8 -N >"$root/initdb.log" 2>&1 ||
      { cat "$root/initdb.log" >&2; exit 1; }
    echo "$root" >"$state/root"
    # The port was free when chosen; another test's server may take it
    # before ours binds it: then another one.
    for attempt in 1 2 3 4 5; do
      port=$(free_port)
      echo "$port" >"$state/port"
      echo "postgres://parley@127.0.0.1:$port" >"$state/url"
      if launch "$root" "$port"; then break; fi
      [ "$attempt" -lt 5 ] || exit 1
    done
    echo "postgres://parley@127.0.0.1:$port"
    ;;
  createdb)
    url=$(cat "$state/url")
    name=${3:-t_$(date +%s%N)_$RANDOM}
    psql -q -v ON_ERROR_STOP=1 "$url/postgres" -c "CREATE DATABASE \"$name\"" >/dev/null
    echo "$url/$name"
    ;;
  restart)
    root=$(cat "$state/root")
    stop_server "$root"
    launch "$root" "$(cat "$state/port")"
    ;;
  halt)
    stop_server "$(cat "$state/root")"
    ;;
  resume)
    launch "$(cat "$state/root")" "$(cat "$state/port")"
    ;;
  stop)
    [ -f "$state/root" ] || exit 0
    root=$(cat "$state/root")
    stop_server "$root"
    rm -rf "$root"
    rm -f "$state/root" "$state/url" "$state/port"
    ;;
  url)
    cat "$state/url"
    ;;
  *)
    sed -n '2,16p' "$0" >&2
    exit 2
    ;;
esac
