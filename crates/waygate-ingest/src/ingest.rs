//! `waygate ingest --upstream discord`: holds the Discord gateway (one task per shard) and
//! publishes every dispatch event to RabbitMQ with publisher confirms.
//!
//! Shard readers put events into one bounded buffer; a single publisher task drains it, keeps
//! every unconfirmed event until the broker confirms it (republishing in order after a broker
//! failure) and records, per shard, the highest sequence whose events are all confirmed. That
//! resume state is saved to the `{ns}.ingest.state` queue (one message, the newest), so a
//! restarted ingestor, on any host, resumes its sessions from the last *confirmed* event: an
//! event is either confirmed by the broker or replayed by Discord on resume, never lost.
//! When the broker is down the buffer fills, readers stop reading their sockets (TCP
//! backpressure to Discord) and keep heartbeating.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::FuturesOrdered;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Full;
use lapin::options::{BasicGetOptions, BasicPublishOptions, BasicRejectOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, PublisherConfirm};
use metrics::{Counter, Gauge, Histogram};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use waygate_config::Secret;
use waygate_telemetry::Registry;

use crate::amqp::{self, Topology, header};
use crate::discord::{self, CloseAction, Inflater, Payload, close, op};
use crate::error::{Error, Result};
use crate::{Backoff, names, sleep_or_stop, tls};

/// GUILDS | GUILD_MESSAGES; interactions need no intent.
pub const DEFAULT_INTENTS: u64 = (1 << 0) | (1 << 9);
const HELLO_TIMEOUT: Duration = Duration::from_secs(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const REST_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest gateway message accepted (a GUILD_CREATE of a big guild runs to megabytes).
const MAX_MESSAGE: usize = 64 << 20;
/// How often the resume state is saved when it changed.
const SAVE_EVERY: Duration = Duration::from_millis(250);
/// Discord: one identify per bucket every 5 s; the margin absorbs clock and network skew.
const IDENTIFY_SPACING: Duration = Duration::from_millis(5_100);

#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub amqp_url: Secret,
    pub namespace: String,
    pub token: Secret,
    /// `DISCORD_GATEWAY_URL`: an http(s) API base (asked for `/api/v10/gateway/bot`) or a
    /// ws(s) gateway URL used as is.
    pub gateway_url: String,
    /// Shard count; `None` uses the count `/gateway/bot` recommends.
    pub shards: Option<u32>,
    pub intents: u64,
    pub compress: bool,
    /// Events buffered between the shard readers and the publisher.
    pub buffer: usize,
    /// Published events awaiting the broker's confirm.
    pub max_in_flight: usize,
    pub metrics_addr: Option<SocketAddr>,
    pub drain_timeout: Duration,
    pub instance_id: String,
}

impl IngestConfig {
    pub fn new(amqp_url: Secret, namespace: impl Into<String>, token: Secret, gateway_url: impl Into<String>) -> Self {
        IngestConfig {
            amqp_url,
            namespace: namespace.into(),
            token,
            gateway_url: gateway_url.into(),
            shards: None,
            intents: DEFAULT_INTENTS,
            compress: false,
            buffer: 10_000,
            max_in_flight: 2_000,
            metrics_addr: None,
            drain_timeout: Duration::from_secs(30),
            instance_id: "ingest".to_owned(),
        }
    }
}

/// What a shard needs to resume: saved only once every event up to `seq` is confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardResume {
    pub session_id: String,
    pub resume_gateway_url: String,
    pub seq: u64,
}

/// The message kept in `{ns}.ingest.state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    pub shard_count: u32,
    pub shards: BTreeMap<u32, ShardResume>,
    #[serde(default)]
    pub saved_at: String,
    #[serde(default)]
    pub instance_id: String,
}

impl SavedState {
    /// Reads the saved state without consuming it (the message is put back).
    pub async fn load(channel: &Channel, topo: &Topology) -> Result<Option<SavedState>> {
        let got = amqp::timed(channel.basic_get(topo.ingest_state().into(), BasicGetOptions { no_ack: false })).await?;
        let Some(msg) = got else { return Ok(None) };
        let state = serde_json::from_slice::<SavedState>(&msg.delivery.data).ok();
        amqp::timed(msg.delivery.acker.reject(BasicRejectOptions { requeue: true })).await?;
        if state.is_none() {
            tracing::warn!("ignoring an unreadable resume state in {}", topo.ingest_state());
        }
        Ok(state)
    }
}

struct SessionInfo {
    id: String,
    resume_url: String,
}

/// One dispatch event on its way to the broker.
struct Event {
    shard: u32,
    session: Arc<SessionInfo>,
    seq: Option<u64>,
    kind: String,
    body: Bytes,
    received_at: i64,
}

struct Metrics {
    received: Counter,
    published: Counter,
    confirmed: Counter,
    nacked: Counter,
    unroutable: Counter,
    backpressured: Counter,
    buffer_depth: Gauge,
    inflight: Gauge,
    shards_connected: Gauge,
    connects_identify: Counter,
    connects_resume: Counter,
    heartbeat_rtt: Histogram,
    backend_up: Gauge,
    resume_seq: Vec<Gauge>,
}

