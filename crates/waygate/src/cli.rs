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
}

#[derive(Args, Default)]
pub struct DbArgs {
    /// Overrides DATABASE_URL.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
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
