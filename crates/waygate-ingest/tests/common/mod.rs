//! Shared helpers for the ingest tests: a real RabbitMQ (skipped loudly when unreachable, a
//! failure under CI=true), one namespace per test removed at the end, the Discord simulator,
//! an HTTP handler with a switchable answer, and a TCP proxy that can cut the broker link.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::time::Instant;
use waygate_config::Secret;
use waygate_ingest::amqp::{self, Topology};

/// Long enough for a loaded CI machine, short enough that a hang fails quickly.
pub const WAIT: Duration = Duration::from_secs(30);

pub fn amqp_url_text() -> String {
    std::env::var("WAYGATE_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// The broker URL, or `None` (after a loud SKIP line) when nothing listens there.
/// Under `CI=true` an unreachable broker fails the test instead.
pub async fn amqp_url() -> Option<Secret> {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = waygate_telemetry::init_logging(&filter, false, "test");
    }
    let url = amqp_url_text();
    let reachable = match Connection::connect(&url, ConnectionProperties::default()).await {
        Ok(c) => {
            let _ = c.close(200, "probe".into()).await;
            true
        }
        Err(_) => false,
    };
    if reachable {
        return Some(Secret::new(url));
    }
    let shown = waygate_config::redact_url(&url);
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("RabbitMQ unreachable at {shown} (CI=true: failing instead of skipping)");
    }
    eprintln!("SKIP: rabbitmq unreachable at {shown}");
    None
}

/// A namespace of its own for one test; `cleanup` deletes every queue and exchange in it.
pub struct Ns {
    pub name: String,
    pub topo: Topology,
    pub url: Secret,
    pub conn: Connection,
    pub channel: Channel,
    extra_queues: Mutex<Vec<String>>,
}

impl Ns {
    pub async fn new(url: &Secret, test: &str) -> Ns {
        let name = format!("t-{test}-{}", uuid::Uuid::new_v4().simple().to_string().split_at(8).0);
        let conn = Connection::connect(url.expose(), ConnectionProperties::default()).await.unwrap();
        let channel = conn.create_channel().await.unwrap();
        let topo = Topology::new(name.clone());
        topo.declare(&channel).await.unwrap();
        Ns { name, topo, url: url.clone(), conn, channel, extra_queues: Mutex::default() }
    }

