//! `waygate sim discord`: a local Discord gateway for tests, demos and benchmarks.
//!
//! It speaks the real v10 wire format (hello, identify → READY, heartbeat/ACK, resume with replay,
//! op 7 reconnect, op 9 invalid session, the gateway close codes, identify buckets per
//! `max_concurrency`, optional `zlib-stream`) and serves the REST calls a client makes first.
//! Events are generated on a schedule per shard (`--rate` events/s across all shards) and kept in
//! a bounded per-session log, so a client that resumes gets exactly what it missed.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use waygate_proto::{ErrorCode, ErrorEnvelope};

use crate::discord::{self, Deflater, close, op};

/// Discord allows one identify per bucket every 5 s.
pub const IDENTIFY_INTERVAL: Duration = Duration::from_secs(5);
/// A client that does not read for this long is dropped, as the real gateway does.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Events sent before flushing the socket once.
const BATCH: usize = 256;
/// Guilds per shard above which identify is refused with 4011 (Discord's limit).
const GUILDS_PER_SHARD: u32 = 2500;

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub listen: SocketAddr,
    pub guilds: u32,
    pub interactions: u64,
    pub messages: u64,
    /// Dispatch events per second across all shards; 0 sends as fast as the client reads.
    pub rate: f64,
    /// Shard count recommended by `/gateway/bot`.
    pub shards: u32,
    pub max_concurrency: u32,
    pub heartbeat_interval: Duration,
    pub identify_interval: Duration,
    /// When set, identify and REST calls with another token are refused (4004 / 401).
    pub token: Option<String>,
    pub faults: Vec<Fault>,
    /// Events kept per session for resumes.
    pub retain: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            guilds: 2,
            interactions: 0,
            messages: 0,
            rate: 100.0,
            shards: 1,
            max_concurrency: 1,
            heartbeat_interval: Duration::from_millis(41_250),
            identify_interval: IDENTIFY_INTERVAL,
            token: None,
            faults: Vec::new(),
            retain: 200_000,
        }
    }
}

/// A scripted fault: fires once, on the first session whose sequence reaches `after_seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub after_seq: u64,
    pub kind: FaultKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Op 7: the client must reconnect and resume.
    Reconnect,
    /// Op 9; `resumable: false` also ends the session.
    InvalidSession { resumable: bool },
    /// Close with this code (4007, 4009, 1000 and 1001 also end the session).
    Close(u16),
    /// Drop the TCP connection without a close frame.
    Drop,
    /// Stop sending and stop acknowledging heartbeats (a zombie connection).
    Zombie,
}

impl FromStr for Fault {
    type Err = String;

    /// `KIND@SEQ` with KIND one of `reconnect`, `invalid-session`, `invalid-session-resumable`,
    /// `close:CODE`, `drop`, `zombie`.
    fn from_str(s: &str) -> Result<Fault, String> {
        let (kind, at) = s.split_once('@').ok_or_else(|| format!("{s:?}: expected KIND@SEQ"))?;
        let after_seq = at.parse().map_err(|_| format!("{s:?}: {at:?} is not a sequence number"))?;
        let kind = match kind {
            "reconnect" => FaultKind::Reconnect,
            "invalid-session" => FaultKind::InvalidSession { resumable: false },
            "invalid-session-resumable" => FaultKind::InvalidSession { resumable: true },
            "drop" => FaultKind::Drop,
            "zombie" => FaultKind::Zombie,
            other => match other.strip_prefix("close:").map(str::parse::<u16>) {
                Some(Ok(code)) => FaultKind::Close(code),
                _ => return Err(format!("{s:?}: unknown fault {other:?}")),
            },
        };
        Ok(Fault { after_seq, kind })
    }
}

