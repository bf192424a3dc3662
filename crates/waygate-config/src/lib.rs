//! waygate configuration: one table of keys, four layers (flag > environment > `--config` TOML >
//! default), one validation pass that reports every problem, and redaction of secrets.
//!
//! Every key is named after its environment variable (SPEC 2). In the TOML file the same key is
//! written in lower case (`websocket_port = 8080`); action routes are `[[routes]]` tables.

mod keys;
mod secret;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use keys::{KEYS, Key, Kind};
pub use secret::{Secret, redact_url};

/// Exit status for a configuration problem (BSD `EX_USAGE`).
pub const EXIT_CONFIG: i32 = 64;

/// Built-in realtime actions that a route may not shadow.
pub const BUILTIN_ACTIONS: &[&str] = &["ping", "subscribe", "unsubscribe", "publish", "presence", "register"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration:\n{}", format_problems(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(p) => p,
        }
    }
}

fn format_problems(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    File,
    Default,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env => "env",
            Source::File => "file",
            Source::Default => "default",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Value of the client message's `action` field, or `$default`, `$connect`, `$disconnect`.
    pub action: String,
    /// `amqp://QUEUE` (on `AMQP_URL`), `http(s)://…` webhook, or `sqs://…` (not yet supported).
    pub target: String,
    /// Time allowed for the target to confirm or answer.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// What the configuration was built from, kept so `config.reload` can rebuild it.
#[derive(Clone, Default)]
pub struct Layers {
    /// Values from command-line flags, keyed by the environment variable name.
    pub flags: BTreeMap<String, String>,
    /// The process environment (only keys in [`KEYS`] are read).
    pub env: BTreeMap<String, String>,
    /// `--config` file, re-read on reload.
    pub file: Option<PathBuf>,
}

impl std::fmt::Debug for Layers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layers")
            .field("flags", &self.flags.keys().collect::<Vec<_>>())
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Layers {
    /// Layers from the real process environment.
    pub fn from_process(flags: BTreeMap<String, String>, file: Option<PathBuf>) -> Layers {
        Layers { flags, env: std::env::vars().collect(), file }
    }
}

/// One effective value and where it came from.
#[derive(Clone)]
pub struct Effective {
    pub key: &'static Key,
    pub value: Option<String>,
    pub source: Source,
}

/// Values may be secrets: `Debug` shows only the key and its source.
impl std::fmt::Debug for Effective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({})", self.key.name, self.source.as_str())
    }
}

/// The typed, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub websocket_host: IpAddr,
    pub websocket_port: u16,
    /// `None` when `GATEWAY_WS_PORT=off`.
    pub gateway_ws_port: Option<u16>,
    pub gateway_ws_health_path: String,
    pub gateway_ws_public_url: Option<String>,
    pub gateway_ws_public_host: Option<String>,
    pub gateway_ws_public_port: Option<u16>,
    pub gateway_ws_path: String,
    pub dispatch_poll: Duration,
    pub dispatch_lease: Duration,
    /// `false`: poll only (the seed's design), for benchmarks.
    pub dispatch_notify: bool,
    pub agent_control_plane_token: Option<Secret>,
    pub agent_token: Option<Secret>,
    pub drain_timeout: Duration,
    pub terminal_token_ttl: Duration,
    pub terminal_idle_timeout: Duration,
    pub terminal_session_ttl: Duration,
    pub database_url: Secret,
    pub redis_url: Option<Secret>,
    pub redis_prefix: String,
    pub amqp_url: Option<Secret>,
    pub amqp_namespace: String,
    pub discord_token: Option<Secret>,
    pub discord_gateway_url: String,
    pub cluster: bool,
    pub jwt_secret: Option<Secret>,
    pub api_key: Option<Secret>,
    pub history_size: usize,
    pub history_ttl: Duration,
    pub jwt_public_key_file: Option<PathBuf>,
    pub public_ws_url: Option<String>,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub heartbeat: Duration,
    pub region: String,
    pub resource_name_template: String,
    pub log_format: LogFormat,
    pub instance_id: String,
    /// The reloadable part (`config.reload`).
    pub reloadable: Reloadable,
    layers: Layers,
    effective: Vec<Effective>,
}

