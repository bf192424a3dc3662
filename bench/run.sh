#!/usr/bin/env bash
# Runs waygate and the peers of bench/peers/ one after another, the server pinned to core 0
# and the `waygate bench` client to core 1, and writes the tables into docs/benchmarks.md
# (between the bench/run.sh markers) and the plots into docs/bench/.
#
#   bench/run.sh [--quick] [--no-build] [--no-docs] [--servers waygate,node,bun,python,fastws,tungstenite]
#
# --no-docs: leave docs/ alone (tables and JSON stay in bench/out/<run>/), e.g. for repeat runs.
# --quick: 3 s phases, 2,000 idle connections, 200 subscribers (a smoke run of the harness).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

quick=0 build=1 docs=1 servers="waygate,node,bun,python,fastws,tungstenite"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --no-build) build=0 ;;
    --no-docs) docs=0 ;;
    --servers) servers="$2"; shift ;;
    *) echo "usage: $0 [--quick] [--no-build] [--no-docs] [--servers a,b,…]" >&2; exit 2 ;;
  esac
  shift
done

if [ "$quick" = 1 ]; then
  dur=3s warm=1s idle_n=2000 subs=200 hold=3s
else
  dur=10s warm=2s idle_n=15000 subs=1000 hold=5s
fi
echo_conns=100 open_rate=20000 connect_conc=32

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
peers_target="${PEERS_TARGET_DIR:-$root/bench/peers/rust/target}"
if [ "$build" = 1 ]; then
  cargo build --release -p waygate
  (cd bench/peers/rust && CARGO_TARGET_DIR="$peers_target" cargo build --release)
fi
bin="${WAYGATE_BIN:-$CARGO_TARGET_DIR/release/waygate}"
versions="$(bash bench/peers/install.sh)"
deps="$root/bench/peers/.deps"

out="$root/bench/out/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out" docs/bench
echo "results in $out" >&2

# Client: the harness on core 1, with the most file descriptors the hard limit allows.
ulimit -n "$(ulimit -Hn)"

port=19000
server_pid=""
start_server() { # name -> sets server_pid, url
  local name="$1"; port=$((port + 1))
  local log="$out/$name.server.log"
  case "$name" in
    waygate)
      mkdir -p "$out/waygate-data"
      (cd "$out/waygate-data" && exec env WAYGATE_MESSAGES_PER_SECOND=1000000 WAYGATE_MAX_CONNECTIONS_PER_IP=1000000 \
        WAYGATE_LOG=warn taskset -c 0 "$bin" serve --host 127.0.0.1 --port "$port" --ws-port off) >"$log" 2>&1 &
      ;;
    node) PORT=$port taskset -c 0 node bench/peers/node/server.js >"$log" 2>&1 & ;;
    bun) PORT=$port taskset -c 0 "$deps/node_modules/.bin/bun" bench/peers/bun/server.js >"$log" 2>&1 & ;;
    python) PORT=$port PYTHONPATH="$deps/python" taskset -c 0 python3 bench/peers/python/server.py >"$log" 2>&1 & ;;
    fastws) PORT=$port taskset -c 0 "$peers_target/release/fastws" >"$log" 2>&1 & ;;
    tungstenite) PORT=$port taskset -c 0 "$peers_target/release/tungstenite" >"$log" 2>&1 & ;;
    *) echo "unknown server $name" >&2; return 1 ;;
  esac
  server_pid=$!
  url="ws://127.0.0.1:$port/ws"
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$name did not listen on $port; log:" >&2; cat "$log" >&2; return 1
}

stop_server() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
}
trap stop_server EXIT

bench() { # name workload extra-args… ; writes $out/$name-$workload.json
  local name="$1" label="$2"; shift 2
  local plot=()
  if [ "$docs" = 1 ] && { [ "$name" = waygate ] || { [ "$name" = node ] && [ "$label" = echo ]; }; }; then
    plot=(--plot "docs/bench/$name-$label.png")
  fi
  echo "== $name $label: waygate bench $* (load: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  if ! taskset -c 1 "$bin" bench "$@" --server-pid "$server_pid" --json --quiet "${plot[@]}" \
      >"$out/$name-$label.json" 2>"$out/$name-$label.err"; then
    echo "   failed: $(tail -1 "$out/$name-$label.err")" >&2
    rm -f "$out/$name-$label.json"
  fi
  cut -d' ' -f1-3 /proc/loadavg >"$out/$name-$label.load"
}

echo "$versions" >"$out/versions.txt"
for name in ${servers//,/ }; do
  start_server "$name"
  bench "$name" idle idle "$url" --connections "$idle_n" --duration "$hold" --warmup 0s --timeout 30s
  sleep 1
  bench "$name" echo echo "$url" --connections "$echo_conns" --duration "$dur" --warmup "$warm"
  bench "$name" echo-open echo "$url" --connections "$echo_conns" --rate "$open_rate" --duration "$dur" --warmup "$warm"
  case "$name" in fastws|tungstenite) ;; *)
    bench "$name" fanout fanout "$url" --connections "$subs" --duration "$dur" --warmup "$warm" --payload 64 ;;
  esac
  bench "$name" connect connect "$url" --connections "$connect_conc" --duration "$dur" --warmup "$warm"
  stop_server
done

python3 bench/report.py "$out" --quick "$quick" --versions "$out/versions.txt" \
  --command "bench/run.sh $([ "$quick" = 1 ] && echo --quick) --servers $servers" \
  --params "echo: $echo_conns conns closed loop and open loop at $open_rate msg/s; idle: $idle_n conns held $hold; fanout: 1 channel × $subs subscribers, closed loop; connect: $connect_conc concurrent handshakes; phases $dur after $warm warm-up" \
  >"$out/tables.md"
if [ "$quick" = 0 ] && [ "$docs" = 1 ]; then
  python3 bench/report.py --splice docs/benchmarks.md "$out/tables.md"
  echo "docs/benchmarks.md updated" >&2
else
  echo "tables in $out/tables.md (docs/benchmarks.md untouched)" >&2
fi
