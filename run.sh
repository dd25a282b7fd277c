#!/usr/bin/env bash
# Installs what Parley needs to build and run (not the test tools: those
# come with scripts/test.sh), builds it and starts the server on port 3000
# (PARLEY_PORT) with embedded storage in ./data (PARLEY_DATA_DIR). Extra
# arguments go to `parley serve` (try --help). Every flag also has a
# PARLEY_* environment variable. Ctrl-C (or SIGTERM) stops it.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install-deps.sh
./scripts/build.sh
# Port 3000 and ./data unless PARLEY_PORT / PARLEY_DATA_DIR or the flags say otherwise.
exec ./build/parley serve "$@"
