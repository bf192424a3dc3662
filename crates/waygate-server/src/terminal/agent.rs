//! The gateway end of `/api/agent/ws`: one task per node agent owns its socket, forwards
//! frames from browser sessions to the agent, and routes the agent's output to the session it
//! belongs to (see `waygate_proto::terminal` for the multiplexing).
//!
//! Nothing here waits on a browser: output goes to a session with `try_send`, and the agent's
//! credit window (`SESSION_WINDOW`) is what keeps a session's queue short. A session whose
//! queue is full anyway (an agent ignoring credit) is cut off and counted as a relay drop.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use waygate_proto::terminal::{self, FromAgent, ToAgent};
use waygate_proto::{ErrorCode, close};
use waygate_ws::{Message, OpCode, WsStream};

use crate::http::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::ws::{Slot, frame_json};

/// Frames queued for one agent socket (all of its sessions together).
const AGENT_OUTBOX: usize = 256;
/// Messages queued for one session. Credit bounds the bytes; this bounds the count.
pub const SESSION_QUEUE: usize = 1024;
const CLOSE_LINGER: Duration = Duration::from_secs(2);
const MAX_MISSED_PONGS: u8 = 2;

/// What an agent sends a browser session.
#[derive(Debug)]
pub enum AgentEvent {
    Data(Bytes),
    Exit(i32),
    Error(String),
}

/// A connected agent, shared by the sessions relayed through it.
pub struct AgentLink {
    pub node_id: String,
    conn_id: u128,
    tx: mpsc::Sender<Bytes>,
    sessions: DashMap<u128, mpsc::Sender<AgentEvent>>,
    replaced: CancellationToken,
}

impl AgentLink {
    /// Queues a frame for the agent, waiting while its outbox is full (backpressure toward
    /// the browser). `false`: the agent is gone.
    pub async fn send(&self, frame: Bytes) -> bool {
        self.tx.send(frame).await.is_ok()
    }

    pub async fn control(&self, msg: &ToAgent) -> bool {
        self.send(frame_json(msg)).await
    }

    /// Binary frame carrying browser input for `session`.
    pub fn input_frame(session: u128, bytes: &[u8]) -> Bytes {
        waygate_ws::frame(OpCode::Binary, &terminal::data_payload(session, bytes))
    }

    pub fn attach(&self, session: u128) -> mpsc::Receiver<AgentEvent> {
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        self.sessions.insert(session, tx);
        rx
    }

    pub fn detach(&self, session: u128) {
        self.sessions.remove(&session);
    }
}

/// `/api/agent/ws`: the agent authenticates with `Authorization: Bearer $WAYGATE_AGENT_TOKEN`
/// and names itself in `X-Waygate-Node-Id`; refusals are HTTP responses with the envelope.
pub async fn upgrade(State(state): State<AppState>, req: Request) -> Response {
    accept(state, req).await.unwrap_or_else(IntoResponse::into_response)
}

async fn accept(state: AppState, req: Request) -> ApiResult<Response> {
    let Some(expected) = &state.config.agent_token else {
        return Err(ApiError::new(ErrorCode::Unauthorized, "node agents are refused: WAYGATE_AGENT_TOKEN is not set"));
    };
    if !crate::http::auth::bearer(req.headers()).is_some_and(|t| expected.matches(t)) {
        tracing::warn!("agent refused: bearer does not match WAYGATE_AGENT_TOKEN");
        return Err(ApiError::new(ErrorCode::Unauthorized, "invalid agent token"));
    }
    let node_id = req
        .headers()
        .get(terminal::NODE_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|n| valid_node_id(n))
        .map(str::to_owned)
        .ok_or_else(|| ApiError::bad_request("X-Waygate-Node-Id must be 1-128 characters of [A-Za-z0-9._:-]"))?;
    let (slot, accept) = crate::ws::precheck(&state, &req, "gateway draining")?;
    let s = state.clone();
    crate::ws::switch(&state, req, accept, None, move |ws| run(s, ws, node_id, slot))
}

