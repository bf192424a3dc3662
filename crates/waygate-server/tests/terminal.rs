//! Terminal gateway: a real agent (the `waygate-agent` library) running real PTYs, real
//! browser-side WebSocket clients, every refusal before the upgrade.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

const AGENT_TOKEN: &str = "agent-secret-for-tests";

struct Agent {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Agent {
    fn start(app: &TestApp, node: &str) -> Agent {
        let config = waygate_agent::AgentConfig {
            gateway: format!("ws://{}", app.http),
            node_id: node.to_owned(),
            token: AGENT_TOKEN.to_owned(),
            max_backoff: Duration::from_millis(500),
        };
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            waygate_agent::run_until(config, s).await.unwrap();
        });
        Agent { stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn app() -> TestApp {
    spawn_app_with(&[("WAYGATE_AGENT_TOKEN", AGENT_TOKEN)]).await
}

async fn allocation(app: &TestApp, user: &TestUser, node: &str, command: Option<&str>) -> String {
    let mut body = json!({"nodeId": node, "tenantId": "t1", "projectId": "p1"});
    if let Some(c) = command {
        body["command"] = json!(c);
    }
    let res = app.post(user, "/api/terminal/allocations", body).await;
    assert_eq!(res.status(), 201);
    let v: Value = res.json().await.unwrap();
    assert!(
        v["resourceName"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":terminal/allocation:{}", v["allocationId"].as_str().unwrap()))
    );
    v["allocationId"].as_str().unwrap().to_owned()
}

async fn node_online(app: &TestApp, user: &TestUser, alloc: &str) {
    eventually("the node's agent to connect", || async {
        let v: Value = app.get(user, &format!("/api/terminal/allocations/{alloc}")).await.json().await.unwrap();
        v["nodeOnline"] == true
    })
    .await;
}

async fn mint(app: &TestApp, user: &TestUser, alloc: &str) -> String {
    let res = app.post(user, &format!("/api/terminal/allocations/{alloc}/tokens"), json!({})).await;
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["protocol"], "waygate.terminal.v1");
    assert!(v["expiresAt"].as_str().is_some());
    v["token"].as_str().unwrap().to_owned()
}

fn terminal_request(
    app: &TestApp,
    alloc: &str,
    token: &str,
    query: &str,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut req = app.ws_url(&format!("/ws/terminal/{alloc}{query}")).into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", format!("waygate.terminal.v1, {token}").parse().unwrap());
    req
}

async fn open(app: &TestApp, alloc: &str, token: &str) -> Ws {
    let (ws, res) = tokio_tungstenite::connect_async(terminal_request(app, alloc, token, "")).await.expect("upgrade");
    // Only the protocol is echoed, never the token.
    assert_eq!(res.headers().get("sec-websocket-protocol").unwrap(), "waygate.terminal.v1");
    ws
}

/// Reads terminal output until it contains `needle`; returns everything read.
async fn read_until(ws: &mut Ws, needle: &str) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in output; got {seen:?}"))
            .expect("socket open")
            .expect("frame");
        match msg {
            Message::Binary(b) => seen.push_str(&String::from_utf8_lossy(&b)),
            Message::Text(t) => panic!("unexpected control frame {t} while waiting for {needle:?}; output {seen:?}"),
            _ => {}
        }
        if seen.contains(needle) {
            return seen;
        }
    }
}

/// Skips output up to the exit frame; returns the exit code and the close code.
async fn read_exit(ws: &mut Ws) -> (i64, u16) {
    let mut code = None;
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next()).await.expect("exit in time").expect("open").expect("frame");
        match msg {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v["type"], "exit", "{v}");
                code = v["code"].as_i64();
            }
            Message::Close(f) => return (code.expect("exit before close"), f.map_or(1005, |f| f.code.into())),
            _ => {}
        }
    }
}

async fn send_input(ws: &mut Ws, text: &str) {
    ws.send(Message::Binary(text.as_bytes().to_vec().into())).await.unwrap();
}

