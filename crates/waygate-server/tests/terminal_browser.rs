//! The `/terminal/{allocation_id}` page in headless Chromium, driven over the DevTools protocol:
//! sign in through the page's form, let it mint a token and connect, type a command, and see the
//! real agent's output. Saves a screenshot as a test artifact. Without Chromium the test skips
//! loudly (fails under CI=true; `scripts/install-chromium.sh` installs it).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::Message;

const AGENT_TOKEN: &str = "browser-agent-token";

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"].into_iter().find(|b| {
        std::process::Command::new(b).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
    })
}

/// A minimal DevTools client: one request at a time, events ignored.
struct Cdp {
    ws: Ws,
    next: u64,
}

impl Cdp {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        self.ws.send(Message::text(json!({"id": id, "method": method, "params": params}).to_string())).await.unwrap();
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next()).await.expect("devtools answers").unwrap().unwrap();
            if let Message::Text(t) = msg {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["id"] == id {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        }
    }

    async fn eval(&mut self, expr: &str) -> Value {
        self.call("Runtime.evaluate", json!({"expression": expr, "returnByValue": true})).await["result"]["value"]
            .clone()
    }

    async fn wait_for(&mut self, what: &str, expr: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if self.eval(expr).await == true {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let state = self
                    .eval("document.body.dataset.state + ': ' + document.getElementById('status').textContent")
                    .await;
                panic!("timed out waiting for {what}; page: {state}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn the_terminal_page_signs_in_connects_and_shows_command_output() {
    let Some(bin) = chromium() else {
        if waygate_testkit::in_ci() {
            panic!("chromium is required under CI=true: run scripts/install-chromium.sh");
        }
        eprintln!(
            "SKIPPED the_terminal_page_signs_in_connects_and_shows_command_output: no chromium (scripts/install-chromium.sh)"
        );
        return;
    };
    let app = spawn_app_with(&[("WAYGATE_AGENT_TOKEN", AGENT_TOKEN)]).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let agent = tokio::spawn(waygate_agent::run_until(
        waygate_agent::AgentConfig {
            gateway: format!("ws://{}", app.http),
            node_id: "browser-node".into(),
            token: AGENT_TOKEN.into(),
            max_backoff: Duration::from_millis(500),
        },
        stop.clone(),
    ));
    let user = app.user("ada@example.com").await;
    let res = app
        .post(
            &user,
            "/api/terminal/allocations",
            json!({"nodeId":"browser-node","tenantId":"t","projectId":"p","command":"exec /bin/sh"}),
        )
        .await;
    let alloc = res.json::<Value>().await.unwrap()["allocationId"].as_str().unwrap().to_owned();
    eventually("the agent to connect", || async {
        let v: Value = app.get(&user, &format!("/api/terminal/allocations/{alloc}")).await.json().await.unwrap();
        v["nodeOnline"] == true
    })
    .await;

    let profile = tempfile::tempdir().unwrap();
    let mut browser = tokio::process::Command::new(bin)
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        .arg("--remote-debugging-port=0")
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--window-size=1000,700")
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(browser.stderr.take().unwrap()).lines();
    let devtools = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                return url.trim().to_owned();
            }
        }
        panic!("chromium exited without a DevTools endpoint");
    })
    .await
    .expect("DevTools endpoint announced");
    // Keep draining stderr so chromium never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let host = devtools.trim_start_matches("ws://").split('/').next().unwrap().to_owned();
    let targets: Value = reqwest::get(format!("http://{host}/json/list")).await.unwrap().json().await.unwrap();
    let page = targets.as_array().unwrap().iter().find(|t| t["type"] == "page").expect("a page target");
    let (ws, _) = tokio_tungstenite::connect_async(page["webSocketDebuggerUrl"].as_str().unwrap()).await.unwrap();
    let mut cdp = Cdp { ws, next: 0 };

    cdp.call("Page.enable", json!({})).await;
    cdp.call("Page.navigate", json!({"url": app.url(&format!("/terminal/{alloc}"))})).await;
    cdp.wait_for("the login form", "document.body && document.body.dataset.state === 'login'").await;
    cdp.eval(
        "document.getElementById('email').value='ada@example.com';\
         document.getElementById('password').value='password123';\
         document.getElementById('login').requestSubmit(); true",
    )
    .await;
    cdp.wait_for("the terminal to connect", "document.body.dataset.state === 'open'").await;
    cdp.call("Input.insertText", json!({"text": "echo from-the-browser-$((6*7))"})).await;
    cdp.call(
        "Input.dispatchKeyEvent",
        json!({"type": "keyDown", "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"}),
    )
    .await;
    cdp.call(
        "Input.dispatchKeyEvent",
        json!({"type": "keyUp", "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}),
    )
    .await;
    cdp.wait_for(
        "the command's output",
        "document.getElementById('transcript').textContent.includes('from-the-browser-42')",
    )
    .await;
    let shot = cdp.call("Page.captureScreenshot", json!({"format": "png"})).await;
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("terminal-page.png");
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());

    // The visible terminal shows it too (xterm's DOM renderer), not only the transcript.
    assert_eq!(cdp.eval("document.querySelector('.xterm').textContent.includes('from-the-browser-42')").await, true);
    // The session ran on the client SDK's bundle (sdk/js), the page's only terminal code.
    let loaded =
        "performance.getEntriesByType('resource').some(e => e.name.endsWith('/terminal/assets/waygate-client.js'))";
    assert_eq!(cdp.eval(loaded).await, true);
    let _ = browser.kill().await;
    stop.cancel();
    let _ = agent.await;
    app.stop().await;
}
