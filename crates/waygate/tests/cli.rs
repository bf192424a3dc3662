//! The command line: exit codes, config check output, user creation from stdin.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::*;

#[test]
fn config_check_exits_64_naming_every_bad_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = waygate(dir.path()).args(["config", "check"]).env("GATEWAY_DISPATCH_POLL_MS", "50").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("GATEWAY_DISPATCH_POLL_MS"), "{err}");
    assert!(out.stdout.is_empty());

    let out = waygate(dir.path())
        .args(["config", "check"])
        .env("GATEWAY_DISPATCH_POLL_MS", "50")
        .env("WEBSOCKET_PORT", "eighty")
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("GATEWAY_DISPATCH_POLL_MS") && err.contains("WEBSOCKET_PORT"), "{err}");
}

#[test]
fn config_check_prints_toml_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.toml"), "websocket_port = 9999\n").unwrap();
    let out = waygate(dir.path())
        .args(["--config", "w.toml", "config", "check"])
        .env("AGENT_CONTROL_PLANE_TOKEN", "super-secret-value")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains("super-secret-value"));
    assert!(text.contains("agent_control_plane_token = \"<redacted>\"  # env"), "{text}");
    assert!(text.contains("websocket_port = 9999  # file"), "{text}");
}

#[test]
fn serve_refuses_cluster_mode_without_postgres_and_redis() {
    let dir = tempfile::tempdir().unwrap();
    let out = waygate(dir.path()).args(["serve"]).env("WAYGATE_CLUSTER", "true").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("DATABASE_URL") && err.contains("REDIS_URL"), "{err}");
}

#[test]
fn user_add_reads_the_password_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let add = |email: &str, password: &str| {
        let mut child = waygate(dir.path())
            .args(["user", "add", email])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(password.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let ok = add("ops@example.com", "a-long-password\n");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("created user ops@example.com"));
    let dup = add("ops@example.com", "a-long-password\n");
    assert_eq!(dup.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    let short = add("x@example.com", "short\n");
    assert_eq!(short.status.code(), Some(1));
    assert!(dir.path().join("waygate.db").exists(), "embedded default database file");
}

#[test]
fn migrate_applies_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let out = waygate(dir.path()).args(["migrate"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn the_agents_example_config_needs_a_broker() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{}/../../examples/agents.toml", env!("CARGO_MANIFEST_DIR"));
    let out = waygate(dir.path()).args(["--config", &config, "config", "check"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("routes[0]: target amqp://agents.pm needs AMQP_URL"), "{err}");
    let out = waygate(dir.path())
        .args(["--config", &config, "config", "check"])
        .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("amqp_url = \"amqp://guest:<redacted>@127.0.0.1:5672/%2f\""), "{text}");
    for queue in ["agents.pm", "agents.dev", "agents.qa", "agents.ops"] {
        assert!(text.contains(&format!("target = \"amqp://{queue}\"")), "{text}");
    }
}
