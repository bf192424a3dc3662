//! Simulator → ingest → RabbitMQ on a real broker: routing, order per shard, faults of the
//! upstream gateway, and a broker link cut by a TCP proxy.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use waygate_config::Secret;
use waygate_ingest::ingest::{Ingest, IngestConfig};
use waygate_ingest::sim::{Fault, SimConfig, Simulator};

struct Running {
    metrics: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<waygate_ingest::Result<()>>,
}

impl Running {
    async fn stop(self) -> waygate_ingest::Result<()> {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT, self.task).await.expect("ingest drains in time").unwrap()
    }
}

async fn start_ingest(url: Secret, ns: &Ns, sim: &Simulator, tune: impl FnOnce(&mut IngestConfig)) -> Running {
    let mut cfg = IngestConfig::new(url, ns.name.clone(), Secret::new("test-token".into()), sim.http_url());
    cfg.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    cfg.drain_timeout = Duration::from_secs(10);
    tune(&mut cfg);
    let ingest = Ingest::build(cfg).await.expect("ingest builds");
    let metrics = ingest.metrics_addr().unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(ingest.run_until(async move {
        let _ = rx.await;
    }));
    Running { metrics, stop, task }
}

fn assert_in_order_without_gaps(got: &[Got]) {
    for (shard, seqs) in seqs_by_shard(got) {
        let mut last = 0;
        for s in &seqs {
            assert!(*s == last + 1, "shard {shard}: seq {s} after {last} (order or gap): {seqs:?}");
            last = *s;
        }
    }
}

