//! The node agent: connects outward to a gateway's `/api/agent/ws`, authenticates with the
//! shared agent token, and serves terminal sessions in real PTYs, many sessions multiplexed
//! over the one socket (protocol in `waygate_proto::terminal` and docs/protocol.md).
//!
//! The agent dials out so nodes need no inbound port. A lost connection is retried with capped
//! exponential backoff and full jitter, so a fleet of agents does not reconnect in lockstep
//! after a gateway restart. Sessions do not outlive their connection: the browser side of a
//! session ends with it anyway, so its process group is killed.

mod pty;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;
use waygate_proto::terminal::{self, FromAgent, ToAgent};

pub use pty::{SessionSpec, exit_code};

/// First reconnect delay; doubles per failed attempt up to [`AgentConfig::max_backoff`].
const BASE_BACKOFF: Duration = Duration::from_millis(250);
/// The agent pings this often; the gateway pings too, so either side notices a dead link.
const PING_EVERY: Duration = Duration::from_secs(15);
/// Nothing heard from the gateway for this long (pings included): the link is dead.
const READ_TIMEOUT: Duration = Duration::from_secs(45);
/// Frames waiting for the socket writer. PTY output is already bounded per session by credit;
/// this bounds the sum and makes a slow gateway link push back on every session.
const OUTBOX: usize = 64;

#[derive(Clone)]
pub struct AgentConfig {
    /// Gateway base URL, e.g. `ws://host:8080` (the agent path is appended).
    pub gateway: String,
    pub node_id: String,
    pub token: String,
    pub max_backoff: Duration,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("gateway", &self.gateway)
            .field("node_id", &self.node_id)
            .field("token", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid gateway URL {0:?}: use ws://host:port or wss://host:port")]
    Url(String),
    #[error("invalid header value: {0}")]
    Header(String),
}

/// Why one connection ended.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("cannot connect: {0}")]
    Connect(tokio_tungstenite::tungstenite::Error),
    #[error("connection lost: {0}")]
    Io(tokio_tungstenite::tungstenite::Error),
    #[error("nothing heard from the gateway for {0:?}")]
    Silent(Duration),
    #[error("the gateway closed the connection ({0})")]
    Closed(String),
}

/// Builds the upgrade request; fails early on a bad URL so the CLI exits 64-style at once.
fn request(config: &AgentConfig) -> Result<http::Request<()>, AgentError> {
    let base = config.gateway.trim_end_matches('/');
    if !(base.starts_with("ws://") || base.starts_with("wss://")) {
        return Err(AgentError::Url(config.gateway.clone()));
    }
    let url = format!("{base}{}", terminal::AGENT_PATH);
    let mut req = url.as_str().into_client_request().map_err(|_| AgentError::Url(config.gateway.clone()))?;
    let headers = req.headers_mut();
    let bearer = format!("Bearer {}", config.token);
    headers.insert(
        http::header::AUTHORIZATION,
        bearer.parse().map_err(|_| AgentError::Header("the token is not a valid header value".into()))?,
    );
    headers.insert(
        terminal::NODE_ID_HEADER,
        config.node_id.parse().map_err(|_| AgentError::Header("the node id is not a valid header value".into()))?,
    );
    Ok(req)
}