/// Settings that `config.reload` may change on a running server.
#[derive(Debug, Clone, PartialEq)]
pub struct Reloadable {
    /// `None`: any origin.
    pub allowed_origins: Option<Vec<String>>,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_message_bytes: usize,
    pub messages_per_second: u32,
    pub send_queue: usize,
    pub log: String,
    pub routes: Vec<Route>,
}

impl Config {
    /// Builds and validates the configuration from its layers, reporting every problem.
    pub fn load(layers: Layers) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let file = match &layers.file {
            Some(path) => match read_file(path) {
                Ok(f) => f,
                Err(p) => {
                    problems.extend(p);
                    FileLayer::default()
                }
            },
            None => FileLayer::default(),
        };
        let effective = merge(&layers, &file);
        let mut r = Reader { effective: &effective, problems };
        let config = r.build(file.routes, layers.clone());
        let mut problems = r.problems;
        if let Some(c) = &config {
            problems.extend(c.cross_checks());
        }
        match config {
            Some(c) if problems.is_empty() => Ok(c),
            _ => Err(ConfigError::Invalid(problems)),
        }
    }

    /// Convenience for tests and embedding: defaults overridden by `pairs` (env names).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Config, ConfigError> {
        let flags = pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        Config::load(Layers { flags, env: BTreeMap::new(), file: None })
    }

    pub fn layers(&self) -> &Layers {
        &self.layers
    }

    pub fn config_file(&self) -> Option<&Path> {
        self.layers.file.as_deref()
    }

    /// Rebuilds from the same flags and environment and a fresh read of the config file.
    /// Returns the new configuration and the names of the reloadable keys that changed.
    /// Changes to keys that need a restart are reported separately.
    pub fn reload(&self) -> Result<Reload, ConfigError> {
        let next = Config::load(self.layers.clone())?;
        let mut changed = Vec::new();
        let mut needs_restart = Vec::new();
        for (old, new) in self.effective.iter().zip(next.effective.iter()) {
            if old.value != new.value {
                if old.key.reloadable {
                    changed.push(old.key.name.to_owned());
                } else {
                    needs_restart.push(old.key.name.to_owned());
                }
            }
        }
        if self.reloadable.routes != next.reloadable.routes {
            changed.push("routes".to_owned());
        }
        Ok(Reload { config: next, changed, needs_restart })
    }

    pub fn is_postgres(&self) -> bool {
        is_postgres_url(self.database_url.expose())
    }

    /// The effective configuration as TOML, secrets shown as `"<redacted>"`, each line
    /// annotated with its source. The output is a valid config file.
    pub fn render_toml(&self) -> String {
        let mut out = String::from("# waygate effective configuration (source of each value in comments)\n");
        for e in &self.effective {
            let name = e.key.name.to_ascii_lowercase();
            match &e.value {
                None => out.push_str(&format!("# {name} is unset\n")),
                Some(v) => {
                    let shown = match e.key.kind {
                        Kind::Secret => "<redacted>".to_owned(),
                        Kind::Url => redact_url(v),
                        _ => v.clone(),
                    };
                    out.push_str(&format!("{name} = {}  # {}\n", toml_value(e.key.kind, &shown), e.source.as_str()));
                }
            }
        }
        for route in &self.reloadable.routes {
            out.push_str("\n[[routes]]\n");
            out.push_str(&format!("action = {}\n", toml::Value::String(route.action.clone())));
            out.push_str(&format!("target = {}\n", toml::Value::String(redact_url(&route.target))));
            if let Some(t) = route.timeout_ms {
                out.push_str(&format!("timeout_ms = {t}\n"));
            }
        }
        out
    }

    fn cross_checks(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let mut problem = |key: &str, message: String| p.push(Problem { key: key.to_owned(), message });
        if self.cluster {
            if !self.is_postgres() {
                problem("DATABASE_URL", "WAYGATE_CLUSTER=true requires a postgres:// DATABASE_URL".into());
            }
            if self.redis_url.is_none() {
                problem("REDIS_URL", "WAYGATE_CLUSTER=true requires REDIS_URL".into());
            }
        }
        for (i, route) in self.reloadable.routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            if route.action.is_empty() {
                problem(&key, "action must not be empty".into());
            }
            if BUILTIN_ACTIONS.contains(&route.action.as_str()) {
                problem(&key, format!("action {:?} is built in and cannot be routed", route.action));
            }
            if route.action.starts_with('$')
                && !["$default", "$connect", "$disconnect"].contains(&route.action.as_str())
            {
                problem(&key, format!("unknown special route key {:?}", route.action));
            }
            let scheme = route.target.split("://").next().unwrap_or("");
            match scheme {
                "amqp" if self.amqp_url.is_none() => problem(&key, format!("target {} needs AMQP_URL", route.target)),
                "amqp" | "http" | "https" => {}
                "sqs" => problem(&key, "sqs:// targets are not supported yet".into()),
                _ => problem(&key, format!("target {:?} must be amqp://, http:// or https://", route.target)),
            }
            if route.action == "$connect" && scheme == "amqp" {
                problem(&key, "$connect must call an http(s) target that can answer".into());
            }
            if self.reloadable.routes[..i].iter().any(|r| r.action == route.action) {
                problem(&key, format!("action {:?} is routed twice", route.action));
            }
        }
        p
    }
}

