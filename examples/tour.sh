#!/usr/bin/env bash
# The README's 60-second tour as one script: user, login, device, WebSocket device, tool call.
# Expects a gateway at $BASE (default http://127.0.0.1:8080) and `websockets` for Python.
set -euo pipefail
BASE="${BASE:-http://127.0.0.1:8080}"
WAYGATE="${WAYGATE:-cargo run --release --quiet --}"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

echo "password123" | $WAYGATE user add tour-$$@example.com
TOKEN=$(curl -sf "$BASE/api/auth/login" -d "{\"email\":\"tour-$$@example.com\",\"password\":\"password123\"}" | json '["token"]')
curl -sf "$BASE/api/gateway/devices" -H "Authorization: Bearer $TOKEN" \
  -d '{"name":"My laptop","platform":"linux","capabilities":["desktop"]}' > "$work/device.json"
echo "registered device $(json '["deviceId"]' < "$work/device.json") at $(json '["wsEndpoint"]' < "$work/device.json")"

python3 "$(dirname "$0")/device.py" "$work/device.json" > "$work/device.log" 2>&1 &
for _ in $(seq 1 100); do grep -q registered "$work/device.log" && break; sleep 0.1; done
cat "$work/device.log"

echo "--- tool call"
curl -sf "$BASE/api/gateway/tool-calls" -H "Authorization: Bearer $TOKEN" \
  -d '{"capability":"desktop","tool":"echo","args":{"hello":"world"}}'
echo
echo "--- a device error"
curl -s "$BASE/api/gateway/tool-calls" -H "Authorization: Bearer $TOKEN" \
  -d '{"capability":"desktop","tool":"fail"}'
echo
echo "--- gateway health"
curl -sf "$BASE/api/gateway/health"
echo
