//! `/ws/terminal/{allocation_id}`: every check before the upgrade, then one task per session
//! relaying between the browser socket and the node's agent.
//!
//! Flow control is end to end: the agent may have `SESSION_WINDOW` bytes of output in flight;
//! this task returns credit only for bytes the browser's socket has taken. A browser that stops
//! reading stops the credit, the agent stops reading the PTY, and the process blocks on write.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use waygate_proto::terminal::{self, ClientControl, ServerControl, ToAgent};
use waygate_proto::{ErrorCode, ErrorEnvelope, close};
use waygate_store::AllocationRow;
use waygate_ws::{Message, OpCode, WsStream};

use super::agent::{AgentEvent, AgentLink};
use super::tokens::{Consume, Lookup, TokenRecord};
use crate::http::error::ApiError;
use crate::http::ids::RequestIds;
use crate::state::AppState;
use crate::ws::Slot;

const CLOSE_LINGER: Duration = Duration::from_secs(2);
const MAX_MISSED_PONGS: u8 = 2;
/// Credit is returned in batches of at least this much (or when the socket is idle).
const CREDIT_BATCH: u32 = 32 * 1024;

pub async fn upgrade(State(state): State<AppState>, Path(allocation_id): Path<String>, req: Request) -> Response {
    match accept(&state, allocation_id, req).await {
        Ok(res) => res,
        Err((reason, err)) => {
            state.metrics.terminal_event("rejected", reason).increment(1);
            if err.code == ErrorCode::TokenReplayed {
                state.metrics.token_replays.increment(1);
            }
            let ids = RequestIds::current();
            tracing::info!(
                correlation_id = %ids.correlation_id,
                code = err.code.as_str(),
                reason,
                "terminal session refused"
            );
            err.into_response()
        }
    }
}