impl Metrics {
    fn new(r: &Registry, shards: u32, buffer: usize) -> Metrics {
        use names::*;
        r.describe_counter(INGEST_EVENTS_RECEIVED_TOTAL, "Dispatch events read from the upstream gateway");
        r.describe_counter(
            INGEST_EVENTS_PUBLISHED_TOTAL,
            "Publishes to RabbitMQ (republishes after a failure count again)",
        );
        r.describe_counter(INGEST_EVENTS_CONFIRMED_TOTAL, "Events the broker confirmed");
        r.describe_counter(INGEST_EVENTS_NACKED_TOTAL, "Events the broker refused (nack); they are republished");
        r.describe_counter(INGEST_EVENTS_UNROUTABLE_TOTAL, "Confirmed events no queue was bound for");
        r.describe_counter(
            names::INGEST_BACKPRESSURE_TOTAL,
            "Events that waited for buffer space (broker slow or down)",
        );
        r.describe_gauge(INGEST_BUFFER_DEPTH, "Events buffered between the shard readers and the publisher");
        r.describe_gauge(INGEST_BUFFER_CAPACITY, "Capacity of that buffer (--buffer)");
        r.describe_gauge(INGEST_INFLIGHT, "Published events awaiting the broker's confirm");
        r.describe_gauge(INGEST_SHARDS_CONNECTED, "Shards with a live session (READY or RESUMED)");
        r.describe_counter(INGEST_GATEWAY_CONNECTS_TOTAL, "Gateway sessions started, by kind (identify, resume)");
        r.describe_histogram(INGEST_HEARTBEAT_RTT, "Heartbeat to heartbeat ACK");
        r.describe_gauge(INGEST_RESUME_SEQ, "Highest confirmed sequence per shard (the resume point)");
        r.describe_gauge(BACKEND_UP, "1 when the backend answers");
        r.gauge(INGEST_BUFFER_CAPACITY, &[]).set(buffer as f64);
        Metrics {
            received: r.counter(INGEST_EVENTS_RECEIVED_TOTAL, &[]),
            published: r.counter(INGEST_EVENTS_PUBLISHED_TOTAL, &[]),
            confirmed: r.counter(INGEST_EVENTS_CONFIRMED_TOTAL, &[]),
            nacked: r.counter(INGEST_EVENTS_NACKED_TOTAL, &[]),
            unroutable: r.counter(INGEST_EVENTS_UNROUTABLE_TOTAL, &[]),
            backpressured: r.counter(names::INGEST_BACKPRESSURE_TOTAL, &[]),
            buffer_depth: r.gauge(INGEST_BUFFER_DEPTH, &[]),
            inflight: r.gauge(INGEST_INFLIGHT, &[]),
            shards_connected: r.gauge(INGEST_SHARDS_CONNECTED, &[]),
            connects_identify: r.counter(INGEST_GATEWAY_CONNECTS_TOTAL, &[("kind", "identify".into())]),
            connects_resume: r.counter(INGEST_GATEWAY_CONNECTS_TOTAL, &[("kind", "resume".into())]),
            heartbeat_rtt: r.histogram(INGEST_HEARTBEAT_RTT, &[]),
            backend_up: r.gauge(BACKEND_UP, &[("backend", "amqp".into())]),
            resume_seq: (0..shards).map(|s| r.gauge(INGEST_RESUME_SEQ, &[("shard", s.to_string())])).collect(),
        }
    }
}

/// Shared view of the process for readiness and tests.
struct Status {
    broker_up: AtomicBool,
    draining: AtomicBool,
    shards: u32,
    shards_up: AtomicU32,
}

/// A built ingestor: discovery done, probes bound.
pub struct Ingest {
    cfg: Arc<IngestConfig>,
    topo: Topology,
    tls: Arc<rustls::ClientConfig>,
    gateway_ws: String,
    shard_count: u32,
    max_concurrency: u32,
    session_starts: (u32, u64),
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    status: Arc<Status>,
    probe_addr: Option<SocketAddr>,
    tracker: TaskTracker,
    probe_stop: CancellationToken,
}

impl Ingest {
    /// Asks Discord (or the simulator) for the gateway URL and shard count, and binds
    /// `--metrics-addr`. A rejected token is an error here, before anything else starts.
    pub async fn build(cfg: IngestConfig) -> Result<Ingest> {
        if cfg.buffer == 0 || cfg.max_in_flight == 0 {
            return Err(Error::invalid("ingest settings", "--buffer and --max-in-flight must be at least 1"));
        }
        let tls = tls::client_config()?;
        let base = cfg.gateway_url.trim_end_matches('/').to_owned();
        let (gateway_ws, recommended, max_concurrency, session_starts) =
            if base.starts_with("ws://") || base.starts_with("wss://") {
                (base.clone(), 1, 1, (u32::MAX, 0))
            } else if base.starts_with("http://") || base.starts_with("https://") {
                let client = tls::http_client(tls.clone(), 1);
                let bot = discover(&client, &base, &cfg.token).await?;
                let limit = &bot.session_start_limit;
                (bot.url.clone(), bot.shards.max(1), limit.max_concurrency.max(1), (limit.remaining, limit.reset_after))
            } else {
                return Err(Error::invalid("DISCORD_GATEWAY_URL", format!("{base:?} must be http(s):// or ws(s)://")));
            };
        let shard_count = cfg.shards.unwrap_or(recommended);
        if shard_count == 0 {
            return Err(Error::invalid("--shards", "must be at least 1"));
        }
        let registry = Arc::new(Registry::new());
        let metrics = Arc::new(Metrics::new(&registry, shard_count, cfg.buffer));
        let status = Arc::new(Status {
            broker_up: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            shards: shard_count,
            shards_up: AtomicU32::new(0),
        });
        let tracker = TaskTracker::new();
        let probe_stop = CancellationToken::new();
        let probe_addr = match cfg.metrics_addr {
            Some(addr) => {
                let s = status.clone();
                let readiness: crate::http::ReadinessFn = Arc::new(move || {
                    let mut reasons = Vec::new();
                    if s.draining.load(Ordering::Relaxed) {
                        reasons.push("draining".to_owned());
                    }
                    if !s.broker_up.load(Ordering::Relaxed) {
                        reasons.push("broker unreachable".to_owned());
                    }
                    let up = s.shards_up.load(Ordering::Relaxed);
                    if up < s.shards {
                        reasons.push(format!("{up} of {} shards connected", s.shards));
                    }
                    reasons
                });
                Some(crate::http::serve_probes(addr, registry.clone(), readiness, &tracker, probe_stop.clone()).await?)
            }
            None => None,
        };
        tracing::info!(gateway = %gateway_ws, shards = shard_count, max_concurrency, "discord gateway discovered");
        Ok(Ingest {
            topo: Topology::new(cfg.namespace.clone()),
            cfg: Arc::new(cfg),
            tls,
            gateway_ws,
            shard_count,
            max_concurrency,
            session_starts,
            registry,
            metrics,
            status,
            probe_addr,
            tracker,
            probe_stop,
        })
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.probe_addr
    }

    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// Runs until `shutdown` resolves (then drains: readers stop, the buffer is published and
    /// confirmed within the drain timeout, the state is saved) or a shard meets a fatal close.
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        let stop = CancellationToken::new();
        let readers_stop = CancellationToken::new();
        let (tx, rx) = mpsc::channel::<Event>(self.cfg.buffer);
        let (state_tx, state_rx) = oneshot::channel::<Option<SavedState>>();
        let (fatal_tx, mut fatal_rx) = mpsc::channel::<Error>(self.shard_count as usize);
        let resume = Arc::new(Mutex::new(ResumeBook::new(self.shard_count, self.cfg.instance_id.clone())));