pub fn valid_node_id(n: &str) -> bool {
    (1..=128).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

async fn run(state: AppState, mut ws: WsStream, node_id: String, _slot: Slot) {
    // Data frames carry up to MAX_CHUNK plus the session id; allow them whatever the
    // realtime message limit is.
    ws.set_max_message(ws_max(&state));
    let (tx, mut rx) = mpsc::channel(AGENT_OUTBOX);
    let link = Arc::new(AgentLink {
        node_id: node_id.clone(),
        conn_id: rand::random(),
        tx,
        sessions: DashMap::new(),
        replaced: CancellationToken::new(),
    });
    if let Some(old) = state.terminal.agents.insert(node_id.clone(), link.clone()) {
        old.replaced.cancel();
    }
    state.metrics.terminal_agents.set(state.terminal.agents.len() as f64);
    if let Err(e) =
        state.store.mark_agent_connected(&node_id, &state.instance_id, waygate_telemetry::now_millis()).await
    {
        tracing::warn!(node_id = %node_id, error = %e, "agent presence not recorded: other instances will see the node offline");
    }
    tracing::info!(node_id = %node_id, "agent connected");

    let close = serve(&state, &mut ws, &link, &mut rx).await;
    let code = match close {
        Some((code, reason)) => {
            ws.queue_close(code, &reason);
            let _ = tokio::time::timeout(CLOSE_LINGER, ws.finish_close()).await;
            code
        }
        None => 1006,
    };
    // Dropping the senders tells every session relayed here that the agent is gone.
    link.sessions.clear();
    let mine = state.terminal.agents.remove_if(&node_id, |_, l| l.conn_id == link.conn_id).is_some();
    state.metrics.terminal_agents.set(state.terminal.agents.len() as f64);
    if mine && let Err(e) = state.store.mark_agent_disconnected(&node_id, &state.instance_id).await {
        tracing::warn!(node_id = %node_id, error = %e, "agent presence not cleared");
    }
    tracing::info!(node_id = %node_id, code, "agent disconnected");
}

fn ws_max(state: &AppState) -> usize {
    state.live.max_message().max(terminal::MAX_CHUNK + terminal::SESSION_ID_LEN + 1024)
}

type Close = Option<(u16, Cow<'static, str>)>;

async fn serve(state: &AppState, ws: &mut WsStream, link: &AgentLink, rx: &mut mpsc::Receiver<Bytes>) -> Close {
    let period = state.config.heartbeat;
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drain_check = tokio::time::interval(Duration::from_millis(250));
    let mut missed = 0u8;
    let lc = &state.lifecycle;
    loop {
        let pending = ws.has_pending_output();
        tokio::select! {
            biased;
            _ = lc.close_connections.cancelled() => return Some((close::GOING_AWAY, Cow::Borrowed("gateway draining"))),
            _ = link.replaced.cancelled() => {
                return Some((close::REPLACED, Cow::Borrowed("the node connected again on a newer socket")));
            }
            // While draining, an agent with no sessions left is let go so that it reconnects
            // to an instance that is staying.
            _ = drain_check.tick(), if lc.is_draining() => {
                if link.sessions.is_empty() {
                    return Some((close::GOING_AWAY, Cow::Borrowed("gateway draining")));
                }
            }
            // Take frames only once the socket caught up: a slow agent link leaves them in
            // the bounded outbox, where the sessions feel it.
            frame = rx.recv(), if !pending => {
                if let Some(f) = frame {
                    ws.queue(f);
                    while ws.pending_frames() < 64 {
                        match rx.try_recv() {
                            Ok(f) => ws.queue(f),
                            Err(_) => break,
                        }
                    }
                }
            }
            r = ws.readable() => {
                if r.is_err() {
                    return None;
                }
                if let Err(e) = ws.fill() {
                    return e.close_code().map(|c| (c, Cow::Owned(e.to_string())));
                }
                loop {
                    match ws.next_message() {
                        Ok(Some(msg)) => {
                            missed = 0;
                            if let Some(close) = on_message(state, link, msg) {
                                return Some(close);
                            }
                        }
                        Ok(None) => break,
                        Err(e) => return e.close_code().map(|c| (c, Cow::Owned(e.to_string()))),
                    }
                }
            }
            r = ws.writable(), if pending => {
                if r.is_err() {
                    return None;
                }
            }
            _ = heartbeat.tick() => {
                if missed >= MAX_MISSED_PONGS {
                    return Some((close::HEARTBEAT_TIMEOUT, Cow::Borrowed("heartbeat timeout")));
                }
                missed += 1;
                ws.queue(waygate_ws::frame(OpCode::Ping, b""));
            }
        }
        if ws.has_pending_output() && ws.flush().is_err() {
            return None;
        }
    }
}

fn on_message(state: &AppState, link: &AgentLink, msg: Message) -> Option<(u16, Cow<'static, str>)> {
    match msg {
        Message::Binary(data) => {
            let Some((id, _)) = terminal::split_data(&data) else {
                return Some((close::PROTOCOL_ERROR, Cow::Borrowed("data frame without a session id")));
            };
            let payload = data.slice(terminal::SESSION_ID_LEN..);
            let tx = link.sessions.get(&id).map(|t| t.clone())?;
            if tx.try_send(AgentEvent::Data(payload)).is_err() {
                // Only an agent that ignores its credit gets here; cut the session loose
                // rather than buffer without bound.
                state.metrics.relay_drops.increment(1);
                link.sessions.remove(&id);
                tracing::warn!(session_id = %terminal::session_hex(id), node_id = %link.node_id, "session queue overflowed: closing it");
                let _ = link.tx.try_send(frame_json(&ToAgent::Close { session: terminal::session_hex(id) }));
            }
        }
        Message::Text(text) => match serde_json::from_slice::<FromAgent>(&text) {
            Ok(FromAgent::Opened { session, pid }) => {
                tracing::debug!(session_id = %session, pid, node_id = %link.node_id, "agent started the session");
            }
            Ok(FromAgent::Exit { session, code }) => finish(link, &session, AgentEvent::Exit(code)),
            Ok(FromAgent::Error { session, message }) => finish(link, &session, AgentEvent::Error(message)),
            Err(e) => tracing::warn!(node_id = %link.node_id, error = %e, "unreadable agent message"),
        },
        Message::Close(frame) => {
            return Some((frame.map_or(close::NORMAL, |f| f.code), Cow::Borrowed("")));
        }
        Message::Ping(_) | Message::Pong(_) => {}
    }
    None
}

/// The last event of a session: delivered after everything queued before it.
fn finish(link: &AgentLink, session: &str, event: AgentEvent) {
    let Some(id) = terminal::parse_session(session) else { return };
    let Some((_, tx)) = link.sessions.remove(&id) else { return };
    if let Err(mpsc::error::TrySendError::Full(event)) = tx.try_send(event) {
        tokio::spawn(async move {
            let _ = tx.send(event).await;
        });
    }
}
