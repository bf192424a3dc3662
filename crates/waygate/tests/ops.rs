//! `waygate smoke` and `waygate probe` run as an operator would: the real binary against a real
//! `waygate serve`, judged by exit code, output and what the server holds afterwards.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;
use serde_json::Value;

fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = waygate(dir);
    cmd.args(args).envs(env.iter().copied());
    cmd.output().expect("waygate runs")
}

fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "JSON on stdout ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn statuses(report: &Value) -> Vec<(String, String)> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_owned(), s["status"].as_str().unwrap().to_owned()))
        .collect()
}

async fn devices(server: &Server, token: &str) -> Vec<Value> {
    let res = reqwest::Client::new().get(server.url("/api/gateway")).bearer_auth(token).send().await.unwrap();
    let body: Value = res.json().await.unwrap();
    body["devices"].as_array().cloned().unwrap_or_else(|| panic!("device list: {body}"))
}

#[tokio::test]
async fn smoke_passes_every_step_and_leaves_no_device_behind() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let token = server.new_user_token(dir.path(), "smoke@example.com", &[]).await;
    let base = server.url("");
    let env = [
        ("GATEWAY_SMOKE_BASE_URL", base.as_str()),
        ("TEST_USER_EMAIL", "smoke@example.com"),
        ("TEST_USER_PASSWORD", "password123"),
    ];
    let out = run(dir.path(), &["smoke", "--json"], &env);
    let r = report(&out);
    assert!(out.status.success(), "{r}");
    assert_eq!(r["ok"], true);
    let steps = statuses(&r);
    let names: Vec<&str> = steps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["login", "health", "register", "list", "ws", "delete"]);
    assert!(steps.iter().all(|(_, s)| s == "ok"), "{steps:?}");
    assert!(devices(&server, &token).await.is_empty(), "the smoke device is deleted");

    // The line format: one line per step.
    let out = run(dir.path(), &["smoke"], &env);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().filter(|l| l.split_whitespace().nth(1) == Some("ok")).count(), 6, "{text}");
}

/// Seed 000's outage shape: the device API works but the advertised WebSocket endpoint does
/// not. Smoke fails at `ws`, says so, and still deletes the device it registered.
#[tokio::test]
async fn smoke_fails_at_the_broken_step_and_still_deletes_its_device() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[("GATEWAY_WS_PUBLIC_URL", "ws://127.0.0.1:1/api/gateway/ws")]);
    let token = server.new_user_token(dir.path(), "broken@example.com", &[]).await;
    let base = server.url("");
    let out = run(
        dir.path(),
        &["smoke", "--json", "--base-url", &base, "--email", "broken@example.com", "--password", "password123"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let r = report(&out);
    assert_eq!(r["failedStep"], "ws", "{r}");
    let steps: std::collections::BTreeMap<_, _> = statuses(&r).into_iter().collect();
    assert_eq!(steps["register"], "ok");
    assert_eq!(steps["ws"], "fail");
    assert_eq!(steps["delete"], "ok", "delete runs after a failure");
    assert!(String::from_utf8_lossy(&out.stderr).contains("smoke failed at step ws"));
    assert!(devices(&server, &token).await.is_empty(), "nothing left behind");

    // A refused request shows the server's envelope: a session cookie that is not valid.
    let out = run(dir.path(), &["smoke", "--json", "--base-url", &base, "--cookie", "waygate_session=forged"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let r = report(&out);
    assert_eq!(r["failedStep"], "register", "{r}");
    let step = r["steps"].as_array().unwrap().iter().find(|s| s["name"] == "register").unwrap().clone();
    assert_eq!(step["httpStatus"].as_u64().or(step["http_status"].as_u64()), Some(401), "{step}");
    assert_eq!(step["error"]["error"]["code"], "unauthorized", "{step}");
}

#[tokio::test]
async fn probe_thresholds_decide_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let ws = format!("ws://{}", server.http);

    let out = run(dir.path(), &["probe", &ws, "--json", "--concurrency", "2"], &[]);
    let r = report(&out);
    assert!(out.status.success(), "{r}");
    assert_eq!(r["summary"]["attempts"], 6, "three default paths × 2");
    assert_eq!(r["summary"]["successPercent"], 100.0);
    assert!(r["attempts"].as_array().unwrap().iter().all(|a| a["rttKind"] == "application"), "{r}");

    // Round trips cannot beat 0 ms: the RTT threshold alone fails the run.
    let out = run(dir.path(), &["probe", &ws, "--json", "--max-rtt-ms", "0"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let r = report(&out);
    assert_eq!(r["summary"]["successPercent"], 100.0);
    assert!(r["violations"].as_array().unwrap().iter().any(|v| v.as_str().unwrap().contains("rtt")), "{r}");

    // A path that is not a WebSocket endpoint counts as a failed attempt.
    let out = run(dir.path(), &["probe", &ws, "--json", "--paths", "/ws,/nope"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(report(&out)["summary"]["successPercent"], 50.0);

    // Nothing listening: 0 % and exit 1, not a hang.
    let out = run(dir.path(), &["probe", "ws://127.0.0.1:1", "--json", "--timeout", "2s"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(report(&out)["summary"]["successPercent"], 0.0);
}
