//! The examples in the repository run against a real server: seed 002's Python client and the
//! README tour. They need Python's `websockets` (scripts/python-deps.sh); without it they skip
//! loudly, and fail under CI=true.

mod common;

use std::process::Command;

use common::*;

fn python_websockets() -> bool {
    let ok = Command::new("python3").args(["-c", "import websockets"]).status().is_ok_and(|s| s.success());
    if !ok {
        assert!(!waygate_testkit::in_ci(), "python3 with websockets is required under CI=true");
        eprintln!("\n*** SKIP: python3 `websockets` missing (bash scripts/python-deps.sh) ***\n");
    }
    ok
}

fn repo(path: &str) -> String {
    format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn seed_002_python_client_prints_the_welcome_and_the_pong() {
    if !python_websockets() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let out = Command::new("python3")
        .arg(repo("examples/seed002_client.py"))
        .arg(format!("ws://{}/ws", server.http))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let mut lines = text.lines();
    let welcome = lines.next().unwrap().strip_prefix("Connected: ").unwrap();
    let pong = lines.next().unwrap().strip_prefix("Pong: ").unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(welcome).unwrap()["type"], "welcome");
    assert_eq!(serde_json::from_str::<serde_json::Value>(pong).unwrap()["type"], "pong");
}

#[test]
fn the_readme_tour_runs() {
    if !python_websockets() || Command::new("curl").arg("--version").output().is_err() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let out = Command::new("bash")
        .arg(repo("examples/tour.sh"))
        .current_dir(dir.path())
        .env("BASE", format!("http://{}", server.http))
        .env("WAYGATE", bin())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(r#""status":"completed""#), "{text}");
    assert!(text.contains(r#""code":"tool_call_failed""#), "{text}");
    assert!(text.contains(r#""completedLastHour":1"#), "{text}");
}
