//! Claim → deliver → record. Wake-ups are event-driven (queue events from the store, device
//! registrations) with `GATEWAY_DISPATCH_POLL_MS` polling as the safety net.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dashmap::DashMap;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::Notify;
use tokio::sync::broadcast::error::RecvError;
use waygate_proto::device::ToolError;
use waygate_store::{CallOutcome, Claimed, QueueEvent};

use crate::state::AppState;
use crate::ws::Push;

const CLAIM_BATCH: i64 = 64;

struct InFlight {
    attempt: i64,
    device_id: String,
    created_at: i64,
    expires_at: i64,
}

#[derive(Default)]
pub struct DispatchState {
    wake: Notify,
    in_flight: DashMap<String, InFlight>,
    waiters: DashMap<String, Arc<Notify>>,
}

/// Removes its waiter when the waiting request ends, however it ends.
pub struct Waiter<'a> {
    state: &'a DispatchState,
    call_id: String,
    pub notify: Arc<Notify>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.state.waiters.remove(&self.call_id);
    }
}

impl DispatchState {
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Registers interest in a call's result before the call exists, so no finish is missed.
    pub fn waiter(&self, call_id: &str) -> Waiter<'_> {
        let notify = Arc::new(Notify::new());
        self.waiters.insert(call_id.to_owned(), notify.clone());
        Waiter { state: self, call_id: call_id.to_owned(), notify }
    }

    fn fire(&self, call_id: &str) {
        if let Some(w) = self.waiters.get(call_id) {
            w.notify_one();
        }
    }

    fn fire_all(&self) {
        for w in self.waiters.iter() {
            w.notify_one();
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

/// The dispatcher loop of this instance.
pub async fn run(state: AppState) {
    let mut poll = tokio::time::interval(state.config.dispatch_poll);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.lifecycle.stop.cancelled() => break,
            _ = state.dispatch.wake.notified() => {}
            _ = poll.tick() => {}
        }
        if !state.devices.is_empty() {
            claim_and_deliver(&state).await;
        }
    }
}

/// Routes queue events: new calls wake the dispatcher when a local device can take them,
/// finished calls wake the request waiting on them.
pub async fn pump_events(state: AppState) {
    if !state.config.dispatch_notify {
        return; // polling only: the seed's design, kept for comparison
    }
    let mut rx = state.store.subscribe();
    loop {
        let ev = tokio::select! {
            _ = state.lifecycle.stop.cancelled() => break,
            ev = rx.recv() => ev,
        };
        match ev {
            Ok(QueueEvent::NewCall { user_id, capability }) => {
                if state.devices.has_capable(&user_id, &capability) {
                    state.dispatch.wake();
                }
            }
            Ok(QueueEvent::Finished { call_id }) => state.dispatch.fire(&call_id),
            Ok(QueueEvent::Resync) => {
                state.dispatch.wake();
                state.dispatch.fire_all();
            }
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "queue events lagged; rechecking everything");
                state.dispatch.wake();
                state.dispatch.fire_all();
            }
            Err(RecvError::Closed) => break,
        }
    }
}

async fn claim_and_deliver(state: &AppState) {
    loop {
        let now = waygate_telemetry::now_millis();
        let lease = state.config.dispatch_lease.as_millis() as i64;
        let claimed = match state.store.claim_tool_calls(&state.instance_id, now, lease, CLAIM_BATCH).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "claiming tool calls failed; retrying at the next poll");
                return;
            }
        };
        let n = claimed.len() as i64;
        for call in claimed {
            deliver(state, call).await;
        }
        if n < CLAIM_BATCH {
            return;
        }
    }
}

#[derive(Serialize)]
struct ToolCallFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "callId")]
    call_id: &'a str,
    tool: &'a str,
    args: &'a RawValue,
    deadline: String,
}

