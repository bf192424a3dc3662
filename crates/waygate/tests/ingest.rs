//! The real `waygate ingest`, `worker` and `dlq` processes on a real broker: kill -9 and
//! restart of the ingestor, SIGTERM drain of the worker, and the DLQ commands.

mod common;
#[path = "../../waygate-ingest/tests/common/mod.rs"]
mod ingest_common;

use std::process::{Child, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::waygate;
use ingest_common::*;
use serde_json::Value;
use waygate_ingest::sim::{SimConfig, Simulator};

/// A child process with a ready file; killed on drop.
struct Proc {
    child: Child,
    metrics: std::net::SocketAddr,
    log: std::path::PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(dir: &std::path::Path, name: &str, env: &[(&str, &str)], args: &[&str]) -> Proc {
        let ready = dir.join(format!("{name}.ready.json"));
        let _ = std::fs::remove_file(&ready);
        let log = dir.join(format!("{name}.log"));
        let mut cmd = waygate(dir);
        cmd.args(args)
            .args(["--metrics-addr", "127.0.0.1:0", "--ready-file"])
            .arg(&ready)
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("waygate starts");
        let deadline = std::time::Instant::now() + WAIT;
        let info: Value = loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                break serde_json::from_str(&text).expect("ready file is JSON");
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{name} exited early with {status}: {}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            assert!(std::time::Instant::now() < deadline, "no ready file from {name}");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(info["pid"], child.id());
        Proc { child, metrics: info["metrics"].as_str().unwrap().parse().unwrap(), log }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(std::time::Instant::now() < deadline, "process did not exit: {}", self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_killed_mid_stream_resumes_from_the_confirmed_sequence() {
    let Some(url) = amqp_url().await else { return };
    let ns = Ns::new(&url, "kill").await;
    let events = ns.events_queue("MESSAGE_CREATE").await;
    let total = 3000;
    let sim = Simulator::start(SimConfig { messages: total, rate: 1000.0, ..SimConfig::default() }).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gateway = sim.http_url();
    let env = [
        ("AMQP_URL", url.expose()),
        ("WAYGATE_AMQP_NAMESPACE", ns.name.as_str()),
        ("DISCORD_TOKEN", "test-token"),
        ("DISCORD_GATEWAY_URL", gateway.as_str()),
    ];
    let first = Proc::spawn(dir.path(), "ingest-1", &env, &["ingest", "--upstream", "discord"]);
    wait_metric(first.metrics, "events confirmed", |t| metric(t, "waygate_ingest_events_confirmed_total") >= 800.0)
        .await;
    first.signal(libc::SIGKILL);
    let mut first = first;
    first.wait_exit();
    let remaining_at_kill = sim.stats().remaining;
    assert!(remaining_at_kill > 0, "killed mid-stream");

    let second = Proc::spawn(dir.path(), "ingest-2", &env, &["ingest", "--upstream", "discord"]);
    let got = collect(&ns, &events, |g| count_kind(g, "MESSAGE_CREATE") == total as usize).await;
    let duplicates = got.len() - total as usize;
    eprintln!("kill -9 mid-stream: {} deliveries for {total} events, {duplicates} duplicates", got.len());
    let stats = sim.stats();
    assert_eq!(stats.identifies, 1, "the restart resumed the session: {stats:?}");
    assert!(stats.resumes >= 1, "{stats:?}");
    // Every sequence number arrives; repeats are the events confirmed after the last state save.
    let seqs: std::collections::BTreeSet<i64> = got.iter().filter_map(|g| g.seq).collect();
    assert!(duplicates < 1000, "at-least-once duplicates stay within one save interval and the in-flight window");
    let max = *seqs.iter().max().unwrap();
    assert_eq!(seqs.len() as i64, max - 3, "no gap in sequences 4..={max} (1-3: READY, GUILD_CREATE x2)");
    assert!(second.logs().contains("session resumed"), "{}", second.logs());
    drop(second);
    sim.stop().await;
    ns.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_drains_on_sigterm_and_dlq_commands_list_show_replay_purge() {
    let Some(url) = amqp_url().await else { return };
    let ns = Ns::new(&url, "cli").await;
    let dir = tempfile::tempdir().unwrap();
    let handler = Handler::start(500).await;
    let env = [("AMQP_URL", url.expose()), ("WAYGATE_AMQP_NAMESPACE", ns.name.as_str())];
    let handler_url = handler.url();
    let worker_args = [
        "worker",
        "--handler",
        handler_url.as_str(),
        "--max-attempts",
        "2",
        "--retry-delay-ms",
        "50",
        "--prefetch",
        "4",
    ];
    let mut worker = Proc::spawn(dir.path(), "worker-1", &env, &worker_args);
    wait_metric(worker.metrics, "consuming", |t| metric(t, "waygate_backend_up{backend=\"amqp\"}") == 1.0).await;
    ns.publish_interaction("cli-a", 20_000).await;
    ns.publish_interaction("cli-b", 20_000).await;
    ns.wait_depth(&ns.topo.dlq(), 2).await;

    let dlq = |args: &[&str]| {
        let out = waygate(dir.path()).args(["dlq"]).args(args).envs(env).stdin(Stdio::null()).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = dlq(&["list", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let listed: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(listed.len(), 2, "{out}");
    assert!(listed.iter().all(|l| l["reason"] == "rejected" && l["attempts"] == 2), "{out}");
    let (code, out, _) = dlq(&["list"]);
    assert_eq!(code, Some(0));
    assert!(out.contains(&format!("2 shown, 2 in {}", ns.topo.dlq())), "{out}");
    let (code, out, _) = dlq(&["show", "cli-a"]);
    assert_eq!(code, Some(0));
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["headers"]["x-first-death-reason"], "rejected");
    assert_eq!(shown["headers"]["x-death"][0]["queue"], ns.topo.interactions());
    let (code, _, err) = dlq(&["show", "missing"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no message missing"), "{err}");

    // Replay one after the handler is fixed: it succeeds and leaves the DLQ.
    handler.status.store(200, Ordering::SeqCst);
    let (code, out, err) = dlq(&["replay", "cli-a"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&format!("replayed cli-a -> {}", ns.topo.interactions())), "{out}");
    wait_metric(worker.metrics, "replay acked", |t| {
        metric(t, "waygate_worker_messages_total{outcome=\"acked\"}") == 1.0
    })
    .await;
    assert_eq!(handler.seen.lock().unwrap().last().unwrap()["x-waygate-message-id"], "cli-a");

    // Purge needs --yes without a terminal, and then empties the queue.
    let (code, _, err) = dlq(&["purge"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("without --yes"), "{err}");
    assert_eq!(ns.depth(&ns.topo.dlq()).await, 1, "nothing purged without confirmation");
    let (code, out, _) = dlq(&["purge", "--yes"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("purged 1 messages"), "{out}");

    // SIGTERM during a slow handler call: the call finishes, is acked, the worker exits 0.
    handler.delay_ms.store(1_500, Ordering::SeqCst);
    let calls = handler.calls();
    ns.publish_interaction("cli-slow", 20_000).await;
    let deadline = std::time::Instant::now() + WAIT;
    while handler.calls() == calls {
        assert!(std::time::Instant::now() < deadline, "the handler was never called");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.signal(libc::SIGTERM);
    let status = worker.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", worker.logs());
    assert!(worker.logs().contains("draining"), "{}", worker.logs());
    assert_eq!(ns.depth(&ns.topo.interactions()).await, 0, "the in-flight message was acked before exit");
    assert_eq!(ns.depth(&ns.topo.dlq()).await, 0);
    ns.cleanup().await;
}