        let gauges_stop = CancellationToken::new();
        self.tracker.spawn(crate::queue_gauges::poll(
            self.cfg.amqp_url.clone(),
            format!("waygate-ingest-gauges {}", self.cfg.instance_id),
            vec![self.topo.interactions()],
            self.topo.dlq(),
            self.registry.clone(),
            gauges_stop.clone(),
        ));

        let publisher = Publisher {
            cfg: self.cfg.clone(),
            topo: self.topo.clone(),
            metrics: self.metrics.clone(),
            status: self.status.clone(),
            resume: resume.clone(),
            rx,
            stop: stop.clone(),
            inflight: VecDeque::new(),
        };
        let publisher_done = self.tracker.spawn(publisher.run(state_tx));

        tokio::pin!(shutdown);
        // Readers start once the broker answered and the saved state is known.
        let saved = tokio::select! {
            s = state_rx => s.ok().flatten(),
            _ = &mut shutdown => {
                tracing::info!("shutdown before the broker answered");
                // Nothing was read from Discord yet: nothing to drain.
                stop.cancel();
                None
            }
        };
        let mut result = Ok(());
        if !stop.is_cancelled() && !self.status.draining.load(Ordering::Relaxed) {
            let saved = saved.filter(|s| {
                let same = s.shard_count == self.shard_count;
                if !same {
                    tracing::warn!(
                        saved = s.shard_count,
                        now = self.shard_count,
                        "shard count changed: starting new sessions"
                    );
                }
                same
            });
            let limiter = Arc::new(IdentifyLimiter::new(self.max_concurrency, self.session_starts));
            for shard in 0..self.shard_count {
                let initial = saved.as_ref().and_then(|s| s.shards.get(&shard).cloned());
                if let Some(r) = &initial {
                    resume.lock().unwrap().restore(shard, r.clone());
                    self.metrics.resume_seq[shard as usize].set(r.seq as f64);
                }
                let reader = ShardReader {
                    id: shard,
                    count: self.shard_count,
                    cfg: self.cfg.clone(),
                    gateway_ws: self.gateway_ws.clone(),
                    tls: self.tls.clone(),
                    limiter: limiter.clone(),
                    tx: tx.clone(),
                    metrics: self.metrics.clone(),
                    status: self.status.clone(),
                    stop: readers_stop.clone(),
                };
                let fatal = fatal_tx.clone();
                self.tracker.spawn(async move {
                    if let Err(e) = reader.run(initial).await {
                        let _ = fatal.send(e).await;
                    }
                });
            }
            tokio::select! {
                _ = &mut shutdown => tracing::info!("shutdown requested: draining"),
                Some(e) = fatal_rx.recv() => {
                    tracing::error!(error = %e, "fatal gateway error: stopping");
                    result = Err(e);
                }
            }
        }
        drop(tx);
        self.status.draining.store(true, Ordering::Relaxed);
        readers_stop.cancel();
        // Readers finish their current event and close; then the buffer drains into the broker.
        let drained = tokio::time::timeout(self.cfg.drain_timeout, publisher_done).await;
        if drained.is_err() {
            tracing::warn!(timeout = ?self.cfg.drain_timeout, "drain timeout: unconfirmed events will be replayed on resume");
        }
        stop.cancel();
        gauges_stop.cancel();
        self.probe_stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        result
    }
}

