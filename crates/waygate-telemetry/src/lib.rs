//! Telemetry for every waygate process: JSON log lines in the documented shape
//! (`ts`, `level`, `service`, `instance_id`, `msg`, then context fields) and a per-process
//! Prometheus registry whose handles are plain atomics on the hot path.

mod logging;
mod registry;

pub use logging::{LogError, LogHandle, init_logging};
pub use registry::Registry;

/// Metric names from SPEC and the seeds, in one place so dashboards, alerts and tests agree.
pub mod names {
    pub const WS_CONNECTIONS_ACTIVE: &str = "waygate_ws_connections_active";
    pub const WS_CONNECTIONS_TOTAL: &str = "waygate_ws_connections_total";
    pub const WS_UPGRADE_REJECTED_TOTAL: &str = "waygate_ws_upgrade_rejected_total";
    pub const WS_MESSAGES_IN_TOTAL: &str = "waygate_ws_messages_received_total";
    pub const WS_MESSAGES_OUT_TOTAL: &str = "waygate_ws_messages_sent_total";
    pub const WS_CLOSED_TOTAL: &str = "waygate_ws_closed_total";
    pub const WS_SLOW_CONSUMER_TOTAL: &str = "waygate_ws_slow_consumer_total";
    pub const WS_RATE_LIMITED_TOTAL: &str = "waygate_ws_rate_limited_total";
    pub const HTTP_REQUESTS_TOTAL: &str = "waygate_http_requests_total";
    pub const DEVICES_CONNECTED: &str = "waygate_gateway_devices_connected";
    pub const DEVICE_REGISTRATIONS_TOTAL: &str = "waygate_gateway_device_registrations_total";
    pub const TOOL_CALLS_TOTAL: &str = "waygate_gateway_tool_calls_total";
    pub const TOOL_CALL_DURATION: &str = "waygate_gateway_tool_call_duration_seconds";
    pub const DISPATCH_QUEUE_DEPTH: &str = "waygate_gateway_dispatch_queue_depth";
    pub const DRAINING: &str = "waygate_draining";
    pub const CONFIG_RELOADS_TOTAL: &str = "waygate_config_reloads_total";
    pub const BACKEND_UP: &str = "waygate_backend_up";
    pub const ROUTE_FAILURES_TOTAL: &str = "waygate_route_failures_total";
    // Seed 001 names, kept exactly.
    pub const TERMINAL_WS_EVENTS_TOTAL: &str = "terminal_gateway_ws_events_total";
    pub const TERMINAL_TOKEN_REPLAY_REJECTED_TOTAL: &str = "terminal_token_replay_rejected_total";
    pub const WS_NOTIFICATIONS_WRITE_ERRORS_TOTAL: &str = "ws_notifications_write_errors_total";
    pub const TERMINAL_SESSIONS_ACTIVE: &str = "terminal_sessions_active";
    pub const TERMINAL_RELAY_BYTES_TOTAL: &str = "terminal_relay_bytes_total";
    pub const TERMINAL_RELAY_DROPS_TOTAL: &str = "terminal_relay_drops_total";
    pub const TERMINAL_AGENTS_CONNECTED: &str = "terminal_agents_connected";
}

/// Current time as RFC 3339 UTC with milliseconds, the format of every timestamp on the wire.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Formats epoch milliseconds as RFC 3339 UTC.
pub fn millis_to_rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}
