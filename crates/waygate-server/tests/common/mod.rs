//! Shared test harness: a real server on ephemeral loopback ports with a fresh SQLite file,
//! real HTTP (reqwest) and WebSocket (tokio-tungstenite) clients.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use waygate_config::Config;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Long enough for a loaded CI machine, short enough that a hang fails quickly.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestApp {
    pub http: SocketAddr,
    pub ws: SocketAddr,
    pub client: reqwest::Client,
    pub db_url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts the server with `pairs` (environment variable names) over test defaults.
pub async fn spawn_app_with(pairs: &[(&str, &str)]) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    spawn_app_in(dir, pairs).await
}

pub async fn spawn_app_in(dir: tempfile::TempDir, pairs: &[(&str, &str)]) -> TestApp {
    spawn_app_layers(dir, pairs, None).await
}

/// Like `spawn_app_in`, with a `--config` file (for `config.reload`).
pub async fn spawn_app_layers(
    dir: tempfile::TempDir,
    pairs: &[(&str, &str)],
    file: Option<std::path::PathBuf>,
) -> TestApp {
    let sqlite = format!("sqlite://{}", dir.path().join("waygate.db").display());
    let db_url = pairs.iter().find(|(k, _)| *k == "DATABASE_URL").map_or(sqlite.clone(), |(_, v)| v.to_string());
    let mut all: Vec<(&str, &str)> = vec![
        ("WEBSOCKET_HOST", "127.0.0.1"),
        ("WEBSOCKET_PORT", "0"),
        ("GATEWAY_WS_PORT", "0"),
        ("DATABASE_URL", &sqlite),
        ("GATEWAY_DISPATCH_POLL_MS", "100"),
        ("TERMINAL_GATEWAY_DRAIN_TIMEOUT_SECONDS", "1"),
    ];
    all.extend_from_slice(pairs);
    let flags = all.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let config =
        Config::load(waygate_config::Layers { flags, env: Default::default(), file }).expect("test config is valid");
    let app = waygate_server::App::build(config, waygate_telemetry::LogHandle::noop()).await.expect("app builds");
    let http = app.http_addr();
    let ws = app.ws_addr().expect("standalone listener on");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestApp { http, ws, client: reqwest::Client::new(), db_url, shutdown: Some(tx), handle: Some(handle), _dir: dir }
}

pub struct TestUser {
    pub email: String,
    pub token: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.http)
    }

    /// Starts the drain and waits until the app has stopped.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(40), h).await.expect("app stops").unwrap();
        }
    }

    /// Starts the drain without waiting for it to finish.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Creates a user directly in the database (unless it exists) and logs in through the API.
    pub async fn user(&self, email: &str) -> TestUser {
        let store = waygate_store::Store::connect(&self.db_url).await.unwrap();
        match store.create_user(email, "password123", waygate_telemetry::now_millis()).await {
            Ok(_) | Err(waygate_store::StoreError::Conflict(_)) => {}
            Err(e) => panic!("cannot create user: {e}"),
        }
        store.close().await;
        let res = self
            .client
            .post(self.url("/api/auth/login"))
            .json(&json!({"email": email, "password": "password123"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let token = res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
        TestUser { email: email.to_owned(), token }
    }

    pub async fn get(&self, user: &TestUser, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).bearer_auth(&user.token).send().await.unwrap()
    }

    pub async fn post(&self, user: &TestUser, path: &str, body: Value) -> reqwest::Response {
        self.client.post(self.url(path)).bearer_auth(&user.token).json(&body).send().await.unwrap()
    }

    pub async fn delete(&self, user: &TestUser, path: &str) -> reqwest::Response {
        self.client.delete(self.url(path)).bearer_auth(&user.token).send().await.unwrap()
    }

    /// Registers a device through the API; returns the full response body.
    pub async fn register_device(&self, user: &TestUser, caps: &[&str]) -> Value {
        let res = self
            .post(
                user,
                "/api/gateway/devices",
                json!({"name": "Test Device", "platform": "linux", "capabilities": caps}),
            )
            .await;
        assert_eq!(res.status(), 201);
        res.json().await.unwrap()
    }

    pub async fn counters(&self) -> Value {
        let v: Value = self.client.get(self.url("/api/gateway/health")).send().await.unwrap().json().await.unwrap();
        v["gateway"]["dispatchQueue"].clone()
    }

    pub async fn metrics(&self) -> String {
        self.client.get(self.url("/metrics")).send().await.unwrap().text().await.unwrap()
    }
}

/// Value of a metric line (`name{labels} value`) in Prometheus text, 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

pub async fn connect(url: &str) -> Ws {
    let (ws, _) =
        tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url)).await.expect("connect in time").unwrap();
    ws
}