/// Counters a test or an operator reads from `GET /_sim/stats`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SimStats {
    pub connections: u64,
    pub identifies: u64,
    pub resumes: u64,
    pub dispatched: u64,
    pub heartbeats: u64,
    pub invalid_sessions: u64,
    pub rate_limited: u64,
    /// Generated events (interactions + messages) not yet sent to any session.
    pub remaining: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    identifies: AtomicU64,
    resumes: AtomicU64,
    dispatched: AtomicU64,
    heartbeats: AtomicU64,
    invalid_sessions: AtomicU64,
    rate_limited: AtomicU64,
    generated: AtomicU64,
}

/// One generated event stream per (shard, shard count): where it is and when it started.
struct ShardGen {
    origin: Instant,
    cursor: u64,
}

struct Session {
    id: String,
    shard: [u32; 2],
    log: Mutex<SessionLog>,
    owner: AtomicU64,
    kicked: Notify,
}

struct SessionLog {
    seq: u64,
    events: VecDeque<(u64, Utf8Bytes)>,
}

struct Shared {
    cfg: SimConfig,
    addr: SocketAddr,
    guild_ids: Vec<u64>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    gens: Mutex<HashMap<(u32, u32), ShardGen>>,
    buckets: Mutex<HashMap<u32, Instant>>,
    faults: Mutex<Vec<Option<Fault>>>,
    inject: broadcast::Sender<FaultKind>,
    counters: Counters,
    session_starts: AtomicU32,
    next_conn: AtomicU64,
    stop: CancellationToken,
    tracker: TaskTracker,
}

/// A running simulator; dropping it does not stop it, call [`Simulator::stop`].
pub struct Simulator {
    shared: Arc<Shared>,
}

impl Simulator {
    /// Binds and starts serving.
    pub async fn start(cfg: SimConfig) -> std::io::Result<Simulator> {
        if cfg.shards == 0 || cfg.max_concurrency == 0 {
            return Err(std::io::Error::other("--shards and --max-concurrency must be at least 1"));
        }
        let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        // Snowflakes whose timestamp part spreads guilds evenly over shards.
        let guild_ids = (0..u64::from(cfg.guilds)).map(|k| ((1_000_000 + k) << 22) | 0x1000).collect();
        let shared = Arc::new(Shared {
            faults: Mutex::new(cfg.faults.iter().cloned().map(Some).collect()),
            cfg,
            addr,
            guild_ids,
            sessions: Mutex::default(),
            gens: Mutex::default(),
            buckets: Mutex::default(),
            inject: broadcast::channel(16).0,
            counters: Counters::default(),
            session_starts: AtomicU32::new(1000),
            next_conn: AtomicU64::new(1),
            stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        let app = Router::new()
            .route("/", get(gateway))
            .route("/api/v10/gateway", get(rest_gateway))
            .route("/api/v10/gateway/bot", get(rest_gateway_bot))
            .route("/api/v10/users/@me", get(rest_me))
            .route("/_sim/stats", get(rest_stats))
            .fallback(rest_not_found)
            .with_state(shared.clone());
        let stop = shared.stop.clone();
        shared.tracker.spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "simulator server stopped");
            }
        });
        tracing::info!(http = %addr, "discord simulator listening");
        Ok(Simulator { shared })
    }

    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The REST base (`DISCORD_GATEWAY_URL`) for clients.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    pub fn stats(&self) -> SimStats {
        self.shared.stats()
    }

    /// Applies a fault to every connected session now.
    pub fn inject(&self, kind: FaultKind) {
        let _ = self.shared.inject.send(kind);
    }

    /// Current sequence number of every live session, by shard id.
    pub fn session_seqs(&self) -> Vec<(u32, u64)> {
        let sessions = self.shared.sessions.lock().unwrap();
        let mut v: Vec<(u32, u64)> = sessions.values().map(|s| (s.shard[0], s.log.lock().unwrap().seq)).collect();
        v.sort_unstable();
        v
    }

    pub async fn stop(self) {
        self.shared.stop.cancel();
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
    }

    /// Resolves when `stop` is cancelled (for the CLI).
    pub fn stop_token(&self) -> CancellationToken {
        self.shared.stop.clone()
    }
}

