//! The WebSocket connection core: welcome, ping, errors, limits and device registration.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn welcome_and_ping_pong_echo_the_request_id() {
    let app = spawn_app().await;
    for path in ["/ws", "/ws/test", "/websocket", "/websocket/anything"] {
        let (mut ws, welcome) = connect_welcomed(&app.ws_url(path)).await;
        assert_eq!(welcome["protocolVersion"], 1);
        assert_eq!(welcome["connectionId"].as_str().unwrap().len(), 32);
        assert_eq!(welcome["heartbeatIntervalMs"], 25_000);
        assert!(welcome["serverTime"].as_str().unwrap().ends_with('Z'));
        send_json(&mut ws, json!({"action": "ping"})).await;
        let pong = recv_json(&mut ws).await;
        assert_eq!(pong["type"], "pong", "{path}");
        assert!(pong["ts"].as_i64().unwrap() > 1_700_000_000_000);
        assert!(pong.get("id").is_none());
        send_json(&mut ws, json!({"action": "ping", "id": "req-7"})).await;
        assert_eq!(recv_json(&mut ws).await["id"], "req-7");
        send_json(&mut ws, json!({"action": "ping", "id": {"nested": [1, 2]}})).await;
        assert_eq!(recv_json(&mut ws).await["id"], json!({"nested": [1, 2]}));
    }
    app.stop().await;
}

#[tokio::test]
async fn malformed_and_unknown_messages_get_error_frames_and_keep_the_connection() {
    let app = spawn_app().await;
    let (mut ws, _) = connect_welcomed(&app.ws_url("/ws")).await;
    ws.send(Message::text("{not json")).await.unwrap();
    let err = recv_json(&mut ws).await;
    assert_eq!(err["type"], "error");
    assert_envelope(&err, "bad_request");

    ws.send(Message::text("[1,2,3]")).await.unwrap();
    assert_envelope(&recv_json(&mut ws).await, "bad_request");

    send_json(&mut ws, json!({"action": "fly", "id": 42})).await;
    let err = recv_json(&mut ws).await;
    assert_envelope(&err, "unknown_action");
    assert_eq!(err["id"], 42);

    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_envelope(&recv_json(&mut ws).await, "bad_request");

    send_json(&mut ws, json!({"action": "ping", "id": 1})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "pong", "still open");
    app.stop().await;
}

#[tokio::test]
async fn device_paths_accept_device_messages_and_ping_only() {
    let app = spawn_app().await;
    let (mut ws, _) = connect_welcomed(&app.ws_url("/api/gateway/ws")).await;
    send_json(&mut ws, json!({"action": "subscribe", "channel": "news", "id": "s"})).await;
    let err = recv_json(&mut ws).await;
    assert_envelope(&err, "unknown_action");
    assert_eq!(err["id"], "s");
    // A device's liveness probe (the SDK's heartbeat) is answered like on realtime paths.
    send_json(&mut ws, json!({"action": "ping", "id": "p"})).await;
    let pong = recv_json(&mut ws).await;
    assert_eq!((pong["type"].as_str(), pong["id"].as_str()), (Some("pong"), Some("p")));
    app.stop().await;
}

#[tokio::test]
async fn oversize_message_closes_with_1009() {
    let app = spawn_app_with(&[("WAYGATE_MAX_MESSAGE_BYTES", "1024")]).await;
    let (mut ws, _) = connect_welcomed(&app.ws_url("/ws")).await;
    send_json(&mut ws, json!({"action": "ping", "pad": "x".repeat(900)})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "pong", "under the limit is fine");
    send_json(&mut ws, json!({"action": "ping", "pad": "x".repeat(1100)})).await;
    assert_eq!(recv_close(&mut ws).await.0, 1009);
    let metrics = app.metrics().await;
    assert_eq!(metric(&metrics, "waygate_ws_closed_total{code=\"1009\"}"), 1.0);
    app.stop().await;
}

#[tokio::test]
async fn register_acks_on_every_device_path_and_both_listeners() {
    let app = spawn_app().await;
    let user = app.user("d@example.com").await;
    let reg = app.register_device(&user, &["desktop"]).await;
    let (id, token) = (reg["deviceId"].as_str().unwrap(), reg["sessionToken"].as_str().unwrap());
    let urls = [
        app.ws_url("/ws"),
        app.ws_url("/ws/device"),
        app.ws_url("/api/gateway/ws"),
        app.ws_url("/api/gateway/ws/v1"),
        format!("ws://{}/ws", app.ws),
        format!("ws://{}/api/gateway/ws", app.ws),
    ];
    for url in urls {
        let mut ws = device_online(&url, id, token).await;
        let _ = ws.close(None).await;
    }
    let gw: Value = app.client.get(app.url("/api/gateway/health")).send().await.unwrap().json().await.unwrap();
    assert!(gw["gateway"]["connectedDevices"].as_u64().unwrap() <= 1);
    app.stop().await;
}

