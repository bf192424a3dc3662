//! The worker on a real broker: retries through delay queues, dead letters with the standard
//! headers, expiry that retries never extend, replay, and the handler never blocking others.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use waygate_config::Secret;
use waygate_ingest::dlq::{Dlq, Select};
use waygate_ingest::worker::{Worker, WorkerConfig};

struct Running {
    metrics: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<waygate_ingest::Result<()>>,
}

async fn start_worker(url: &Secret, ns: &Ns, handler: &Handler, tune: impl FnOnce(&mut WorkerConfig)) -> Running {
    let mut cfg = WorkerConfig::new(url.clone(), &ns.name, handler.url());
    cfg.retry_delay = Duration::from_millis(50);
    cfg.max_retry_delay = Duration::from_millis(200);
    cfg.max_attempts = 3;
    cfg.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    cfg.drain_timeout = Duration::from_secs(10);
    tune(&mut cfg);
    let worker = Worker::build(cfg).await.unwrap();
    let metrics = worker.metrics_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(worker.run_until(async move {
        let _ = rx.await;
    }));
    wait_metric(metrics, "consuming", |t| metric(t, "waygate_backend_up{backend=\"amqp\"}") == 1.0).await;
    Running { metrics, stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task).await.expect("worker drains").unwrap().unwrap();
    }
}

#[tokio::test]
async fn handler_500_dead_letters_after_k_attempts_and_replay_succeeds_once_fixed() {
    let Some(url) = amqp_url().await else { return };
    let ns = Ns::new(&url, "dlq").await;
    let handler = Handler::start(500).await;
    let worker = start_worker(&url, &ns, &handler, |_| {}).await;
    ns.publish_interaction("i-1", 10_000).await;
    ns.wait_depth(&ns.topo.dlq(), 1).await;
    assert_eq!(handler.calls(), 3, "exactly --max-attempts calls");
    let attempts: Vec<String> = handler.seen.lock().unwrap().iter().map(|h| h["x-waygate-attempt"].clone()).collect();
    assert_eq!(attempts, ["1", "2", "3"]);

    let dlq = Dlq::open(&url, &ns.topo.dlq()).await.unwrap();
    let listed = dlq.list(10).await.unwrap();
    assert_eq!(listed.len(), 1);
    let l = &listed[0];
    assert_eq!(l.id, "i-1");
    assert_eq!(l.reason.as_deref(), Some("rejected"));
    assert_eq!(l.queue.as_deref(), Some(ns.topo.interactions().as_str()));
    assert_eq!(l.attempts, Some(3));
    assert!(l.error.as_deref().unwrap().contains("handler answered 500 on attempt 3 of 3"), "{l:?}");
    let shown = dlq.show("i-1").await.unwrap().expect("show finds it");
    let h = &shown.headers;
    assert_eq!(h["x-first-death-reason"], "rejected");
    assert_eq!(h["x-first-death-queue"], ns.topo.interactions());
    let deaths = h["x-death"].as_array().unwrap();
    assert_eq!(deaths.len(), 1, "the delay-queue hops are not in the history: {deaths:?}");
    assert_eq!(deaths[0]["queue"], ns.topo.interactions());
    assert_eq!(deaths[0]["reason"], "rejected");
    assert_eq!(deaths[0]["count"], 1);
    assert_eq!(shown.body["d"]["id"], "i-1");
    assert_eq!(ns.depth(&ns.topo.dlq()).await, 1, "list and show leave the message in place");

    // Fixed handler: the replay goes back to the interactions queue and succeeds.
    handler.status.store(200, Ordering::SeqCst);
    let moved = dlq.replay(Select::Ids(&["i-1".to_owned()]), None).await.unwrap();
    assert_eq!(moved, vec![("i-1".to_owned(), ns.topo.interactions())]);
    let text = wait_metric(worker.metrics, "the replay acked", |t| {
        metric(t, "waygate_worker_messages_total{outcome=\"acked\"}") == 1.0
    })
    .await;
    assert_eq!(metric(&text, "waygate_worker_messages_total{outcome=\"dead_lettered\"}"), 1.0);
    assert_eq!(metric(&text, "waygate_worker_messages_total{outcome=\"retried\"}"), 2.0);
    let last = handler.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last["x-waygate-attempt"], "1", "a replay starts its attempts over");
    assert_eq!(ns.depth(&ns.topo.dlq()).await, 0);
    assert!(dlq.replay(Select::Ids(&["nope".to_owned()]), None).await.is_err(), "unknown ids are an error");
    dlq.close().await;
    worker.stop().await;
    ns.cleanup().await;
}