async fn deliver(state: &AppState, call: Claimed) {
    let Some((device_id, device)) =
        state.devices.pick(&call.user_id, &call.required_capability, call.device_id.as_deref())
    else {
        // The device left between the claim and now; let another holder take the call.
        if let Err(e) = state.store.release_claim(&call.id, call.attempt, &state.instance_id).await {
            tracing::warn!(call_id = %call.id, error = %e, "could not release claim");
        }
        return;
    };
    let args: &RawValue =
        serde_json::from_str(&call.args).unwrap_or_else(|_| serde_json::from_str("null").expect("null"));
    let frame = crate::ws::frame_json(&ToolCallFrame {
        kind: "tool_call",
        call_id: &call.id,
        tool: &call.tool,
        args,
        deadline: waygate_telemetry::millis_to_rfc3339(call.expires_at),
    });
    state.dispatch.in_flight.insert(
        call.id.clone(),
        InFlight {
            attempt: call.attempt,
            device_id: device_id.clone(),
            created_at: call.created_at,
            expires_at: call.expires_at,
        },
    );
    device.in_flight.fetch_add(1, Ordering::Relaxed);
    if device.conn.push(frame, state.live.send_queue()) != Push::Queued {
        device.in_flight.fetch_sub(1, Ordering::Relaxed);
        if state.dispatch.in_flight.remove(&call.id).is_some() {
            let outcome = disconnected("the device's connection closed before the call was delivered");
            finish(state, &call.id, call.attempt, Some(&device_id), call.created_at, outcome).await;
        }
        return;
    }
    tracing::debug!(call_id = %call.id, device_id = %device_id, attempt = call.attempt, "tool call delivered");
}

fn disconnected(message: &str) -> CallOutcome {
    CallOutcome::Failed { code: "device_disconnected".into(), message: message.into(), detail: None }
}

/// A device answered. `false` when the call is not one this device is running.
pub async fn complete(
    state: &AppState,
    call_id: &str,
    device_id: &str,
    ok: bool,
    result: Option<serde_json::Value>,
    error: Option<ToolError>,
) -> bool {
    let Some((_, f)) = state.dispatch.in_flight.remove_if(call_id, |_, f| f.device_id == device_id) else {
        return false;
    };
    if let Some(d) = state.devices.get(device_id) {
        d.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
    let outcome = if ok {
        CallOutcome::Completed { result: result.unwrap_or(serde_json::Value::Null) }
    } else {
        let err = error
            .unwrap_or_else(|| ToolError { code: "error".into(), message: "the device reported a failure".into() });
        CallOutcome::Failed {
            code: "tool_call_failed".into(),
            message: err.message.clone(),
            detail: Some(serde_json::to_value(&err).expect("tool error serializes")),
        }
    };
    finish(state, call_id, f.attempt, Some(device_id), f.created_at, outcome).await;
    true
}

/// Fails every call a device was running when its socket closed.
pub async fn fail_device_calls(state: &AppState, device_id: &str) {
    let ids: Vec<String> =
        state.dispatch.in_flight.iter().filter(|e| e.device_id == device_id).map(|e| e.key().clone()).collect();
    for id in ids {
        if let Some((_, f)) = state.dispatch.in_flight.remove(&id) {
            let outcome = disconnected("the device disconnected before answering");
            finish(state, &id, f.attempt, Some(device_id), f.created_at, outcome).await;
        }
    }
}

/// Forgets in-flight calls whose deadline passed long ago (the row already expired).
pub fn forget_stale(state: &AppState, now: i64) {
    state.dispatch.in_flight.retain(|_, f| f.expires_at + 60_000 > now);
}

async fn finish(
    state: &AppState,
    call_id: &str,
    attempt: i64,
    device_id: Option<&str>,
    created_at: i64,
    outcome: CallOutcome,
) {
    let now = waygate_telemetry::now_millis();
    let label = match &outcome {
        CallOutcome::Completed { .. } => "completed",
        CallOutcome::Failed { .. } => "failed",
    };
    match state.store.finish_claimed(call_id, attempt, &state.instance_id, device_id, &outcome, now).await {
        Ok(true) => {
            state.metrics.tool_call_finished(label);
            state
                .metrics
                .tool_call_duration
                .record(Duration::from_millis((now - created_at).max(0) as u64).as_secs_f64());
        }
        Ok(false) => tracing::debug!(call_id, "call had already finished (deadline or lease)"),
        Err(e) => tracing::warn!(call_id, error = %e, "could not record tool call outcome"),
    }
}
