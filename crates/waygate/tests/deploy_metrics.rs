//! Every waygate metric named in `deploy/prometheus/alerts.yaml` and `deploy/grafana/waygate.json`
//! is exported by the real binary: checked against the live `/metrics` of `waygate serve` and of
//! `waygate worker` (on the local RabbitMQ). Names that only appear once an event happened (the
//! ingestor's, which needs an upstream gateway, and labelled counters with no sample yet) must at
//! least be registered by name in the crates' source; the test prints which were checked how.
//! Metrics from outside waygate (`up`, cAdvisor, kube-state-metrics) are checked by
//! scripts/check_deploy.py, which also rejects any name it cannot attribute.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Server, waygate};

const PREFIXES: &[&str] = &["waygate_", "terminal_", "ws_notifications_"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Metric-looking identifiers with waygate's prefixes anywhere in `text`.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if boundary && PREFIXES.iter().any(|p| text[i..].starts_with(p)) {
            let end = text[i..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .map_or(text.len(), |n| i + n);
            out.insert(text[i..end].to_owned());
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

fn exported(metrics_text: &str) -> BTreeSet<String> {
    metrics_text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn source_literals() -> String {
    let mut text = String::new();
    let mut stack = vec![repo().join("crates")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "tests" && n != "target") {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|e| e == "rs") {
                text.push_str(&std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    text
}

/// `waygate worker` on the local broker, for the worker, queue and DLQ gauges.
fn worker_metrics(dir: &Path) -> Option<String> {
    let amqp = std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let ready = dir.join("worker.ready.json");
    let mut child = waygate(dir)
        .args(["worker", "--handler", "http://127.0.0.1:9/unused", "--namespace", "waygate-deploycheck"])
        .args(["--metrics-addr", "127.0.0.1:0", "--ready-file"])
        .arg(&ready)
        .env("AMQP_URL", &amqp)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("worker starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut text = None;
    while Instant::now() < deadline {
        if let Ok(info) = std::fs::read_to_string(&ready) {
            let info: serde_json::Value = serde_json::from_str(&info).unwrap();
            let addr = info["metrics"].as_str().unwrap().to_owned();
            // The queue gauges appear after the first poll (every 5 s).
            let t = http_get(&addr, "/metrics");
            if t.contains("waygate_dlq_depth") {
                text = Some(t);
                break;
            }
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    text
}

#[test]
fn every_metric_in_alerts_and_dashboard_is_exported_by_waygate() {
    let alerts = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yaml")).unwrap();
    let dashboard = std::fs::read_to_string(repo().join("deploy/grafana/waygate.json")).unwrap();
    let used: BTreeSet<String> = names_in(&alerts).into_iter().chain(names_in(&dashboard)).collect();
    assert!(used.len() > 30, "suspiciously few metric names found: {used:?}");

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    // Touch a few paths so labelled HTTP counters have a series.
    let _ = http_get(&server.http, "/readyz");
    let _ = http_get(&server.http, "/no-such-page");
    let mut live = exported(&http_get(&server.http, "/metrics"));
    drop(server);
    let worker = worker_metrics(dir.path());
    assert!(worker.is_some(), "waygate worker did not export queue metrics (is RabbitMQ running?)");
    live.extend(exported(&worker.unwrap()));

    let source = source_literals();
    let mut by_source = Vec::new();
    let mut missing = Vec::new();
    for name in &used {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| live.contains(*b) || source.contains(&format!("\"{b}\""))))
            .unwrap_or(name);
        if live.contains(base) {
            continue;
        }
        if source.contains(&format!("\"{base}\"")) {
            by_source.push(base.to_owned());
        } else {
            missing.push(base.to_owned());
        }
    }
    eprintln!("live /metrics: {} names; checked against source only: {by_source:?}", live.len());
    assert!(missing.is_empty(), "metrics used in deploy/ but not exported by waygate: {missing:?}");
}

#[test]
fn kubernetes_grace_period_exceeds_prestop_plus_drain() {
    let base = repo().join("deploy/k8s/base");
    let deployment = std::fs::read_to_string(base.join("deployment.yaml")).unwrap();
    let config = std::fs::read_to_string(base.join("configmap.yaml")).unwrap();
    let num_after = |text: &str, key: &str| -> u64 {
        let rest = &text[text.find(key).unwrap_or_else(|| panic!("{key} missing")) + key.len()..];
        rest.trim_start_matches([':', ' ', '"', '['])
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let grace = num_after(&deployment, "terminationGracePeriodSeconds");
    let drain = num_after(&config, "TERMINAL_GATEWAY_DRAIN_TIMEOUT_SECONDS");
    let pre_stop = num_after(&deployment, "command: [\"sleep\", \"");
    assert_eq!(grace, 45);
    assert_eq!(drain, 30);
    assert!(grace > pre_stop + drain, "grace {grace} must exceed preStop {pre_stop} + drain {drain}");
}
