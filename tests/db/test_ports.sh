#!/usr/bin/env bash
# The test PostgreSQL (tests/db/pg.sh) and Redis (scripts/redis-test.sh)
# listen inside PARLEY_TEST_PORTS when it is set, so two test runs with their
# own ranges never collide; without it, on any free port as before. Each is
# started, its port checked (and that it listens there), then stopped.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d "${TMPDIR:-/tmp}/parley-ports-XXXXXX")
trap 'tests/db/pg.sh stop "$work/pg" >/dev/null 2>&1 || true; scripts/redis-test.sh stop "$work/redis" || true; rm -rf "$work"' EXIT

in_range() {  # what port
  local what=$1 port=$2
  [[ "$port" =~ ^[0-9]+$ ]] || { echo "FAIL: $what printed no port ($port)" >&2; exit 1; }
  if [[ "${PARLEY_TEST_PORTS:-}" =~ ^([0-9]+)-([0-9]+)$ ]]; then
    local lo=${BASH_REMATCH[1]} hi=${BASH_REMATCH[2]}
    if [ "$port" -lt "$lo" ] || [ "$port" -gt "$hi" ]; then
      echo "FAIL: $what listens on $port, outside PARLEY_TEST_PORTS=$PARLEY_TEST_PORTS" >&2
      exit 1
    fi
  fi
  if ! ss -ltn "sport = :$port" | grep -q LISTEN; then
    echo "FAIL: nothing listens on $port for $what" >&2
    exit 1
  fi
  echo "ok: $what on 127.0.0.1:$port (PARLEY_TEST_PORTS=${PARLEY_TEST_PORTS:-unset})"
}

if command -v redis-server >/dev/null; then
  in_range redis "$(scripts/redis-test.sh start "$work/redis")"
  scripts/redis-test.sh stop "$work/redis"
fi
if ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
  url=$(tests/db/pg.sh start "$work/pg")
  in_range postgresql "${url##*:}"
  tests/db/pg.sh stop "$work/pg"
fi