type Refusal = (&'static str, ApiError);

fn refuse(reason: &'static str, err: ApiError) -> Refusal {
    (reason, err)
}

async fn accept(state: &AppState, allocation_id: String, req: Request) -> Result<Response, Refusal> {
    let query = req.uri().query().unwrap_or("");
    if query.split('&').any(|kv| kv.starts_with("token=") || kv.starts_with("access_token=")) {
        return Err(refuse(
            "token_in_query",
            ApiError::new(
                ErrorCode::TokenInQueryForbidden,
                "tokens in the URL are refused (they end up in logs): send Sec-WebSocket-Protocol: waygate.terminal.v1, <token>",
            ),
        ));
    }
    // Draining, handshake, Origin and connection limits first: a request refused for those
    // must not use its token up.
    let (slot, accept) = crate::ws::precheck(state, &req, "terminal gateway draining")
        .map_err(|e| (if state.lifecycle.is_draining() { "draining" } else { "precheck" }, e))?;
    let offered: Vec<&str> = waygate_ws::requested_protocols(req.headers()).collect();
    let token = offered
        .iter()
        .position(|p| *p == terminal::TERMINAL_PROTOCOL)
        .and_then(|i| offered.get(i + 1))
        .map(|t| (*t).to_owned());
    let Some(token) = token else {
        return Err(refuse(
            "missing_token",
            ApiError::new(
                ErrorCode::Unauthorized,
                "a terminal token is required: Sec-WebSocket-Protocol: waygate.terminal.v1, <token>",
            ),
        ));
    };
    let hash = waygate_store::hash_token(&token);
    let record = check_token(state, &hash, &allocation_id).await?;
    let allocation = match state.store.get_allocation(&allocation_id).await {
        Ok(Some(a)) if a.user_id == record.user_id => a,
        Ok(_) => return Err(refuse("not_found", ApiError::not_found("allocation"))),
        Err(e) => return Err(refuse("store", e.into())),
    };
    let link = agent_for(state, &allocation).await?;
    // Every other check passed: only now is the token used up.
    match state.terminal.tokens.consume(&hash).await {
        Ok(Consume::Consumed) => {}
        Ok(Consume::AlreadyUsed) => return Err(refuse("token_replayed", replayed())),
        Ok(Consume::Unknown) => return Err(refuse("token_invalid", invalid_token())),
        Err(e) => return Err(refuse("token_store", token_store_down(e))),
    }
    let resource_name =
        super::resource_name(&state.config, &allocation.tenant_id, &allocation.project_id, &allocation.id);
    let correlation_id = RequestIds::current().correlation_id;
    let session = Session {
        state: state.clone(),
        id: rand::random(),
        link,
        allocation,
        resource_name,
        correlation_id,
        _slot: slot,
    };
    let s = state.clone();
    crate::ws::switch(&s, req, accept, Some(terminal::TERMINAL_PROTOCOL), move |ws| session.run(ws))
        .map_err(|e| ("upgrade", e))
}

fn replayed() -> ApiError {
    ApiError::new(ErrorCode::TokenReplayed, "this terminal token was already used; mint a new one")
}

fn invalid_token() -> ApiError {
    ApiError::new(ErrorCode::TokenInvalid, "unknown terminal token")
}

fn token_store_down(e: super::tokens::TokenStoreError) -> ApiError {
    tracing::warn!(error = %e, "terminal token store unavailable");
    ApiError::unavailable("the token store is unavailable; retry shortly")
}

async fn check_token(state: &AppState, hash: &str, allocation_id: &str) -> Result<TokenRecord, Refusal> {
    match state.terminal.tokens.peek(hash).await {
        Ok(Lookup::Valid(r)) => {
            if r.expires_at <= waygate_telemetry::now_millis() {
                return Err(refuse("token_expired", ApiError::new(ErrorCode::TokenExpired, "terminal token expired")));
            }
            if r.allocation_id != allocation_id {
                return Err(refuse(
                    "wrong_allocation",
                    ApiError::new(ErrorCode::TokenInvalid, "this token was minted for another allocation"),
                ));
            }
            Ok(r)
        }
        Ok(Lookup::Used) => Err(refuse("token_replayed", replayed())),
        Ok(Lookup::Unknown) => Err(refuse("token_invalid", invalid_token())),
        Err(e) => Err(refuse("token_store", token_store_down(e))),
    }
}

/// The node's agent on this instance; otherwise 503 `agent_unavailable` (naming the instance
/// that holds it, when one does: relaying across instances is not supported yet).
async fn agent_for(state: &AppState, allocation: &AllocationRow) -> Result<Arc<AgentLink>, Refusal> {
    if let Some(link) = state.terminal.agents.get(&allocation.node_id) {
        return Ok(link.clone());
    }
    let elsewhere = state.store.agent_instance(&allocation.node_id, waygate_telemetry::now_millis()).await;
    let mut err =
        ApiError::new(ErrorCode::AgentUnavailable, format!("node {} has no agent connected", allocation.node_id))
            .with_detail("nodeId", allocation.node_id.clone());
    if let Ok(Some(instance)) = elsewhere
        && instance != state.instance_id
    {
        err = ApiError::new(
            ErrorCode::AgentUnavailable,
            format!(
                "node {}'s agent is connected to another instance; connect through that instance",
                allocation.node_id
            ),
        )
        .with_detail("nodeId", allocation.node_id.clone())
        .with_detail("instanceId", instance);
    }
    Err(refuse("agent_unavailable", err))
}

struct Session {
    state: AppState,
    id: u128,
    link: Arc<AgentLink>,
    allocation: AllocationRow,
    resource_name: String,
    correlation_id: String,
    _slot: Slot,
}

/// How a session ended, for the close frame, the metric and the log.
struct End {
    code: u16,
    reason: Cow<'static, str>,
    why: &'static str,
}

impl End {
    fn new(code: u16, reason: &'static str, why: &'static str) -> Option<End> {
        Some(End { code, reason: Cow::Borrowed(reason), why })
    }
}

impl Session {
    async fn run(self, mut ws: WsStream) {
        let state = self.state.clone();
        let sid = terminal::session_hex(self.id);
        let m = &state.metrics;
        m.terminal_event("accepted", "ok").increment(1);
        m.terminal_sessions.increment(1.0);
        tracing::info!(
            correlation_id = %self.correlation_id,
            session_id = %sid,
            resource_name = %self.resource_name,
            node_id = %self.allocation.node_id,
            "terminal session started"
        );
        state.notifier.notify(
            &self.allocation.user_id,
            serde_json::json!({"type":"terminal.session.started","allocationId":self.allocation.id,"sessionId":sid,"resourceName":self.resource_name}),
        );
        let mut events = self.link.attach(self.id);
        let opened = self
            .link
            .control(&ToAgent::Open {
                session: sid.clone(),
                command: self.allocation.command.clone(),
                cols: 80,
                rows: 24,
                resource_name: Some(self.resource_name.clone()),
            })
            .await;
        let end = if opened {
            self.relay(&mut ws, &mut events).await
        } else {
            End::new(close::INTERNAL_ERROR, "agent disconnected", "agent_gone")
        };
        self.link.detach(self.id);
        // Best effort: the agent also kills every session when its link drops.
        let link = self.link.clone();
        let close_msg = ToAgent::Close { session: sid.clone() };
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), link.control(&close_msg)).await;
        });
        let (code, why) = match end {
            Some(End { code, reason, why }) => {
                ws.queue_close(code, &reason);
                let _ = tokio::time::timeout(CLOSE_LINGER, ws.finish_close()).await;
                (code, why)
            }
            None => (1006, "browser_gone"),
        };
        m.terminal_event("closed", why).increment(1);
        m.terminal_sessions.decrement(1.0);
        tracing::info!(
            correlation_id = %self.correlation_id,
            session_id = %sid,
            resource_name = %self.resource_name,
            code,
            reason = why,
            "terminal session ended"
        );
        state.notifier.notify(
            &self.allocation.user_id,
            serde_json::json!({"type":"terminal.session.ended","allocationId":self.allocation.id,"sessionId":sid,"reason":why}),
        );
    }

    async fn relay(&self, ws: &mut WsStream, events: &mut tokio::sync::mpsc::Receiver<AgentEvent>) -> Option<End> {
        let state = &self.state;
        let lc = &state.lifecycle;
        let sid = terminal::session_hex(self.id);
        let period = state.config.heartbeat;
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ttl = tokio::time::sleep(state.config.terminal_session_ttl);
        let idle_limit = state.config.terminal_idle_timeout;
        let idle = tokio::time::sleep(idle_limit);
        tokio::pin!(ttl, idle);
        let mut missed = 0u8;
        // Bytes sent to the browser socket whose credit has not gone back to the agent.
        let mut owed: u32 = 0;
        if ws.has_buffered_input()
            && let Some(end) = self.read_browser(ws, &mut missed, &mut idle, idle_limit).await
        {
            return end;
        }
        loop {
            let pending = ws.has_pending_output();
            tokio::select! {
                biased;
                _ = lc.close_connections.cancelled() => return End::new(close::GOING_AWAY, "gateway draining", "drain"),
                _ = &mut ttl => return End::new(close::NORMAL, "session lifetime reached", "ttl"),
                _ = &mut idle => return End::new(close::NORMAL, "idle timeout", "idle"),
                // Only while the socket has caught up: what the browser has not taken stays
                // with the agent (as missing credit), not here.
                ev = events.recv(), if !pending => match ev {
                    Some(AgentEvent::Data(bytes)) => {
                        state.metrics.relay_bytes_out.increment(bytes.len() as u64);
                        owed += bytes.len() as u32;
                        if ws.send(OpCode::Binary, &bytes).is_err() {
                            return None;
                        }
                    }
                    Some(AgentEvent::Exit(code)) => {
                        let text = serde_json::to_vec(&ServerControl::Exit { code }).expect("serializes");
                        let _ = ws.send(OpCode::Text, &text);
                        return End::new(close::NORMAL, "process exited", "exit");
                    }
                    Some(AgentEvent::Error(message)) => {
                        self.send_error(ws, ErrorCode::AgentUnavailable, &message);
                        return End::new(close::INTERNAL_ERROR, "session failed on the node", "agent_error");
                    }
                    None => {
                        self.send_error(ws, ErrorCode::AgentUnavailable, "the node's agent disconnected");
                        return End::new(close::INTERNAL_ERROR, "agent disconnected", "agent_gone");
                    }
                },
                r = ws.readable() => {
                    if r.is_err() {
                        return None;
                    }
                    if let Some(end) = self.read_browser(ws, &mut missed, &mut idle, idle_limit).await {
                        return end;
                    }
                }
                r = ws.writable(), if pending => {
                    if r.is_err() {
                        return None;
                    }
                }
                _ = heartbeat.tick() => {
                    if missed >= MAX_MISSED_PONGS {
                        return End::new(close::HEARTBEAT_TIMEOUT, "heartbeat timeout", "heartbeat");
                    }
                    missed += 1;
                    ws.queue(waygate_ws::frame(OpCode::Ping, b""));
                }
            }
            if ws.has_pending_output() {
                match ws.flush() {
                    Ok(_) => {}
                    Err(_) => {
                        state.metrics.notification_write_errors.increment(1);
                        return None;
                    }
                }
            }
            // Everything sent so far is in the kernel's hands: give the agent its credit back.
            if owed > 0 && (!ws.has_pending_output() && (owed >= CREDIT_BATCH || events.is_empty())) {
                let credit = ToAgent::Credit { session: sid.clone(), bytes: owed };
                owed = 0;
                if !self.link.control(&credit).await {
                    return End::new(close::INTERNAL_ERROR, "agent disconnected", "agent_gone");
                }
            }
        }
    }

    /// Handles what the browser sent. `Some(end)`: the session is over.
    async fn read_browser(
        &self,
        ws: &mut WsStream,
        missed: &mut u8,
        idle: &mut std::pin::Pin<&mut tokio::time::Sleep>,
        idle_limit: Duration,
    ) -> Option<Option<End>> {
        if let Err(e) = ws.fill() {
            return Some(e.close_code().map(|c| End { code: c, reason: Cow::Owned(e.to_string()), why: "protocol" }));
        }
        loop {
            let msg = match ws.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => return None,
                Err(e) => {
                    return Some(e.close_code().map(|c| End {
                        code: c,
                        reason: Cow::Owned(e.to_string()),
                        why: "protocol",
                    }));
                }
            };
            *missed = 0;
            match msg {
                Message::Binary(bytes) => {
                    idle.as_mut().reset(tokio::time::Instant::now() + idle_limit);
                    self.state.metrics.relay_bytes_in.increment(bytes.len() as u64);
                    // Waits while the agent link is saturated: backpressure to the browser.
                    for chunk in bytes.chunks(terminal::MAX_CHUNK) {
                        if !self.link.send(AgentLink::input_frame(self.id, chunk)).await {
                            return Some(End::new(close::INTERNAL_ERROR, "agent disconnected", "agent_gone"));
                        }
                    }
                }
                Message::Text(text) => {
                    idle.as_mut().reset(tokio::time::Instant::now() + idle_limit);
                    match serde_json::from_slice::<ClientControl>(&text) {
                        Ok(ClientControl::Resize { cols, rows }) => {
                            let msg = ToAgent::Resize { session: terminal::session_hex(self.id), cols, rows };
                            if !self.link.control(&msg).await {
                                return Some(End::new(close::INTERNAL_ERROR, "agent disconnected", "agent_gone"));
                            }
                        }
                        Err(_) => self.send_error(
                            ws,
                            ErrorCode::BadRequest,
                            "control messages are JSON: {\"type\":\"resize\",\"cols\":N,\"rows\":N}",
                        ),
                    }
                }
                Message::Close(frame) => {
                    let code = frame.map_or(close::NORMAL, |f| f.code);
                    return Some(Some(End { code, reason: Cow::Borrowed(""), why: "client_closed" }));
                }
                Message::Ping(_) | Message::Pong(_) => {}
            }
        }
    }

    fn send_error(&self, ws: &mut WsStream, code: ErrorCode, message: &str) {
        let ids = RequestIds::generate();
        tracing::info!(
            correlation_id = %ids.correlation_id,
            session_id = %terminal::session_hex(self.id),
            resource_name = %self.resource_name,
            code = code.as_str(),
            message,
            "terminal error frame sent"
        );
        let env = ErrorEnvelope::new(code, message, ids.correlation_id, ids.trace_id).into_frame(None);
        let _ = ws.send(OpCode::Text, &serde_json::to_vec(&env).expect("serializes"));
    }
}
