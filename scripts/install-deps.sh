#!/usr/bin/env bash
# Installs what Parley needs from Debian packages (and, with --test, from the
# npm registry). Idempotent: safe to run again; skips apt when all is there.
#
#   scripts/install-deps.sh          build and run: the compiler, the
#                                    libraries CMake links, Node.js + the web
#                                    app's npm packages (run.sh uses this)
#   scripts/install-deps.sh --test   also what the tests need: GoogleTest,
#                                    Node + the e2e npm packages, Python's
#                                    websockets and socketio, PostgreSQL and
#                                    Redis servers, Chromium for the browser
#                                    tests, HAProxy and systemd-analyze for
#                                    the deploy/ test (scripts/test.sh uses this)
#   scripts/install-deps.sh --fuzz   also clang 14 and libFuzzer for the fuzz
#                                    targets (scripts/fuzz.sh uses this)
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_TESTS=0
WITH_FUZZ=0
for arg in "$@"; do
  case "$arg" in
    --test) WITH_TESTS=1 ;;
    --fuzz) WITH_FUZZ=1 ;;
    *) echo "install-deps: unknown argument $arg (try --test or --fuzz)" >&2; exit 64 ;;
  esac
done

# Build and run. libpq and hiredis are here because CMake links them (their
# headers and libraries), not their servers.
APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git ca-certificates curl
  libboost1.81-dev libboost-json1.81-dev
  libsqlite3-dev sqlite3 libpq-dev libhiredis-dev libsodium-dev libssl-dev
  libspdlog-dev libfmt-dev libcli11-dev libjemalloc-dev
)
# Node.js builds the web app (web/, embedded into parley). Use the machine's
# own if present (it may come from a non-Debian build that conflicts with
# Debian's npm); otherwise Debian's.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  APT_PACKAGES+=(nodejs npm)
fi

if [ "$WITH_TESTS" -eq 1 ]; then
  APT_PACKAGES+=(
    libgtest-dev libgmock-dev googletest
    python3 python3-websockets python3-socketio python3-requests python3-websocket
    postgresql redis-server
    procps psmisc
    openssl
    chromium fonts-noto-color-emoji
    haproxy systemd
  )
fi

# libFuzzer and the sanitizer runtimes come with clang's compiler-rt;
# llvm-14 has llvm-symbolizer, which names the lines in a crash's stack.
if [ "$WITH_FUZZ" -eq 1 ]; then
  APT_PACKAGES+=(clang-14 libfuzzer-14-dev libclang-rt-14-dev llvm-14)
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: apt packages missing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "install-deps: apt packages present"
fi

# The web app's build tools (esbuild, Preact), pinned by web/package-lock.json;
# after this the build works offline.
if [ -f web/package-lock.json ]; then
  stamp=web/node_modules/.package-lock.json
  if [ ! -f "$stamp" ] || [ web/package-lock.json -nt "$stamp" ]; then
    (cd web && npm ci --no-audit --no-fund --loglevel=error)
  else
    echo "install-deps: web node_modules up to date"
  fi
fi

# Test clients from npm (ws, socket.io-client), pinned by tests/e2e/package-lock.json;
# installed again only when the lock file changed since the last install.
if [ "$WITH_TESTS" -eq 1 ] && [ -f tests/e2e/package-lock.json ]; then
  stamp=tests/e2e/node_modules/.package-lock.json
  if [ ! -f "$stamp" ] || [ tests/e2e/package-lock.json -nt "$stamp" ]; then
    (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
  else
    echo "install-deps: e2e node_modules up to date"
  fi
fi
echo "install-deps: done"
