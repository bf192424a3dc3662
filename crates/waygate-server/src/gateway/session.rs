//! The device side of a WebSocket connection: `register` → `ack`, and `tool_result`.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use serde_json::value::RawValue;
use waygate_proto::device::{DeviceMessage, GatewayMessage};
use waygate_proto::{ErrorCode, close};
use waygate_store::hash_token;

use super::LocalDevice;
use crate::state::AppState;
use crate::ws::ConnShared;
use crate::ws::conn::{Connection, Flow};

/// A connection that registered as a device.
pub struct DeviceSession {
    pub device_id: String,
    pub session_id: String,
    /// The owner, for `/ws/notifications`.
    pub user_id: String,
}

impl DeviceSession {
    /// Runs when the socket closes: release the device and fail the calls it was running.
    pub async fn disconnected(self, state: &AppState, conn: &Arc<ConnShared>) {
        if !state.devices.remove(&self.device_id, conn.id) {
            return; // a newer connection took the device over and owns its state now
        }
        state.metrics.devices_connected.decrement(1.0);
        let now = waygate_telemetry::now_millis();
        if let Err(e) = state.store.mark_device_disconnected(&self.device_id, &state.instance_id, now).await {
            tracing::warn!(device_id = %self.device_id, error = %e, "could not record device disconnect");
        }
        super::dispatch::fail_device_calls(state, &self.device_id).await;
        tracing::info!(device_id = %self.device_id, session_id = %self.session_id, "device disconnected");
        state.notifier.notify(&self.user_id, serde_json::json!({"type": "device.offline", "deviceId": self.device_id}));
    }
}

pub(crate) async fn on_device_message(conn: &mut Connection, text: &[u8], id: Option<&RawValue>) -> Flow {
    let msg: DeviceMessage = match serde_json::from_slice(text) {
        Ok(m) => m,
        Err(e) => {
            // Unlimited only if it was a well-formed result (see `Connection::on_text`).
            if conn.device.is_some()
                && let Some(flow) = conn.over_rate_limit()
            {
                return flow;
            }
            conn.send_error(id, ErrorCode::BadRequest, &format!("invalid device message: {e}"));
            return Flow::Continue;
        }
    };
    match msg {
        DeviceMessage::Register { device_id, session_token, protocol_version } => {
            register(conn, device_id, session_token, protocol_version, id).await
        }
        DeviceMessage::ToolResult { call_id, ok, result, error } => {
            let Some(session) = conn.device.as_ref() else {
                conn.send_error(id, ErrorCode::Unauthorized, "register before sending tool results");
                return Flow::Continue;
            };
            let device_id = session.device_id.clone();
            if !super::dispatch::complete(&conn.state, &call_id, &device_id, ok, result, error).await {
                if let Some(flow) = conn.over_rate_limit() {
                    return flow;
                }
                conn.send_error(id, ErrorCode::NotFound, &format!("no call {call_id} is waiting for this device"));
            }
            Flow::Continue
        }
    }
}

async fn register(
    conn: &mut Connection,
    device_id: String,
    session_token: String,
    protocol_version: Option<u32>,
    id: Option<&RawValue>,
) -> Flow {
    if let Some(v) = protocol_version.filter(|v| *v != waygate_proto::PROTOCOL_VERSION) {
        conn.send_error(id, ErrorCode::BadRequest, &format!("protocolVersion {v} is not supported; use 1"));
        return Flow::Continue;
    }
    if conn.device.is_some() {
        conn.send_error(id, ErrorCode::Conflict, "this connection is already registered");
        return Flow::Continue;
    }
    let state = conn.state.clone();
    let target = match state.store.register_target(&device_id).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "device lookup failed");
            conn.send_error(id, ErrorCode::ServiceUnavailable, "device registry unavailable; retry shortly");
            return Flow::Continue;
        }
    };
    let Some(target) = target
        .filter(|t| waygate_config::Secret::new(t.session_token_hash.clone()).matches(&hash_token(&session_token)))
    else {
        state.metrics.device_registration("invalid");
        conn.send_error(id, ErrorCode::TokenInvalid, "unknown device or invalid session token");
        return Flow::Close(close::UNAUTHORIZED, Cow::Borrowed("invalid device token"));
    };
    let now = waygate_telemetry::now_millis();
    if let Err(e) = state.store.mark_device_connected(&device_id, &state.instance_id, now).await {
        tracing::warn!(error = %e, "could not record device connection");
        conn.send_error(id, ErrorCode::ServiceUnavailable, "device registry unavailable; retry shortly");
        return Flow::Continue;
    }
    let local = Arc::new(LocalDevice {
        user_id: target.user_id.clone(),
        capabilities: target.capabilities.0.clone(),
        conn: conn.shared.clone(),
        in_flight: AtomicUsize::new(0),
    });
    match state.devices.insert(device_id.clone(), local) {
        Some(old) => old.conn.kick(close::REPLACED, "device registered on a newer connection"),
        None => state.metrics.devices_connected.increment(1.0),
    }
    let session_id = uuid::Uuid::new_v4().to_string();
    state.metrics.device_registration("ok");
    tracing::info!(device_id = %device_id, session_id = %session_id, connection_id = %conn.connection_id(), "device registered");
    let ack = GatewayMessage::Ack {
        device_id: device_id.clone(),
        session_id: session_id.clone(),
        heartbeat_interval_ms: state.config.heartbeat.as_millis() as u64,
    };
    let _ = conn.send_json(&ack);
    state.notifier.notify(&target.user_id, serde_json::json!({"type": "device.online", "deviceId": device_id}));
    conn.device = Some(DeviceSession { device_id, session_id, user_id: target.user_id.clone() });
    state.dispatch.wake();
    Flow::Continue
}