async fn discover(client: &tls::HttpClient, base: &str, token: &Secret) -> Result<discord::GatewayBot> {
    let get = |path: &str| {
        let url = format!("{base}/api/v{}{path}", discord::API_VERSION);
        let req = http::Request::get(&url)
            .header(http::header::AUTHORIZATION, format!("Bot {}", token.expose()))
            .header(
                http::header::USER_AGENT,
                concat!("DiscordBot (https://github.com/waygate, ", env!("CARGO_PKG_VERSION"), ")"),
            )
            .body(Full::new(Bytes::new()));
        async move {
            let req = req.map_err(|e| Error::Http { url: url.clone(), message: e.to_string() })?;
            let (status, body) = tokio::time::timeout(REST_TIMEOUT, tls::send(client, req, 1 << 20))
                .await
                .map_err(|_| Error::Http { url: url.clone(), message: format!("no answer within {REST_TIMEOUT:?}") })?
                .map_err(|message| Error::Http { url: url.clone(), message })?;
            if status == http::StatusCode::UNAUTHORIZED {
                return Err(Error::Unauthorized { url });
            }
            if !status.is_success() {
                return Err(Error::Http { url, message: format!("HTTP {status}: {}", String::from_utf8_lossy(&body)) });
            }
            Ok::<_, Error>((url, body))
        }
    };
    let (url, body) = get("/gateway/bot").await?;
    let bot: discord::GatewayBot =
        serde_json::from_slice(&body).map_err(|e| Error::Http { url, message: format!("unexpected answer: {e}") })?;
    let (_, me) = get("/users/@me").await?;
    let me: serde_json::Value = serde_json::from_slice(&me).unwrap_or_default();
    tracing::info!(bot_id = %me["id"].as_str().unwrap_or("?"), bot = %me["username"].as_str().unwrap_or("?"), "discord token accepted");
    Ok(bot)
}

/// Per-shard confirmed positions and the state save bookkeeping.
struct ResumeBook {
    shard_count: u32,
    shards: BTreeMap<u32, ShardResume>,
    instance_id: String,
    version: u64,
    saved: u64,
}

impl ResumeBook {
    fn new(shard_count: u32, instance_id: String) -> ResumeBook {
        ResumeBook { shard_count, shards: BTreeMap::new(), instance_id, version: 0, saved: 0 }
    }

    fn restore(&mut self, shard: u32, r: ShardResume) {
        self.shards.insert(shard, r);
    }

    /// The broker confirmed every event up to this one (confirms are consumed in publish order).
    fn confirmed(&mut self, ev: &Event) -> Option<u64> {
        let seq = ev.seq?;
        let entry =
            ShardResume { session_id: ev.session.id.clone(), resume_gateway_url: ev.session.resume_url.clone(), seq };
        self.shards.insert(ev.shard, entry);
        self.version += 1;
        Some(seq)
    }

    fn snapshot(&self) -> Option<(u64, Vec<u8>)> {
        if self.version == self.saved {
            return None;
        }
        let state = SavedState {
            shard_count: self.shard_count,
            shards: self.shards.clone(),
            saved_at: waygate_telemetry::now_rfc3339(),
            instance_id: self.instance_id.clone(),
        };
        Some((self.version, serde_json::to_vec(&state).expect("state serializes")))
    }
}

/// Something published and awaiting its confirm.
enum Pending {
    Event(Event),
    State(u64),
}

struct Publisher {
    cfg: Arc<IngestConfig>,
    topo: Topology,
    metrics: Arc<Metrics>,
    status: Arc<Status>,
    resume: Arc<Mutex<ResumeBook>>,
    rx: mpsc::Receiver<Event>,
    stop: CancellationToken,
    /// Unconfirmed, in publish order: what is republished after a broker failure.
    inflight: VecDeque<Pending>,
}

/// Why a publishing session on one connection ended.
enum Leave {
    /// Buffer closed and everything confirmed: done.
    Finished,
    /// Connection or channel failed, or the broker refused a message.
    Failed(String),
    Stopped,
}

