#!/usr/bin/env bash
# Installs Debian's chromium for the headless browser test of /terminal/{allocation_id}
# (crates/waygate-server/tests/terminal_browser.rs). Does nothing when a chromium is present.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
command -v chromium
