//! The table of configuration keys: the single source for layering, validation,
//! `config check` output and `docs/configuration.md`.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Int,
    Bool,
    /// Printed as `"<redacted>"`.
    Secret,
    /// A URL whose password is redacted when printed.
    Url,
    /// Comma-separated list (a TOML array in the file).
    List,
}

#[derive(Debug)]
pub struct Key {
    pub name: &'static str,
    pub default: Option<&'static str>,
    pub kind: Kind,
    /// Changed by `config.reload` without a restart.
    pub reloadable: bool,
    pub doc: &'static str,
}

const fn key(
    name: &'static str,
    default: Option<&'static str>,
    kind: Kind,
    reloadable: bool,
    doc: &'static str,
) -> Key {
    Key { name, default, kind, reloadable, doc }
}

use Kind::*;

pub const DEFAULT_RESOURCE_NAME_TEMPLATE: &str =
    "waygate:{region}:{tenant_id}:{project_id}:terminal/allocation:{allocation_id}";

pub static KEYS: &[Key] = &[
    key("WEBSOCKET_HOST", Some("0.0.0.0"), Str, false, "address of both listeners"),
    key(
        "WEBSOCKET_PORT",
        Some("8080"),
        Int,
        false,
        "main listener: HTTP API, web pages, every WS path, health (0 = any free port)",
    ),
    key(
        "GATEWAY_WS_PORT",
        Some("3001"),
        Str,
        false,
        "standalone WS listener (WS paths + health only); `off` disables it",
    ),
    key("GATEWAY_WS_HEALTH_PATH", Some("/health"), Str, false, "health path on the standalone listener"),
    key("GATEWAY_WS_PUBLIC_URL", None, Str, false, "full public WS URL returned as `wsEndpoint` (takes precedence)"),
    key("GATEWAY_WS_PUBLIC_HOST", None, Str, false, "public host for `wsEndpoint` (with port and path)"),
    key("GATEWAY_WS_PUBLIC_PORT", None, Int, false, "public port for `wsEndpoint`"),
    key("GATEWAY_WS_PATH", Some("/api/gateway/ws"), Str, false, "path for `wsEndpoint`"),
    key(
        "GATEWAY_DISPATCH_POLL_MS",
        Some("500"),
        Int,
        false,
        "tool-call queue poll fallback in ms (minimum 100); wake-ups are event-driven",
    ),
    key(
        "GATEWAY_DISPATCH_NOTIFY",
        Some("true"),
        Bool,
        false,
        "event-driven wake-ups (LISTEN/NOTIFY across instances); `false` polls only, as the seed's design did (for comparison)",
    ),
    key(
        "GATEWAY_DISPATCH_LEASE_MS",
        Some("15000"),
        Int,
        false,
        "how long a claimed tool call stays with its instance without renewal (renewed every third of it)",
    ),
    key(
        "AGENT_CONTROL_PLANE_TOKEN",
        None,
        Secret,
        false,
        "bearer required by control commands such as `config.reload`",
    ),
    key("WAYGATE_AGENT_TOKEN", None, Secret, false, "shared secret node agents present (unset: agents refused)"),
    key("TERMINAL_GATEWAY_DRAIN_TIMEOUT_SECONDS", Some("30"), Int, false, "drain window after SIGTERM"),
    key("TERMINAL_TOKEN_TTL_SECONDS", Some("60"), Int, false, "terminal token lifetime"),
    key("TERMINAL_IDLE_TIMEOUT_SECONDS", Some("900"), Int, false, "terminal session idle limit"),
    key("TERMINAL_SESSION_TTL_SECONDS", Some("43200"), Int, false, "terminal session lifetime"),
    key("DATABASE_URL", Some("sqlite://waygate.db"), Url, false, "`sqlite://PATH` or `postgres://…`"),
    key("REDIS_URL", None, Url, false, "cluster fan-out, presence and single-use tokens"),
    key(
        "WAYGATE_REDIS_PREFIX",
        Some("waygate"),
        Str,
        false,
        "prefix of every Redis key and channel, so deployments can share a Redis",
    ),
    key("AMQP_URL", None, Url, false, "RabbitMQ for action routes, ingest, worker and dlq"),
    key(
        "WAYGATE_AMQP_NAMESPACE",
        Some("waygate"),
        Str,
        false,
        "prefix of queue and exchange names (`{ns}.interactions`, …)",
    ),
    key("DISCORD_TOKEN", None, Secret, false, "bot token `waygate ingest --upstream discord` identifies with"),
    key(
        "DISCORD_GATEWAY_URL",
        Some("https://discord.com"),
        Url,
        false,
        "Discord API base asked for `/api/v10/gateway/bot` (a `ws(s)://` URL is used as the gateway directly); \
         point it at `waygate sim discord` for tests",
    ),
    key(
        "WAYGATE_CLUSTER",
        Some("false"),
        Bool,
        false,
        "refuse to start without Postgres `DATABASE_URL` and `REDIS_URL`",
    ),
    key("WAYGATE_JWT_SECRET", None, Secret, false, "HS256 secret for WS connect tokens"),
    key("WAYGATE_JWT_PUBLIC_KEY_FILE", None, Str, false, "RS256/ES256 PEM public key for WS connect tokens"),
    key("WAYGATE_PUBLIC_WS_URL", None, Str, false, "WS base the terminal page uses (default: same origin)"),
    key(
        "WAYGATE_API_KEY",
        None,
        Secret,
        false,
        "bearer for the server push API (`/api/connections`, `/api/channels`) from backends",
    ),
    key("WAYGATE_HISTORY_SIZE", Some("100"), Int, false, "messages kept per channel for reconnect recovery (`since`)"),
    key(
        "WAYGATE_HISTORY_TTL_SECONDS",
        Some("300"),
        Int,
        false,
        "how long a channel's history outlives its last message",
    ),
    key("WAYGATE_ALLOWED_ORIGINS", None, List, true, "browser origins allowed to upgrade (unset: any)"),
    key("WAYGATE_MAX_CONNECTIONS", Some("100000"), Int, true, "total WS connections; more get 503 before the upgrade"),
    key(
        "WAYGATE_MAX_CONNECTIONS_PER_IP",
        Some("1000"),
        Int,
        true,
        "WS connections per client IP; more get 429 before the upgrade",
    ),
    key("WAYGATE_TRUSTED_PROXIES", None, List, false, "CIDRs whose X-Forwarded-For / X-Forwarded-Proto are believed"),
    key(
        "WAYGATE_MAX_MESSAGE_BYTES",
        Some("65536"),
        Int,
        true,
        "largest inbound message after reassembly; larger closes with 1009",
    ),
    key("WAYGATE_MESSAGES_PER_SECOND", Some("100"), Int, true, "per-connection inbound rate (burst twice that)"),
    key(
        "WAYGATE_HEARTBEAT_SECONDS",
        Some("25"),
        Int,
        false,
        "server ping interval; two missed pongs close the connection",
    ),
    key(
        "WAYGATE_SEND_QUEUE",
        Some("1024"),
        Int,
        true,
        "per-connection outbound bound in messages; overflow closes 1013",
    ),
    key("WAYGATE_REGION", Some("local"), Str, false, "region used in resource names"),
    key(
        "WAYGATE_RESOURCE_NAME_TEMPLATE",
        Some(DEFAULT_RESOURCE_NAME_TEMPLATE),
        Str,
        false,
        "terminal resource name template",
    ),
    key("WAYGATE_LOG", Some("info"), Str, true, "log filter (tracing EnvFilter syntax)"),
    key("WAYGATE_LOG_FORMAT", Some("json"), Str, false, "`json` or `pretty`"),
    key(
        "WAYGATE_INSTANCE_ID",
        None,
        Str,
        false,
        "instance name in logs, metrics and queue claims (default: host + random)",
    ),
];