#[tokio::test]
async fn register_with_a_bad_token_gets_token_invalid_and_4401() {
    let app = spawn_app().await;
    let user = app.user("d@example.com").await;
    let reg = app.register_device(&user, &["desktop"]).await;
    for (device, token) in [(reg["deviceId"].as_str().unwrap(), "wrong-token"), ("no-such-device", "x")] {
        let (mut ws, _) = connect_welcomed(&app.ws_url("/api/gateway/ws")).await;
        send_json(
            &mut ws,
            json!({"type": "register", "deviceId": device, "sessionToken": token, "protocolVersion": 1}),
        )
        .await;
        let err = recv_json(&mut ws).await;
        assert_eq!(err["type"], "error");
        assert_envelope(&err, "token_invalid");
        assert_eq!(recv_close(&mut ws).await.0, 4401);
    }
    let metrics = app.metrics().await;
    assert_eq!(metric(&metrics, "waygate_gateway_device_registrations_total{outcome=\"invalid\"}"), 2.0);
    app.stop().await;
}

#[tokio::test]
async fn a_second_connection_for_the_same_device_replaces_the_first() {
    let app = spawn_app().await;
    let user = app.user("d@example.com").await;
    let reg = app.register_device(&user, &["desktop"]).await;
    let (id, token) = (reg["deviceId"].as_str().unwrap(), reg["sessionToken"].as_str().unwrap());
    let mut first = device_online(&app.ws_url("/ws"), id, token).await;
    let _second = device_online(&app.ws_url("/ws"), id, token).await;
    assert_eq!(recv_close(&mut first).await.0, 4409);
    let gw: Value = app.client.get(app.url("/api/gateway/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(gw["gateway"]["connectedDevices"], 1);
    app.stop().await;
}

#[tokio::test]
async fn limits_refuse_before_the_upgrade_with_the_envelope() {
    let app = spawn_app_with(&[("WAYGATE_MAX_CONNECTIONS_PER_IP", "2")]).await;
    let (_a, _) = connect_welcomed(&app.ws_url("/ws")).await;
    let (_b, _) = connect_welcomed(&app.ws_url("/ws")).await;
    let (status, body) = refused_upgrade(&app.ws_url("/ws")).await;
    assert_eq!(status, 429);
    assert_envelope(&body, "rate_limited");
    app.stop().await;

    let app = spawn_app_with(&[("WAYGATE_MAX_CONNECTIONS", "1")]).await;
    let (a, _) = connect_welcomed(&app.ws_url("/ws")).await;
    let (status, body) = refused_upgrade(&app.ws_url("/ws")).await;
    assert_eq!(status, 503);
    assert_envelope(&body, "service_unavailable");
    drop(a);
    // The slot is released when the connection ends.
    eventually("slot released", || async { tokio_tungstenite::connect_async(app.ws_url("/ws")).await.is_ok() }).await;
    let metrics = app.metrics().await;
    assert!(metric(&metrics, "waygate_ws_upgrade_rejected_total{reason=\"max_connections\"}") >= 1.0);
    app.stop().await;
}

#[tokio::test]
async fn origins_outside_the_allow_list_are_refused() {
    let app = spawn_app_with(&[("WAYGATE_ALLOWED_ORIGINS", "https://app.example.com")]).await;
    let mut req = app.ws_url("/ws").into_client_request().unwrap();
    req.headers_mut().insert("Origin", "https://evil.example.com".parse().unwrap());
    let (status, body) = refused_upgrade_with(req).await;
    assert_eq!(status, 403);
    assert_envelope(&body, "forbidden");
    let mut req = app.ws_url("/ws").into_client_request().unwrap();
    req.headers_mut().insert("Origin", "https://app.example.com".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());
    app.stop().await;
}

#[tokio::test]
async fn plain_http_on_a_ws_path_is_a_clear_400() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/ws")).send().await.unwrap();
    assert_eq!(res.status(), 400);
    assert_envelope(&res.json().await.unwrap(), "bad_request");
    app.stop().await;
}

#[tokio::test]
async fn message_floods_get_rate_limited_then_closed_with_1008() {
    let app = spawn_app_with(&[("WAYGATE_MESSAGES_PER_SECOND", "5")]).await;
    let (mut ws, _) = connect_welcomed(&app.ws_url("/ws")).await;
    for i in 0..40 {
        // Errors are expected once the server closes; keep sending to show abuse.
        if ws.send(Message::text(json!({"action": "ping", "id": i}).to_string())).await.is_err() {
            break;
        }
    }
    let mut pongs = 0;
    let mut limited = 0;
    let close = loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                match v["type"].as_str().unwrap() {
                    "pong" => pongs += 1,
                    "error" => {
                        assert_envelope(&v, "rate_limited");
                        limited += 1;
                    }
                    other => panic!("unexpected {other}"),
                }
            }
            Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
            Some(Ok(_)) => {}
            other => panic!("unexpected end {other:?}"),
        }
    };
    assert_eq!(pongs, 10, "burst of twice the rate");
    assert_eq!(limited, 4, "refused with an error frame before the close");
    assert_eq!(close, 1008);
    app.stop().await;
}