#[tokio::test]
async fn expired_interactions_dead_letter_as_expired_and_retries_keep_the_deadline() {
    let Some(url) = amqp_url().await else { return };
    let ns = Ns::new(&url, "expiry").await;
    let dlq = ns.topo.dlq();

    // No worker: the broker's 3 s queue TTL dead-letters it, with its own headers.
    ns.publish_interaction("nobody-home", 3_000).await;
    ns.wait_depth(&dlq, 1).await;

    // A worker meets one already past its deadline: dead-lettered as expired, handler never called.
    let handler = Handler::start(500).await;
    let worker = start_worker(&url, &ns, &handler, |c| {
        c.max_attempts = 10;
        c.retry_delay = Duration::from_millis(400);
        c.max_retry_delay = Duration::from_millis(400);
    })
    .await;
    ns.publish_interaction("too-late", -1).await;
    ns.wait_depth(&dlq, 2).await;
    assert_eq!(handler.calls(), 0);

    // Failing with a 1 s deadline and 400 ms retries: the deadline ends it before 10 attempts.
    ns.publish_interaction("failing", 1_000).await;
    ns.wait_depth(&dlq, 3).await;
    let calls = handler.calls();
    assert!((1..=3).contains(&calls), "retries stop at the original deadline ({calls} calls)");

    let d = Dlq::open(&url, &dlq).await.unwrap();
    let listed = d.list(10).await.unwrap();
    let by_id = |id: &str| listed.iter().find(|l| l.id == id).unwrap_or_else(|| panic!("{id} in {listed:?}")).clone();
    for id in ["nobody-home", "too-late", "failing"] {
        let l = by_id(id);
        assert_eq!(l.reason.as_deref(), Some("expired"), "{l:?}");
        assert_eq!(l.queue.as_deref(), Some(ns.topo.interactions().as_str()), "{l:?}");
    }
    let text = scrape(worker.metrics).await;
    assert_eq!(metric(&text, "waygate_worker_messages_total{outcome=\"expired\"}"), 2.0, "{text}");
    d.close().await;
    worker.stop().await;
    ns.cleanup().await;
}

#[tokio::test]
async fn a_slow_message_does_not_hold_up_healthy_ones() {
    let Some(url) = amqp_url().await else { return };
    let ns = Ns::new(&url, "slow").await;
    // One handler call blocks for a long time; the others must still complete meanwhile.
    let handler = Handler::start(200).await;
    handler.delay_ms.store(5_000, Ordering::SeqCst);
    let worker = start_worker(&url, &ns, &handler, |c| {
        c.prefetch = 4;
        c.handler_timeout = Duration::from_secs(20);
    })
    .await;
    ns.publish_interaction("slow", 30_000).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while handler.calls() < 1 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handler.delay_ms.store(0, Ordering::SeqCst);
    for i in 0..5 {
        ns.publish_interaction(&format!("fast-{i}"), 30_000).await;
    }
    let text = wait_metric(worker.metrics, "five acked while one is slow", |t| {
        metric(t, "waygate_worker_messages_total{outcome=\"acked\"}") >= 5.0
    })
    .await;
    assert_eq!(metric(&text, "waygate_worker_inflight"), 1.0, "the slow one is still in flight");
    // Drain: the slow call finishes and is acknowledged before the worker stops.
    worker.stop().await;
    assert_eq!(ns.depth(&ns.topo.interactions()).await, 0, "nothing left unacknowledged");
    ns.cleanup().await;
}