/// Runs until `shutdown` is cancelled, reconnecting whenever the link is lost.
pub async fn run_until(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    let req = request(&config)?;
    let mut attempt: u32 = 0;
    loop {
        let started = tokio::time::Instant::now();
        let result = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = serve_link(&config, req.clone(), &shutdown) => r,
        };
        match result {
            Ok(()) => return Ok(()),
            Err(e) => {
                // A link that stayed up a while was healthy: start the backoff over.
                if started.elapsed() > Duration::from_secs(10) {
                    attempt = 0;
                }
                let delay = backoff(attempt, config.max_backoff);
                attempt = attempt.saturating_add(1);
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, node_id = %config.node_id, "gateway link down");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Capped exponential backoff with full jitter: uniform in `[0, min(cap, base * 2^attempt)]`.
pub fn backoff(attempt: u32, cap: Duration) -> Duration {
    let ceiling = BASE_BACKOFF.saturating_mul(1u32 << attempt.min(16)).min(cap);
    let millis = ceiling.as_millis() as u64;
    Duration::from_millis(rand::random_range(0..=millis.max(1)))
}

struct Session {
    input: mpsc::Sender<Bytes>,
    credit: Arc<tokio::sync::Semaphore>,
    control: pty::Control,
}

/// One connection: returns `Ok` only when `shutdown` ended it.
async fn serve_link(
    config: &AgentConfig,
    req: http::Request<()>,
    shutdown: &CancellationToken,
) -> Result<(), LinkError> {
    let (ws, _) = tokio_tungstenite::connect_async(req).await.map_err(LinkError::Connect)?;
    tracing::info!(gateway = %config.gateway, node_id = %config.node_id, "connected to the gateway");
    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(OUTBOX);
    let (done_tx, mut done_rx) = mpsc::channel::<u128>(OUTBOX);
    let link_closed = CancellationToken::new();
    // The writer owns the sink so that sessions can push frames without locking.
    let writer = {
        let link_closed = link_closed.clone();
        tokio::spawn(async move {
            let mut ping = tokio::time::interval(PING_EVERY);
            loop {
                tokio::select! {
                    _ = link_closed.cancelled() => break,
                    msg = out_rx.recv() => match msg {
                        Some(m) => if sink.send(m).await.is_err() { break },
                        None => break,
                    },
                    _ = ping.tick() => if sink.send(Message::Ping(Bytes::new())).await.is_err() { break },
                }
            }
            let _ = sink.close().await;
        })
    };
    let mut sessions: HashMap<u128, Session> = HashMap::new();
    let result = loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = link_closed.cancelled() => break Err(LinkError::Closed("writer stopped".into())),
            Some(id) = done_rx.recv() => {
                sessions.remove(&id);
                continue;
            }
            next = tokio::time::timeout(READ_TIMEOUT, stream.next()) => next,
        };
        let msg = match next {
            Err(_) => break Err(LinkError::Silent(READ_TIMEOUT)),
            Ok(None) => break Err(LinkError::Closed("end of stream".into())),
            Ok(Some(Err(e))) => break Err(LinkError::Io(e)),
            Ok(Some(Ok(m))) => m,
        };
        match msg {
            Message::Binary(data) => {
                let Some((id, bytes)) = terminal::split_data(&data) else { continue };
                if let Some(s) = sessions.get(&id) {
                    // Waiting here pushes back on the gateway (and so on the browser) when a
                    // process does not read its input.
                    let _ = s.input.send(data.slice(terminal::SESSION_ID_LEN..)).await;
                } else {
                    tracing::debug!(session_id = %terminal::session_hex(id), len = bytes.len(), "input for an unknown session");
                }
            }
            Message::Text(text) => match serde_json::from_str::<ToAgent>(&text) {
                Ok(cmd) => on_command(cmd, &mut sessions, &out_tx, &done_tx),
                Err(e) => tracing::warn!(error = %e, "unreadable message from the gateway"),
            },
            Message::Close(frame) => {
                break Err(LinkError::Closed(frame.map(|f| format!("{} {}", f.code, f.reason)).unwrap_or_default()));
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    };
    for (_, s) in sessions.drain() {
        s.control.kill();
    }
    link_closed.cancel();
    let _ = writer.await;
    result
}

fn on_command(
    cmd: ToAgent,
    sessions: &mut HashMap<u128, Session>,
    out: &mpsc::Sender<Message>,
    done: &mpsc::Sender<u128>,
) {
    match cmd {
        ToAgent::Open { session, command, cols, rows, resource_name } => {
            let Some(id) = terminal::parse_session(&session) else { return };
            let spec = SessionSpec { id, command, cols, rows, resource_name };
            match pty::start(spec, out.clone(), done.clone()) {
                Ok((input, credit, control)) => {
                    sessions.insert(id, Session { input, credit, control });
                }
                Err(e) => {
                    tracing::warn!(session_id = %session, error = %e, "session did not start");
                    let msg = FromAgent::Error { session, message: format!("cannot start the session: {e}") };
                    let _ = out.try_send(Message::text(serde_json::to_string(&msg).expect("serializes")));
                }
            }
        }
        ToAgent::Resize { session, cols, rows } => {
            if let Some(s) = terminal::parse_session(&session).and_then(|id| sessions.get(&id)) {
                s.control.resize(cols, rows);
            }
        }
        ToAgent::Credit { session, bytes } => {
            if let Some(s) = terminal::parse_session(&session).and_then(|id| sessions.get(&id)) {
                s.credit.add_permits(bytes as usize);
            }
        }
        ToAgent::Close { session } => {
            if let Some(s) = terminal::parse_session(&session).and_then(|id| sessions.remove(&id)) {
                s.control.kill();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let cap = Duration::from_secs(5);
        for attempt in 0..40 {
            assert!(backoff(attempt, cap) <= cap);
        }
        assert!(backoff(0, cap) <= BASE_BACKOFF);
    }

    #[test]
    fn bad_urls_are_refused_up_front() {
        let c = AgentConfig {
            gateway: "http://x".into(),
            node_id: "n".into(),
            token: "t".into(),
            max_backoff: Duration::from_secs(1),
        };
        assert!(matches!(request(&c), Err(AgentError::Url(_))));
        assert!(!format!("{c:?}").contains("\"t\""));
    }
}
