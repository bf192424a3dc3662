//! Messages between instances over the bus (Redis in cluster mode, in process otherwise):
//! closing a device's socket wherever it is, and applying `config.reload` everywhere.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use waygate_bus::{Delivery, Topic};

use crate::state::AppState;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ClusterMessage {
    /// Close a device's socket (it was deleted on another instance).
    KickDevice { device_id: String, code: u16, reason: String },
    /// Re-read the configuration file (sent by the instance that took the command).
    ConfigReload { origin: String },
    /// Push API: send a text message to a connection held by the receiving instance.
    PushToConnection { connection_id: String, payload: String },
    /// Push API: close a connection held by the receiving instance.
    DisconnectConnection { connection_id: String },
}

impl ClusterMessage {
    fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("cluster messages serialize"))
    }
}

/// Sends a message; a bus failure is logged, not fatal (the caller's own work is done).
pub async fn send(state: &AppState, topic: Topic, msg: ClusterMessage) {
    if let Err(e) = state.bus.publish(topic, msg.encode()).await {
        tracing::warn!(error = %e, message = ?msg, "cluster message not sent");
    }
}

/// Handles everything the bus delivers to this instance.
pub async fn run(state: AppState) {
    let Some(mut rx) = state.bus.take_deliveries() else { return };
    loop {
        let delivery = tokio::select! {
            _ = state.lifecycle.stop.cancelled() => break,
            d = rx.recv() => match d { Some(d) => d, None => break },
        };
        match delivery {
            Delivery::Message { topic: Topic::Channel(channel), payload } => {
                state.realtime.deliver(&channel, &payload, state.live.send_queue());
            }
            Delivery::Message { payload, .. } => match serde_json::from_slice::<ClusterMessage>(&payload) {
                Ok(msg) => handle(&state, msg),
                Err(e) => tracing::warn!(error = %e, "undecodable cluster message ignored"),
            },
            Delivery::Reconnected => {
                tracing::warn!("bus reconnected; cross-instance messages sent meanwhile were lost");
                state.dispatch.wake();
            }
        }
    }
}

fn handle(state: &AppState, msg: ClusterMessage) {
    match msg {
        ClusterMessage::KickDevice { device_id, code, reason } => {
            if let Some(local) = state.devices.get(&device_id) {
                let reason: &'static str = match reason.as_str() {
                    "device deleted" => "device deleted",
                    _ => "closed by the gateway",
                };
                local.conn.kick(code, reason);
            }
        }
        ClusterMessage::ConfigReload { origin } if origin != state.instance_id => {
            match crate::reload::apply_local(state) {
                Ok(changed) => {
                    tracing::info!(origin = %origin, changed = ?changed, "configuration reloaded on request")
                }
                Err(e) => {
                    tracing::warn!(origin = %origin, error = ?e.message, "configuration reload requested by another instance failed")
                }
            }
        }
        ClusterMessage::ConfigReload { .. } => {}
        ClusterMessage::PushToConnection { connection_id, payload } => {
            let conn = u128::from_str_radix(&connection_id, 16).ok().and_then(|id| state.conns.get(id));
            if let Some(conn) = conn {
                conn.push(waygate_ws::text_frame(payload.as_bytes()), state.live.send_queue());
            }
        }
        ClusterMessage::DisconnectConnection { connection_id } => {
            let conn = u128::from_str_radix(&connection_id, 16).ok().and_then(|id| state.conns.get(id));
            if let Some(conn) = conn {
                conn.kick(waygate_proto::close::NORMAL, "disconnected by the server");
            }
        }
    }
}
