//! The terminal gateway as real processes: `waygate serve` and `waygate agent`, SIGTERM drain
//! with an open session, and a stalled browser against 200 MB of PTY output (server RSS).

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const AGENT_TOKEN: &str = "process-agent-token";
const WAIT: Duration = Duration::from_secs(20);

struct AgentProc(std::process::Child);

impl AgentProc {
    fn start(dir: &std::path::Path, server: &Server, node: &str) -> AgentProc {
        let child = waygate(dir)
            .args([
                "agent",
                "--gateway",
                &format!("ws://{}", server.http),
                "--node-id",
                node,
                "--max-backoff-secs",
                "1",
            ])
            .env("WAYGATE_AGENT_TOKEN", AGENT_TOKEN)
            .env("HOME", dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("agent starts");
        AgentProc(child)
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Api {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn login(server: &Server, dir: &std::path::Path) -> Api {
        let token = server.new_user_token(dir, "term@example.com", &[]).await;
        Api { client: reqwest::Client::new(), base: server.url(""), token }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap().json().await.unwrap()
    }

    async fn allocation(&self, node: &str, command: &str) -> String {
        let body = json!({"nodeId": node, "tenantId": "t", "projectId": "p", "command": command});
        let v = self.call(reqwest::Method::POST, "/api/terminal/allocations", Some(body)).await;
        let id = v["allocationId"].as_str().unwrap().to_owned();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let v = self.call(reqwest::Method::GET, &format!("/api/terminal/allocations/{id}"), None).await;
            if v["nodeOnline"] == true {
                return id;
            }
            assert!(tokio::time::Instant::now() < deadline, "agent never connected");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn token(&self, alloc: &str) -> String {
        let v = self.call(reqwest::Method::POST, &format!("/api/terminal/allocations/{alloc}/tokens"), None).await;
        v["token"].as_str().unwrap().to_owned()
    }
}

fn request(server: &Server, alloc: &str, token: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut req = format!("ws://{}/ws/terminal/{alloc}", server.http).into_client_request().unwrap();
    req.headers_mut().insert("sec-websocket-protocol", format!("waygate.terminal.v1, {token}").parse().unwrap());
    req
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn sigterm_keeps_open_terminal_sessions_then_closes_1001_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        dir.path(),
        &[("WAYGATE_AGENT_TOKEN", AGENT_TOKEN), ("TERMINAL_GATEWAY_DRAIN_TIMEOUT_SECONDS", "3")],
    );
    let _agent = AgentProc::start(dir.path(), &server, "proc-node");
    let api = Api::login(&server, dir.path()).await;
    let alloc = api.allocation("proc-node", "cat").await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(request(&server, &alloc, &api.token(&alloc).await)).await.unwrap();
    let spare = api.token(&alloc).await;

    server.signal(libc::SIGTERM);
    let deadline = tokio::time::Instant::now() + WAIT;
    while reqwest::get(server.url("/readyz")).await.map(|r| r.status() != 503).unwrap_or(true) {
        assert!(tokio::time::Instant::now() < deadline, "drain never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The open session survives SIGTERM and keeps working.
    ws.send(Message::Binary(b"after-sigterm\n".to_vec().into())).await.unwrap();
    let mut seen = String::new();
    while seen.matches("after-sigterm").count() < 2 {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("echo").unwrap().unwrap() {
            Message::Binary(b) => seen.push_str(&String::from_utf8_lossy(&b)),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // A new session gets the exact envelope.
    match tokio_tungstenite::connect_async(request(&server, &alloc, &spare)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 503);
            let v: Value = serde_json::from_slice(res.body().as_ref().unwrap()).unwrap();
            assert_eq!(v["error"]["code"], "service_unavailable");
            assert_eq!(v["error"]["message"], "terminal gateway draining");
            assert!(v["error"]["correlation_id"].as_str().is_some());
        }
        other => panic!("expected a 503 refusal, got {other:?}"),
    }
    // At the drain deadline the session closes with 1001 and the process exits 0.
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("closed at the deadline") {
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!(u16::from(f.code), 1001);
                assert_eq!(f.reason, "gateway draining");
                break;
            }
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
    let status = server.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status}");
    assert!(server.logs().contains("terminal session ended"));
}

/// 200 MB of PTY output to a browser that first stalls, then reads slowly: the gateway relays
/// only what the browser takes (credit), so its RSS stays flat instead of growing with the
/// output. Reports the figures on stderr.
#[tokio::test]
async fn a_stalled_browser_keeps_server_memory_bounded() {
    const TOTAL: usize = 200_000_000;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[("WAYGATE_AGENT_TOKEN", AGENT_TOKEN), ("WAYGATE_LOG", "warn")]);
    let pid = server.child.id();
    let _agent = AgentProc::start(dir.path(), &server, "bulk-node");
    let api = Api::login(&server, dir.path()).await;
    let alloc = api.allocation("bulk-node", &format!("head -c {TOTAL} /dev/zero")).await;
    let baseline = rss_kib(pid);
    let (mut ws, _) =
        tokio_tungstenite::connect_async(request(&server, &alloc, &api.token(&alloc).await)).await.unwrap();

    // Stall: wait until relaying stops (the window and the socket buffers are full).
    let series = r#"terminal_relay_bytes_total{direction="out"}"#;
    let mut last = -1.0;
    let deadline = tokio::time::Instant::now() + WAIT;
    let stalled_at = loop {
        let text = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
        let now = metric(&text, series);
        if now > 0.0 && now == last {
            break now;
        }
        last = now;
        assert!(tokio::time::Instant::now() < deadline, "relay never stalled");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let stalled_rss = rss_kib(pid);
    assert!(stalled_at < 32.0 * 1024.0 * 1024.0, "{stalled_at} bytes relayed to a browser that reads nothing");

    // Slow reader: a pause after every MiB.
    let (mut got, mut max_rss, mut next_pause) = (0usize, stalled_rss, 1 << 20);
    let code = loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("output keeps coming").unwrap().unwrap() {
            Message::Binary(b) => {
                got += b.len();
                if got >= next_pause {
                    next_pause += 1 << 20;
                    max_rss = max_rss.max(rss_kib(pid));
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            Message::Text(t) => break serde_json::from_str::<Value>(&t).unwrap()["code"].as_i64().unwrap(),
            // A loaded machine can take longer than a heartbeat period.
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    };
    eprintln!(
        "terminal backpressure: {got} bytes; server RSS baseline {baseline} KiB, stalled {stalled_rss} KiB \
         (relayed {stalled_at} bytes while stalled), max while reading {max_rss} KiB"
    );
    assert_eq!(code, 0);
    assert_eq!(got, TOTAL);
    assert!(max_rss < baseline + 64 * 1024, "server RSS grew from {baseline} KiB to {max_rss} KiB");
}
