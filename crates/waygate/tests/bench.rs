//! `waygate bench` against a real `waygate serve`: the JSON report parses and its counts match
//! what the server counted in `/metrics`. No timing assertions: speed lives in docs/benchmarks.md.

mod common;

use std::io::{Read, Write};

use common::*;
use serde_json::Value;

/// A counter from the server's Prometheus text (plain `GET /metrics`, no client library).
fn counter(server: &Server, name: &str) -> u64 {
    let mut s = std::net::TcpStream::connect(&server.http).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", server.http).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse::<f64>().ok())).unwrap_or(0.0)
        as u64
}

fn bench(dir: &std::path::Path, args: &[&str]) -> Value {
    let out = waygate(dir).arg("bench").args(args).output().unwrap();
    assert!(out.status.success(), "bench {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("--json prints one JSON report")
}

#[test]
fn bench_reports_parse_and_match_the_servers_counters() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[("WAYGATE_MESSAGES_PER_SECOND", "1000000"), ("WAYGATE_LOG", "warn")]);
    let url = format!("ws://{}/ws", server.http);
    let pid = server.child.id().to_string();
    let common = ["--duration", "1s", "--warmup", "200ms", "--json", "--quiet", "--server-pid", pid.as_str()];
    let (msgs, conns) = ("waygate_ws_messages_received_total", "waygate_ws_connections_total");

    // Echo, closed loop, with a plot.
    let png = dir.path().join("echo.png");
    let (m0, c0) = (counter(&server, msgs), counter(&server, conns));
    let mut args = vec!["echo", url.as_str(), "--connections", "4", "--payload", "128", "--plot"];
    args.push(png.to_str().unwrap());
    args.extend(common);
    let r = bench(dir.path(), &args);
    assert_eq!(r["workload"], "echo");
    assert_eq!(r["mode"], "closed");
    let c = &r["counts"];
    assert_eq!(c["connectionsOpened"], 4);
    assert_eq!((c["lost"].as_u64(), c["errorFrames"].as_u64(), c["timeouts"].as_u64()), (Some(0), Some(0), Some(0)));
    let sent = c["sent"].as_u64().unwrap();
    assert!(sent > 0);
    // Every ping was answered, and each connection also received its welcome.
    assert_eq!(c["received"].as_u64().unwrap(), sent + 4);
    assert_eq!(counter(&server, msgs) - m0, sent, "server counted the pings the client sent");
    assert_eq!(counter(&server, conns) - c0, 4);
    let events = r["events"].as_u64().unwrap();
    assert!(events > 0 && events <= sent);
    assert_eq!(r["latencyUs"]["count"].as_u64(), Some(events));
    assert!(r["server"]["cpuUsPerEvent"].as_f64().is_some(), "{}", r["server"]);
    assert!(r["server"]["rssKibEnd"].as_u64().unwrap() > 0);
    assert_eq!(std::fs::read(&png).unwrap()[..4], *b"\x89PNG");

    // Echo, open loop.
    let m0 = counter(&server, msgs);
    let mut args = vec!["echo", url.as_str(), "--connections", "3", "--rate", "300"];
    args.extend(common);
    let r = bench(dir.path(), &args);
    assert_eq!(r["mode"], "open");
    assert_eq!(r["counts"]["lost"], 0);
    assert_eq!(counter(&server, msgs) - m0, r["counts"]["sent"].as_u64().unwrap());

    // Fan-out: 5 subscriptions + the publishes reached the server; every subscriber got every publish.
    let m0 = counter(&server, msgs);
    let mut args = vec!["fanout", url.as_str(), "--connections", "5"];
    args.extend(common);
    let r = bench(dir.path(), &args);
    let c = &r["counts"];
    let sent = c["sent"].as_u64().unwrap();
    assert_eq!(c["lost"], 0);
    assert_eq!(c["connectionsOpened"], 6);
    assert_eq!(counter(&server, msgs) - m0, sent);
    let publishes = sent - 5;
    // Welcomes (6) + subscribed acks (5) + one delivery per subscriber per publish.
    assert_eq!(c["received"].as_u64().unwrap(), 6 + 5 + publishes * 5);

    // Connect storm: every handshake the client counted is a connection the server accepted.
    let c0 = counter(&server, conns);
    let mut args = vec!["connect", url.as_str(), "--connections", "4"];
    args.extend(common);
    let r = bench(dir.path(), &args);
    let opened = r["counts"]["connectionsOpened"].as_u64().unwrap();
    assert!(opened > 0);
    assert_eq!(r["counts"]["connectionsFailed"], 0);
    assert_eq!(counter(&server, conns) - c0, opened);
}
