//! One task per connection owns the socket and drives it from a single biased `select!` over
//! the drain deadline, its outbox, socket readiness and the heartbeat. Replies to the client's
//! own requests are written straight to the socket (no hop through another task or queue).

use std::borrow::Cow;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use waygate_proto::{ErrorCode, ErrorEnvelope, close};
use waygate_ws::{Message, OpCode, WsError, WsStream};

use super::Slot;
use super::outbox::ConnShared;
use super::rate::{RateLimiter, Verdict};
use crate::gateway::session::DeviceSession;
use crate::state::AppState;

/// How long a closing connection waits for its close frame to go out and the peer's answer.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// Heartbeats a peer may miss before it is considered gone.
const MAX_MISSED_PONGS: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// Realtime actions; a `register` message makes it a device connection too.
    Realtime,
    /// Device messages only (`/api/gateway/ws*`).
    DeviceOnly,
}

/// Why the connection ends: the close code and reason to send, if any.
pub(crate) type Close = Option<(u16, Cow<'static, str>)>;

/// What a handler asks the loop to do next.
pub(crate) enum Flow {
    Continue,
    Close(u16, Cow<'static, str>),
    /// The peer is gone (EOF or a socket error): no close frame can be exchanged (1006).
    Gone,
}

/// The fields every inbound text message is routed on; the rest stays unparsed.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    action: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

pub(crate) struct Connection {
    pub state: AppState,
    pub shared: Arc<ConnShared>,
    pub ws: WsStream,
    kind: PathKind,
    rate: RateLimiter,
    missed_pongs: u8,
    active_since_tick: bool,
    pub device: Option<DeviceSession>,
    /// JWT claims, when the connection presented one (boxed: most connections have none).
    pub auth: Option<Box<crate::realtime::auth::ConnAuth>>,
    /// Recorded for at-least-once `$disconnect`.
    recorded: bool,
    _slot: Slot,
}

impl Connection {
    pub fn new(
        state: AppState,
        ws: WsStream,
        kind: PathKind,
        slot: Slot,
        id: u128,
        auth: Option<Box<crate::realtime::auth::ConnAuth>>,
    ) -> Connection {
        let user = auth.as_ref().and_then(|a| a.user_id.as_deref()).map(Box::from);
        let shared = Arc::new(ConnShared::new(id, user));
        let rps = state.live.messages_per_second.load(std::sync::atomic::Ordering::Relaxed);
        Connection {
            state,
            shared,
            ws,
            kind,
            rate: RateLimiter::new(rps, Instant::now()),
            missed_pongs: 0,
            active_since_tick: false,
            device: None,
            auth,
            recorded: false,
            _slot: slot,
        }
    }

    pub fn connection_id(&self) -> String {
        self.shared.id_hex()
    }

    pub async fn run(mut self) {
        let m = &self.state.metrics;
        m.ws_total.increment(1);
        m.ws_active.increment(1.0);
        self.state.conns.insert(self.shared.clone());
        Box::pin(self.register_remote()).await;
        if self.kind == PathKind::Realtime && crate::realtime::routes::disconnect_routed(&self.state) {
            let user = self.shared.user_id.as_deref();
            let now = waygate_telemetry::now_millis();
            let id = self.connection_id();
            let record = self.state.store.record_connection(&id, &self.state.instance_id, user, now);
            match Box::pin(record).await {
                Ok(()) => self.recorded = true,
                Err(e) => {
                    tracing::warn!(error = %e, "connection not recorded: its $disconnect may be lost if this instance dies")
                }
            }
        }
        tracing::debug!(connection_id = %self.connection_id(), "connection opened");

        // Setup and teardown await backends; boxed so they do not size the idle task (above).
        let close = self.serve().await;
        let code = match close {
            Some((code, reason)) => {
                self.ws.queue_close(code, &reason);
                let _ = tokio::time::timeout(CLOSE_LINGER, self.ws.finish_close()).await;
                code
            }
            None => 1006,
        };
        self.state.metrics.closed(code);
        self.state.conns.remove(self.shared.id);
        for channel in self.shared.take_channels() {
            Box::pin(self.state.realtime.unsubscribe(self.shared.id, &channel)).await;
        }
        Box::pin(self.unregister_remote()).await;
        Box::pin(crate::realtime::routes::on_disconnect(&self.state, &self.shared, self.recorded, code)).await;
        if let Some(device) = self.device.take() {
            Box::pin(device.disconnected(&self.state, &self.shared)).await;
        }
        self.state.metrics.ws_active.decrement(1.0);
        tracing::debug!(connection_id = %self.shared.id_hex(), code, "connection closed");
    }

    /// Cluster mode: record where this connection lives, for the push API on other instances.
    async fn register_remote(&self) {
        let Some(mut con) = self.state.bus.redis_connection() else { return };
        let record = serde_json::json!({
            "i": self.state.instance_id,
            "u": self.shared.user_id.as_deref(),
            "t": self.shared.connected_at,
        });
        let r = redis::cmd("SET")
            .arg(self.state.bus.key(&format!("conn:{}", self.connection_id())))
            .arg(record.to_string())
            .query_async::<()>(&mut con)
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "connection not recorded in redis; push from other instances will not find it");
        }
    }

    async fn unregister_remote(&self) {
        let Some(mut con) = self.state.bus.redis_connection() else { return };
        let key = self.state.bus.key(&format!("conn:{}", self.connection_id()));
        let _ = redis::cmd("DEL").arg(key).query_async::<()>(&mut con).await;
    }

    async fn serve(&mut self) -> Close {
        let welcome = waygate_proto::realtime::Welcome::new(
            self.connection_id(),
            self.state.config.heartbeat.as_millis() as u64,
            waygate_telemetry::now_rfc3339(),
        );
        if self.send_json(&welcome).is_err() {
            return None;
        }
        let period = self.state.config.heartbeat;
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let state = self.state.clone();
        let shared = self.shared.clone();
        // A client may send right behind its upgrade request; those bytes arrived with the
        // request, so no readiness event will announce them.
        if self.ws.has_buffered_input() {
            match self.handle_buffered().await {
                Flow::Continue => {}
                Flow::Close(code, reason) => return Some((code, reason)),
                Flow::Gone => return None,
            }
        }
        loop {
            let pending = self.ws.has_pending_output();
            tokio::select! {
                biased;
                _ = state.lifecycle.close_connections.cancelled() => {
                    return Some((close::GOING_AWAY, Cow::Borrowed("gateway draining")));
                }
                _ = shared.notified() => {
                    if let Some((code, reason)) = shared.kicked() {
                        if code == close::TRY_AGAIN_LATER {
                            state.metrics.slow_consumer.increment(1);
                            self.ws.discard_pending_output();
                        }
                        return Some((code, Cow::Borrowed(reason)));
                    }
                }
                r = self.ws.readable() => {
                    if r.is_err() {
                        return None;
                    }
                    match self.read_available().await {
                        Flow::Continue => {}
                        Flow::Close(code, reason) => return Some((code, reason)),
                        Flow::Gone => return None,
                    }
                }
                r = self.ws.writable(), if pending => {
                    if r.is_err() {
                        return None;
                    }
                }
                _ = heartbeat.tick() => {
                    if self.missed_pongs >= MAX_MISSED_PONGS {
                        return Some((close::HEARTBEAT_TIMEOUT, Cow::Borrowed("heartbeat timeout")));
                    }
                    self.missed_pongs += 1;
                    self.ws.queue(waygate_ws::frame(OpCode::Ping, b""));
                    if !self.active_since_tick {
                        self.ws.release_idle_buffers();
                    }
                    self.active_since_tick = false;
                }
            }
            // Take queued frames only once the socket has caught up, so a stalled reader
            // leaves them in the bounded outbox where producers see it fill.
            if !self.ws.has_pending_output() && !shared.is_empty() {
                shared.drain_into(|f| self.ws.queue(f));
            }
            if self.ws.has_pending_output() && self.ws.flush().is_err() {
                return None;
            }
        }
    }

    /// Reads what the socket has and handles every complete message in it.
    async fn read_available(&mut self) -> Flow {
        match self.ws.fill() {
            Ok(_) => {}
            Err(e) => return Self::on_error(e),
        }
        self.handle_buffered().await
    }

    /// Handles every complete message already buffered.
    async fn handle_buffered(&mut self) -> Flow {
        loop {
            match self.ws.next_message() {
                Ok(Some(msg)) => match self.on_message(msg).await {
                    Flow::Continue => {}
                    end => return end,
                },
                Ok(None) => return Flow::Continue,
                Err(e) => return Self::on_error(e),
            }
        }
    }

    fn on_error(e: WsError) -> Flow {
        match e.close_code() {
            Some(code) => Flow::Close(code, Cow::Owned(e.to_string())),
            None => Flow::Gone,
        }
    }

    async fn on_message(&mut self, msg: Message) -> Flow {
        self.missed_pongs = 0;
        self.active_since_tick = true;
        match msg {
            Message::Text(text) => {
                self.state.metrics.messages_in.increment(1);
                self.on_text(text).await
            }
            Message::Binary(_) => {
                self.send_error(
                    None,
                    ErrorCode::BadRequest,
                    "binary messages are not accepted on this path; send JSON text",
                );
                Flow::Continue
            }
            Message::Ping(_) | Message::Pong(_) => Flow::Continue,
            Message::Close(frame) => {
                let code = frame.map_or(close::NORMAL, |f| f.code);
                Flow::Close(code, Cow::Borrowed(""))
            }
        }
    }

    /// Charges one message to the connection's rate limit; `Some` when it must be refused.
    pub(crate) fn over_rate_limit(&mut self) -> Option<Flow> {
        let rps = self.state.live.messages_per_second.load(std::sync::atomic::Ordering::Relaxed);
        match self.rate.check(rps, Instant::now()) {
            Verdict::Allow => None,
            Verdict::Refuse => {
                self.state.metrics.rate_limited.increment(1);
                self.send_error(None, ErrorCode::RateLimited, "message rate limit exceeded; slow down");
                Some(Flow::Continue)
            }
            Verdict::Abuse => {
                self.state.metrics.rate_limited.increment(1);
                Some(Flow::Close(close::POLICY_VIOLATION, Cow::Borrowed("message rate limit exceeded")))
            }
        }
    }

    // Handlers that await backends (Redis, the database, routes) are boxed: an idle
    // connection's task is as large as its largest await point, and inlining them doubled the
    // task (3.5 KiB → 1.7 KiB per connection in a debug build). One allocation per such message
    // is small next to the I/O it waits for; `ping` stays inline and allocation-free.
    async fn on_text(&mut self, text: Bytes) -> Flow {
        let parsed = serde_json::from_slice::<Envelope<'_>>(&text);
        // A registered device's results answer calls this server sent, at the server's pace:
        // refusing them would throw away finished work and expire the call. Results for calls
        // the device is not running are charged in the device session instead.
        let paced = self.device.is_some() && matches!(&parsed, Ok(env) if env.kind.as_deref() == Some("tool_result"));
        if !paced && let Some(flow) = self.over_rate_limit() {
            return flow;
        }
        let env: Envelope<'_> = match parsed {
            Ok(env) => env,
            Err(e) if e.is_data() => {
                self.send_error(None, ErrorCode::BadRequest, "message must be a JSON object");
                return Flow::Continue;
            }
            Err(_) => {
                self.send_error(None, ErrorCode::BadRequest, "message is not valid JSON");
                return Flow::Continue;
            }
        };
        let id = env.id;
        if let Some(kind) = env.kind.as_deref() {
            return match kind {
                "register" | "tool_result" => {
                    Box::pin(crate::gateway::session::on_device_message(self, &text, id)).await
                }
                other => {
                    let msg = format!("unknown message type {other:?}");
                    self.send_error(id, ErrorCode::UnknownAction, &msg);
                    Flow::Continue
                }
            };
        }
        match (self.kind, env.action.as_deref()) {
            // Every path answers `ping`: devices need it to tell a dead link from a quiet one
            // (browsers never see WebSocket-level pings; see docs/protocol.md).
            (_, Some("ping")) => {
                self.send_pong(id);
                Flow::Continue
            }
            (PathKind::Realtime, Some("subscribe")) => {
                Box::pin(crate::realtime::actions::subscribe(self, &text, id)).await
            }
            (PathKind::Realtime, Some("unsubscribe")) => {
                Box::pin(crate::realtime::actions::unsubscribe(self, &text, id)).await
            }
            (PathKind::Realtime, Some("publish")) => Box::pin(crate::realtime::actions::publish(self, &text, id)).await,
            (PathKind::Realtime, Some("presence")) => {
                Box::pin(crate::realtime::actions::presence(self, &text, id)).await
            }
            (PathKind::Realtime, Some(action)) => {
                Box::pin(crate::realtime::routes::route_action(self, action, &text, id)).await
            }
            (PathKind::DeviceOnly, Some(action)) => {
                let msg = format!("unknown action {action:?}: this path accepts device messages only");
                self.send_error(id, ErrorCode::UnknownAction, &msg);
                Flow::Continue
            }
            (_, None) => {
                self.send_error(id, ErrorCode::BadRequest, "message needs an \"action\" (or a device \"type\")");
                Flow::Continue
            }
        }
    }

    /// `{"type":"pong","ts":…}` written from a stack buffer: the echo path allocates nothing.
    fn send_pong(&mut self, id: Option<&RawValue>) {
        let mut buf = [0u8; 256];
        let mut cur = std::io::Cursor::new(&mut buf[..]);
        let ts = waygate_telemetry::now_millis();
        let fits = match id {
            Some(id) => write!(cur, r#"{{"type":"pong","ts":{ts},"id":{}}}"#, id.get()),
            None => write!(cur, r#"{{"type":"pong","ts":{ts}}}"#),
        };
        if fits.is_ok() {
            let n = cur.position() as usize;
            self.send_text(&buf[..n]);
        } else {
            let id = id.map(|i| i.get()).unwrap_or("null");
            self.send_text(format!(r#"{{"type":"pong","ts":{ts},"id":{id}}}"#).as_bytes());
        }
    }

    pub fn send_text(&mut self, payload: &[u8]) {
        self.state.metrics.messages_out.increment(1);
        // A failed write surfaces as an error on the next read or flush; nothing to do here.
        let _ = self.ws.send(OpCode::Text, payload);
    }

    pub fn send_json<T: serde::Serialize>(&mut self, value: &T) -> Result<(), WsError> {
        let text = serde_json::to_vec(value).expect("wire types serialize");
        self.state.metrics.messages_out.increment(1);
        self.ws.send(OpCode::Text, &text)
    }

    /// An error frame in the SPEC 3 envelope, echoing the request `id`. Each carries a fresh
    /// correlation id that is also logged, so a client report leads to the log line.
    pub fn send_error(&mut self, id: Option<&RawValue>, code: ErrorCode, message: &str) {
        let ids = crate::http::ids::RequestIds::generate();
        tracing::info!(
            connection_id = %self.connection_id(),
            correlation_id = %ids.correlation_id,
            code = code.as_str(),
            message,
            "error frame sent"
        );
        let id = id.and_then(|raw| serde_json::from_str(raw.get()).ok());
        let env = ErrorEnvelope::new(code, message, ids.correlation_id, ids.trace_id).into_frame(id);
        let _ = self.send_json(&env);
    }
}

/// An error frame for a connection that is not the caller's own (sent through its outbox).
pub fn error_frame(id: Option<serde_json::Value>, code: ErrorCode, message: &str) -> Bytes {
    let ids = crate::http::ids::RequestIds::generate();
    tracing::info!(correlation_id = %ids.correlation_id, code = code.as_str(), message, "error frame queued");
    frame_json(&ErrorEnvelope::new(code, message, ids.correlation_id, ids.trace_id).into_frame(id))
}

/// A complete text frame holding `value` as JSON, ready to share between connections.
pub fn frame_json<T: serde::Serialize>(value: &T) -> Bytes {
    waygate_ws::text_frame(&serde_json::to_vec(value).expect("wire types serialize"))
}
