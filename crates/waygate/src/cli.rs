use std::path::PathBuf;

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
