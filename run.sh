#!/usr/bin/env bash
# Installs what Parley needs, builds it and starts the server on port 3000
# with embedded storage in ./data. Extra arguments go to `parley serve`
# (try --help). Every flag also has a PARLEY_* environment variable.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/install-deps.sh
./scripts/build.sh
exec ./build/parley serve --port "${PARLEY_PORT:-3000}" --data-dir "${PARLEY_DATA_DIR:-./data}" "$@"
