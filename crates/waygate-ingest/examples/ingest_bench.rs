//! Benchmark (not a test): simulator → ingest → RabbitMQ confirmed events/s, and worker
//! end-to-end latency (ingest receipt → handler) at a steady interaction rate.
//!
//! cargo run --release -p waygate-ingest --example ingest_bench -- [EVENTS] [RATE] [SECONDS]
//!
//! Needs RabbitMQ at WAYGATE_TEST_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/%2f).
//! Everything runs in this process on loopback, in its own namespace, removed at the end.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::{QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use waygate_config::Secret;
use waygate_ingest::amqp::Topology;
use waygate_ingest::ingest::{Ingest, IngestConfig};
use waygate_ingest::sim::{SimConfig, Simulator};
use waygate_ingest::worker::{Worker, WorkerConfig};

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let events: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let rate: f64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2_000.0);
    let seconds: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(10);
    let url = Secret::new(
        std::env::var("WAYGATE_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into()),
    );
    let ns = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let topo = Topology::new(ns.clone());
    let conn = lapin::Connection::connect(url.expose(), Default::default()).await.expect("RabbitMQ reachable");
    let ch = conn.create_channel().await.unwrap();
    topo.declare(&ch).await.unwrap();
    let sink = format!("{ns}.bench");
    ch.queue_declare(sink.as_str().into(), QueueDeclareOptions::durable(), FieldTable::default()).await.unwrap();
    ch.queue_bind(
        sink.as_str().into(),
        topo.events().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    // Phase 1: throughput. The simulator sends as fast as ingest reads.
    let sim = Simulator::start(SimConfig { messages: events, rate: 0.0, ..SimConfig::default() }).await.unwrap();
    let mut cfg = IngestConfig::new(url.clone(), ns.clone(), Secret::new("bench".into()), sim.http_url());
    cfg.drain_timeout = Duration::from_secs(30);
    let ingest = Ingest::build(cfg).await.unwrap();
    let registry = ingest.registry();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(ingest.run_until(async move {
        let _ = rx.await;
    }));
    let target = (events + 3) as f64; // READY and two GUILD_CREATE
    let mut first: Option<(Instant, f64)> = None;
    let started = Instant::now();
    let done = loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let c = metric(&registry.render(), "waygate_ingest_events_confirmed_total");
        if first.is_none() && c > 0.0 {
            first = Some((Instant::now(), c));
        }
        if c >= target {
            break Instant::now();
        }
        assert!(started.elapsed() < Duration::from_secs(600), "only {c} of {target} confirmed");
    };
    let (t0, c0) = first.unwrap();
    let per_sec = (target - c0) / done.duration_since(t0).as_secs_f64();
    let text = registry.render();
    println!(
        "ingest: {events} events confirmed at {per_sec:.0} events/s (published {}, backpressured {})",
        metric(&text, "waygate_ingest_events_published_total"),
        metric(&text, "waygate_ingest_backpressure_events_total")
    );
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    sim.stop().await;
    ch.queue_purge(sink.as_str().into(), Default::default()).await.unwrap();
    // Phase 2 talks to a new simulator: start it from a fresh session, not phase 1's resume state.
    ch.queue_purge(topo.ingest_state().as_str().into(), Default::default()).await.unwrap();

    // Phase 2: end-to-end latency at a steady interaction rate, handler answering 204.
    let latencies = Arc::new(Mutex::new(hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap()));
    let l = latencies.clone();
    let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let l = l.clone();
        async move {
            let received: i64 = headers
                .get("x-waygate-received-at")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let micros = (now_micros() - received * 1000).max(1) as u64;
            l.lock().unwrap().record(micros).unwrap();
            axum::http::StatusCode::NO_CONTENT
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handler = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let total = (rate * seconds as f64) as u64;
    let sim = Simulator::start(SimConfig { interactions: total, rate, ..SimConfig::default() }).await.unwrap();
    let mut wcfg = WorkerConfig::new(url.clone(), &ns, handler);
    wcfg.prefetch = 128;
    let worker = Worker::build(wcfg).await.unwrap();
    let (wstop, wrx) = tokio::sync::oneshot::channel::<()>();
    let wtask = tokio::spawn(worker.run_until(async move {
        let _ = wrx.await;
    }));
    let ingest = Ingest::build(IngestConfig::new(url.clone(), ns.clone(), Secret::new("bench".into()), sim.http_url()))
        .await
        .unwrap();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(ingest.run_until(async move {
        let _ = rx.await;
    }));
    let started = Instant::now();
    while latencies.lock().unwrap().len() < total {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if started.elapsed() > Duration::from_secs(seconds * 3 + 30) {
            break;
        }
    }
    let h = latencies.lock().unwrap().clone();
    println!(
        "worker end-to-end at {rate:.0} interactions/s: {} handled of {total}, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        h.len(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    let _ = wstop.send(());
    wtask.await.unwrap().unwrap();
    sim.stop().await;

    let mut queues = topo.queues();
    queues.push(sink);
    for d in [200, 400, 800, 1600] {
        queues.push(Topology::retry_queue(&topo.interactions(), d));
    }
    for q in queues {
        let c = conn.create_channel().await.unwrap();
        let _ = c.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await;
    }
    for x in [topo.events(), topo.dlx()] {
        let _ = ch.exchange_delete(x.as_str().into(), Default::default()).await;
    }
}
