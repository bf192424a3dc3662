//! Health, auth, errors and the device registration API over real HTTP.

mod common;

use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn health_endpoints_answer_without_auth() {
    let app = spawn_app().await;
    for path in ["/health", "/healthz"] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    let ready: Value = app.client.get(app.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    let gw: Value = app.client.get(app.url("/api/gateway/health")).send().await.unwrap().json().await.unwrap();
    assert_eq!(gw["status"], "ok");
    assert!(gw["instanceId"].is_string());
    assert_eq!(gw["gateway"]["connectedDevices"], 0);
    for key in ["pending", "processing", "completedLastHour", "failedLastHour", "expiredLastHour"] {
        assert_eq!(gw["gateway"]["dispatchQueue"][key], 0, "{key}");
    }
    let metrics = app.metrics().await;
    for name in [
        "waygate_ws_connections_total",
        "waygate_gateway_tool_calls_total",
        "terminal_token_replay_rejected_total",
        "ws_notifications_write_errors_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    // The standalone listener serves its health path and nothing of the API.
    let ws_health = app.client.get(format!("http://{}/health", app.ws)).send().await.unwrap();
    assert_eq!(ws_health.status(), 200);
    let api = app.client.get(format!("http://{}/api/gateway/health", app.ws)).send().await.unwrap();
    assert_eq!(api.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn standalone_health_path_is_configurable() {
    let app = spawn_app_with(&[("GATEWAY_WS_HEALTH_PATH", "/ws-health")]).await;
    let ok = app.client.get(format!("http://{}/ws-health", app.ws)).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn errors_use_the_envelope_and_keep_the_correlation_id() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/nope")).header("X-Correlation-ID", "corr-123").send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["x-correlation-id"], "corr-123");
    let trace = res.headers()["x-trace-id"].to_str().unwrap().to_owned();
    let body: Value = res.json().await.unwrap();
    assert_envelope(&body, "not_found");
    assert_eq!(body["error"]["correlation_id"], "corr-123");
    assert_eq!(body["error"]["details"]["trace_id"], trace);

    let res = app.client.get(app.url("/api/gateway/devices")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_envelope(&res.json().await.unwrap(), "bad_request");
    app.stop().await;
}

#[tokio::test]
async fn login_sets_a_cookie_and_wrong_passwords_are_refused() {
    let app = spawn_app().await;
    let user = app.user("ada@example.com").await;
    let bad = app
        .client
        .post(app.url("/api/auth/login"))
        .json(&json!({"email": "ada@example.com", "password": "wrong-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    assert_envelope(&bad.json().await.unwrap(), "unauthorized");
    let malformed = app.client.post(app.url("/api/auth/login")).body("{not json").send().await.unwrap();
    assert_eq!(malformed.status(), 400);
    assert_envelope(&malformed.json().await.unwrap(), "bad_request");

    let ok = app
        .client
        .post(app.url("/api/auth/login"))
        .json(&json!({"email": "ada@example.com", "password": "password123"}))
        .send()
        .await
        .unwrap();
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("waygate_session=") && cookie.contains("HttpOnly"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();
    let me: Value =
        app.client.get(app.url("/api/auth/me")).header("Cookie", session).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["email"], "ada@example.com");
    let me = app.get(&user, "/api/auth/me").await;
    assert_eq!(me.status(), 200, "bearer works too");
    let anon = app.client.get(app.url("/api/gateway")).bearer_auth("made-up").send().await.unwrap();
    assert_eq!(anon.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn device_registration_validates_every_field() {
    let app = spawn_app().await;
    let user = app.user("v@example.com").await;
    let cases = [
        (json!({"name": "", "platform": "web", "capabilities": ["a"]}), "name"),
        (json!({"name": "x".repeat(129), "platform": "web", "capabilities": ["a"]}), "name"),
        (json!({"name": "n", "platform": "", "capabilities": ["a"]}), "platform"),
        (json!({"name": "n", "platform": "p".repeat(33), "capabilities": ["a"]}), "platform"),
        (json!({"name": "n", "platform": "web", "capabilities": []}), "capabilities"),
        (
            json!({"name": "n", "platform": "web", "capabilities": (0..33).map(|i| format!("c{i}")).collect::<Vec<_>>()}),
            "capabilities",
        ),
        (json!({"name": "n", "platform": "web", "capabilities": ["Has Space"]}), "capability"),
        (json!({"name": "n", "platform": "web", "capabilities": ["a".repeat(65)]}), "capability"),
        (json!({"name": "n", "platform": "web"}), "capabilities"),
    ];
    for (body, field) in cases {
        let res = app.post(&user, "/api/gateway/devices", body.clone()).await;
        assert_eq!(res.status(), 400, "{body}");
        let v: Value = res.json().await.unwrap();
        assert_envelope(&v, "bad_request");
        assert!(v["error"]["message"].as_str().unwrap().contains(field), "{v} should mention {field}");
    }
    let list: Value = app.get(&user, "/api/gateway").await.json().await.unwrap();
    assert_eq!(list["devices"].as_array().unwrap().len(), 0, "nothing was created");
    app.stop().await;
}

#[tokio::test]
async fn devices_are_registered_listed_and_private_to_their_user() {
    let app = spawn_app().await;
    let ada = app.user("ada@example.com").await;
    let bob = app.user("bob@example.com").await;
    let reg = app.register_device(&ada, &["desktop", "fs.read"]).await;
    let id = reg["deviceId"].as_str().unwrap();
    assert_eq!(reg["device"]["id"], id);
    assert_eq!(reg["device"]["status"], "offline");
    assert_eq!(reg["device"]["capabilities"], json!(["desktop", "fs.read"]));
    assert_eq!(reg["protocolVersion"], 1);
    assert_eq!(reg["wsEndpoint"], format!("ws://{}/api/gateway/ws", app.http), "built from the request's Host");
    assert_eq!(reg["sessionToken"].as_str().unwrap().len(), 43);
    assert!(reg["device"]["createdAt"].as_str().unwrap().ends_with('Z'));

    let list: Value = app.get(&ada, "/api/gateway").await.json().await.unwrap();
    assert_eq!(list["devices"][0]["id"], id);
    assert_eq!(list["devices"][0]["lastSeenAt"], Value::Null);
    let mine = app.get(&ada, &format!("/api/gateway/devices/{id}")).await;
    assert_eq!(mine.status(), 200);

    for res in [
        app.get(&bob, &format!("/api/gateway/devices/{id}")).await,
        app.delete(&bob, &format!("/api/gateway/devices/{id}")).await,
    ] {
        assert_eq!(res.status(), 404);
        assert_envelope(&res.json().await.unwrap(), "not_found");
    }
    let theirs: Value = app.get(&bob, "/api/gateway").await.json().await.unwrap();
    assert!(theirs["devices"].as_array().unwrap().is_empty());

    // Online while its socket is registered; delete closes the socket with 4404.
    let mut ws = device_online(&app.ws_url("/api/gateway/ws"), id, reg["sessionToken"].as_str().unwrap()).await;
    let dev: Value = app.get(&ada, &format!("/api/gateway/devices/{id}")).await.json().await.unwrap();
    assert_eq!(dev["status"], "online");
    assert!(dev["lastSeenAt"].is_string());
    let del = app.delete(&ada, &format!("/api/gateway/devices/{id}")).await;
    assert_eq!(del.status(), 204);
    assert_eq!(recv_close(&mut ws).await, (4404, "device deleted".to_owned()));
    assert_eq!(app.get(&ada, &format!("/api/gateway/devices/{id}")).await.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn ws_endpoint_follows_the_configured_strategy() {
    let app = spawn_app_with(&[("GATEWAY_WS_PUBLIC_URL", "wss://gw.example.com/api/gateway/ws")]).await;
    let user = app.user("a@example.com").await;
    assert_eq!(app.register_device(&user, &["x"]).await["wsEndpoint"], "wss://gw.example.com/api/gateway/ws");
    app.stop().await;

    let app = spawn_app_with(&[
        ("GATEWAY_WS_PUBLIC_HOST", "ws.example.com"),
        ("GATEWAY_WS_PUBLIC_PORT", "3001"),
        ("GATEWAY_WS_PATH", "/ws"),
    ])
    .await;
    let user = app.user("a@example.com").await;
    assert_eq!(app.register_device(&user, &["x"]).await["wsEndpoint"], "ws://ws.example.com:3001/ws");
    app.stop().await;

    // Behind a trusted load balancer terminating TLS, the scheme follows X-Forwarded-Proto.
    let app = spawn_app_with(&[("WAYGATE_TRUSTED_PROXIES", "127.0.0.1/32")]).await;
    let user = app.user("a@example.com").await;
    let res = app
        .client
        .post(app.url("/api/gateway/devices"))
        .bearer_auth(&user.token)
        .header("Host", "app.example.com")
        .header("X-Forwarded-Proto", "https")
        .json(&json!({"name": "n", "platform": "web", "capabilities": ["x"]}))
        .send()
        .await
        .unwrap();
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["wsEndpoint"], "wss://app.example.com/api/gateway/ws");
    app.stop().await;
}

#[tokio::test]
async fn config_reload_needs_the_control_plane_token() {
    // Reload re-reads the file named at start, so build the app from layers with a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("waygate.toml");
    std::fs::write(&file, "waygate_max_connections = 50\n").unwrap();
    let db = format!("sqlite://{}", dir.path().join("w.db").display());
    let flags = [
        ("WEBSOCKET_HOST", "127.0.0.1"),
        ("WEBSOCKET_PORT", "0"),
        ("GATEWAY_WS_PORT", "off"),
        ("DATABASE_URL", db.as_str()),
        ("AGENT_CONTROL_PLANE_TOKEN", "control-secret"),
        ("TERMINAL_GATEWAY_DRAIN_TIMEOUT_SECONDS", "1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config = waygate_config::Config::load(waygate_config::Layers {
        flags,
        env: Default::default(),
        file: Some(file.clone()),
    })
    .unwrap();
    let app = waygate_server::App::build(config, waygate_telemetry::LogHandle::noop()).await.unwrap();
    let base = format!("http://{}", app.http_addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::new();
    let control = |token: Option<&'static str>, body: Value| {
        let mut req = client.post(format!("{base}/api/gateway/control")).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };

    let same = control(Some("control-secret"), json!({"command": "config.reload"})).await.unwrap();
    assert_eq!(same.status(), 200);
    assert_eq!(same.json::<Value>().await.unwrap(), json!({"reloaded": true, "changed": []}));

    std::fs::write(&file, "waygate_max_connections = 1\nwaygate_send_queue = 7\n").unwrap();
    for (token, status) in [(None, 403), (Some("wrong"), 403)] {
        let res = control(token, json!({"command": "config.reload"})).await.unwrap();
        assert_eq!(res.status(), status);
        assert_envelope(&res.json().await.unwrap(), "forbidden");
    }
    // Nothing changed: two connections still fit under the original limit of 50.
    let (_a, _) = connect_welcomed(&format!("ws://{}/ws", base.trim_start_matches("http://"))).await;
    let (_b, _) = connect_welcomed(&format!("ws://{}/ws", base.trim_start_matches("http://"))).await;

    let res = control(Some("control-secret"), json!({"command": "config.reload"})).await.unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v, json!({"reloaded": true, "changed": ["WAYGATE_MAX_CONNECTIONS", "WAYGATE_SEND_QUEUE"]}));
    let (status, body) = refused_upgrade(&format!("ws://{}/ws", base.trim_start_matches("http://"))).await;
    assert_eq!(status, 503, "the reloaded limit of 1 applies");
    assert_envelope(&body, "service_unavailable");

    let unknown = control(Some("control-secret"), json!({"command": "reboot"})).await.unwrap();
    assert_eq!(unknown.status(), 400);
    std::fs::write(&file, "waygate_max_connections = \"lots\"\n").unwrap();
    let invalid = control(Some("control-secret"), json!({"command": "config.reload"})).await.unwrap();
    assert_eq!(invalid.status(), 400);
    let v: Value = invalid.json().await.unwrap();
    assert!(v["error"]["details"]["problems"][0].as_str().unwrap().contains("WAYGATE_MAX_CONNECTIONS"), "{v}");
    let _ = tx.send(());
    handle.await.unwrap();
}

#[tokio::test]
async fn control_is_refused_when_no_token_is_configured() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(app.url("/api/gateway/control"))
        .bearer_auth("anything")
        .json(&json!({"command": "config.reload"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    app.stop().await;
}
