#!/usr/bin/env bash
# Cross-instance tool-call dispatch (issue 4, SPEC 7): two `waygate serve` instances in cluster
# mode on one fresh PostgreSQL schema and one Redis prefix; devices on B, calls POSTed to A with
# wait=true at a fixed rate. Measured twice in one run: the event-driven design (LISTEN/NOTIFY,
# the default) and the seed's design (GATEWAY_DISPATCH_NOTIFY=false GATEWAY_DISPATCH_POLL_MS=500).
#
#   bench/dispatch.sh [--rate 500] [--duration 10s] [--devices 4] [--no-build]
#
# Needs PostgreSQL (DISPATCH_PG, default postgres://postgres@127.0.0.1:5432/postgres), Redis
# (REDIS_URL, default redis://127.0.0.1:6379) and psql. Prints a Markdown table; JSON reports
# and logs stay in bench/out/dispatch-<time>/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
rate=500 duration=10s devices=4 build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) rate="$2"; shift ;;
    --duration) duration="$2"; shift ;;
    --devices) devices="$2"; shift ;;
    --no-build) build=0 ;;
    *) echo "usage: $0 [--rate N] [--duration 10s] [--devices N] [--no-build]" >&2; exit 2 ;;
  esac
  shift
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
[ "$build" = 1 ] && cargo build --release -p waygate
bin="${WAYGATE_BIN:-$CARGO_TARGET_DIR/release/waygate}"
pg="${DISPATCH_PG:-postgres://postgres@127.0.0.1:5432/postgres}"
redis="${REDIS_URL:-redis://127.0.0.1:6379}"
tag="bench_dispatch_$(date -u +%Y%m%d%H%M%S)_$$"
out="$root/bench/out/dispatch-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
db="$pg?options=-c%20search_path%3D$tag"
email="bench@example.com" password="bench-password-$$"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  psql "$pg" -qc "DROP SCHEMA IF EXISTS \"$tag\" CASCADE" >/dev/null 2>&1 || true
}
trap cleanup EXIT

psql "$pg" -qc "CREATE SCHEMA \"$tag\"" >/dev/null
common=(env DATABASE_URL="$db" REDIS_URL="$redis" WAYGATE_REDIS_PREFIX="$tag" WAYGATE_CLUSTER=true WAYGATE_LOG=warn)
(cd "$out" && "${common[@]}" "$bin" migrate >/dev/null)
(cd "$out" && echo "$password" | "${common[@]}" "$bin" user add "$email" >/dev/null)

wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listening on $1" >&2; return 1
}

run_mode() { # label extra-env…
  local label="$1"; shift
  local pa=$((20000 + RANDOM % 10000)) pb
  pb=$((pa + 1))
  (cd "$out" && exec "${common[@]}" "$@" WAYGATE_INSTANCE_ID=a "$bin" serve --host 127.0.0.1 --port "$pa" --ws-port off) \
    >"$out/$label-a.log" 2>&1 &
  pids+=($!)
  local apid=$!
  (cd "$out" && exec "${common[@]}" "$@" WAYGATE_INSTANCE_ID=b "$bin" serve --host 127.0.0.1 --port "$pb" --ws-port off) \
    >"$out/$label-b.log" 2>&1 &
  pids+=($!)
  local bpid=$!
  wait_port "$pa"; wait_port "$pb"
  echo "== dispatch $label (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  "$bin" bench dispatch --accept "http://127.0.0.1:$pa" --devices-on "http://127.0.0.1:$pb" \
    --email "$email" --password "$password" --devices "$devices" --rate "$rate" \
    --duration "$duration" --warmup 2s --server-pid "$apid" --json --quiet >"$out/$label.json"
  cut -d' ' -f1-3 /proc/loadavg >"$out/$label.load"
  kill "$apid" "$bpid"; wait "$apid" "$bpid" 2>/dev/null || true
}

run_mode notify
run_mode poll500 GATEWAY_DISPATCH_NOTIFY=false GATEWAY_DISPATCH_POLL_MS=500

python3 - "$out" "$rate" <<'PY'
import json, sys, os
d, rate = sys.argv[1], sys.argv[2]
print(f"| design | target calls/s | completed calls/s | p50 ms | p90 ms | p99 ms | max ms | errors | load |")
print("|---|---|---|---|---|---|---|---|---|")
for label, name in (("notify", "LISTEN/NOTIFY (default)"), ("poll500", "seed: poll 500 ms, no NOTIFY")):
    r = json.load(open(os.path.join(d, f"{label}.json")))
    l = r.get("latencyUs") or {}
    ms = lambda k: f"{l[k] / 1000:.2f}" if k in l else "—"
    load = open(os.path.join(d, f"{label}.load")).read().split()[0]
    print(f"| {name} | {rate} | {r['eventsPerSec']:.0f} | {ms('p50')} | {ms('p90')} | {ms('p99')} | {ms('max')} | "
          f"{r['counts']['errorFrames']} | {load} |")
PY
