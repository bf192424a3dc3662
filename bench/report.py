#!/usr/bin/env python3
"""Turns a bench/run.sh results directory into Markdown tables (stdout), or splices a tables
file into docs/benchmarks.md between the bench/run.sh markers (--splice DOC TABLES)."""
import argparse
import json
import os
import platform
import subprocess
import sys

BEGIN, END = "<!-- bench/run.sh:begin -->", "<!-- bench/run.sh:end -->"
ORDER = ["waygate", "node", "bun", "python", "fastws", "tungstenite"]
LABEL = {
    "waygate": "waygate (own codec)",
    "node": "Node `ws`",
    "bun": "Bun",
    "python": "Python `websockets`",
    "fastws": "hyper + fastwebsockets (Rust floor)",
    "tungstenite": "tokio-tungstenite, 4 KiB buffers",
}


def load(d, name, label):
    p = os.path.join(d, f"{name}-{label}.json")
    try:
        with open(p) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def load_avg(d, name, label):
    try:
        with open(os.path.join(d, f"{name}-{label}.load")) as f:
            return f.read().split()[0]
    except OSError:
        return "?"


def fmt(v, digits=0):
    if v is None:
        return "—"
    if isinstance(v, float) and digits:
        return f"{v:,.{digits}f}"
    return f"{v:,.0f}"


def ratio(v, base, lower_is_better=True):
    if v is None or base in (None, 0):
        return "—"
    return f"{v / base:.2f}×"


def machine():
    cpu = "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) // 1024 // 1024} GiB"
    except OSError:
        pass
    return f"{os.cpu_count()} vCPU ({cpu}), {mem} RAM, Linux {platform.release()}"