impl Shared {
    fn stats(&self) -> SimStats {
        let c = &self.counters;
        SimStats {
            connections: c.connections.load(Ordering::Relaxed),
            identifies: c.identifies.load(Ordering::Relaxed),
            resumes: c.resumes.load(Ordering::Relaxed),
            dispatched: c.dispatched.load(Ordering::Relaxed),
            heartbeats: c.heartbeats.load(Ordering::Relaxed),
            invalid_sessions: c.invalid_sessions.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            remaining: self.total().saturating_sub(c.generated.load(Ordering::Relaxed)),
        }
    }

    fn total(&self) -> u64 {
        self.cfg.interactions + self.cfg.messages
    }

    fn shard_of_event(&self, i: u64, count: u32) -> u32 {
        let guild = self.guild_ids[(i % self.guild_ids.len() as u64) as usize];
        discord::shard_for_guild(guild, count)
    }

    /// Next event index of `shard` at or after `from`, if any remain.
    fn next_event(&self, from: u64, shard: u32, count: u32) -> Option<u64> {
        if self.guild_ids.is_empty() {
            return None;
        }
        (from..self.total().min(from + self.guild_ids.len() as u64)).find(|i| self.shard_of_event(*i, count) == shard)
    }

    fn is_interaction(&self, i: u64) -> bool {
        // Spreads interactions evenly among messages (Bresenham).
        let total = self.total();
        total > 0 && ((i + 1) * self.cfg.interactions / total) > (i * self.cfg.interactions / total)
    }

    fn due(&self, origin: Instant, i: u64) -> Instant {
        if self.cfg.rate <= 0.0 { origin } else { origin + Duration::from_secs_f64(i as f64 / self.cfg.rate) }
    }

    fn render_event(&self, i: u64, seq: u64) -> String {
        let guild = self.guild_ids[(i % self.guild_ids.len() as u64) as usize];
        let id = ((2_000_000 + i) << 22) | 0x2000;
        let channel = guild + 1;
        let user = 100_000 + (i % 1000);
        let now = waygate_telemetry::now_rfc3339();
        if self.is_interaction(i) {
            format!(
                r#"{{"t":"INTERACTION_CREATE","s":{seq},"op":0,"d":{{"version":1,"type":2,"token":"sim-interaction-token-{i}","id":"{id}","guild_id":"{guild}","channel_id":"{channel}","application_id":"42","app_permissions":"0","locale":"en-US","member":{{"user":{{"id":"{user}","username":"user{user}","discriminator":"0","global_name":null,"avatar":null}},"roles":[],"joined_at":"{now}","deaf":false,"mute":false,"flags":0}},"data":{{"id":"77","name":"ping","type":1,"options":[{{"name":"n","type":4,"value":{i}}}]}}}}}}"#
            )
        } else {
            format!(
                r#"{{"t":"MESSAGE_CREATE","s":{seq},"op":0,"d":{{"id":"{id}","channel_id":"{channel}","guild_id":"{guild}","author":{{"id":"{user}","username":"user{user}","discriminator":"0","global_name":null,"avatar":null,"bot":false}},"content":"message {i}","timestamp":"{now}","edited_timestamp":null,"tts":false,"mention_everyone":false,"mentions":[],"mention_roles":[],"attachments":[],"embeds":[],"pinned":false,"type":0}}}}"#
            )
        }
    }

    fn take_fault(&self, seq: u64) -> Option<FaultKind> {
        let mut faults = self.faults.lock().unwrap();
        let slot = faults.iter_mut().find(|f| f.as_ref().is_some_and(|f| seq >= f.after_seq))?;
        slot.take().map(|f| f.kind)
    }

    fn end_session(&self, id: &str) {
        self.sessions.lock().unwrap().remove(id);
    }
}

