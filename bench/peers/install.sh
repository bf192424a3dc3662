#!/usr/bin/env bash
# Installs the peers' runtimes/libraries into bench/peers/.deps when missing:
# Node `ws` and Bun (npm package `bun`) with npm, Python `websockets` with pip.
# Idempotent; run by bench/run.sh. Node.js and Python 3 themselves must be on PATH.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
deps="$here/.deps"
mkdir -p "$deps"
if [ ! -f "$deps/node_modules/ws/package.json" ] || [ ! -x "$deps/node_modules/.bin/bun" ]; then
  echo "install.sh: npm install ws bun into $deps" >&2
  npm install --prefix "$deps" --no-audit --no-fund --loglevel=error ws@8 bun@1 >&2
fi
if [ ! -d "$deps/python/websockets" ]; then
  echo "install.sh: pip install websockets into $deps/python" >&2
  python3 -m pip install --quiet --disable-pip-version-check --target "$deps/python" 'websockets>=14,<18' >&2
fi
echo "node $(node --version), ws $(node -p "require('$deps/node_modules/ws/package.json').version"), bun $("$deps/node_modules/.bin/bun" --version), python $(python3 -c 'import sys;print(sys.version.split()[0])'), websockets $(PYTHONPATH="$deps/python" python3 -c 'import websockets;print(websockets.__version__)')"
