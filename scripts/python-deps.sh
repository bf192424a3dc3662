#!/usr/bin/env bash
# Installs the Python packages the examples and their tests use (idempotent).
set -euo pipefail
if ! python3 -c "import websockets" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check "websockets>=12" 2>&1 | grep -v "Running pip as the 'root'" || true
fi