impl Publisher {
    async fn run(mut self, state_tx: oneshot::Sender<Option<SavedState>>) {
        let mut state_tx = Some(state_tx);
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let conn_name = format!("waygate-ingest {}", self.cfg.instance_id);
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            let connected = async {
                let conn = amqp::connect(&self.cfg.amqp_url, &conn_name).await?;
                let channel = amqp::timed(conn.create_channel()).await?;
                self.topo.declare(&channel).await?;
                let saved = match state_tx.is_some() {
                    true => SavedState::load(&channel, &self.topo).await?,
                    false => None,
                };
                amqp::timed(channel.confirm_select(ConfirmSelectOptions::default())).await?;
                Ok::<_, Error>((conn, channel, saved))
            }
            .await;
            let (conn, channel, saved) = match connected {
                Ok(c) => c,
                Err(e) => {
                    self.status.broker_up.store(false, Ordering::Relaxed);
                    self.metrics.backend_up.set(0.0);
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in = ?delay, "RabbitMQ unavailable");
                    if !sleep_or_stop(delay, &self.stop).await {
                        return;
                    }
                    continue;
                }
            };
            backoff.reset();
            self.status.broker_up.store(true, Ordering::Relaxed);
            self.metrics.backend_up.set(1.0);
            if let Some(tx) = state_tx.take() {
                if let Some(s) = &saved {
                    tracing::info!(shards = s.shards.len(), saved_at = %s.saved_at, "resume state loaded");
                }
                let _ = tx.send(saved);
            }
            tracing::info!(unconfirmed = self.inflight.len(), "publishing to RabbitMQ");
            let leave = self.publish_on(&conn, &channel).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(200, "bye".into())).await;
            match leave {
                Leave::Finished | Leave::Stopped => return,
                Leave::Failed(why) => {
                    self.status.broker_up.store(false, Ordering::Relaxed);
                    self.metrics.backend_up.set(0.0);
                    tracing::warn!(reason = %why, unconfirmed = self.inflight.len(), "publisher lost the broker; republishing after reconnect");
                    if !sleep_or_stop(backoff.next_delay(), &self.stop).await {
                        return;
                    }
                }
            }
        }
    }

    fn publish_event<'a>(
        &self,
        channel: &'a Channel,
        ev: &'a Event,
    ) -> impl std::future::Future<Output = lapin::Result<PublisherConfirm>> + 'a {
        let interaction = ev.kind == "INTERACTION_CREATE";
        let (exchange, key) =
            if interaction { (String::new(), self.topo.interactions()) } else { (self.topo.events(), ev.kind.clone()) };
        let mut headers = FieldTable::default();
        headers.insert(header::SHARD.into(), AMQPValue::LongLongInt(i64::from(ev.shard)));
        if let Some(seq) = ev.seq {
            headers.insert(header::SEQ.into(), AMQPValue::LongLongInt(seq as i64));
        }
        headers.insert(header::RECEIVED_AT.into(), AMQPValue::LongLongInt(ev.received_at));
        if interaction {
            headers
                .insert(header::EXPIRES_AT.into(), AMQPValue::LongLongInt(ev.received_at + amqp::INTERACTION_TTL_MS));
        }
        // Deterministic: a replayed event gets the same id, so consumers can drop duplicates.
        let message_id =
            format!("{}:{}", ev.session.id, ev.seq.map(|s| s.to_string()).unwrap_or_else(|| ev.kind.clone()));
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(message_id.into())
            .with_type(ev.kind.as_str().into())
            .with_app_id("waygate-ingest".into())
            .with_timestamp((ev.received_at / 1000) as u64)
            .with_headers(headers);
        let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
        channel.basic_publish(exchange.into(), key.into(), opts, &ev.body, props)
    }

    /// Publishes one event and tracks it until its confirm; on failure it stays tracked, so
    /// the next connection republishes it.
    async fn send(
        &mut self,
        channel: &Channel,
        confirms: &mut FuturesOrdered<PublisherConfirm>,
        ev: Event,
    ) -> Result<(), String> {
        let published = self.publish_event(channel, &ev).await;
        self.inflight.push_back(Pending::Event(ev));
        let confirm = published.map_err(|e| e.to_string())?;
        self.metrics.published.increment(1);
        confirms.push_back(confirm);
        Ok(())
    }

    async fn publish_on(&mut self, conn: &Connection, channel: &Channel) -> Leave {
        let mut confirms: FuturesOrdered<PublisherConfirm> = FuturesOrdered::new();
        // Republish what the previous connection never confirmed, in the original order.
        let previous: Vec<Pending> = self.inflight.drain(..).collect();
        for p in previous {
            if let Pending::Event(ev) = p
                && let Err(e) = self.send(channel, &mut confirms, ev).await
            {
                return Leave::Failed(e);
            }
        }
        let mut tick = tokio::time::interval(SAVE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut saving = false;
        let mut buffer_open = true;
        loop {
            self.metrics.inflight.set(self.inflight.len() as f64);
            if !buffer_open && self.inflight.is_empty() {
                // Final save of the resume state, then done.
                match self.save_state(channel).await {
                    Ok(()) => return Leave::Finished,
                    Err(e) => return Leave::Failed(e),
                }
            }
            let room = self.inflight.len() < self.cfg.max_in_flight;
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Leave::Stopped,
                Some(confirmed) = confirms.next(), if !confirms.is_empty() => {
                    let pending = self.inflight.pop_front().expect("one pending entry per confirm");
                    match confirmed {
                        Ok(Confirmation::Ack(returned)) => match pending {
                            Pending::Event(ev) => {
                                self.metrics.confirmed.increment(1);
                                if returned.is_some() {
                                    self.metrics.unroutable.increment(1);
                                }
                                if let Some(seq) = self.resume.lock().unwrap().confirmed(&ev)
                                    && let Some(g) = self.metrics.resume_seq.get(ev.shard as usize) {
                                        g.set(seq as f64);
                                    }
                            }
                            Pending::State(version) => {
                                saving = false;
                                let mut book = self.resume.lock().unwrap();
                                book.saved = book.saved.max(version);
                            }
                        },
                        Ok(Confirmation::Nack(_)) | Ok(Confirmation::NotRequested) => {
                            self.metrics.nacked.increment(1);
                            self.inflight.push_front(pending);
                            return Leave::Failed("the broker refused a message (nack)".to_owned());
                        }
                        Err(e) => {
                            self.inflight.push_front(pending);
                            return Leave::Failed(e.to_string());
                        }
                    }
                }
                ev = self.rx.recv(), if room && buffer_open => {
                    let Some(ev) = ev else {
                        buffer_open = false;
                        continue;
                    };
                    if let Err(e) = self.send(channel, &mut confirms, ev).await {
                        return Leave::Failed(e);
                    }
                }
                _ = tick.tick() => {
                    let depth = self.rx.len();
                    self.metrics.buffer_depth.set(depth as f64);
                    if !conn.status().connected() {
                        return Leave::Failed("connection closed".to_owned());
                    }
                    if !saving {
                        let snapshot = self.resume.lock().unwrap().snapshot();
                        if let Some((version, body)) = snapshot {
                            match self.publish_state(channel, &body).await {
                                Ok(c) => {
                                    saving = true;
                                    confirms.push_back(c);
                                    self.inflight.push_back(Pending::State(version));
                                }
                                Err(e) => return Leave::Failed(e.to_string()),
                            }
                        }
                    }
                }
            }
        }
    }

    async fn publish_state(&self, channel: &Channel, body: &[u8]) -> lapin::Result<PublisherConfirm> {
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_app_id("waygate-ingest".into());
        channel
            .basic_publish("".into(), self.topo.ingest_state().into(), BasicPublishOptions::default(), body, props)
            .await
    }

    async fn save_state(&self, channel: &Channel) -> Result<(), String> {
        let snapshot = self.resume.lock().unwrap().snapshot();
        let Some((version, body)) = snapshot else { return Ok(()) };
        let confirm = self.publish_state(channel, &body).await.map_err(|e| e.to_string())?;
        match amqp::timed(confirm).await {
            Ok(Confirmation::Ack(_)) => {
                let mut book = self.resume.lock().unwrap();
                book.saved = book.saved.max(version);
                tracing::info!("resume state saved");
                Ok(())
            }
            Ok(_) => Err("the broker refused the resume state".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Identify buckets: shard `i` identifies in bucket `i % max_concurrency`, one per 5 s each,
/// within the daily session start limit.
struct IdentifyLimiter {
    max_concurrency: u32,
    next: Mutex<BTreeMap<u32, Instant>>,
    /// Remaining session starts and when the limit resets (ms), from `/gateway/bot`.
    starts: Mutex<(u32, Instant)>,
}

impl IdentifyLimiter {
    fn new(max_concurrency: u32, (remaining, reset_after_ms): (u32, u64)) -> IdentifyLimiter {
        IdentifyLimiter {
            max_concurrency: max_concurrency.max(1),
            next: Mutex::new(BTreeMap::new()),
            starts: Mutex::new((remaining, Instant::now() + Duration::from_millis(reset_after_ms))),
        }
    }

    /// Waits for this shard's turn; false when stopped first.
    async fn acquire(&self, shard: u32, stop: &CancellationToken) -> bool {
        let bucket = shard % self.max_concurrency;
        loop {
            let wait = {
                let now = Instant::now();
                let mut starts = self.starts.lock().unwrap();
                if starts.0 == 0 && now < starts.1 {
                    Some(starts.1 - now)
                } else {
                    let mut next = self.next.lock().unwrap();
                    let at = next.get(&bucket).copied().unwrap_or(now);
                    if at <= now {
                        next.insert(bucket, now + IDENTIFY_SPACING);
                        starts.0 = starts.0.saturating_sub(1);
                        None
                    } else {
                        Some(at - now)
                    }
                }
            };
            match wait {
                None => return true,
                Some(d) => {
                    tracing::info!(shard, wait = ?d, "waiting for an identify slot");
                    if !sleep_or_stop(d, stop).await {
                        return false;
                    }
                }
            }
        }
    }
}

type GatewaySocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct ShardReader {
    id: u32,
    count: u32,
    cfg: Arc<IngestConfig>,
    gateway_ws: String,
    tls: Arc<rustls::ClientConfig>,
    limiter: Arc<IdentifyLimiter>,
    tx: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
    status: Arc<Status>,
    stop: CancellationToken,
}

/// How one gateway connection ended.
enum Outcome {
    Stop,
    Resume(String),
    Reidentify { why: String, wait: Duration },
    Failed(String),
    Fatal(u16, &'static str),
}

/// Failed connects to a session's resume URL before resuming through the main gateway URL.
const RESUME_URL_ATTEMPTS: u32 = 3;

/// Session state a shard carries across connections.
struct ShardSession {
    session: Option<Arc<SessionInfo>>,
    /// Last sequence received (resume point while the process lives; everything up to it is
    /// in this process's buffer, in flight, or confirmed).
    seq: Option<u64>,
    /// An event read but not yet accepted by the full buffer.
    pending: Option<Event>,
}

impl ShardReader {
    async fn run(self, initial: Option<ShardResume>) -> Result<()> {
        let mut s = ShardSession {
            session: initial
                .as_ref()
                .map(|r| Arc::new(SessionInfo { id: r.session_id.clone(), resume_url: r.resume_gateway_url.clone() })),
            seq: initial.as_ref().map(|r| r.seq),
            pending: None,
        };
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        let mut resume_failures = 0u32;
        loop {
            if self.stop.is_cancelled() {
                return Ok(());
            }
            // Wait for the identify slot before connecting: once connected, the gateway
            // expects heartbeats and an identify promptly.
            if s.session.is_none() && !self.limiter.acquire(self.id, &self.stop).await {
                return Ok(());
            }
            let base = s.session.as_ref().map(|x| x.resume_url.clone()).unwrap_or_else(|| self.gateway_ws.clone());
            let url = discord::connect_url(&base, self.cfg.compress);
            let outcome = match self.connect(&url).await {
                Ok(ws) => {
                    resume_failures = 0;
                    self.run_connection(ws, &mut s, &mut backoff).await
                }
                Err(e) => Outcome::Failed(format!("connect {base}: {e}")),
            };
            let wait = match outcome {
                Outcome::Stop => return Ok(()),
                Outcome::Fatal(code, meaning) => {
                    return Err(Error::FatalClose { shard: self.id, code, meaning });
                }
                Outcome::Resume(why) => {
                    tracing::info!(shard = self.id, reason = %why, "reconnecting to resume");
                    backoff.next_delay().min(Duration::from_secs(1))
                }
                Outcome::Reidentify { why, wait } => {
                    tracing::info!(shard = self.id, reason = %why, "session ended: identifying again");
                    s.session = None;
                    s.seq = None;
                    wait
                }
                Outcome::Failed(why) => {
                    let d = backoff.next_delay();
                    tracing::warn!(shard = self.id, reason = %why, retry_in = ?d, "gateway connection failed");
                    resume_failures += 1;
                    d
                }
            };
            // A resume host can vanish for good (a restarted upstream, state saved by an
            // earlier run): the session may still live behind the main gateway URL, and if it
            // does not, the answer there is op 9 and a fresh identify rather than retrying a
            // dead host forever.
            if let Some(session) = &s.session
                && resume_failures >= RESUME_URL_ATTEMPTS
                && session.resume_url != self.gateway_ws
            {
                tracing::warn!(shard = self.id, resume_url = %session.resume_url, "resume host unreachable: resuming through the gateway URL");
                s.session = Some(Arc::new(SessionInfo { id: session.id.clone(), resume_url: self.gateway_ws.clone() }));
                resume_failures = 0;
            }
            if !sleep_or_stop(wait, &self.stop).await {
                return Ok(());
            }
        }
    }

    async fn connect(&self, url: &str) -> std::result::Result<GatewaySocket, String> {
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(MAX_MESSAGE);
        config.max_frame_size = Some(MAX_MESSAGE);
        let connector = if url.starts_with("wss://") { Some(Connector::Rustls(self.tls.clone())) } else { None };
        let connecting = tokio_tungstenite::connect_async_tls_with_config(url, Some(config), true, connector);
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no handshake within {CONNECT_TIMEOUT:?}")),
        }
    }

    async fn send(&self, ws: &mut GatewaySocket, v: serde_json::Value) -> bool {
        matches!(tokio::time::timeout(CONNECT_TIMEOUT, ws.send(Message::text(v.to_string()))).await, Ok(Ok(())))
    }

    async fn close(&self, ws: &mut GatewaySocket, code: u16, reason: &'static str) {
        let frame = CloseFrame { code: CloseCode::from(code), reason: Utf8Bytes::from_static(reason) };
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(Some(frame))).await;
    }

    /// Reads one complete gateway message (inflating `zlib-stream` frames).
    fn decode(&self, msg: Message, inflater: &mut Option<Inflater>) -> std::result::Result<Option<Bytes>, Outcome> {
        match msg {
            Message::Text(t) => Ok(Some(Bytes::from(t))),
            Message::Binary(b) => match inflater {
                Some(z) => {
                    z.push(&b).map(|m| m.map(Bytes::from)).map_err(|e| Outcome::Failed(format!("zlib-stream: {e}")))
                }
                None => Err(Outcome::Failed("binary frame without compression".to_owned())),
            },
            Message::Close(frame) => {
                let code = frame.as_ref().map(|f| u16::from(f.code)).unwrap_or(1005);
                let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                Err(match discord::close_action(code) {
                    CloseAction::Fatal(meaning) => Outcome::Fatal(code, meaning),
                    CloseAction::Reidentify => Outcome::Reidentify {
                        why: format!("closed with {code} {reason}"),
                        wait: Duration::from_millis(500),
                    },
                    CloseAction::Resume => Outcome::Resume(format!("closed with {code} {reason}")),
                })
            }
            _ => Ok(None),
        }
    }

    async fn run_connection(&self, mut ws: GatewaySocket, s: &mut ShardSession, backoff: &mut Backoff) -> Outcome {
        let mut inflater = self.cfg.compress.then(|| Inflater::new(MAX_MESSAGE));
        // Hello first.
        let hello = loop {
            let msg = match tokio::time::timeout(HELLO_TIMEOUT, ws.next()).await {
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => return Outcome::Failed(e.to_string()),
                Ok(None) => return Outcome::Failed("closed before hello".to_owned()),
                Err(_) => return Outcome::Failed(format!("no hello within {HELLO_TIMEOUT:?}")),
            };
            let bytes = match self.decode(msg, &mut inflater) {
                Ok(Some(b)) => b,
                Ok(None) => continue,
                Err(outcome) => return outcome,
            };
            match Payload::parse(&bytes) {
                Ok(p) if p.op == op::HELLO => match p.data::<discord::Hello>() {
                    Ok(h) if h.heartbeat_interval > 0 => break h,
                    _ => return Outcome::Failed("malformed hello".to_owned()),
                },
                _ => return Outcome::Failed("first message was not hello".to_owned()),
            }
        };
        let interval = Duration::from_millis(hello.heartbeat_interval);
        // First heartbeat after interval * jitter, as Discord asks, so shards do not beat in step.
        let mut next_beat = Instant::now() + interval.mul_f64(rand::random::<f64>());
        let mut acked = true;
        let mut beat_sent = Instant::now();
        let mut blocked_this_interval = false;

        let token = self.cfg.token.expose().to_owned();
        match (&s.session, s.seq) {
            (Some(session), Some(seq)) => {
                let resume = json!({"op": op::RESUME, "d": {"token": token, "session_id": session.id, "seq": seq}});
                if !self.send(&mut ws, resume).await {
                    return Outcome::Failed("cannot send resume".to_owned());
                }
                self.metrics.connects_resume.increment(1);
            }
            _ => {
                let identify = json!({"op": op::IDENTIFY, "d": {
                    "token": token,
                    "intents": self.cfg.intents,
                    "properties": {"os": std::env::consts::OS, "browser": "waygate", "device": "waygate"},
                    "shard": [self.id, self.count],
                    "compress": false,
                    "large_threshold": 50,
                }});
                if !self.send(&mut ws, identify).await {
                    return Outcome::Failed("cannot send identify".to_owned());
                }
                self.metrics.connects_identify.increment(1);
            }
        }

        let mut live = false;
        let outcome = loop {
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => {
                    // A code other than 1000/1001 keeps the session resumable for the next start.
                    self.close(&mut ws, close::CLIENT_RESUME, "restarting").await;
                    break Outcome::Stop;
                }
                _ = tokio::time::sleep_until(next_beat) => {
                    // Without reading the socket (buffer full) no ACK can be seen: not a zombie.
                    if !acked && !blocked_this_interval && s.pending.is_none() {
                        self.close(&mut ws, close::CLIENT_RESUME, "no heartbeat ack").await;
                        break Outcome::Resume("zombie connection: no heartbeat ACK".to_owned());
                    }
                    blocked_this_interval = s.pending.is_some();
                    if !self.send(&mut ws, json!({"op": op::HEARTBEAT, "d": s.seq})).await {
                        break Outcome::Failed("cannot send heartbeat".to_owned());
                    }
                    acked = false;
                    beat_sent = Instant::now();
                    next_beat += interval;
                }
                permit = self.tx.reserve(), if s.pending.is_some() => {
                    match permit {
                        Ok(permit) => permit.send(s.pending.take().expect("guarded by the branch condition")),
                        Err(_) => break Outcome::Stop,
                    }
                }
                msg = ws.next(), if s.pending.is_none() => {
                    let msg = match msg {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => break Outcome::Failed(e.to_string()),
                        None => break Outcome::Resume("connection closed".to_owned()),
                    };
                    let bytes = match self.decode(msg, &mut inflater) {
                        Ok(Some(b)) => b,
                        Ok(None) => continue,
                        Err(outcome) => break outcome,
                    };
                    let payload = match Payload::parse(&bytes) {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::warn!(shard = self.id, error = %e, "undecodable gateway message dropped");
                            continue;
                        }
                    };
                    match payload.op {
                        op::DISPATCH => {
                            if let Some(seq) = payload.s {
                                s.seq = Some(seq);
                            }
                            let kind = payload.t.as_deref().unwrap_or("UNKNOWN").to_owned();
                            match kind.as_str() {
                                "READY" => match payload.data::<discord::Ready>() {
                                    Ok(r) => {
                                        s.session = Some(Arc::new(SessionInfo { id: r.session_id, resume_url: r.resume_gateway_url }));
                                        live = true;
                                        backoff.reset();
                                        self.status.shards_up.fetch_add(1, Ordering::Relaxed);
                                        self.metrics.shards_connected.increment(1.0);
                                        tracing::info!(shard = self.id, "session ready");
                                    }
                                    Err(e) => break Outcome::Failed(format!("malformed READY: {e}")),
                                },
                                "RESUMED" if !live => {
                                    live = true;
                                    backoff.reset();
                                    self.status.shards_up.fetch_add(1, Ordering::Relaxed);
                                    self.metrics.shards_connected.increment(1.0);
                                    tracing::info!(shard = self.id, seq = ?s.seq, "session resumed");
                                }
                                _ => {}
                            }
                            let Some(session) = s.session.clone() else {
                                tracing::warn!(shard = self.id, kind, "dispatch before READY dropped");
                                continue;
                            };
                            self.metrics.received.increment(1);
                            let ev = Event {
                                shard: self.id,
                                session,
                                seq: payload.s,
                                kind,
                                body: bytes.clone(),
                                received_at: waygate_telemetry::now_millis(),
                            };
                            let sent = self.tx.try_send(ev);
                            self.metrics.buffer_depth.set((self.cfg.buffer - self.tx.capacity()) as f64);
                            match sent {
                                Ok(()) => {}
                                Err(mpsc::error::TrySendError::Full(ev)) => {
                                    self.metrics.backpressured.increment(1);
                                    blocked_this_interval = true;
                                    s.pending = Some(ev);
                                }
                                Err(mpsc::error::TrySendError::Closed(_)) => break Outcome::Stop,
                            }
                        }
                        op::HEARTBEAT => {
                            // The gateway asks for a heartbeat now.
                            let sent = self.send(&mut ws, json!({"op": op::HEARTBEAT, "d": s.seq})).await;
                            if !sent {
                                break Outcome::Failed("cannot send heartbeat".to_owned());
                            }
                        }
                        op::HEARTBEAT_ACK => {
                            if !acked {
                                self.metrics.heartbeat_rtt.record(beat_sent.elapsed().as_secs_f64());
                            }
                            acked = true;
                        }
                        op::RECONNECT => {
                            self.close(&mut ws, close::CLIENT_RESUME, "reconnect requested").await;
                            break Outcome::Resume("op 7 reconnect".to_owned());
                        }
                        op::INVALID_SESSION => {
                            let resumable = payload.data::<bool>().unwrap_or(false);
                            if resumable && s.session.is_some() {
                                self.close(&mut ws, close::CLIENT_RESUME, "invalid session").await;
                                break Outcome::Resume("op 9 invalid session (resumable)".to_owned());
                            }
                            self.close(&mut ws, 1000, "invalid session").await;
                            // Discord asks for a random 1-5 s wait before identifying again.
                            let wait = Duration::from_millis(1000 + rand::random::<u64>() % 4000);
                            break Outcome::Reidentify { why: "op 9 invalid session".to_owned(), wait };
                        }
                        _ => {}
                    }
                }
            }
        };
        if live {
            self.status.shards_up.fetch_sub(1, Ordering::Relaxed);
            self.metrics.shards_connected.decrement(1.0);
        }
        outcome
    }
}
