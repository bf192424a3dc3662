mod agent;
mod bench;
mod config;
mod ingest;
mod ops;
mod serve;
mod user;

use std::collections::BTreeMap;
use std::process::ExitCode;

use waygate_config::{Config, ConfigError, EXIT_CONFIG, Layers};

use crate::cli::{Cli, Command, ConfigCommand, DbArgs, SimCommand, UserCommand};

/// A failure the CLI reports: configuration problems exit 64, anything else 1.
pub enum Failure {
    Config(ConfigError),
    Other(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Other(e.into())
    }
}

pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Config(ConfigCommand::Check) => config::check(cli.config),
        Command::Config(ConfigCommand::Docs) => {
            print!("{}", waygate_config::docs_markdown());
            Ok(())
        }
        Command::Serve(args) => runtime().and_then(|rt| rt.block_on(serve::run(cli.config, args))),
        Command::Migrate(db) => runtime().and_then(|rt| rt.block_on(user::migrate(cli.config, db))),
        Command::User(UserCommand::Add { email, db }) => {
            runtime().and_then(|rt| rt.block_on(user::add(cli.config, db, email)))
        }
        Command::Ingest(args) => runtime().and_then(|rt| rt.block_on(ingest::ingest(cli.config, args))),
        Command::Worker(args) => runtime().and_then(|rt| rt.block_on(ingest::worker(cli.config, args))),
        Command::Dlq(args) => runtime().and_then(|rt| rt.block_on(ingest::dlq(cli.config, args))),
        Command::Agent(args) => runtime().and_then(|rt| rt.block_on(agent::run(args))),
        Command::Sim(SimCommand::Discord(args)) => runtime().and_then(|rt| rt.block_on(ingest::sim_discord(args))),
        Command::Bench(cmd) => runtime().and_then(|rt| rt.block_on(bench::run(cmd))),
        Command::Smoke(args) => runtime().and_then(|rt| rt.block_on(ops::smoke(args))),
        Command::Probe(args) => runtime().and_then(|rt| rt.block_on(ops::probe(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(e)) => {
            eprintln!("waygate: {e}");
            ExitCode::from(EXIT_CONFIG as u8)
        }
        Err(Failure::Other(e)) => {
            eprintln!("waygate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Loads the layered configuration with `flags` as the top layer.
pub fn load_config(file: Option<std::path::PathBuf>, flags: BTreeMap<String, String>) -> Result<Config, Failure> {
    Config::load(Layers::from_process(flags, file)).map_err(Failure::Config)
}

pub fn db_flags(db: &DbArgs) -> BTreeMap<String, String> {
    let mut flags = BTreeMap::new();
    if let Some(url) = &db.database_url {
        flags.insert("DATABASE_URL".to_owned(), url.clone());
    }
    flags
}
