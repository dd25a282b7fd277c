#!/usr/bin/env bash
# A throwaway redis-server for tests: loopback only, in a directory of its
# own, no persistence, stopped by its PID (never by name).
#
#   scripts/redis-test.sh start DIR [PORT]   starts it (a free port when none
#                                            is given: one of PARLEY_TEST_PORTS
#                                            when set, scripts/free-port.py),
#                                            waits until it answers PING,
#                                            prints the port
#   scripts/redis-test.sh stop DIR           stops the one started in DIR
#
# DIR holds redis.pid, redis.port and redis.log. Starting again with the same
# DIR and PORT after a stop is how tests restart Redis.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR [PORT]" >&2; exit 2; }

# Starts redis-server on PORT and waits until it answers; prints the port.
start_on() {
  local port=$1 pid
  redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --save "" --appendonly no \
    --daemonize no --logfile "$dir/redis.log" --protected-mode yes >/dev/null 2>&1 </dev/null &
  pid=$!
  echo "$pid" > "$dir/redis.pid"
  echo "$port" > "$dir/redis.port"
  for _ in $(seq 1 100); do
    if redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
      echo "$port"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "redis-test: redis-server did not start on 127.0.0.1:$port; log:" >&2
  tail -n 20 "$dir/redis.log" >&2 || true
  kill "$pid" 2>/dev/null || true
  rm -f "$dir/redis.pid"
  return 1
}

case "$cmd" in
  start)
    command -v redis-server >/dev/null || { echo "redis-test: redis-server not installed (scripts/install-deps.sh)" >&2; exit 1; }
    mkdir -p "$dir"
    if [ -n "${3:-}" ]; then
      start_on "$3" && exit 0
      exit 1
    fi
    # A port free when chosen may be taken before redis-server binds it
    # (another test's server): then another one.
    for _ in 1 2 3 4 5; do
      port=$("$(dirname "$0")/free-port.py") || exit 1
      start_on "$port" && exit 0
    done
    exit 1
    ;;
  stop)
    [ -f "$dir/redis.pid" ] || exit 0
    pid=$(cat "$dir/redis.pid")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
      done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/redis.pid"
    ;;
  *)
    echo "usage: $0 start|stop DIR [PORT]" >&2
    exit 2
    ;;
esac
