//! Device gateway: registration API, tool-call API and the device WebSocket protocol (SPEC 4.1).

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const MAX_CAPABILITIES: usize = 32;
/// Default time a tool call may take when the request names no `timeoutMs`.
pub const DEFAULT_TOOL_CALL_TIMEOUT_MS: u64 = 30_000;
/// Upper bound for `timeoutMs`: a waiting HTTP request longer than this is a misuse.
pub const MAX_TOOL_CALL_TIMEOUT_MS: u64 = 15 * 60 * 1000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterDeviceRequest {
    pub name: String,
    pub platform: String,
    pub capabilities: Vec<String>,
}

impl RegisterDeviceRequest {
    /// Returns every validation problem, so a client fixes them in one round trip.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let name_len = self.name.chars().count();
        if !(1..=128).contains(&name_len) || self.name.trim().is_empty() {
            problems.push("name must be 1-128 characters".to_owned());
        }
        let platform_len = self.platform.chars().count();
        if !(1..=32).contains(&platform_len) || self.platform.trim().is_empty() {
            problems.push("platform must be 1-32 characters".to_owned());
        }
        if self.capabilities.is_empty() || self.capabilities.len() > MAX_CAPABILITIES {
            problems.push(format!("capabilities must list 1-{MAX_CAPABILITIES} entries"));
        }
        for cap in &self.capabilities {
            if !is_valid_capability(cap) {
                problems.push(format!("capability {cap:?} must match [a-z0-9._-]{{1,64}}"));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }
}

pub fn is_valid_capability(cap: &str) -> bool {
    (1..=64).contains(&cap.len())
        && cap.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    Online,
    Offline,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub id: String,
    pub name: String,
    pub platform: String,
    pub capabilities: Vec<String>,
    pub status: DeviceStatus,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC; null until the device first connects.
    pub last_seen_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterDeviceResponse {
    pub device_id: String,
    pub device: Device,
    pub ws_endpoint: String,
    pub protocol_version: u32,
    pub session_token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceList {
    pub devices: Vec<Device>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolCallRequest {
    pub capability: String,
    pub tool: String,
    #[serde(default)]
    pub args: Value,
    #[serde(default)]
    pub device_id: Option<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// `false`: answer 202 at once and let the client poll `GET /api/gateway/tool-calls/{id}`.
    #[serde(default = "default_true")]
    pub wait: bool,
    /// `false`: refuse at once when no capable device is online instead of waiting for one.
    #[serde(default = "default_true")]
    pub wait_for_device: bool,
}

fn default_true() -> bool {
    true
}

impl ToolCallRequest {
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if !is_valid_capability(&self.capability) {
            problems.push("capability must match [a-z0-9._-]{1,64}".to_owned());
        }
        if self.tool.is_empty() || self.tool.len() > 128 {
            problems.push("tool must be 1-128 characters".to_owned());
        }
        if let Some(t) = self.timeout_ms
            && !(1..=MAX_TOOL_CALL_TIMEOUT_MS).contains(&t)
        {
            problems.push(format!("timeoutMs must be 1-{MAX_TOOL_CALL_TIMEOUT_MS}"));
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }

    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(DEFAULT_TOOL_CALL_TIMEOUT_MS)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolCallStatus {
    Pending,
    Processing,
    Completed,
    Failed,
    Expired,
}

impl ToolCallStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ToolCallStatus::Pending => "pending",
            ToolCallStatus::Processing => "processing",
            ToolCallStatus::Completed => "completed",
            ToolCallStatus::Failed => "failed",
            ToolCallStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => ToolCallStatus::Pending,
            "processing" => ToolCallStatus::Processing,
            "completed" => ToolCallStatus::Completed,
            "failed" => ToolCallStatus::Failed,
            "expired" => ToolCallStatus::Expired,
            _ => return None,
        })
    }

    pub fn is_finished(self) -> bool {
        matches!(self, ToolCallStatus::Completed | ToolCallStatus::Failed | ToolCallStatus::Expired)
    }
}

/// Error reported by a device, or recorded by the gateway when a call failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolError {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolCallView {
    pub id: String,
    pub status: ToolCallStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ToolError>,
    pub capability: String,
    pub tool: String,
    pub device_id: Option<String>,
    pub created_at: String,
    pub expires_at: String,
    pub finished_at: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DispatchQueueCounters {
    pub pending: u64,
    pub processing: u64,
    pub completed_last_hour: u64,
    pub failed_last_hour: u64,
    pub expired_last_hour: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayHealthBody {
    pub connected_devices: u64,
    pub dispatch_queue: DispatchQueueCounters,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayHealth {
    pub status: String,
    pub instance_id: String,
    pub gateway: GatewayHealthBody,
}

// ---- device WebSocket protocol ----

/// Messages a device sends. Unknown fields are ignored so devices can evolve.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DeviceMessage {
    #[serde(rename_all = "camelCase")]
    Register {
        device_id: String,
        session_token: String,
        #[serde(default)]
        protocol_version: Option<u32>,
    },
    #[serde(rename_all = "camelCase")]
    ToolResult {
        call_id: String,
        ok: bool,
        #[serde(default)]
        result: Option<Value>,
        #[serde(default)]
        error: Option<ToolError>,
    },
}

/// Messages the gateway sends to a device.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GatewayMessage {
    #[serde(rename_all = "camelCase")]
    Ack { device_id: String, session_id: String, heartbeat_interval_ms: u64 },
    #[serde(rename_all = "camelCase")]
    ToolCall {
        call_id: String,
        tool: String,
        args: Value,
        /// RFC 3339 UTC.
        deadline: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, platform: &str, caps: &[&str]) -> RegisterDeviceRequest {
        RegisterDeviceRequest {
            name: name.into(),
            platform: platform.into(),
            capabilities: caps.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn registration_validation_reports_every_problem() {
        assert!(req("Laptop", "macos", &["desktop", "fs.read_v2"]).validate().is_ok());
        let errs = req("", &"x".repeat(33), &["Bad Cap"]).validate().unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(req(&"n".repeat(129), "web", &["a"]).validate().is_err());
        assert!(req(&"n".repeat(128), "web", &["a"]).validate().is_ok());
        let many: Vec<String> = (0..33).map(|i| format!("c{i}")).collect();
        let many: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
        assert!(req("a", "web", &many).validate().is_err());
        assert!(req("a", "web", &[]).validate().is_err());
        assert!(req("a", "web", &[&"a".repeat(65)]).validate().is_err());
    }

    #[test]
    fn tool_call_defaults() {
        let r: ToolCallRequest = serde_json::from_str(r#"{"capability":"desktop","tool":"echo"}"#).unwrap();
        assert!(r.wait && r.wait_for_device);
        assert_eq!(r.timeout_ms(), DEFAULT_TOOL_CALL_TIMEOUT_MS);
        assert_eq!(r.args, Value::Null);
    }

    #[test]
    fn device_messages_use_contract_names() {
        let m: DeviceMessage =
            serde_json::from_str(r#"{"type":"register","deviceId":"d","sessionToken":"t","protocolVersion":1}"#)
                .unwrap();
        assert!(matches!(m, DeviceMessage::Register { .. }));
        let m: DeviceMessage = serde_json::from_str(
            r#"{"type":"tool_result","callId":"c","ok":false,"error":{"code":"x","message":"y"}}"#,
        )
        .unwrap();
        assert!(matches!(m, DeviceMessage::ToolResult { ok: false, .. }));
        let out = serde_json::to_value(GatewayMessage::ToolCall {
            call_id: "c".into(),
            tool: "t".into(),
            args: Value::Null,
            deadline: "2026-01-01T00:00:00Z".into(),
        })
        .unwrap();
        assert_eq!(out["type"], "tool_call");
        assert_eq!(out["callId"], "c");
    }
}