impl Session {
    /// Assigns the next sequence number, renders with it and keeps the event for resumes.
    fn append(&self, retain: usize, render: impl FnOnce(u64) -> String) -> (u64, Utf8Bytes) {
        let mut log = self.log.lock().unwrap();
        log.seq += 1;
        let seq = log.seq;
        let text = Utf8Bytes::from(render(seq));
        if log.events.len() >= retain {
            log.events.pop_front();
        }
        log.events.push_back((seq, text.clone()));
        (seq, text)
    }
}

fn discord_error(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    // Discord's own error shape for its clients, plus waygate's envelope for everyone else.
    let envelope =
        ErrorEnvelope::new(code, message, uuid::Uuid::new_v4().to_string(), uuid::Uuid::new_v4().simple().to_string());
    let mut body = serde_json::to_value(&envelope).expect("envelope serializes");
    body["message"] = json!(format!("{}: {message}", status.as_u16()));
    body["code"] = json!(0);
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn json_ok(body: Value) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(expected) = &shared.cfg.token else { return true };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bot "))
        .is_some_and(|t| t == expected)
}

async fn rest_gateway(State(shared): State<Arc<Shared>>) -> Response {
    json_ok(json!({ "url": format!("ws://{}", shared.addr) }))
}

async fn rest_gateway_bot(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return discord_error(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, "Unauthorized");
    }
    let bot = discord::GatewayBot {
        url: format!("ws://{}", shared.addr),
        shards: shared.cfg.shards,
        session_start_limit: discord::SessionStartLimit {
            total: 1000,
            remaining: shared.session_starts.load(Ordering::Relaxed),
            reset_after: 86_400_000,
            max_concurrency: shared.cfg.max_concurrency,
        },
    };
    json_ok(serde_json::to_value(bot).expect("serializes"))
}

fn bot_user() -> Value {
    json!({"id": "42", "username": "waygate-sim", "discriminator": "0", "global_name": null, "avatar": null,
           "bot": true, "verified": true, "flags": 0, "mfa_enabled": false})
}

async fn rest_me(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return discord_error(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, "Unauthorized");
    }
    json_ok(bot_user())
}

async fn rest_stats(State(shared): State<Arc<Shared>>) -> Response {
    json_ok(serde_json::to_value(shared.stats()).expect("serializes"))
}

async fn rest_not_found() -> Response {
    discord_error(StatusCode::NOT_FOUND, ErrorCode::NotFound, "Not Found")
}

/// `GET /?v=10&encoding=json[&compress=zlib-stream]` with a WebSocket upgrade.
async fn gateway(State(shared): State<Arc<Shared>>, mut req: Request) -> Response {
    let mut version = None;
    let mut encoding = None;
    let mut compress = None;
    for pair in req.uri().query().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "v" => version = Some(v.to_owned()),
            "encoding" => encoding = Some(v.to_owned()),
            "compress" => compress = Some(v.to_owned()),
            _ => {}
        }
    }
    let headers = req.headers();
    let is_upgrade =
        headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = headers.get(header::SEC_WEBSOCKET_KEY).map(|k| k.as_bytes().to_vec());
    let (true, Some(key)) = (is_upgrade, key) else {
        return discord_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "the gateway expects a WebSocket upgrade",
        );
    };
    if encoding.as_deref().is_some_and(|e| e != "json") {
        return discord_error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, "only encoding=json is supported");
    }
    let zlib = match compress.as_deref() {
        None => false,
        Some("zlib-stream") => true,
        Some(_) => {
            return discord_error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, "compress must be zlib-stream");
        }
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return discord_error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, "connection cannot be upgraded");
    };
    let bad_version = version.as_deref() != Some("10");
    let conn_shared = shared.clone();
    shared.tracker.spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(1 << 20);
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
        let id = conn_shared.next_conn.fetch_add(1, Ordering::Relaxed);
        conn_shared.counters.connections.fetch_add(1, Ordering::Relaxed);
        let mut conn = Conn { shared: conn_shared, ws, id, deflater: zlib.then(Deflater::default), session: None };
        if bad_version {
            conn.close(close::INVALID_API_VERSION, "Invalid API version").await;
            return;
        }
        conn.run().await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key))
        .body(axum::body::Body::empty())
        .expect("static response")
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

