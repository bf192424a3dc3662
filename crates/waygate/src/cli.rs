use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// One binary for production WebSocket gateways.
#[derive(Parser)]
#[command(name = "waygate", version, about)]
pub struct Cli {
    /// TOML configuration file (keys are the environment variable names in lower case).
    #[arg(long, global = true, env = "WAYGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the gateway (embedded mode unless DATABASE_URL/REDIS_URL say otherwise).
    Serve(ServeArgs),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Apply database migrations and exit.
    Migrate(DbArgs),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Hold an upstream gateway (Discord) and publish its events to RabbitMQ (needs AMQP_URL).
    Ingest(IngestArgs),
    /// Consume a queue and POST each message to an HTTP handler, with retries and a DLQ.
    Worker(WorkerArgs),
    /// Inspect and act on a dead-letter queue.
    Dlq(DlqArgs),
    /// Run the node agent: connect out to a gateway and serve terminal sessions in real PTYs.
    Agent(AgentArgs),
    /// Local simulators for tests and demos.
    #[command(subcommand)]
    Sim(SimCommand),
    /// Measure a realtime server (waygate or a peer) or cross-instance dispatch.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Post-deploy check: health, register a device, list, WS register/ack, delete (exit 1 on failure).
    Smoke(SmokeArgs),
    /// Connect to WebSocket paths, time handshakes and round trips, hold, monitor (exit 1 below thresholds).
    Probe(ProbeArgs),
}