#[tokio::test]
async fn events_arrive_in_order_per_shard_in_the_right_queues() {
    let Some(url) = amqp_url().await else { return };
    let ns = Ns::new(&url, "order").await;
    let events = ns.events_queue("#").await;
    let sim = Simulator::start(SimConfig {
        guilds: 4,
        shards: 2,
        max_concurrency: 2,
        interactions: 40,
        messages: 300,
        rate: 0.0,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    // Compressed transport, to cover zlib-stream end to end.
    let ingest = start_ingest(url.clone(), &ns, &sim, |c| c.compress = true).await;

    // READY + 2 GUILD_CREATE per shard, then the messages.
    let got =
        collect(&ns, &events, |g| count_kind(g, "MESSAGE_CREATE") == 300 && count_kind(g, "GUILD_CREATE") == 4).await;
    let interactions = collect(&ns, &ns.topo.interactions(), |g| g.len() == 40).await;

    assert!(interactions.iter().all(|g| g.kind == "INTERACTION_CREATE" && g.routing_key == ns.topo.interactions()));
    assert!(got.iter().all(|g| g.kind != "INTERACTION_CREATE" && g.routing_key == g.kind), "routing key = event type");
    assert_eq!(count_kind(&got, "READY"), 2);
    let shards: std::collections::BTreeSet<_> = got.iter().filter_map(|g| g.shard).collect();
    assert_eq!(shards.len(), 2, "both shards publish");
    // Merge both queues: one sequence per shard, every number once, in order within each queue.
    let mut all = got.clone();
    all.extend(interactions.iter().cloned());
    all.sort_by_key(|g| (g.shard, g.seq));
    assert_in_order_without_gaps(&all);
    for queue in [&got, &interactions] {
        for seqs in seqs_by_shard(queue).values() {
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "arrival order per shard: {seqs:?}");
        }
    }
    let body: serde_json::Value = serde_json::from_slice(&interactions[0].body).unwrap();
    assert_eq!(body["t"], "INTERACTION_CREATE", "the body is the dispatch payload as received");
    assert!(amqp_expiry(&interactions[0]) > 0, "interactions carry their deadline");

    let text =
        wait_metric(ingest.metrics, "all confirmed", |t| metric(t, "waygate_ingest_events_confirmed_total") >= 346.0)
            .await;
    assert_eq!(metric(&text, "waygate_ingest_events_received_total"), 346.0, "{text}");
    assert_eq!(metric(&text, "waygate_ingest_shards_connected"), 2.0);
    assert_eq!(metric(&text, "waygate_backend_up{backend=\"amqp\"}"), 1.0);
    let ready = reqwest::get(format!("http://{}/readyz", ingest.metrics)).await.unwrap();
    assert_eq!(ready.status(), 200);

    ingest.stop().await.unwrap();
    sim.stop().await;
    ns.cleanup().await;
}

fn amqp_expiry(g: &Got) -> i64 {
    waygate_ingest::amqp::header_i64(&g.headers, "x-waygate-expires-at").unwrap_or(0)
}

#[tokio::test]
async fn gateway_faults_reconnect_resume_and_reidentify_without_losing_events() {
    let Some(url) = amqp_url().await else { return };
    let ns = Ns::new(&url, "faults").await;
    let events = ns.events_queue("MESSAGE_CREATE").await;
    let faults = ["reconnect@40", "zombie@90", "close:4000@140", "invalid-session@190", "drop@240"]
        .iter()
        .map(|f| f.parse::<Fault>().unwrap())
        .collect();
    let sim = Simulator::start(SimConfig {
        messages: 400,
        rate: 400.0,
        heartbeat_interval: Duration::from_millis(300),
        identify_interval: Duration::from_millis(0),
        faults,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let ingest = start_ingest(url.clone(), &ns, &sim, |_| {}).await;
    let got = collect(&ns, &events, |g| count_kind(g, "MESSAGE_CREATE") == 400).await;
    let stats = sim.stats();
    assert!(stats.resumes >= 3, "op 7, zombie, 4000 and drop are resumed: {stats:?}");
    assert_eq!(stats.identifies, 2, "only the invalid session needs a new identify: {stats:?}");
    // Resumes may repeat a few events (at least once); every message arrives.
    let ids: std::collections::BTreeSet<_> = got.iter().map(|g| g.message_id.clone()).collect();
    assert!(ids.len() >= 400);
    let text = scrape(ingest.metrics).await;
    assert!(metric(&text, "waygate_ingest_gateway_connects_total{kind=\"resume\"}") >= 3.0, "{text}");
    ingest.stop().await.unwrap();
    sim.stop().await;
    ns.cleanup().await;
}

/// The saved resume state names the resume host of an upstream that is gone (here: a stopped
/// simulator). The ingestor must not retry that host forever: it resumes through the gateway
/// URL, gets op 9 for the unknown session and identifies again.
#[tokio::test]
async fn a_vanished_resume_host_falls_back_to_a_fresh_identify() {
    let Some(url) = amqp_url().await else { return };
    let ns = Ns::new(&url, "stale-resume").await;
    let events = ns.events_queue("MESSAGE_CREATE").await;
    let first = Simulator::start(SimConfig { messages: 20, rate: 0.0, ..SimConfig::default() }).await.unwrap();
    let ingest = start_ingest(url.clone(), &ns, &first, |_| {}).await;
    collect(&ns, &events, |g| count_kind(g, "MESSAGE_CREATE") == 20).await;
    ingest.stop().await.unwrap();
    first.stop().await;

    let second = Simulator::start(SimConfig { messages: 30, rate: 0.0, ..SimConfig::default() }).await.unwrap();
    let ingest = start_ingest(url.clone(), &ns, &second, |_| {}).await;
    let got = collect(&ns, &events, |g| count_kind(g, "MESSAGE_CREATE") == 30).await;
    assert_eq!(count_kind(&got, "MESSAGE_CREATE"), 30);
    let stats = second.stats();
    assert_eq!(stats.identifies, 1, "a new session on the new upstream: {stats:?}");
    assert!(stats.invalid_sessions >= 1, "the stale session is refused first: {stats:?}");
    ingest.stop().await.unwrap();
    second.stop().await;
    ns.cleanup().await;
}

#[tokio::test]
async fn rejected_token_is_fatal() {
    let Some(url) = amqp_url().await else { return };
    let sim = Simulator::start(SimConfig { token: Some("right".into()), ..SimConfig::default() }).await.unwrap();
    let cfg = IngestConfig::new(url.clone(), "t-unused", Secret::new("wrong".into()), sim.http_url());
    match Ingest::build(cfg).await {
        Err(waygate_ingest::Error::Unauthorized { .. }) => {}
        Err(other) => panic!("expected Unauthorized, got {other}"),
        Ok(_) => panic!("a wrong token must not start"),
    }
    // Going to the gateway directly skips REST: the gateway's 4004 close ends the run.
    let ns = Ns::new(&url, "token").await;
    let mut cfg =
        IngestConfig::new(url.clone(), ns.name.clone(), Secret::new("wrong".into()), format!("ws://{}", sim.addr()));
    cfg.drain_timeout = Duration::from_secs(5);
    let ingest = Ingest::build(cfg).await.unwrap();
    let result = tokio::time::timeout(WAIT, ingest.run_until(std::future::pending())).await.expect("stops by itself");
    match result {
        Err(waygate_ingest::Error::FatalClose { code: 4004, .. }) => {}
        other => panic!("expected a fatal 4004, got {other:?}"),
    }
    sim.stop().await;
    ns.cleanup().await;
}

#[tokio::test]
async fn broker_cut_by_a_proxy_loses_no_event_and_reconnects() {
    let Some(url) = amqp_url().await else { return };
    let ns = Ns::new(&url, "cut").await;
    let events = ns.events_queue("MESSAGE_CREATE").await;
    let proxy = Proxy::start(broker_addr()).await;
    let sim = Simulator::start(SimConfig { messages: 1500, rate: 500.0, ..SimConfig::default() }).await.unwrap();
    let ingest = start_ingest(proxy.url(&amqp_url_text()), &ns, &sim, |c| {
        c.buffer = 100;
        c.max_in_flight = 50;
    })
    .await;
    wait_metric(ingest.metrics, "some confirmed events", |t| {
        metric(t, "waygate_ingest_events_confirmed_total") >= 100.0
    })
    .await;
    proxy.cut();
    // While the link is down the publisher notices, the buffer fills and readers back off.
    let text = wait_metric(ingest.metrics, "backpressure", |t| {
        metric(t, "waygate_backend_up{backend=\"amqp\"}") == 0.0 && metric(t, "waygate_ingest_buffer_depth") >= 90.0
    })
    .await;
    assert!(metric(&text, "waygate_ingest_backpressure_events_total") > 0.0, "{text}");
    let ready = reqwest::get(format!("http://{}/readyz", ingest.metrics)).await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["error"]["code"], "service_unavailable");
    proxy.restore();

    let got = collect(&ns, &events, |g| count_kind(g, "MESSAGE_CREATE") == 1500).await;
    let dupes = got.len() - count_kind(&got, "MESSAGE_CREATE");
    eprintln!("broker cut: {} deliveries for 1500 events ({dupes} duplicates from republishing)", got.len());
    // Republished events may repeat, but first occurrences keep the shard's order.
    let mut seen = std::collections::BTreeSet::new();
    let firsts: Vec<Got> = got.iter().filter(|g| seen.insert(g.message_id.clone())).cloned().collect();
    let seqs = seqs_by_shard(&firsts);
    assert!(seqs[&0].windows(2).all(|w| w[0] < w[1]), "first deliveries in order");
    wait_metric(ingest.metrics, "reconnected", |t| metric(t, "waygate_backend_up{backend=\"amqp\"}") == 1.0).await;
    ingest.stop().await.unwrap();
    sim.stop().await;
    ns.cleanup().await;
}
