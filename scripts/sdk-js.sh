#!/usr/bin/env bash
# Builds and tests the JavaScript client SDK (sdk/js) against the waygate binary built into
# $CARGO_TARGET_DIR (the same one .ci/run uses): npm ci, the committed bundle check, build,
# tests in Node and headless Chromium, and the size report.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/waygate-target}"

cargo build -p waygate --locked --quiet
export WAYGATE_BIN="$CARGO_TARGET_DIR/debug/waygate"

cd sdk/js
npm ci --no-audit --no-fund --loglevel=error
# The gateway's terminal page embeds the bundle: it must be what these sources build.
npm run --silent check:bundle
npm run --silent build
npm test
npm run --silent size