/// Connects and expects the welcome frame.
pub async fn connect_welcomed(url: &str) -> (Ws, Value) {
    let mut ws = connect(url).await;
    let welcome = recv_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (ws, welcome)
}

pub async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// Next text message as JSON (pings are answered by tungstenite and skipped).
pub async fn recv_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next()).await.expect("message in time").expect("stream open").unwrap();
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Reads until the server closes; returns the close code and reason.
pub async fn recv_close(ws: &mut Ws) -> (u16, String) {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("close in time") {
            Some(Ok(Message::Close(Some(f)))) => return (f.code.into(), f.reason.to_string()),
            Some(Ok(Message::Close(None))) => return (1005, String::new()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("error before close frame: {e}"),
            None => panic!("stream ended without a close frame"),
        }
    }
}

/// A device that registered over WebSocket and answered with `ack`.
pub async fn device_online(url: &str, device_id: &str, token: &str) -> Ws {
    let (mut ws, _) = connect_welcomed(url).await;
    send_json(&mut ws, json!({"type": "register", "deviceId": device_id, "sessionToken": token, "protocolVersion": 1}))
        .await;
    let ack = recv_json(&mut ws).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["deviceId"], device_id);
    ws
}

/// Runs a device that answers every tool call with `answer(tool, args)`; returns its task.
pub fn serve_device<F>(mut ws: Ws, answer: F) -> tokio::task::JoinHandle<Vec<String>>
where
    F: Fn(&str, &Value) -> Value + Send + 'static,
{
    tokio::spawn(async move {
        let mut executed = Vec::new();
        while let Some(Ok(msg)) = ws.next().await {
            let Message::Text(t) = msg else { continue };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "tool_call" {
                let call_id = v["callId"].as_str().unwrap().to_owned();
                let reply = answer(v["tool"].as_str().unwrap(), &v["args"]);
                executed.push(call_id.clone());
                let mut msg = json!({"type": "tool_result", "callId": call_id});
                msg.as_object_mut().unwrap().extend(reply.as_object().unwrap().clone());
                if ws.send(Message::text(msg.to_string())).await.is_err() {
                    break;
                }
            }
        }
        executed
    })
}

/// Polls `check` until it is true (readiness without sleeps of a guessed length).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Checks a body is the SPEC 3 error envelope with `code`; returns it.
pub fn assert_envelope(v: &Value, code: &str) {
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(v["error"]["correlation_id"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(v["error"]["details"]["trace_id"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

/// The HTTP refusal of a WebSocket upgrade: status and parsed envelope body.
pub async fn refused_upgrade(url: &str) -> (u16, Value) {
    refused_upgrade_with(tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap())
        .await
}

pub async fn refused_upgrade_with(req: tokio_tungstenite::tungstenite::handshake::client::Request) -> (u16, Value) {
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            let status = res.status().as_u16();
            let body = res.body().clone().unwrap_or_default();
            (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
        }
        Ok(_) => panic!("upgrade unexpectedly accepted"),
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// A real HTTP webhook on loopback: records every JSON body it receives and answers with
/// `respond(body)` → `(status, json)`.
pub struct Webhook {
    pub url: String,
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl Webhook {
    pub async fn start<F>(respond: F) -> Webhook
    where
        F: Fn(&Value) -> (u16, Value) + Send + Sync + 'static,
    {
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (rec, respond) = (received.clone(), std::sync::Arc::new(respond));
        let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let (rec, respond) = (rec.clone(), respond.clone());
            async move {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let (status, reply) = respond(&v);
                rec.lock().unwrap().push(v);
                (axum::http::StatusCode::from_u16(status).unwrap(), axum::Json(reply))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Webhook { url, received }
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }
}

/// Writes a config file with `[[routes]]` and starts an app that reads it.
pub async fn spawn_app_with_routes(routes: &[(&str, &str)], pairs: &[(&str, &str)]) -> (TestApp, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.toml");
    write_routes(&file, routes);
    let app = spawn_app_layers(dir, pairs, Some(file.clone())).await;
    (app, file)
}

pub fn write_routes(file: &std::path::Path, routes: &[(&str, &str)]) {
    let mut text = String::new();
    for (action, target) in routes {
        text.push_str(&format!("[[routes]]\naction = {action:?}\ntarget = {target:?}\ntimeout_ms = 3000\n\n"));
    }
    std::fs::write(file, text).unwrap();
}