struct Conn {
    shared: Arc<Shared>,
    ws: Ws,
    id: u64,
    deflater: Option<Deflater>,
    session: Option<Arc<Session>>,
}

/// Why a connection loop ended.
enum End {
    Closed,
    Dropped,
}

impl Conn {
    fn frame(&mut self, text: Utf8Bytes) -> Message {
        match &mut self.deflater {
            Some(d) => Message::binary(d.compress(text.as_bytes())),
            None => Message::Text(text),
        }
    }

    async fn send(&mut self, text: Utf8Bytes) -> bool {
        let msg = self.frame(text);
        matches!(tokio::time::timeout(WRITE_TIMEOUT, self.ws.send(msg)).await, Ok(Ok(())))
    }

    async fn send_json(&mut self, v: Value) -> bool {
        self.send(Utf8Bytes::from(v.to_string())).await
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame { code: CloseCode::from(code), reason: Utf8Bytes::from(reason) };
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(Some(frame))).await;
        // Wait briefly for the client's close so the frame is not lost to a reset.
        let _ = tokio::time::timeout(Duration::from_secs(2), async { while self.ws.next().await.is_some() {} }).await;
        if matches!(code, close::INVALID_SEQ | close::SESSION_TIMED_OUT | 1000 | 1001)
            && let Some(s) = self.session.take()
        {
            self.shared.end_session(&s.id);
        }
    }

    async fn run(mut self) {
        let interval = self.shared.cfg.heartbeat_interval;
        if !self.send_json(json!({"op": op::HELLO, "d": {"heartbeat_interval": interval.as_millis() as u64}, "s": null, "t": null})).await {
            return;
        }
        let mut inject = self.shared.inject.subscribe();
        // The client's first heartbeat may come up to one interval late (jitter), then one per interval.
        let grace = interval + interval / 2 + Duration::from_secs(1);
        let mut heartbeat_deadline = Instant::now() + grace;
        let mut zombie = false;
        // After op 7 or op 9 the client must go; nothing more is generated on this connection.
        let mut quiet = false;
        let stop = self.shared.stop.clone();
        loop {
            if self.session.as_ref().is_some_and(|s| s.owner.load(Ordering::Acquire) != self.id) {
                // Another connection resumed this session.
                self.session = None;
                self.close(close::UNKNOWN_ERROR, "session resumed elsewhere").await;
                return;
            }
            let session = self.session.clone();
            let next_due = if zombie || quiet { None } else { session.as_ref().and_then(|s| self.next_due(s)) };
            let kicked = async {
                match &session {
                    Some(s) => s.kicked.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = stop.cancelled() => {
                    self.close(1001, "simulator stopping").await;
                    return;
                }
                _ = kicked => {
                    if session.as_ref().is_some_and(|s| s.owner.load(Ordering::Acquire) != self.id) {
                        self.session = None;
                        self.close(close::UNKNOWN_ERROR, "session resumed elsewhere").await;
                        return;
                    }
                }
                msg = self.ws.next() => {
                    let Some(Ok(msg)) = msg else { return };
                    match msg {
                        Message::Text(t) => {
                            let value: Value = match serde_json::from_str(t.as_str()) {
                                Ok(v) => v,
                                Err(_) => return self.close(close::DECODE_ERROR, "Error while decoding payload.").await,
                            };
                            match self.client_op(value, &mut heartbeat_deadline, grace, zombie).await {
                                Ok(()) => {}
                                Err(End::Closed) | Err(End::Dropped) => return,
                            }
                        }
                        Message::Binary(_) => return self.close(close::DECODE_ERROR, "Error while decoding payload.").await,
                        Message::Close(frame) => {
                            let code = frame.map(|f| u16::from(f.code)).unwrap_or(1005);
                            if matches!(code, 1000 | 1001) && let Some(s) = self.session.take() {
                                self.shared.end_session(&s.id);
                            }
                            return;
                        }
                        _ => {}
                    }
                }
                _ = tokio::time::sleep_until(heartbeat_deadline) => {
                    self.close(close::SESSION_TIMED_OUT, "Session timed out").await;
                    return;
                }
                Ok(kind) = inject.recv() => {
                    match self.apply_fault(kind, &mut zombie, &mut quiet).await {
                        Some(End::Closed) | Some(End::Dropped) => return,
                        None => {}
                    }
                }
                _ = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {
                    let Some(s) = session else { continue };
                    match self.emit_due(&s).await {
                        Ok(Some(kind)) => {
                            if let Some(End::Closed | End::Dropped) = self.apply_fault(kind, &mut zombie, &mut quiet).await {
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(_) => return,
                    }
                }
            }
        }
    }

    fn next_due(&self, s: &Session) -> Option<Instant> {
        let gens = self.shared.gens.lock().unwrap();
        let g = gens.get(&(s.shard[0], s.shard[1]))?;
        let i = self.shared.next_event(g.cursor, s.shard[0], s.shard[1])?;
        Some(self.shared.due(g.origin, i))
    }

    /// Sends every event that is due (up to a batch), flushing once. Returns a fault to apply.
    async fn emit_due(&mut self, s: &Arc<Session>) -> Result<Option<FaultKind>, ()> {
        let now = Instant::now();
        let mut sent = 0;
        let mut fault = None;
        while sent < BATCH && fault.is_none() {
            let i = {
                let mut gens = self.shared.gens.lock().unwrap();
                let Some(g) = gens.get_mut(&(s.shard[0], s.shard[1])) else { break };
                let Some(i) = self.shared.next_event(g.cursor, s.shard[0], s.shard[1]) else { break };
                if self.shared.due(g.origin, i) > now {
                    break;
                }
                g.cursor = i + 1;
                i
            };
            let (seq, text) = s.append(self.shared.cfg.retain, |seq| self.shared.render_event(i, seq));
            let msg = self.frame(text);
            if !matches!(tokio::time::timeout(WRITE_TIMEOUT, self.ws.feed(msg)).await, Ok(Ok(()))) {
                return Err(());
            }
            self.shared.counters.dispatched.fetch_add(1, Ordering::Relaxed);
            self.shared.counters.generated.fetch_add(1, Ordering::Relaxed);
            sent += 1;
            fault = self.shared.take_fault(seq);
        }
        if !matches!(tokio::time::timeout(WRITE_TIMEOUT, self.ws.flush()).await, Ok(Ok(()))) {
            return Err(());
        }
        Ok(fault)
    }

    async fn apply_fault(&mut self, kind: FaultKind, zombie: &mut bool, quiet: &mut bool) -> Option<End> {
        tracing::info!(connection = self.id, fault = ?kind, "simulator fault");
        match kind {
            FaultKind::Reconnect => {
                *quiet = true;
                if !self.send_json(json!({"op": op::RECONNECT, "d": null, "s": null, "t": null})).await {
                    return Some(End::Dropped);
                }
            }
            FaultKind::InvalidSession { resumable } => {
                *quiet = true;
                self.shared.counters.invalid_sessions.fetch_add(1, Ordering::Relaxed);
                if !resumable && let Some(s) = self.session.take() {
                    self.shared.end_session(&s.id);
                }
                if !self.send_json(json!({"op": op::INVALID_SESSION, "d": resumable, "s": null, "t": null})).await {
                    return Some(End::Dropped);
                }
            }
            FaultKind::Close(code) => {
                self.close(code, "scripted close").await;
                return Some(End::Closed);
            }
            FaultKind::Drop => return Some(End::Dropped),
            FaultKind::Zombie => *zombie = true,
        }
        None
    }

    async fn client_op(
        &mut self,
        v: Value,
        heartbeat_deadline: &mut Instant,
        grace: Duration,
        zombie: bool,
    ) -> Result<(), End> {
        let Some(code) = v.get("op").and_then(Value::as_u64) else {
            self.close(close::DECODE_ERROR, "Error while decoding payload.").await;
            return Err(End::Closed);
        };
        let d = v.get("d").cloned().unwrap_or(Value::Null);
        match code as u8 {
            op::HEARTBEAT => {
                self.shared.counters.heartbeats.fetch_add(1, Ordering::Relaxed);
                *heartbeat_deadline = Instant::now() + grace;
                if !zombie && !self.send_json(json!({"op": op::HEARTBEAT_ACK, "d": null, "s": null, "t": null})).await {
                    return Err(End::Dropped);
                }
            }
            op::IDENTIFY => self.identify(d).await?,
            op::RESUME => self.resume(d).await?,
            op::PRESENCE_UPDATE | op::VOICE_STATE_UPDATE | op::REQUEST_GUILD_MEMBERS => {
                if self.session.is_none() {
                    self.close(close::NOT_AUTHENTICATED, "Not authenticated.").await;
                    return Err(End::Closed);
                }
            }
            _ => {
                self.close(close::UNKNOWN_OPCODE, "Unknown opcode.").await;
                return Err(End::Closed);
            }
        }
        Ok(())
    }

    /// Identify and resume carry the token: an empty or wrong one closes with 4004.
    async fn check_token(&mut self, d: &Value) -> Result<(), End> {
        let token = d.get("token").and_then(Value::as_str).unwrap_or("");
        if token.is_empty() || self.shared.cfg.token.as_deref().is_some_and(|t| t != token) {
            self.close(close::AUTHENTICATION_FAILED, "Authentication failed.").await;
            return Err(End::Closed);
        }
        Ok(())
    }

    async fn identify(&mut self, d: Value) -> Result<(), End> {
        let shared = self.shared.clone();
        if self.session.is_some() {
            self.close(close::ALREADY_AUTHENTICATED, "Already authenticated.").await;
            return Err(End::Closed);
        }
        self.check_token(&d).await?;
        if d.get("intents").and_then(Value::as_u64).is_none() {
            self.close(close::INVALID_INTENTS, "Invalid intent(s).").await;
            return Err(End::Closed);
        }
        let shard = match d.get("shard") {
            None => [0, 1],
            Some(v) => match serde_json::from_value::<[u32; 2]>(v.clone()) {
                Ok([id, count]) if count > 0 && id < count => [id, count],
                _ => {
                    self.close(close::INVALID_SHARD, "Invalid shard.").await;
                    return Err(End::Closed);
                }
            },
        };
        if shared.cfg.guilds.div_ceil(shard[1]) > GUILDS_PER_SHARD {
            self.close(close::SHARDING_REQUIRED, "Sharding required.").await;
            return Err(End::Closed);
        }
        let bucket = shard[0] % shared.cfg.max_concurrency;
        let too_soon = {
            let mut buckets = shared.buckets.lock().unwrap();
            let now = Instant::now();
            let too_soon =
                buckets.get(&bucket).is_some_and(|last| now.duration_since(*last) < shared.cfg.identify_interval);
            if !too_soon {
                buckets.insert(bucket, now);
            }
            too_soon
        };
        if too_soon {
            shared.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            self.close(close::RATE_LIMITED, "You are being rate limited.").await;
            return Err(End::Closed);
        }
        shared.counters.identifies.fetch_add(1, Ordering::Relaxed);
        shared.session_starts.fetch_sub(1, Ordering::Relaxed);
        let session = Arc::new(Session {
            id: uuid::Uuid::new_v4().simple().to_string(),
            shard,
            log: Mutex::new(SessionLog { seq: 0, events: VecDeque::new() }),
            owner: AtomicU64::new(self.id),
            kicked: Notify::new(),
        });
        shared.sessions.lock().unwrap().insert(session.id.clone(), session.clone());
        shared
            .gens
            .lock()
            .unwrap()
            .entry((shard[0], shard[1]))
            .or_insert_with(|| ShardGen { origin: Instant::now(), cursor: 0 });
        self.session = Some(session.clone());

        let mine: Vec<u64> =
            shared.guild_ids.iter().copied().filter(|g| discord::shard_for_guild(*g, shard[1]) == shard[0]).collect();
        let ready_guilds: Vec<Value> = mine.iter().map(|g| json!({"id": g.to_string(), "unavailable": true})).collect();
        let ready = json!({"v": discord::API_VERSION, "user": bot_user(), "guilds": ready_guilds,
            "session_id": session.id, "resume_gateway_url": format!("ws://{}", shared.addr),
            "shard": shard, "application": {"id": "42", "flags": 0}});
        let mut out = Vec::with_capacity(mine.len() + 1);
        out.push(
            session.append(shared.cfg.retain, |seq| json!({"t": "READY", "s": seq, "op": 0, "d": ready}).to_string()).1,
        );
        for (k, g) in mine.iter().enumerate() {
            let d = json!({"id": g.to_string(), "name": format!("guild {k}"), "unavailable": false, "member_count": 3,
                "owner_id": "1", "channels": [{"id": (g + 1).to_string(), "type": 0, "name": "general"}],
                "roles": [], "members": [], "joined_at": waygate_telemetry::now_rfc3339()});
            out.push(
                session
                    .append(shared.cfg.retain, |seq| {
                        json!({"t": "GUILD_CREATE", "s": seq, "op": 0, "d": d}).to_string()
                    })
                    .1,
            );
        }
        for text in out {
            if !self.send(text).await {
                return Err(End::Dropped);
            }
            shared.counters.dispatched.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn resume(&mut self, d: Value) -> Result<(), End> {
        let shared = self.shared.clone();
        if self.session.is_some() {
            self.close(close::ALREADY_AUTHENTICATED, "Already authenticated.").await;
            return Err(End::Closed);
        }
        self.check_token(&d).await?;
        let id = d.get("session_id").and_then(Value::as_str).unwrap_or("");
        let seq = d.get("seq").and_then(Value::as_u64).unwrap_or(0);
        let session = shared.sessions.lock().unwrap().get(id).cloned();
        let replay = session.as_ref().map(|s| {
            let log = s.log.lock().unwrap();
            let oldest = log.events.front().map(|e| e.0).unwrap_or(log.seq + 1);
            (log.seq, oldest, log.events.iter().filter(|e| e.0 > seq).map(|e| e.1.clone()).collect::<Vec<_>>())
        });
        let (session, (last, oldest, events)) = match (session, replay) {
            (Some(s), Some(r)) => (s, r),
            _ => {
                shared.counters.invalid_sessions.fetch_add(1, Ordering::Relaxed);
                return self.invalid_session().await;
            }
        };
        if seq > last {
            self.close(close::INVALID_SEQ, "Invalid seq.").await;
            return Err(End::Closed);
        }
        if seq + 1 < oldest {
            // The events after `seq` are no longer kept: the client must start a new session.
            shared.counters.invalid_sessions.fetch_add(1, Ordering::Relaxed);
            shared.end_session(id);
            return self.invalid_session().await;
        }
        session.owner.store(self.id, Ordering::Release);
        session.kicked.notify_waiters();
        self.session = Some(session);
        shared.counters.resumes.fetch_add(1, Ordering::Relaxed);
        for text in events {
            let msg = self.frame(text);
            if !matches!(tokio::time::timeout(WRITE_TIMEOUT, self.ws.feed(msg)).await, Ok(Ok(()))) {
                return Err(End::Dropped);
            }
            shared.counters.dispatched.fetch_add(1, Ordering::Relaxed);
        }
        if !self.send_json(json!({"t": "RESUMED", "s": null, "op": 0, "d": {}})).await {
            return Err(End::Dropped);
        }
        Ok(())
    }

    async fn invalid_session(&mut self) -> Result<(), End> {
        if self.send_json(json!({"op": op::INVALID_SESSION, "d": false, "s": null, "t": null})).await {
            Ok(())
        } else {
            Err(End::Dropped)
        }
    }
}