def tables(d, names, args):
    rows = []
    w = rows.append
    w(f"Run `{args.command}` — {os.path.basename(d)} (UTC). Machine: {machine()}. "
      "Server pinned to core 0 (`taskset -c 0`), client (`waygate bench`, release build) on core 1; "
      "the machine is shared with other engineers' builds, so each row gives the 1-minute load "
      "average measured when that run ended.")
    w("")
    w(f"Workloads: {args.params}. Versions: {open(args.versions).read().strip() if args.versions else '?'}.")
    if args.quick == "1":
        w("")
        w("**Quick run** (`--quick`): short phases and fewer connections; not the SPEC 7 figures.")
    w("")

    def base(label, key):
        r = load(d, "node", label)
        return key(r) if r else None

    cpu = lambda r: (r.get("server") or {}).get("cpuUsPerEvent")
    lat = lambda r, q: (r.get("latencyUs") or {}).get(q)

    w("### Echo, 100 connections, closed loop (ping → pong)")
    w("")
    w("| server | round trips/s | server µs CPU / msg | vs Node | server CPU % | p50 µs | p99 µs | load |")
    w("|---|---|---|---|---|---|---|---|")
    b = base("echo", cpu)
    for n in names:
        r = load(d, n, "echo")
        if not r:
            w(f"| {LABEL[n]} | failed | | | | | | |")
            continue
        s = r.get("server") or {}
        w(f"| {LABEL[n]} | {fmt(r['eventsPerSec'])} | {fmt(cpu(r), 2)} | {ratio(cpu(r), b)} | "
          f"{fmt(s.get('cpuPercent'))} | {fmt(lat(r, 'p50'))} | {fmt(lat(r, 'p99'))} | {load_avg(d, n, 'echo')} |")
    w("")
    w("### Echo, open loop at 20,000 msg/s over 100 connections")
    w("")
    w("| server | achieved msg/s | p50 µs | p99 µs | p99.9 µs | max µs | server µs CPU / msg | lost | load |")
    w("|---|---|---|---|---|---|---|---|---|")
    for n in names:
        r = load(d, n, "echo-open")
        if not r:
            w(f"| {LABEL[n]} | failed | | | | | | | |")
            continue
        w(f"| {LABEL[n]} | {fmt(r['eventsPerSec'])} | {fmt(lat(r, 'p50'))} | {fmt(lat(r, 'p99'))} | "
          f"{fmt(lat(r, 'p999'))} | {fmt(lat(r, 'max'))} | {fmt(cpu(r), 2)} | {r['counts']['lost']} | "
          f"{load_avg(d, n, 'echo-open')} |")
    w("")
    w("### Idle connections")
    w("")
    w("| server | connections held | server RSS KiB / conn | vs Node | RSS before → after (MiB) | load |")
    w("|---|---|---|---|---|---|")
    per = lambda r: (r.get("server") or {}).get("rssKibPerConnection")
    b = base("idle", per)
    for n in names:
        r = load(d, n, "idle")
        if not r:
            w(f"| {LABEL[n]} | failed | | | | |")
            continue
        s = r.get("server") or {}
        w(f"| {LABEL[n]} | {r['counts']['connectionsOpened']:,} of {r['connections']:,} | {fmt(per(r), 2)} | "
          f"{ratio(per(r), b)} | {s.get('rssKibStart', 0) / 1024:.1f} → {s.get('rssKibEnd', 0) / 1024:.1f} | "
          f"{load_avg(d, n, 'idle')} |")
    w("")
    w("### Fan-out, 1 channel, one publisher, closed loop")
    w("")
    w("| server | subscribers | deliveries/s | vs Node | server µs CPU / delivery | p50 µs | p99 µs | lost | load |")
    w("|---|---|---|---|---|---|---|---|---|")
    rate = lambda r: r.get("eventsPerSec")
    b = base("fanout", rate)
    for n in names:
        r = load(d, n, "fanout")
        if not r:
            if n in ("fastws", "tungstenite"):
                continue
            w(f"| {LABEL[n]} | failed | | | | | | | |")
            continue
        w(f"| {LABEL[n]} | {r['connections']:,} | {fmt(rate(r))} | {ratio(rate(r), b)} | {fmt(cpu(r), 2)} | "
          f"{fmt(lat(r, 'p50'))} | {fmt(lat(r, 'p99'))} | {r['counts']['lost']} | {load_avg(d, n, 'fanout')} |")
    w("")
    w("### Connect storm")
    w("")
    w("| server | handshakes/s | vs Node | server µs CPU / handshake | p50 µs | p99 µs | failed | load |")
    w("|---|---|---|---|---|---|---|---|")
    b = base("connect", rate)
    for n in names:
        r = load(d, n, "connect")
        if not r:
            w(f"| {LABEL[n]} | failed | | | | | | |")
            continue
        w(f"| {LABEL[n]} | {fmt(rate(r))} | {ratio(rate(r), b)} | {fmt(cpu(r), 2)} | {fmt(lat(r, 'p50'))} | "
          f"{fmt(lat(r, 'p99'))} | {r['counts']['connectionsFailed']} | {load_avg(d, n, 'connect')} |")
    w("")
    w("Ratios: CPU per message and RSS per connection relative to Node `ws` (lower is better); "
      "deliveries/s and handshakes/s relative to Node (higher is better). The Rust peers answer "
      "echo only (no channels), so they have no fan-out row. Plots: `docs/bench/waygate-*.png`, "
      "`docs/bench/node-echo.png`. Raw JSON reports: `bench/out/<run>/` (not committed).")
    return "\n".join(rows) + "\n"


def splice(doc, tables_path):
    with open(doc) as f:
        text = f.read()
    with open(tables_path) as f:
        body = f.read()
    block = f"{BEGIN}\n{body}{END}"
    if BEGIN in text and END in text:
        pre, rest = text.split(BEGIN, 1)
        post = rest.split(END, 1)[1]
        text = pre + block + post
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(doc, "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", nargs="?")
    ap.add_argument("--quick", default="0")
    ap.add_argument("--versions")
    ap.add_argument("--command", default="bench/run.sh")
    ap.add_argument("--params", default="")
    ap.add_argument("--splice", nargs=2, metavar=("DOC", "TABLES"))
    args = ap.parse_args()
    if args.splice:
        splice(*args.splice)
        return
    names = [n for n in ORDER if any(os.path.exists(os.path.join(args.dir, f"{n}-{l}.load"))
                                     for l in ("idle", "echo", "connect"))]
    sys.stdout.write(tables(args.dir, names, args))


if __name__ == "__main__":
    main()