    /// A queue bound to `{ns}.events` with `pattern`, deleted at cleanup.
    pub async fn events_queue(&self, pattern: &str) -> String {
        let q = format!("{}.test.{}", self.name, self.extra_queues.lock().unwrap().len());
        self.channel
            .queue_declare(q.as_str().into(), QueueDeclareOptions::durable(), FieldTable::default())
            .await
            .unwrap();
        self.channel
            .queue_bind(
                q.as_str().into(),
                self.topo.events().into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        self.track(&q);
        q
    }

    pub fn track(&self, queue: &str) {
        self.extra_queues.lock().unwrap().push(queue.to_owned());
    }

    pub async fn depth(&self, queue: &str) -> u32 {
        let ch = self.conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare(queue.into(), QueueDeclareOptions::default().passive(), FieldTable::default())
            .await
            .unwrap();
        let _ = ch.close(200, "".into()).await;
        q.message_count()
    }

    /// Waits (polling, bounded) until `queue` holds `n` messages.
    pub async fn wait_depth(&self, queue: &str, n: u32) {
        let deadline = Instant::now() + WAIT;
        loop {
            let d = self.depth(queue).await;
            if d >= n {
                return;
            }
            assert!(Instant::now() < deadline, "{queue} holds {d} messages, expected {n}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Publishes an interaction the way ingest does (deadline `ttl_ms` from now).
    pub async fn publish_interaction(&self, id: &str, ttl_ms: i64) {
        let now = waygate_telemetry::now_millis();
        let mut h = FieldTable::default();
        h.insert("x-waygate-received-at".into(), AMQPValue::LongLongInt(now));
        h.insert("x-waygate-expires-at".into(), AMQPValue::LongLongInt(now + ttl_ms));
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(id.into())
            .with_type("INTERACTION_CREATE".into())
            .with_headers(h);
        let body = format!(r#"{{"t":"INTERACTION_CREATE","op":0,"s":1,"d":{{"id":"{id}"}}}}"#);
        let ch = self.conn.create_channel().await.unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        let confirm = ch
            .basic_publish(
                "".into(),
                self.topo.interactions().into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
        let _ = ch.close(200, "".into()).await;
    }

    pub async fn cleanup(self) {
        let mut queues = self.topo.queues();
        queues.extend(self.extra_queues.lock().unwrap().iter().cloned());
        // Retry queues of the interactions queue, whatever delays the test used.
        for q in queues.iter().filter(|q| q.ends_with(".interactions")).cloned().collect::<Vec<_>>() {
            for ms in [10, 20, 40, 50, 80, 100, 160, 200, 320, 400, 800, 1000, 1600, 2000, 3000, 4000, 30000] {
                queues.push(Topology::retry_queue(&q, ms));
            }
        }
        for q in queues {
            let ch = self.conn.create_channel().await.unwrap();
            let _ = ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await;
            let _ = ch.close(200, "".into()).await;
        }
        for x in [self.topo.events(), self.topo.dlx()] {
            let _ = self.channel.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default()).await;
        }
        let _ = self.conn.close(200, "".into()).await;
    }
}

/// A message as a test sees it.
#[derive(Debug, Clone)]
pub struct Got {
    pub routing_key: String,
    pub message_id: String,
    pub kind: String,
    pub shard: Option<i64>,
    pub seq: Option<i64>,
    pub headers: Option<FieldTable>,
    pub body: Vec<u8>,
}

/// Consumes `queue` (acking) until `done` says so or `WAIT` passes (then panics).
pub async fn collect(ns: &Ns, queue: &str, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
    let ch = ns.conn.create_channel().await.unwrap();
    ch.basic_qos(500, Default::default()).await.unwrap();
    let mut consumer =
        ch.basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()).await.unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !done(&out) {
        let next = tokio::time::timeout_at(deadline, consumer.next()).await;
        let d = match next {
            Ok(Some(Ok(d))) => d,
            other => panic!("{queue}: got {} messages, then {other:?}", out.len()),
        };
        let h = d.properties.headers().clone();
        out.push(Got {
            routing_key: d.routing_key.to_string(),
            message_id: d.properties.message_id().as_ref().map(|m| m.to_string()).unwrap_or_default(),
            kind: d.properties.kind().as_ref().map(|m| m.to_string()).unwrap_or_default(),
            shard: amqp::header_i64(&h, "x-waygate-shard"),
            seq: amqp::header_i64(&h, "x-waygate-seq"),
            headers: h,
            body: d.data.clone(),
        });
        d.acker.ack(BasicAckOptions::default()).await.unwrap();
    }
    let _ = ch.close(200, "".into()).await;
    out
}

pub fn count_kind(got: &[Got], kind: &str) -> usize {
    got.iter().filter(|g| g.kind == kind).map(|g| &g.message_id).collect::<std::collections::BTreeSet<_>>().len()
}

/// Per shard, the sequence numbers in arrival order.
pub fn seqs_by_shard(got: &[Got]) -> BTreeMap<i64, Vec<i64>> {
    let mut m: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for g in got {
        if let (Some(shard), Some(seq)) = (g.shard, g.seq) {
            m.entry(shard).or_default().push(seq);
        }
    }
    m
}

/// An HTTP handler whose status the test sets; counts calls and keeps their headers.
#[derive(Clone)]
pub struct Handler {
    pub addr: SocketAddr,
    pub status: Arc<AtomicU16>,
    pub calls: Arc<AtomicU64>,
    pub delay_ms: Arc<AtomicU64>,
    pub seen: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
}

impl Handler {
    pub async fn start(status: u16) -> Handler {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let h = Handler {
            addr: listener.local_addr().unwrap(),
            status: Arc::new(AtomicU16::new(status)),
            calls: Arc::default(),
            delay_ms: Arc::default(),
            seen: Arc::default(),
        };
        let state = h.clone();
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap, _body: axum::body::Bytes| {
            let state = state.clone();
            async move {
                state.calls.fetch_add(1, Ordering::SeqCst);
                state.seen.lock().unwrap().push(
                    headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())).collect(),
                );
                let delay = state.delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                axum::http::StatusCode::from_u16(state.status.load(Ordering::SeqCst)).unwrap()
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        h
    }

    pub fn url(&self) -> String {
        format!("http://{}/interactions", self.addr)
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

/// A TCP proxy in front of the broker whose link the test can cut and restore.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (c, l) = (cut.clone(), links.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if c.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                l.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy { addr, cut, links }
    }

    /// Drops every open link and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// The broker URL with the proxy's address.
    pub fn url(&self, real: &str) -> Secret {
        let mut uri: lapin::uri::AMQPUri = real.parse().unwrap();
        uri.authority.host = self.addr.ip().to_string();
        uri.authority.port = self.addr.port();
        let userinfo = format!("{}:{}", uri.authority.userinfo.username, uri.authority.userinfo.password);
        let vhost = if uri.vhost == "/" { "%2f".to_owned() } else { uri.vhost.clone() };
        Secret::new(format!("amqp://{userinfo}@{}/{vhost}", self.addr))
    }
}

pub fn broker_addr() -> SocketAddr {
    let uri: lapin::uri::AMQPUri = amqp_url_text().parse().unwrap();
    let host = if uri.authority.host == "localhost" { "127.0.0.1".to_owned() } else { uri.authority.host };
    format!("{host}:{}", uri.authority.port).parse().unwrap()
}

/// Value of a metric line (`name{labels} value`) in Prometheus text, 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

pub async fn scrape(addr: SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap()
}

/// Polls `/metrics` until `pred` holds (bounded by `WAIT`).
pub async fn wait_metric(addr: SocketAddr, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = scrape(addr).await;
        if pred(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "metrics never showed {what}:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
