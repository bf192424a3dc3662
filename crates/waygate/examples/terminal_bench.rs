//! Terminal relay throughput: `waygate serve` + `waygate agent` as real processes, one session
//! running `head -c BYTES /dev/zero`, a client reading as fast as it can. Prints MB/s through the
//! gateway and the gateway's CPU time per MB (from /proc). Not a test: figures go to
//! docs/benchmarks.md.
//!
//! ```text
//! cargo build --release -p waygate --example terminal_bench
//! target/release/examples/terminal_bench target/release/waygate [BYTES]
//! ```

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let bin = args.next().expect("usage: terminal_bench PATH/TO/waygate [BYTES]");
    let total: usize = args.next().map_or(1_000_000_000, |b| b.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let env = [("WAYGATE_AGENT_TOKEN", "bench"), ("WAYGATE_LOG", "warn")];
    let mut serve = Command::new(&bin)
        .current_dir(dir.path())
        .envs(env)
        .args(["serve", "--host", "127.0.0.1", "--port", "0", "--ws-port", "off", "--ready-file"])
        .arg(&ready)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let info: Value = loop {
        if let Ok(t) = std::fs::read_to_string(&ready) {
            break serde_json::from_str(&t).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let http = info["http"].as_str().unwrap().to_owned();
    let mut agent = Command::new(&bin)
        .envs(env)
        .args(["agent", "--gateway", &format!("ws://{http}"), "--node-id", "bench", "--token", "bench"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut add = Command::new(&bin)
        .current_dir(dir.path())
        .args(["user", "add", "bench@example.com"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    add.stdin.take().unwrap().write_all(b"password123\n").unwrap();
    assert!(add.wait().unwrap().success());
    let client = reqwest::Client::new();
    let base = format!("http://{http}");
    let login: Value = client
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email":"bench@example.com","password":"password123"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bearer = login["token"].as_str().unwrap().to_owned();
    let alloc: Value = client
        .post(format!("{base}/api/terminal/allocations"))
        .bearer_auth(&bearer)
        .json(&json!({"nodeId":"bench","tenantId":"t","projectId":"p","command":format!("head -c {total} /dev/zero")}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = alloc["allocationId"].as_str().unwrap().to_owned();
    loop {
        let v: Value = client
            .get(format!("{base}/api/terminal/allocations/{id}"))
            .bearer_auth(&bearer)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["nodeOnline"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token: Value = client
        .post(format!("{base}/api/terminal/allocations/{id}/tokens"))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut req = format!("ws://{http}/ws/terminal/{id}").into_client_request().unwrap();
    let proto = format!("waygate.terminal.v1, {}", token["token"].as_str().unwrap());
    req.headers_mut().insert("sec-websocket-protocol", proto.parse().unwrap());
    let cpu0 = cpu_ticks(serve.id());
    let t0 = Instant::now();
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut got = 0usize;
    while let Some(Ok(m)) = ws.next().await {
        match m {
            Message::Binary(b) => got += b.len(),
            Message::Text(_) => break,
            _ => {}
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let ticks = cpu_ticks(serve.id()) - cpu0;
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mb = got as f64 / 1e6;
    println!(
        "terminal relay: {got} bytes in {secs:.2} s = {:.1} MB/s per session; gateway CPU {:.2} s = {:.2} ms per MB",
        mb / secs,
        ticks as f64 / hz,
        ticks as f64 / hz * 1000.0 / mb
    );
    for child in [&mut agent, &mut serve] {
        let _ = child.kill();
        let _ = child.wait();
    }
}