/// Result of [`Config::reload`].
#[derive(Debug)]
pub struct Reload {
    pub config: Config,
    pub changed: Vec<String>,
    pub needs_restart: Vec<String>,
}

/// `docs/configuration.md`, generated from [`KEYS`] so the reference cannot drift.
pub fn docs_markdown() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated by `waygate config docs` from the key table in `crates/waygate-config`; a test\n\
         fails when this file is out of date.\n\n\
         Precedence: command-line flag > environment variable > `--config FILE` (TOML) > default.\n\
         In the TOML file write each key in lower case (`websocket_port = 8080`); lists may be TOML\n\
         arrays. Action routes are `[[routes]]` tables with `action`, `target` and optional\n\
         `timeout_ms` (see docs/protocol.md). `waygate config check` prints the effective\n\
         configuration (secrets as `\"<redacted>\"`) or every problem, exiting 64.\n\n\
         Keys marked *reload* are re-read by the `config.reload` control command; the others\n\
         need a restart.\n\n\
         | variable | default | meaning |\n|---|---|---|\n",
    );
    for k in KEYS {
        let default = match k.default {
            Some(d) => format!("`{d}`"),
            None => "unset".to_owned(),
        };
        let mut meaning = k.doc.to_owned();
        if matches!(k.kind, Kind::Secret) {
            meaning.push_str(" (secret)");
        }
        if k.reloadable {
            meaning.push_str(" *reload*");
        }
        out.push_str(&format!("| `{}` | {default} | {meaning} |\n", k.name));
    }
    out
}

pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

fn toml_value(kind: Kind, v: &str) -> String {
    match kind {
        Kind::Int | Kind::Bool if !v.is_empty() && toml::from_str::<toml::Table>(&format!("v = {v}")).is_ok() => {
            v.to_owned()
        }
        _ => toml::Value::String(v.to_owned()).to_string(),
    }
}

#[derive(Default)]
struct FileLayer {
    values: BTreeMap<String, String>,
    routes: Vec<Route>,
}

