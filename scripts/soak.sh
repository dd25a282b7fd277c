#!/usr/bin/env bash
# Soak test, not in CI (docs/security.md): the real server for MINUTES under
# churn, stalled readers and garbage while messages flow; then checks RSS,
# file descriptors and that every acknowledged message was delivered.
#   scripts/soak.sh MINUTES
# Builds ./build/parley first; the Node driver is tests/soak/soak.mjs.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-}
if [ -z "$minutes" ]; then echo "usage: scripts/soak.sh MINUTES" >&2; exit 64; fi
./scripts/build.sh --target parley >/dev/null
[ -d tests/e2e/node_modules ] || (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
export PARLEY_BIN=${PARLEY_BIN:-$PWD/${BUILD_DIR:-build}/parley}
exec node tests/soak/soak.mjs "$minutes"
