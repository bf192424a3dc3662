//! Realtime frames every non-terminal WebSocket path speaks (SPEC 4.3).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Welcome {
    #[serde(rename = "type")]
    pub kind: String,
    pub connection_id: String,
    pub protocol_version: u32,
    pub heartbeat_interval_ms: u64,
    /// RFC 3339 UTC.
    pub server_time: String,
}

impl Welcome {
    pub fn new(connection_id: String, heartbeat_interval_ms: u64, server_time: String) -> Self {
        Welcome {
            kind: "welcome".to_owned(),
            connection_id,
            protocol_version: crate::PROTOCOL_VERSION,
            heartbeat_interval_ms,
            server_time,
        }
    }
}