fn read_file(path: &Path) -> Result<FileLayer, Vec<Problem>> {
    let problem = |message: String| vec![Problem { key: "--config".to_owned(), message }];
    let text = std::fs::read_to_string(path).map_err(|e| problem(format!("cannot read {}: {e}", path.display())))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| problem(format!("{}: {e}", path.display())))?;
    let mut layer = FileLayer::default();
    let mut problems = Vec::new();
    for (name, value) in table {
        if name == "routes" {
            match value.try_into::<Vec<Route>>() {
                Ok(routes) => layer.routes = routes,
                Err(e) => problems.push(Problem { key: "routes".into(), message: e.to_string() }),
            }
            continue;
        }
        let upper = name.to_ascii_uppercase();
        let Some(key) = KEYS.iter().find(|k| k.name == upper) else {
            problems.push(Problem { key: name, message: format!("unknown key in {}", path.display()) });
            continue;
        };
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned).unwrap_or_else(|| i.to_string()))
                .collect::<Vec<_>>()
                .join(","),
            other => {
                problems.push(Problem { key: name, message: format!("unsupported value {other}") });
                continue;
            }
        };
        layer.values.insert(key.name.to_owned(), text);
    }
    if problems.is_empty() { Ok(layer) } else { Err(problems) }
}

fn merge(layers: &Layers, file: &FileLayer) -> Vec<Effective> {
    KEYS.iter()
        .map(|key| {
            let (value, source) = if let Some(v) = layers.flags.get(key.name) {
                (Some(v.clone()), Source::Flag)
            } else if let Some(v) = layers.env.get(key.name).filter(|v| !v.is_empty()) {
                (Some(v.clone()), Source::Env)
            } else if let Some(v) = file.values.get(key.name) {
                (Some(v.clone()), Source::File)
            } else {
                (key.default.map(str::to_owned), Source::Default)
            };
            Effective { key, value, source }
        })
        .collect()
}

/// Typed reads from the merged values, collecting problems instead of stopping at the first.
struct Reader<'a> {
    effective: &'a [Effective],
    problems: Vec<Problem>,
}

