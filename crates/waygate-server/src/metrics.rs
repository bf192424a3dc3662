//! The gateway's metric handles, registered once at start so the hot path only touches atomics.

use metrics::{Counter, Gauge, Histogram};
use waygate_telemetry::{Registry, names};

pub struct Metrics {
    pub registry: Registry,
    pub ws_active: Gauge,
    pub ws_total: Counter,
    pub messages_in: Counter,
    pub messages_out: Counter,
    pub slow_consumer: Counter,
    pub rate_limited: Counter,
    pub devices_connected: Gauge,
    pub tool_call_duration: Histogram,
    pub draining: Gauge,
    pub dispatch_queue_pending: Gauge,
    pub dispatch_queue_processing: Gauge,
    pub backend_database: Gauge,
    pub backend_redis: Gauge,
    pub terminal_sessions: Gauge,
    pub terminal_agents: Gauge,
    pub token_replays: Counter,
    pub relay_bytes_out: Counter,
    pub relay_bytes_in: Counter,
    pub relay_drops: Counter,
    pub notification_write_errors: Counter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        r.describe_gauge(names::WS_CONNECTIONS_ACTIVE, "Open WebSocket connections on this instance");
        r.describe_counter(names::WS_CONNECTIONS_TOTAL, "WebSocket connections accepted");
        r.describe_counter(
            names::WS_UPGRADE_REJECTED_TOTAL,
            "WebSocket upgrades refused before the handshake, by reason",
        );
        r.describe_counter(names::WS_MESSAGES_IN_TOTAL, "WebSocket messages received");
        r.describe_counter(names::WS_MESSAGES_OUT_TOTAL, "WebSocket messages queued to clients");
        r.describe_counter(names::WS_CLOSED_TOTAL, "WebSocket connections closed, by close code");
        r.describe_counter(names::WS_SLOW_CONSUMER_TOTAL, "Connections closed because their send queue overflowed");
        r.describe_counter(names::WS_RATE_LIMITED_TOTAL, "Inbound messages refused by the per-connection rate limit");
        r.describe_counter(names::HTTP_REQUESTS_TOTAL, "HTTP requests answered, by status class");
        r.describe_gauge(names::DEVICES_CONNECTED, "Devices registered on this instance's sockets");
        r.describe_counter(
            names::DEVICE_REGISTRATIONS_TOTAL,
            "Device API registrations and WS register attempts, by outcome",
        );
        r.describe_counter(names::TOOL_CALLS_TOTAL, "Tool calls finished, by outcome");
        r.describe_histogram(names::TOOL_CALL_DURATION, "Tool call time from acceptance to result");
        r.describe_gauge(names::DISPATCH_QUEUE_DEPTH, "Tool calls in the queue cluster-wide, by status");
        r.describe_gauge(names::DRAINING, "1 while the instance drains after SIGTERM");
        r.describe_counter(names::CONFIG_RELOADS_TOTAL, "config.reload commands applied, by outcome");
        r.describe_gauge(names::BACKEND_UP, "1 when a backend answered its last check");
        r.describe_counter(names::ROUTE_FAILURES_TOTAL, "Routed actions whose target (queue or webhook) failed");
        r.describe_counter(names::TERMINAL_WS_EVENTS_TOTAL, "Terminal WebSocket events, by outcome and reason");
        r.describe_counter(
            names::TERMINAL_TOKEN_REPLAY_REJECTED_TOTAL,
            "Terminal tokens refused because they were already used",
        );
        r.describe_counter(names::WS_NOTIFICATIONS_WRITE_ERRORS_TOTAL, "Relay and notification writes that failed");
        r.describe_gauge(names::TERMINAL_SESSIONS_ACTIVE, "Open terminal sessions on this instance");
        r.describe_gauge(names::TERMINAL_AGENTS_CONNECTED, "Node agents connected to this instance");
        r.describe_counter(
            names::TERMINAL_RELAY_BYTES_TOTAL,
            "Terminal bytes relayed, by direction (out: node to browser, in: browser to node)",
        );
        r.describe_counter(
            names::TERMINAL_RELAY_DROPS_TOTAL,
            "Terminal sessions cut because the agent overran its flow-control window",
        );
        let m = Metrics {
            ws_active: r.gauge(names::WS_CONNECTIONS_ACTIVE, &[]),
            ws_total: r.counter(names::WS_CONNECTIONS_TOTAL, &[]),
            messages_in: r.counter(names::WS_MESSAGES_IN_TOTAL, &[]),
            messages_out: r.counter(names::WS_MESSAGES_OUT_TOTAL, &[]),
            slow_consumer: r.counter(names::WS_SLOW_CONSUMER_TOTAL, &[]),
            rate_limited: r.counter(names::WS_RATE_LIMITED_TOTAL, &[]),
            devices_connected: r.gauge(names::DEVICES_CONNECTED, &[]),
            tool_call_duration: r.histogram(names::TOOL_CALL_DURATION, &[]),
            draining: r.gauge(names::DRAINING, &[]),
            dispatch_queue_pending: r.gauge(names::DISPATCH_QUEUE_DEPTH, &[("status", "pending".into())]),
            dispatch_queue_processing: r.gauge(names::DISPATCH_QUEUE_DEPTH, &[("status", "processing".into())]),
            backend_database: r.gauge(names::BACKEND_UP, &[("backend", "database".into())]),
            backend_redis: r.gauge(names::BACKEND_UP, &[("backend", "redis".into())]),
            terminal_sessions: r.gauge(names::TERMINAL_SESSIONS_ACTIVE, &[]),
            terminal_agents: r.gauge(names::TERMINAL_AGENTS_CONNECTED, &[]),
            token_replays: r.counter(names::TERMINAL_TOKEN_REPLAY_REJECTED_TOTAL, &[]),
            relay_bytes_out: r.counter(names::TERMINAL_RELAY_BYTES_TOTAL, &[("direction", "out".into())]),
            relay_bytes_in: r.counter(names::TERMINAL_RELAY_BYTES_TOTAL, &[("direction", "in".into())]),
            relay_drops: r.counter(names::TERMINAL_RELAY_DROPS_TOTAL, &[]),
            notification_write_errors: r.counter(names::WS_NOTIFICATIONS_WRITE_ERRORS_TOTAL, &[]),
            registry: r,
        };
        // Series that alerts and dashboards query exist from the start, at zero.
        for reason in ["draining", "max_connections", "max_connections_per_ip", "origin", "bad_request", "unauthorized"]
        {
            m.upgrade_rejected(reason).increment(0);
        }
        for outcome in ["completed", "failed", "expired"] {
            m.registry.counter(names::TOOL_CALLS_TOTAL, &[("outcome", outcome.into())]).increment(0);
        }
        for outcome in ["ok", "invalid"] {
            m.registry.counter(names::DEVICE_REGISTRATIONS_TOTAL, &[("outcome", outcome.into())]).increment(0);
        }
        m.registry.counter(names::TERMINAL_TOKEN_REPLAY_REJECTED_TOTAL, &[]).increment(0);
        m.registry.counter(names::ROUTE_FAILURES_TOTAL, &[]).increment(0);
        m.registry.counter(names::WS_NOTIFICATIONS_WRITE_ERRORS_TOTAL, &[]).increment(0);
        m.registry.gauge(names::TERMINAL_SESSIONS_ACTIVE, &[]).set(0.0);
        m.terminal_agents.set(0.0);
        m.relay_drops.increment(0);
        m.relay_bytes_in.increment(0);
        m.relay_bytes_out.increment(0);
        m.terminal_event("accepted", "ok").increment(0);
        for reason in
            ["token_replayed", "token_invalid", "token_expired", "token_in_query", "draining", "agent_unavailable"]
        {
            m.terminal_event("rejected", reason).increment(0);
        }
        m
    }

    /// `terminal_gateway_ws_events_total{outcome,reason}` (cold path: one lookup per session).
    pub fn terminal_event(&self, outcome: &'static str, reason: &'static str) -> Counter {
        self.registry
            .counter(names::TERMINAL_WS_EVENTS_TOTAL, &[("outcome", outcome.into()), ("reason", reason.into())])
    }

    /// Counter for an upgrade refused for `reason` (cold path: registry lookup is fine).
    pub fn upgrade_rejected(&self, reason: &'static str) -> Counter {
        self.registry.counter(names::WS_UPGRADE_REJECTED_TOTAL, &[("reason", reason.into())])
    }

    pub fn closed(&self, code: u16) {
        self.registry.counter(names::WS_CLOSED_TOTAL, &[("code", code.to_string())]).increment(1);
    }

    pub fn tool_call_finished(&self, outcome: &str) {
        self.registry.counter(names::TOOL_CALLS_TOTAL, &[("outcome", outcome.to_owned())]).increment(1);
    }

    pub fn device_registration(&self, outcome: &'static str) {
        self.registry.counter(names::DEVICE_REGISTRATIONS_TOTAL, &[("outcome", outcome.into())]).increment(1);
    }

    pub fn http_request(&self, status: u16) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.registry.counter(names::HTTP_REQUESTS_TOTAL, &[("class", class.into())]).increment(1);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