#[derive(Args)]
pub struct SmokeArgs {
    /// Gateway base URL, e.g. https://gateway.example.com.
    #[arg(long, env = "GATEWAY_SMOKE_BASE_URL", value_name = "URL")]
    pub base_url: String,
    /// Session cookie (`waygate_session=…`, or the bare value); used instead of logging in.
    #[arg(long, env = "GATEWAY_SMOKE_COOKIE", value_name = "COOKIE", hide_env_values = true)]
    pub cookie: Option<String>,
    /// User to log in as (with --password) when no cookie is given.
    #[arg(long, env = "TEST_USER_EMAIL", value_name = "EMAIL")]
    pub email: Option<String>,
    #[arg(long, env = "TEST_USER_PASSWORD", value_name = "PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Bound for each request and WebSocket step.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Accept any TLS certificate (self-signed staging).
    #[arg(long)]
    pub insecure: bool,
    /// Print one JSON document instead of lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ProbeArgs {
    /// ws://host[:port] or wss://host[:port]; each of --paths is appended.
    pub url: String,
    /// Comma-separated WebSocket paths.
    #[arg(long, value_delimiter = ',', default_value = "/ws,/ws/test,/websocket")]
    pub paths: Vec<String>,
    /// Keep each connection open this long, checking liveness every 5 s (seed 003: 40s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub hold: Option<std::time::Duration>,
    /// Repeat the round every --interval for --duration.
    #[arg(long)]
    pub monitor: bool,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    #[arg(long, default_value = "600s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
    /// Connections per path per round, opened at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Fail (exit 1) below this success percentage.
    #[arg(long, default_value_t = 98.0)]
    pub min_success: f64,
    /// Fail (exit 1) when the handshake p95 exceeds this.
    #[arg(long, default_value_t = 2000.0)]
    pub max_handshake_ms: f64,
    /// Fail (exit 1) when the round-trip p99 exceeds this.
    #[arg(long, default_value_t = 100.0)]
    pub max_rtt_ms: f64,
    /// Bound for the handshake and each round trip.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Wait this long for a welcome frame before using WebSocket pings for the round trip.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub welcome_wait: std::time::Duration,
    /// Accept any TLS certificate (self-signed staging).
    #[arg(long)]
    pub insecure: bool,
    /// Print one JSON document on stdout (progress lines go to stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Default, Clone)]
pub struct AmqpArgs {
    /// Overrides AMQP_URL.
    #[arg(long, value_name = "URL", global = true)]
    pub amqp_url: Option<String>,
    /// Overrides WAYGATE_AMQP_NAMESPACE.
    #[arg(long, value_name = "NS", global = true)]
    pub namespace: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Upstream {
    Discord,
}

#[derive(Args)]
pub struct IngestArgs {
    /// The upstream gateway to hold.
    #[arg(long, value_enum)]
    pub upstream: Upstream,
    /// Shard count (default: what /gateway/bot recommends).
    #[arg(long)]
    pub shards: Option<u32>,
    /// Gateway intents bitfield (default GUILDS | GUILD_MESSAGES).
    #[arg(long, default_value_t = waygate_ingest::ingest::DEFAULT_INTENTS)]
    pub intents: u64,
    /// Ask the gateway for zlib-stream transport compression.
    #[arg(long)]
    pub compress: bool,
    /// Events buffered between the gateway readers and the publisher; when full, reading stops.
    #[arg(long, default_value_t = 10_000)]
    pub buffer: usize,
    /// Published events awaiting the broker's confirm.
    #[arg(long, default_value_t = 2_000)]
    pub max_in_flight: usize,
    /// Overrides DISCORD_GATEWAY_URL.
    #[arg(long, value_name = "URL")]
    pub gateway_url: Option<String>,
    /// Serve /healthz, /readyz and /metrics here (port 0: any free port).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Write {"metrics","pid"} here once started.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    #[command(flatten)]
    pub amqp: AmqpArgs,
}

#[derive(Args)]
pub struct WorkerArgs {
    /// Queue to consume (default {ns}.interactions).
    #[arg(long)]
    pub queue: Option<String>,
    /// URL each message is POSTed to.
    #[arg(long, value_name = "URL")]
    pub handler: String,
    /// Unacknowledged messages in flight (and handler calls at once).
    #[arg(long, default_value_t = 32)]
    pub prefetch: u16,
    /// Attempts before a message is dead-lettered.
    #[arg(long, default_value_t = 5)]
    pub max_attempts: u32,
    /// Delay before the first retry; doubles per attempt.
    #[arg(long, default_value_t = 200)]
    pub retry_delay_ms: u64,
    /// Longest delay between attempts.
    #[arg(long, default_value_t = 30_000)]
    pub max_retry_delay_ms: u64,
    /// Time allowed for one handler call.
    #[arg(long, default_value_t = 10_000)]
    pub handler_timeout_ms: u64,
    /// Dead-letter queue (default {ns}.dlq).
    #[arg(long)]
    pub dlq: Option<String>,
    /// Serve /healthz, /readyz and /metrics here (port 0: any free port).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Write {"metrics","pid"} here once started.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    #[command(flatten)]
    pub amqp: AmqpArgs,
}

#[derive(Args)]
pub struct DlqArgs {
    /// The dead-letter queue (default {ns}.dlq).
    #[arg(long, global = true)]
    pub queue: Option<String>,
    #[command(flatten)]
    pub amqp: AmqpArgs,
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Subcommand)]
pub enum DlqCommand {
    /// One line per dead letter (they stay in the queue).
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Headers, properties and body of one dead letter, as JSON.
    Show { id: String },
    /// Send dead letters back to the queue they died in (or --to); adds x-waygate-replay-count.
    Replay {
        /// Message ids (see `dlq list`).
        ids: Vec<String>,
        /// Replay every message in the queue.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Target queue instead of the one in x-death.
        #[arg(long, value_name = "QUEUE")]
        to: Option<String>,
    },
    /// Delete every message in the queue (asks first unless --yes).
    Purge {
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
pub enum SimCommand {
    /// A local Discord gateway (v10, json, optional zlib-stream) with its REST endpoints.
    Discord(SimDiscordArgs),
}

#[derive(Args)]
pub struct SimDiscordArgs {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: std::net::SocketAddr,
    /// Write {"http":"IP:PORT"} here once listening.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    #[arg(long, default_value_t = 2)]
    pub guilds: u32,
    /// INTERACTION_CREATE events to send in total.
    #[arg(long, default_value_t = 0)]
    pub interactions: u64,
    /// MESSAGE_CREATE events to send in total.
    #[arg(long, default_value_t = 0)]
    pub messages: u64,
    /// Events per second across all shards (0: as fast as the client reads).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Shard count /gateway/bot recommends.
    #[arg(long, default_value_t = 1)]
    pub shards: u32,
    /// Identify buckets (session_start_limit.max_concurrency).
    #[arg(long, default_value_t = 1)]
    pub max_concurrency: u32,
    #[arg(long, default_value_t = 41_250)]
    pub heartbeat_ms: u64,
    /// Minimum time between identifies in one bucket.
    #[arg(long, default_value_t = 5_000)]
    pub identify_interval_ms: u64,
    /// Only this token is accepted (default: any).
    #[arg(long)]
    pub token: Option<String>,
    /// Scripted fault KIND@SEQ (reconnect, invalid-session, invalid-session-resumable,
    /// close:CODE, drop, zombie); repeatable.
    #[arg(long = "fault", value_name = "KIND@SEQ")]
    pub faults: Vec<waygate_ingest::sim::Fault>,
}

#[derive(Args, Default)]
pub struct DbArgs {
    /// Overrides DATABASE_URL.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

#[derive(Args)]
pub struct AgentArgs {
    /// Gateway base URL (ws://host:port or wss://host:port); the agent path is appended.
    #[arg(long, value_name = "URL")]
    pub gateway: String,
    /// This node's id, as allocations name it.
    #[arg(long, value_name = "ID")]
    pub node_id: String,
    /// The gateway's WAYGATE_AGENT_TOKEN (prefer the environment: flags show up in `ps`).
    #[arg(long, env = "WAYGATE_AGENT_TOKEN", hide_env_values = true, value_name = "T")]
    pub token: String,
    /// Longest wait between reconnect attempts, in seconds.
    #[arg(long, default_value_t = 30)]
    pub max_backoff_secs: u64,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Overrides WEBSOCKET_HOST.
    #[arg(long)]
    pub host: Option<String>,
    /// Overrides WEBSOCKET_PORT (0: any free port).
    #[arg(long)]
    pub port: Option<String>,
    /// Overrides GATEWAY_WS_PORT (`off` disables the standalone listener).
    #[arg(long)]
    pub ws_port: Option<String>,
    #[command(flatten)]
    pub db: DbArgs,
    /// Write {"http","ws","pid"} here once every listener is bound.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration as TOML (secrets redacted); exit 64 listing every problem.
    Check,
    /// Print the configuration reference (docs/configuration.md) as Markdown.
    Docs,
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user; the password is read from standard input.
    Add {
        email: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// ping → pong round trips on every connection (closed loop, or open loop with --rate).
    Echo(BenchArgs),
    /// One publisher, --connections subscribers on one channel; publish → deliver latency.
    Fanout(BenchArgs),
    /// Handshakes per second: connect, receive the welcome, close (--connections at a time).
    Connect(BenchArgs),
    /// Open --connections connections, hold them for --duration; server RSS per connection.
    Idle(BenchArgs),
    /// Tool calls POSTed to instance A (wait=true) for devices held by instance B.
    Dispatch(DispatchBenchArgs),
}

#[derive(Args, Clone)]
pub struct BenchOutput {
    /// Print the report as JSON on stdout (instead of a summary).
    #[arg(long)]
    pub json: bool,
    /// Write latency percentiles over time and the CDF as a PNG.
    #[arg(long, value_name = "FILE.png")]
    pub plot: Option<PathBuf>,
    /// Server process to sample for CPU (utime+stime) and RSS (/proc/PID).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Length of the measured phase.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Load before measuring (not counted in latencies or CPU).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// No progress bar (it is hidden anyway when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Clone)]
pub struct BenchArgs {
    /// A realtime endpoint, e.g. ws://127.0.0.1:8080/ws.
    #[arg(value_name = "URL")]
    pub url: String,
    /// Connections (echo, idle), subscribers (fanout) or concurrent handshakes (connect).
    #[arg(long, short = 'c', default_value_t = 100)]
    pub connections: usize,
    /// Open loop: messages per second in total (fanout: publishes per second). Omit for closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Request frame size in bytes (padded JSON).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Fan-out channel.
    #[arg(long, default_value = "bench")]
    pub channel: String,
    /// Handshakes in progress at once while opening connections.
    #[arg(long, default_value_t = 256)]
    pub open_concurrency: usize,
    /// Time allowed for one reply or handshake.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub out: BenchOutput,
}

#[derive(Args, Clone)]
pub struct DispatchBenchArgs {
    /// Instance that accepts the calls (A), e.g. http://127.0.0.1:8080.
    #[arg(long, value_name = "URL")]
    pub accept: String,
    /// Instance the devices connect to (B).
    #[arg(long, value_name = "URL")]
    pub devices_on: String,
    /// Session token (else --email and --password log in on A).
    #[arg(long, env = "WAYGATE_BENCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[arg(long, env = "TEST_USER_EMAIL")]
    pub email: Option<String>,
    #[arg(long, env = "TEST_USER_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Devices registered and connected to B.
    #[arg(long, default_value_t = 4)]
    pub devices: usize,
    /// Calls per second (open loop).
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// timeoutMs of each call.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub call_timeout: Duration,
    /// Calls outstanding at once.
    #[arg(long, default_value_t = 2000)]
    pub max_in_flight: usize,
    #[command(flatten)]
    pub out: BenchOutput,
}