impl Reader<'_> {
    fn raw(&self, name: &str) -> Option<&str> {
        self.effective
            .iter()
            .find(|e| e.key.name == name)
            .unwrap_or_else(|| panic!("config key {name} missing from KEYS"))
            .value
            .as_deref()
    }

    fn fail(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem { key: key.to_owned(), message: message.into() });
    }

    fn string(&mut self, key: &str) -> String {
        self.raw(key).unwrap_or_default().to_owned()
    }

    fn opt(&mut self, key: &str) -> Option<String> {
        self.raw(key).map(str::to_owned)
    }

    fn secret(&mut self, key: &str) -> Option<Secret> {
        self.raw(key).map(|s| Secret::new(s.to_owned()))
    }

    fn int(&mut self, key: &str, min: u64, max: u64) -> u64 {
        let raw = self.raw(key).unwrap_or_default().to_owned();
        match raw.trim().parse::<u64>() {
            Ok(v) if (min..=max).contains(&v) => v,
            Ok(v) => {
                self.fail(key, format!("{v} is out of range (minimum {min}, maximum {max})"));
                min
            }
            Err(_) => {
                self.fail(key, format!("{raw:?} is not a whole number"));
                min
            }
        }
    }

    fn opt_port(&mut self, key: &str) -> Option<u16> {
        self.raw(key)?;
        Some(self.int(key, 0, 65535) as u16)
    }

    fn seconds(&mut self, key: &str, min: u64) -> Duration {
        Duration::from_secs(self.int(key, min, 10 * 365 * 86400))
    }

    fn bool(&mut self, key: &str) -> bool {
        match self.raw(key).unwrap_or("false").to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" | "" => false,
            other => {
                let other = other.to_owned();
                self.fail(key, format!("{other:?} is not true or false"));
                false
            }
        }
    }

    fn list(&mut self, key: &str) -> Option<Vec<String>> {
        let raw = self.raw(key)?;
        Some(raw.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
    }

    fn path(&mut self, key: &str, must_start_with_slash: bool) -> String {
        let p = self.string(key);
        if must_start_with_slash && !p.starts_with('/') {
            self.fail(key, format!("{p:?} must start with /"));
        }
        p
    }

    fn url(&mut self, key: &str, schemes: &[&str]) -> Option<Secret> {
        let v = self.raw(key)?.to_owned();
        if !schemes.iter().any(|s| v.starts_with(&format!("{s}:"))) {
            self.fail(key, format!("{} must start with one of {}", redact_url(&v), schemes.join(", ")));
        }
        Some(Secret::new(v))
    }

    fn build(&mut self, routes: Vec<Route>, layers: Layers) -> Option<Config> {
        let host_raw = self.string("WEBSOCKET_HOST");
        let websocket_host = host_raw.parse::<IpAddr>().unwrap_or_else(|_| {
            self.fail("WEBSOCKET_HOST", format!("{host_raw:?} is not an IP address"));
            IpAddr::from([0, 0, 0, 0])
        });
        let websocket_port = self.int("WEBSOCKET_PORT", 0, 65535) as u16;
        let gateway_ws_port = match self.raw("GATEWAY_WS_PORT") {
            Some(v) if v.eq_ignore_ascii_case("off") => None,
            _ => Some(self.int("GATEWAY_WS_PORT", 0, 65535) as u16),
        };
        let gateway_ws_health_path = self.path("GATEWAY_WS_HEALTH_PATH", true);
        let gateway_ws_public_url = self.opt("GATEWAY_WS_PUBLIC_URL");
        if let Some(u) = &gateway_ws_public_url
            && !(u.starts_with("ws://") || u.starts_with("wss://"))
        {
            let u = u.clone();
            self.fail("GATEWAY_WS_PUBLIC_URL", format!("{u:?} must start with ws:// or wss://"));
        }
        let public_ws_url = self.opt("WAYGATE_PUBLIC_WS_URL");
        if let Some(u) = &public_ws_url
            && !(u.starts_with("ws://") || u.starts_with("wss://"))
        {
            let u = u.clone();
            self.fail("WAYGATE_PUBLIC_WS_URL", format!("{u:?} must start with ws:// or wss://"));
        }
        let gateway_ws_public_host = self.opt("GATEWAY_WS_PUBLIC_HOST");
        let gateway_ws_public_port = self.opt_port("GATEWAY_WS_PUBLIC_PORT");
        let gateway_ws_path = self.path("GATEWAY_WS_PATH", true);
        let dispatch_poll = Duration::from_millis(self.int("GATEWAY_DISPATCH_POLL_MS", 100, 3_600_000));
        let dispatch_lease = Duration::from_millis(self.int("GATEWAY_DISPATCH_LEASE_MS", 1_000, 3_600_000));
        let database_url = self
            .url("DATABASE_URL", &["sqlite", "postgres", "postgresql"])
            .unwrap_or_else(|| Secret::new(String::new()));
        let redis_url = self.url("REDIS_URL", &["redis", "rediss"]);
        let redis_prefix = self.string("WAYGATE_REDIS_PREFIX");
        if redis_prefix.is_empty() || redis_prefix.contains(char::is_whitespace) {
            self.fail("WAYGATE_REDIS_PREFIX", "must be non-empty without spaces");
        }
        let amqp_url = self.url("AMQP_URL", &["amqp", "amqps"]);
        let amqp_namespace = self.string("WAYGATE_AMQP_NAMESPACE");
        if amqp_namespace.is_empty()
            || !amqp_namespace.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            self.fail("WAYGATE_AMQP_NAMESPACE", "must be letters, digits, '-', '_' or '.'");
        }
        let discord_gateway_url = self
            .url("DISCORD_GATEWAY_URL", &["http", "https", "ws", "wss"])
            .map(|u| u.expose().to_owned())
            .unwrap_or_default();
        let jwt_public_key_file = self.opt("WAYGATE_JWT_PUBLIC_KEY_FILE").map(PathBuf::from);
        if let Some(p) = &jwt_public_key_file
            && !p.is_file()
        {
            let p = p.display().to_string();
            self.fail("WAYGATE_JWT_PUBLIC_KEY_FILE", format!("{p} is not a readable file"));
        }
        let mut trusted_proxies = Vec::new();
        for cidr in self.list("WAYGATE_TRUSTED_PROXIES").unwrap_or_default() {
            let parsed = cidr.parse::<ipnet::IpNet>().or_else(|_| cidr.parse::<IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => trusted_proxies.push(net),
                Err(_) => self.fail("WAYGATE_TRUSTED_PROXIES", format!("{cidr:?} is not a CIDR or IP address")),
            }
        }
        let log_format = match self.string("WAYGATE_LOG_FORMAT").as_str() {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            other => {
                let other = other.to_owned();
                self.fail("WAYGATE_LOG_FORMAT", format!("{other:?} must be json or pretty"));
                LogFormat::Json
            }
        };
        let resource_name_template = self.string("WAYGATE_RESOURCE_NAME_TEMPLATE");
        if !resource_name_template.contains("{allocation_id}") {
            self.fail("WAYGATE_RESOURCE_NAME_TEMPLATE", "must contain {allocation_id}");
        }
        let instance_id = self.opt("WAYGATE_INSTANCE_ID").unwrap_or_else(random_instance_id);
        let reloadable = Reloadable {
            allowed_origins: self.list("WAYGATE_ALLOWED_ORIGINS"),
            max_connections: self.int("WAYGATE_MAX_CONNECTIONS", 1, 10_000_000) as usize,
            max_connections_per_ip: self.int("WAYGATE_MAX_CONNECTIONS_PER_IP", 1, 10_000_000) as usize,
            max_message_bytes: self.int("WAYGATE_MAX_MESSAGE_BYTES", 125, 64 * 1024 * 1024) as usize,
            messages_per_second: self.int("WAYGATE_MESSAGES_PER_SECOND", 1, 1_000_000) as u32,
            send_queue: self.int("WAYGATE_SEND_QUEUE", 1, 1_000_000) as usize,
            log: self.string("WAYGATE_LOG"),
            routes,
        };
        Some(Config {
            websocket_host,
            websocket_port,
            gateway_ws_port,
            gateway_ws_health_path,
            gateway_ws_public_url,
            gateway_ws_public_host,
            gateway_ws_public_port,
            gateway_ws_path,
            dispatch_poll,
            dispatch_lease,
            dispatch_notify: self.bool("GATEWAY_DISPATCH_NOTIFY"),
            agent_control_plane_token: self.secret("AGENT_CONTROL_PLANE_TOKEN"),
            agent_token: self.secret("WAYGATE_AGENT_TOKEN"),
            drain_timeout: self.seconds("TERMINAL_GATEWAY_DRAIN_TIMEOUT_SECONDS", 0),
            terminal_token_ttl: self.seconds("TERMINAL_TOKEN_TTL_SECONDS", 1),
            terminal_idle_timeout: self.seconds("TERMINAL_IDLE_TIMEOUT_SECONDS", 1),
            terminal_session_ttl: self.seconds("TERMINAL_SESSION_TTL_SECONDS", 1),
            database_url,
            redis_url,
            redis_prefix,
            amqp_url,
            amqp_namespace,
            discord_token: self.secret("DISCORD_TOKEN"),
            discord_gateway_url,
            cluster: self.bool("WAYGATE_CLUSTER"),
            jwt_secret: self.secret("WAYGATE_JWT_SECRET"),
            api_key: self.secret("WAYGATE_API_KEY"),
            history_size: self.int("WAYGATE_HISTORY_SIZE", 0, 100_000) as usize,
            history_ttl: self.seconds("WAYGATE_HISTORY_TTL_SECONDS", 1),
            jwt_public_key_file,
            public_ws_url,
            trusted_proxies,
            heartbeat: self.seconds("WAYGATE_HEARTBEAT_SECONDS", 1),
            region: self.string("WAYGATE_REGION"),
            resource_name_template,
            log_format,
            instance_id,
            reloadable,
            layers,
            effective: self.effective.to_vec(),
        })
    }
}

fn random_instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    // Hostname plus 64 random bits (RandomState is seeded from the OS) keeps logs readable
    // while staying unique across restarts and across instances started in one process.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "waygate".to_owned());
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    format!("{host}-{:016x}", h.finish())
}

#[cfg(test)]
mod tests;
