#!/usr/bin/env bash
# Installs everything Parley needs to build, run and test, from Debian packages
# and the npm registry. Idempotent: safe to run again; skips apt when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git curl ca-certificates
  libboost1.81-dev libboost-json1.81-dev
  libsqlite3-dev sqlite3 libpq-dev libhiredis-dev libsodium-dev libssl-dev
  libspdlog-dev libfmt-dev libcli11-dev libgtest-dev libgmock-dev googletest
  python3 python3-websockets
  python3-socketio python3-requests python3-websocket
  postgresql redis-server
  procps psmisc
)

# Node.js: use the machine's own if present (it may come from a non-Debian
# build that conflicts with Debian's npm); otherwise Debian's.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  APT_PACKAGES+=(nodejs npm)
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

# Test clients from npm (ws, socket.io-client), pinned by tests/e2e/package-lock.json.
if [ -f tests/e2e/package.json ]; then
  (cd tests/e2e && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi)
fi
echo "install-deps: done"
