//! The real process: SIGTERM drain and exit code, JSON logs, restart persistence (SQLite).

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn sigterm_drains_then_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[("TERMINAL_GATEWAY_DRAIN_TIMEOUT_SECONDS", "3")]);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.http)).await.unwrap();
    let welcome = ws.next().await.unwrap().unwrap();
    assert!(welcome.to_text().unwrap().contains("welcome"));

    let started = std::time::Instant::now();
    server.signal(libc::SIGTERM);
    let client = reqwest::Client::new();
    let mut ready = 0;
    for _ in 0..200 {
        ready = client.get(server.url("/readyz")).send().await.map(|r| r.status().as_u16()).unwrap_or(0);
        if ready == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ready, 503, "readiness turns 503 while draining");
    match tokio_tungstenite::connect_async(format!("ws://{}/ws", server.http)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 503);
            let body: Value = serde_json::from_slice(res.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["error"]["code"], "service_unavailable");
        }
        other => panic!("new upgrade during drain: {other:?}"),
    }
    ws.send(Message::text(r#"{"action":"ping"}"#)).await.unwrap();
    let pong = loop {
        match ws.next().await.unwrap().unwrap() {
            Message::Text(t) => break t,
            _ => continue,
        }
    };
    assert!(pong.contains("pong"), "existing connection still served");
    let close = loop {
        match ws.next().await {
            Some(Ok(Message::Close(Some(f)))) => break f,
            Some(Ok(_)) => continue,
            other => panic!("expected close, got {other:?}"),
        }
    };
    assert_eq!((u16::from(close.code), close.reason.as_str()), (1001, "gateway draining"));
    let status = server.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(3), "waited for the drain window ({took:?})");

    // Logs are one JSON object per line with the documented fields.
    let logs = server.logs();
    for line in logs.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for key in ["ts", "level", "service", "instance_id", "msg"] {
            assert!(v.get(key).is_some(), "{key} missing in {line}");
        }
        assert_eq!(v["service"], "waygate");
    }
    assert!(logs.contains("drain started"));
}

#[tokio::test]
async fn an_idle_server_exits_at_once_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[tokio::test]
async fn a_killed_embedded_server_keeps_devices_and_finished_calls() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let token = server.new_user_token(dir.path(), "keep@example.com", &[]).await;
    let client = reqwest::Client::new();
    let (device_id, session) = server.register_device(&token, "Keeper").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/api/gateway/ws", server.http)).await.unwrap();
    ws.next().await.unwrap().unwrap();
    ws.send(Message::text(json!({"type": "register", "deviceId": device_id, "sessionToken": session}).to_string()))
        .await
        .unwrap();
    ws.next().await.unwrap().unwrap();
    let device = tokio::spawn(async move {
        while let Some(Ok(Message::Text(t))) = ws.next().await {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "tool_call" {
                let reply = json!({"type": "tool_result", "callId": v["callId"], "ok": true, "result": "kept"});
                ws.send(Message::text(reply.to_string())).await.unwrap();
            }
        }
    });
    let call: Value = client
        .post(server.url("/api/gateway/tool-calls"))
        .bearer_auth(&token)
        .json(&json!({"capability": "desktop", "tool": "t"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(call["status"], "completed");

    let mut server = server;
    server.signal(libc::SIGKILL);
    server.wait_exit(Duration::from_secs(5));
    device.abort();

    let server = Server::start(dir.path(), &[]);
    let devices: Value =
        client.get(server.url("/api/gateway")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(devices["devices"][0]["id"], device_id, "device and session survive the kill");
    let view: Value = client
        .get(server.url(&format!("/api/gateway/tool-calls/{}", call["id"].as_str().unwrap())))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["status"], "completed");
    assert_eq!(view["result"], "kept");
}