#[tokio::test]
async fn echo_runs_in_a_real_pty_and_the_exit_code_arrives() {
    let app = app().await;
    let agent = Agent::start(&app, "node-1");
    let user = app.user("ada@example.com").await;
    let alloc = allocation(&app, &user, "node-1", Some("echo hello-$((40+2)); tty; exit 3")).await;
    node_online(&app, &user, &alloc).await;
    let token = mint(&app, &user, &alloc).await;
    let mut ws = open(&app, &alloc, &token).await;
    let out = read_until(&mut ws, "/dev/pts/").await;
    assert!(out.contains("hello-42"), "{out}");
    assert_eq!(read_exit(&mut ws).await, (3, 1000));
    let m = app.metrics().await;
    assert_eq!(metric(&m, r#"terminal_gateway_ws_events_total{outcome="accepted",reason="ok"}"#), 1.0);
    eventually("the session to be counted as ended", || async {
        metric(&app.metrics().await, "terminal_sessions_active") == 0.0
    })
    .await;
    agent.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn interactive_cat_resize_and_exit_status() {
    let app = app().await;
    let agent = Agent::start(&app, "node-2");
    let user = app.user("ada@example.com").await;
    let alloc = allocation(&app, &user, "node-2", Some("exec /bin/sh")).await;
    node_online(&app, &user, &alloc).await;
    let mut ws = open(&app, &alloc, &mint(&app, &user, &alloc).await).await;

    ws.send(Message::text(r#"{"type":"resize","cols":123,"rows":45}"#)).await.unwrap();
    send_input(&mut ws, "stty size\n").await;
    read_until(&mut ws, "45 123").await;

    send_input(&mut ws, "cat\n").await;
    send_input(&mut ws, "line-from-browser\n").await;
    // Once echoed by the tty, once more by cat itself.
    let out = read_until(&mut ws, "line-from-browser\r\nline-from-browser").await;
    assert!(out.contains("line-from-browser"));
    send_input(&mut ws, "\u{4}").await; // ^D ends cat
    send_input(&mut ws, "echo after-cat-$((6*7))\n").await;
    read_until(&mut ws, "after-cat-42").await;
    send_input(&mut ws, "exit 7\n").await;
    assert_eq!(read_exit(&mut ws).await, (7, 1000));
    agent.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn tokens_are_single_use_and_refusals_come_before_the_upgrade() {
    let app = app().await;
    let agent = Agent::start(&app, "node-3");
    let ada = app.user("ada@example.com").await;
    let bob = app.user("bob@example.com").await;
    let alloc = allocation(&app, &ada, "node-3", Some("cat")).await;
    let other = allocation(&app, &ada, "node-3", Some("cat")).await;
    node_online(&app, &ada, &alloc).await;

    // ?token= is refused even when the token is valid, and it does not use the token up.
    let token = mint(&app, &ada, &alloc).await;
    let url = app.ws_url(&format!("/ws/terminal/{alloc}?token={token}"));
    let (status, body) = refused_upgrade(&url).await;
    assert_eq!(status, 400);
    assert_envelope(&body, "token_in_query_forbidden");

    // Wrong allocation: the token names another one.
    let (status, body) = refused_upgrade_with(terminal_request(&app, &other, &token, "")).await;
    assert_eq!(status, 401);
    assert_envelope(&body, "token_invalid");

    // No token at all, and an unknown one.
    let (status, body) = refused_upgrade(&app.ws_url(&format!("/ws/terminal/{alloc}"))).await;
    assert_eq!(status, 401);
    assert_envelope(&body, "unauthorized");
    let (status, body) = refused_upgrade_with(terminal_request(&app, &alloc, "not-a-token", "")).await;
    assert_eq!(status, 401);
    assert_envelope(&body, "token_invalid");

    // First use works; the replay is refused and counted.
    let ws = open(&app, &alloc, &token).await;
    let (status, body) = refused_upgrade_with(terminal_request(&app, &alloc, &token, "")).await;
    assert_eq!(status, 401);
    assert_envelope(&body, "token_replayed");
    let m = app.metrics().await;
    assert_eq!(metric(&m, "terminal_token_replay_rejected_total"), 1.0);
    assert_eq!(metric(&m, r#"terminal_gateway_ws_events_total{outcome="rejected",reason="token_replayed"}"#), 1.0);
    drop(ws);

    // Another user's allocation is 404 everywhere.
    for res in [
        app.get(&bob, &format!("/api/terminal/allocations/{alloc}")).await,
        app.post(&bob, &format!("/api/terminal/allocations/{alloc}/tokens"), json!({})).await,
        app.delete(&bob, &format!("/api/terminal/allocations/{alloc}")).await,
    ] {
        assert_eq!(res.status(), 404);
        assert_envelope(&res.json().await.unwrap(), "not_found");
    }
    let listed: Value = app.get(&bob, "/api/terminal/allocations").await.json().await.unwrap();
    assert_eq!(listed["allocations"], json!([]));
    // Bob's token for Bob's allocation does not open Ada's either.
    let bobs = allocation(&app, &bob, "node-3", None).await;
    let bob_token = mint(&app, &bob, &bobs).await;
    let (status, body) = refused_upgrade_with(terminal_request(&app, &alloc, &bob_token, "")).await;
    assert_eq!(status, 401);
    assert_envelope(&body, "token_invalid");

    // Validation lists the problems.
    let res =
        app.post(&ada, "/api/terminal/allocations", json!({"nodeId": "", "tenantId": "a:b", "projectId": "p"})).await;
    assert_eq!(res.status(), 400);
    assert_envelope(&res.json().await.unwrap(), "bad_request");
    agent.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let app = spawn_app_with(&[("WAYGATE_AGENT_TOKEN", AGENT_TOKEN), ("TERMINAL_TOKEN_TTL_SECONDS", "1")]).await;
    let user = app.user("ada@example.com").await;
    let alloc = allocation(&app, &user, "node-4", None).await;
    let token = mint(&app, &user, &alloc).await;
    // Polls until the token's second is up (no guessed sleep); an expired token is never used.
    let mut last = Value::Null;
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        let (_, body) = refused_upgrade_with(terminal_request(&app, &alloc, &token, "")).await;
        if body["error"]["code"] == "token_expired" {
            last = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_envelope(&last, "token_expired");
    app.stop().await;
}

#[tokio::test]
async fn an_offline_agent_is_503_and_the_token_survives() {
    let app = app().await;
    let user = app.user("ada@example.com").await;
    let alloc = allocation(&app, &user, "node-5", Some("echo survived")).await;
    let token = mint(&app, &user, &alloc).await;
    let (status, body) = refused_upgrade_with(terminal_request(&app, &alloc, &token, "")).await;
    assert_eq!(status, 503);
    assert_envelope(&body, "agent_unavailable");
    assert_eq!(body["error"]["details"]["nodeId"], "node-5");

    let agent = Agent::start(&app, "node-5");
    node_online(&app, &user, &alloc).await;
    let mut ws = open(&app, &alloc, &token).await;
    read_until(&mut ws, "survived").await;
    assert_eq!(read_exit(&mut ws).await, (0, 1000));
    agent.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn agents_need_the_shared_token() {
    let app = app().await;
    let mut req = app.ws_url("/api/agent/ws").into_client_request().unwrap();
    req.headers_mut().insert("authorization", "Bearer wrong".parse().unwrap());
    req.headers_mut().insert("x-waygate-node-id", "n".parse().unwrap());
    let (status, body) = refused_upgrade_with(req).await;
    assert_eq!(status, 401);
    assert_envelope(&body, "unauthorized");
    app.stop().await;

    let app = spawn_app().await;
    let (status, body) = refused_upgrade(&app.ws_url("/api/agent/ws")).await;
    assert_eq!(status, 401);
    assert_envelope(&body, "unauthorized");
    app.stop().await;
}

#[tokio::test]
async fn drain_keeps_open_sessions_refuses_new_ones_then_closes_1001() {
    let app =
        spawn_app_with(&[("WAYGATE_AGENT_TOKEN", AGENT_TOKEN), ("TERMINAL_GATEWAY_DRAIN_TIMEOUT_SECONDS", "3")]).await;
    let agent = Agent::start(&app, "node-6");
    let user = app.user("ada@example.com").await;
    let alloc = allocation(&app, &user, "node-6", Some("cat")).await;
    node_online(&app, &user, &alloc).await;
    let mut ws = open(&app, &alloc, &mint(&app, &user, &alloc).await).await;
    let spare = mint(&app, &user, &alloc).await;
    let mut app = app;
    app.begin_shutdown();
    eventually("the drain to start", || async {
        reqwest::get(app.url("/readyz")).await.map(|r| r.status() == 503).unwrap_or(false)
    })
    .await;

    // The open session keeps working.
    send_input(&mut ws, "still-here\n").await;
    read_until(&mut ws, "still-here\r\nstill-here").await;
    // A new one gets the exact envelope.
    let (status, body) = refused_upgrade_with(terminal_request(&app, &alloc, &spare, "")).await;
    assert_eq!(status, 503);
    assert_envelope(&body, "service_unavailable");
    assert_eq!(body["error"]["message"], "terminal gateway draining");
    // At the deadline: 1001 "gateway draining".
    loop {
        match tokio::time::timeout(Duration::from_secs(20), ws.next()).await.expect("closed by the deadline") {
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!(u16::from(f.code), 1001);
                assert_eq!(f.reason, "gateway draining");
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
    app.stop().await;
    agent.stop().await;
}

#[tokio::test]
async fn notifications_stream_terminal_session_events() {
    let app = app().await;
    let agent = Agent::start(&app, "node-7");
    let user = app.user("ada@example.com").await;
    let mut req = app.ws_url("/ws/notifications").into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", user.token).parse().unwrap());
    let (mut events, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(recv_json(&mut events).await["type"], "welcome");
    let (status, body) = refused_upgrade(&app.ws_url("/ws/notifications")).await;
    assert_eq!(status, 401);
    assert_envelope(&body, "unauthorized");

    let alloc = allocation(&app, &user, "node-7", Some("true")).await;
    node_online(&app, &user, &alloc).await;
    let mut ws = open(&app, &alloc, &mint(&app, &user, &alloc).await).await;
    assert_eq!(read_exit(&mut ws).await, (0, 1000));
    let started = recv_json(&mut events).await;
    assert_eq!(started["type"], "terminal.session.started");
    assert_eq!(started["allocationId"], alloc.as_str());
    let ended = recv_json(&mut events).await;
    assert_eq!(ended["type"], "terminal.session.ended");
    assert_eq!(ended["reason"], "exit");
    agent.stop().await;
    app.stop().await;
}

/// Cluster mode: tokens live in Redis, so a token used on instance A is refused on B; an agent
/// held by A is reported by B as `agent_unavailable` naming A (cross-instance relay is not
/// supported). Skipped loudly without PostgreSQL/Redis (fails under CI=true).
#[tokio::test]
async fn cluster_replay_on_another_instance_is_refused() {
    let Some(pg) = waygate_testkit::PgSchema::create().await else { return };
    let Some(redis) = waygate_testkit::RedisNs::create().await else { return };
    let instance = |name: &'static str| {
        let pairs = [
            ("DATABASE_URL", pg.url.clone()),
            ("REDIS_URL", redis.url.clone()),
            ("WAYGATE_REDIS_PREFIX", redis.prefix.clone()),
            ("WAYGATE_CLUSTER", "true".to_owned()),
            ("WAYGATE_INSTANCE_ID", name.to_owned()),
            ("WAYGATE_AGENT_TOKEN", AGENT_TOKEN.to_owned()),
        ];
        async move {
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            spawn_app_layers(tempfile::tempdir().unwrap(), &pairs, None).await
        }
    };
    let a = instance("term-a").await;
    let b = instance("term-b").await;
    let agent = Agent::start(&a, "node-c");
    let user = a.user("ada@example.com").await;
    let alloc = allocation(&a, &user, "node-c", Some("cat")).await;
    node_online(&b, &user, &alloc).await;

    let token = mint(&b, &user, &alloc).await;
    let ws = open(&a, &alloc, &token).await;
    let (status, body) = refused_upgrade_with(terminal_request(&b, &alloc, &token, "")).await;
    assert_eq!(status, 401);
    assert_envelope(&body, "token_replayed");
    assert_eq!(metric(&b.metrics().await, "terminal_token_replay_rejected_total"), 1.0);

    let fresh = mint(&a, &user, &alloc).await;
    let (status, body) = refused_upgrade_with(terminal_request(&b, &alloc, &fresh, "")).await;
    assert_eq!(status, 503);
    assert_envelope(&body, "agent_unavailable");
    assert_eq!(body["error"]["details"]["instanceId"], "term-a");
    // ...and that refusal did not use the token up: A accepts it.
    drop(open(&a, &alloc, &fresh).await);
    drop(ws);
    agent.stop().await;
    a.stop().await;
    b.stop().await;
}
