//! `/ws/notifications`: a signed-in user's event stream (terminal sessions started/ended).
//! Events are published on the instance where they happen and reach that user's sockets on
//! the same instance; each socket has a small bounded queue, and an event that does not fit
//! is dropped and counted in `ws_notifications_write_errors_total` rather than buffered.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dashmap::DashMap;
use metrics::Counter;
use tokio::sync::mpsc;
use waygate_proto::close;
use waygate_ws::{Message, OpCode, WsStream};

use crate::http::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::ws::{Slot, frame_json};

const QUEUE: usize = 64;
const CLOSE_LINGER: Duration = Duration::from_secs(2);

pub struct Notifier {
    subs: DashMap<String, Vec<(u64, mpsc::Sender<Bytes>)>>,
    next: AtomicU64,
    write_errors: Counter,
}

impl Notifier {
    pub fn new(write_errors: Counter) -> Notifier {
        Notifier { subs: DashMap::new(), next: AtomicU64::new(1), write_errors }
    }

    /// Sends `event` (a JSON object; `ts` is added) to every socket of `user` here.
    pub fn notify(&self, user: &str, mut event: serde_json::Value) {
        let Some(subs) = self.subs.get(user) else { return };
        if let Some(obj) = event.as_object_mut() {
            obj.insert("ts".into(), waygate_telemetry::now_rfc3339().into());
        }
        let frame = frame_json(&event);
        for (_, tx) in subs.iter() {
            if tx.try_send(frame.clone()).is_err() {
                self.write_errors.increment(1);
            }
        }
    }

    fn subscribe(&self, user: &str) -> (u64, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.subs.entry(user.to_owned()).or_default().push((id, tx));
        (id, rx)
    }

    fn unsubscribe(&self, user: &str, id: u64) {
        self.subs.remove_if_mut(user, |_, v| {
            v.retain(|(i, _)| *i != id);
            v.is_empty()
        });
    }
}

pub async fn upgrade(State(state): State<AppState>, req: Request) -> Response {
    accept(state, req).await.unwrap_or_else(IntoResponse::into_response)
}

async fn accept(state: AppState, req: Request) -> ApiResult<Response> {
    let token = crate::http::auth::session_token(req.headers()).ok_or_else(ApiError::unauthorized)?;
    let user =
        state.store.session_user(token, waygate_telemetry::now_millis()).await?.ok_or_else(ApiError::unauthorized)?;
    let (slot, accept) = crate::ws::precheck(&state, &req, "gateway draining")?;
    let s = state.clone();
    crate::ws::switch(&state, req, accept, None, move |ws| run(s, ws, user.id, slot))
}

async fn run(state: AppState, mut ws: WsStream, user: String, _slot: Slot) {
    let (id, mut rx) = state.notifier.subscribe(&user);
    let end = serve(&state, &mut ws, &mut rx).await;
    state.notifier.unsubscribe(&user, id);
    if let Some((code, reason)) = end {
        ws.queue_close(code, &reason);
        let _ = tokio::time::timeout(CLOSE_LINGER, ws.finish_close()).await;
    }
}

async fn serve(
    state: &AppState,
    ws: &mut WsStream,
    rx: &mut mpsc::Receiver<Bytes>,
) -> Option<(u16, Cow<'static, str>)> {
    let welcome = waygate_proto::realtime::Welcome::new(
        format!("{:032x}", rand::random::<u128>()),
        state.config.heartbeat.as_millis() as u64,
        waygate_telemetry::now_rfc3339(),
    );
    ws.send(OpCode::Text, &serde_json::to_vec(&welcome).expect("serializes")).ok()?;
    let period = state.config.heartbeat;
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut missed = 0u8;
    loop {
        let pending = ws.has_pending_output();
        tokio::select! {
            biased;
            _ = state.lifecycle.close_connections.cancelled() => return Some((close::GOING_AWAY, Cow::Borrowed("gateway draining"))),
            Some(frame) = rx.recv(), if !pending => ws.queue(frame),
            r = ws.readable() => {
                r.ok()?;
                if let Err(e) = ws.fill() {
                    return e.close_code().map(|c| (c, Cow::Owned(e.to_string())));
                }
                loop {
                    match ws.next_message() {
                        Ok(Some(Message::Close(f))) => return Some((f.map_or(close::NORMAL, |f| f.code), Cow::Borrowed(""))),
                        Ok(Some(_)) => missed = 0,
                        Ok(None) => break,
                        Err(e) => return e.close_code().map(|c| (c, Cow::Owned(e.to_string()))),
                    }
                }
            }
            r = ws.writable(), if pending => r.ok()?,
            _ = heartbeat.tick() => {
                if missed >= 2 {
                    return Some((close::HEARTBEAT_TIMEOUT, Cow::Borrowed("heartbeat timeout")));
                }
                missed += 1;
                ws.queue(waygate_ws::frame(OpCode::Ping, b""));
            }
        }
        if ws.has_pending_output() && ws.flush().is_err() {
            state.notifier.write_errors.increment(1);
            return None;
        }
    }
}