#[tokio::test]
async fn a_peer_that_never_answers_heartbeats_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(&[("WAYGATE_HEARTBEAT_SECONDS", "1")]).await;
    // A raw client: handshake, then never read or answer a ping.
    let mut tcp = tokio::net::TcpStream::connect(app.http).await.unwrap();
    tcp.write_all(
        format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            app.http
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // The server closes after two unanswered pings: read until EOF, then look for the close.
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), tcp.read_to_end(&mut all)).await.expect("closed in time").unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    let close_at = all.windows(2).position(|w| w[0] == 0x88).expect("a close frame was sent");
    let code = u16::from_be_bytes([all[close_at + 2], all[close_at + 3]]);
    assert_eq!(code, 4408);
    app.stop().await;
}

#[tokio::test]
async fn connections_survive_many_heartbeats_while_answering_them() {
    let app = spawn_app_with(&[("WAYGATE_HEARTBEAT_SECONDS", "1")]).await;
    let (mut ws, _) = connect_welcomed(&app.ws_url("/ws")).await;
    // tungstenite answers pings while we read; five periods is well past the two-miss limit.
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut pings = 0;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(until, ws.next()).await {
        if matches!(msg, Message::Ping(_)) {
            pings += 1;
        }
    }
    assert!(pings >= 3, "server pinged {pings} times");
    send_json(&mut ws, json!({"action": "ping"})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "pong");
    app.stop().await;
}

#[tokio::test]
async fn drain_refuses_new_upgrades_and_closes_the_rest_with_1001() {
    let mut app = spawn_app_with(&[("TERMINAL_GATEWAY_DRAIN_TIMEOUT_SECONDS", "2")]).await;
    let (mut ws, _) = connect_welcomed(&app.ws_url("/ws")).await;
    let http = app.http;
    app.begin_shutdown();
    let client = reqwest::Client::new();
    eventually("readyz turns 503", || {
        let client = client.clone();
        async move { client.get(format!("http://{http}/readyz")).send().await.map(|r| r.status() == 503).unwrap_or(false) }
    })
    .await;
    let ready: Value = client.get(format!("http://{http}/readyz")).send().await.unwrap().json().await.unwrap();
    assert_envelope(&ready, "service_unavailable");
    let (status, body) = refused_upgrade(&format!("ws://{http}/ws")).await;
    assert_eq!(status, 503);
    assert_envelope(&body, "service_unavailable");
    // The open connection keeps working during the drain window.
    send_json(&mut ws, json!({"action": "ping"})).await;
    assert_eq!(recv_json(&mut ws).await["type"], "pong");
    assert_eq!(recv_close(&mut ws).await, (1001, "gateway draining".to_owned()));
    app.stop().await;
}

#[tokio::test]
async fn messages_sent_right_behind_the_upgrade_request_are_handled() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let mut tcp = tokio::net::TcpStream::connect(app.http).await.unwrap();
    let ping = br#"{"action":"ping","id":"early"}"#;
    let mut bytes = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        app.http
    )
    .into_bytes();
    bytes.extend_from_slice(&[0x81, 0x80 | ping.len() as u8, 0, 0, 0, 0]);
    bytes.extend_from_slice(ping);
    tcp.write_all(&bytes).await.unwrap(); // one write: request and frame arrive together
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\"early\"") {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut buf)).await.expect("pong in time").unwrap();
        assert!(n > 0, "closed before answering: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    app.stop().await;
}
