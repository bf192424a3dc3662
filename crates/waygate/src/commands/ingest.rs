//! `waygate ingest`, `worker`, `dlq` and `sim discord`.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use waygate_config::{Config, ConfigError, Problem, Secret};
use waygate_ingest::amqp::Topology;
use waygate_ingest::dlq::{Dlq, Select};
use waygate_ingest::ingest::{Ingest, IngestConfig};
use waygate_ingest::sim::{SimConfig, Simulator};
use waygate_ingest::worker::{Worker, WorkerConfig};

use super::serve::shutdown_signal;
use super::{Failure, load_config};
use crate::cli::{AmqpArgs, DlqArgs, DlqCommand, IngestArgs, SimDiscordArgs, Upstream, WorkerArgs};

fn problem(key: &str, message: String) -> Failure {
    Failure::Config(ConfigError::Invalid(vec![Problem { key: key.to_owned(), message }]))
}

/// Loads the configuration with the AMQP flags on top and insists on `AMQP_URL`.
fn amqp_config(
    file: Option<PathBuf>,
    amqp: &AmqpArgs,
    extra: BTreeMap<String, String>,
    command: &str,
) -> Result<(Config, Secret), Failure> {
    let mut flags = extra;
    if let Some(url) = &amqp.amqp_url {
        flags.insert("AMQP_URL".to_owned(), url.clone());
    }
    if let Some(ns) = &amqp.namespace {
        flags.insert("WAYGATE_AMQP_NAMESPACE".to_owned(), ns.clone());
    }
    let config = load_config(file, flags)?;
    let url = config
        .amqp_url
        .clone()
        .ok_or_else(|| problem("AMQP_URL", format!("`waygate {command}` needs RabbitMQ: set AMQP_URL (amqp://…)")))?;
    Ok((config, url))
}

fn start_logging(config: &Config) -> Result<(), Failure> {
    // lapin logs every unroutable (returned) message with its body at warn: ingest counts them
    // in waygate_ingest_events_unroutable_total instead.
    let mut filter = config.reloadable.log.clone();
    if !filter.contains("lapin") {
        filter.push_str(",lapin::returned_messages=error");
    }
    waygate_telemetry::init_logging(&filter, config.log_format == waygate_config::LogFormat::Json, &config.instance_id)
        .context("cannot start logging")?;
    Ok(())
}

fn write_ready(path: &Option<PathBuf>, body: serde_json::Value) -> Result<(), Failure> {
    if let Some(path) = path {
        waygate_ingest::http::write_ready_file(path, &body)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// `waygate ingest --upstream discord`.
pub async fn ingest(file: Option<PathBuf>, args: IngestArgs) -> Result<(), Failure> {
    let mut flags = BTreeMap::new();
    if let Some(url) = &args.gateway_url {
        flags.insert("DISCORD_GATEWAY_URL".to_owned(), url.clone());
    }
    let (config, amqp_url) = amqp_config(file, &args.amqp, flags, "ingest")?;
    let Upstream::Discord = args.upstream;
    let token = config
        .discord_token
        .clone()
        .ok_or_else(|| problem("DISCORD_TOKEN", "`waygate ingest --upstream discord` needs DISCORD_TOKEN".into()))?;
    start_logging(&config)?;
    let mut cfg = IngestConfig::new(amqp_url, config.amqp_namespace.clone(), token, config.discord_gateway_url.clone());
    cfg.shards = args.shards;
    cfg.intents = args.intents;
    cfg.compress = args.compress;
    cfg.buffer = args.buffer;
    cfg.max_in_flight = args.max_in_flight;
    cfg.metrics_addr = args.metrics_addr;
    cfg.drain_timeout = config.drain_timeout;
    cfg.instance_id = config.instance_id.clone();
    let ingest = Ingest::build(cfg).await.context("cannot start the ingestor")?;
    let shutdown = shutdown_signal().context("cannot install signal handlers")?;
    write_ready(
        &args.ready_file,
        serde_json::json!({"metrics": ingest.metrics_addr().map(|a| a.to_string()), "pid": std::process::id()}),
    )?;
    ingest.run_until(shutdown).await.context("ingest stopped")?;
    tracing::info!("ingestor stopped");
    Ok(())
}

/// `waygate worker --queue Q --handler URL`.
pub async fn worker(file: Option<PathBuf>, args: WorkerArgs) -> Result<(), Failure> {
    let (config, amqp_url) = amqp_config(file, &args.amqp, BTreeMap::new(), "worker")?;
    start_logging(&config)?;
    let topo = Topology::new(config.amqp_namespace.clone());
    let mut cfg = WorkerConfig::new(amqp_url, &config.amqp_namespace, args.handler);
    cfg.queue = args.queue.unwrap_or_else(|| topo.interactions());
    cfg.dlq = args.dlq.unwrap_or_else(|| topo.dlq());
    cfg.prefetch = args.prefetch;
    cfg.max_attempts = args.max_attempts;
    cfg.retry_delay = Duration::from_millis(args.retry_delay_ms);
    cfg.max_retry_delay = Duration::from_millis(args.max_retry_delay_ms.max(args.retry_delay_ms));
    cfg.handler_timeout = Duration::from_millis(args.handler_timeout_ms);
    cfg.metrics_addr = args.metrics_addr;
    cfg.drain_timeout = config.drain_timeout;
    cfg.instance_id = config.instance_id.clone();
    let worker = Worker::build(cfg).await.context("cannot start the worker")?;
    let shutdown = shutdown_signal().context("cannot install signal handlers")?;
    write_ready(
        &args.ready_file,
        serde_json::json!({"metrics": worker.metrics_addr().map(|a| a.to_string()), "pid": std::process::id()}),
    )?;
    worker.run_until(shutdown).await.context("worker stopped")?;
    tracing::info!("worker stopped");
    Ok(())
}

/// `waygate dlq list|show|replay|purge`.
pub async fn dlq(file: Option<PathBuf>, args: DlqArgs) -> Result<(), Failure> {
    let (config, amqp_url) = amqp_config(file, &args.amqp, BTreeMap::new(), "dlq")?;
    let queue = args.queue.unwrap_or_else(|| Topology::new(config.amqp_namespace.clone()).dlq());
    if let DlqCommand::Purge { yes: false } = &args.command {
        confirm_purge(&queue)?;
    }
    let dlq = Dlq::open(&amqp_url, &queue).await.context("cannot open the dead-letter queue")?;
    let result = run_dlq(&dlq, &queue, args.command).await;
    dlq.close().await;
    result
}

async fn run_dlq(dlq: &Dlq, queue: &str, command: DlqCommand) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match command {
        DlqCommand::List { limit, json } => {
            let letters = dlq.list(limit).await.context("cannot list")?;
            if json {
                for l in &letters {
                    writeln!(out, "{}", serde_json::to_string(l)?)?;
                }
            } else {
                writeln!(
                    out,
                    "{:<44} {:<20} {:<9} {:>5} {:>7}  {:<24} error",
                    "id", "event", "reason", "count", "replays", "died"
                )?;
                for l in &letters {
                    writeln!(
                        out,
                        "{:<44} {:<20} {:<9} {:>5} {:>7}  {:<24} {}",
                        l.id,
                        l.event.as_deref().unwrap_or("-"),
                        l.reason.as_deref().unwrap_or("-"),
                        l.count.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                        l.replays,
                        l.died_at.as_deref().unwrap_or("-"),
                        l.error.as_deref().unwrap_or("-"),
                    )?;
                }
                let depth = dlq.depth().await.context("cannot read the depth")?;
                writeln!(out, "{} shown, {depth} in {queue}", letters.len())?;
            }
        }
        DlqCommand::Show { id } => match dlq.show(&id).await.context("cannot read")? {
            Some(d) => writeln!(out, "{}", serde_json::to_string_pretty(&d)?)?,
            None => return Err(anyhow::anyhow!("no message {id} in {queue}").into()),
        },
        DlqCommand::Replay { ids, all, to } => {
            if ids.is_empty() && !all {
                return Err(anyhow::anyhow!("name message ids to replay (see `waygate dlq list`) or pass --all").into());
            }
            let select = if all { Select::All } else { Select::Ids(&ids) };
            let moved = dlq.replay(select, to.as_deref()).await.context("replay failed")?;
            for (id, target) in &moved {
                writeln!(out, "replayed {id} -> {target}")?;
            }
            writeln!(out, "{} replayed", moved.len())?;
        }
        DlqCommand::Purge { .. } => {
            let n = dlq.purge().await.context("purge failed")?;
            writeln!(out, "purged {n} messages from {queue}")?;
        }
    }
    Ok(())
}

/// Purging loses data: a person must say yes, or the command line must (`--yes`).
fn confirm_purge(queue: &str) -> Result<(), Failure> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(
            anyhow::anyhow!("refusing to purge {queue} without --yes (standard input is not a terminal)").into()
        );
    }
    eprint!("Delete every message in {queue}? Type the queue name to confirm: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if answer.trim() != queue {
        return Err(anyhow::anyhow!("purge cancelled").into());
    }
    Ok(())
}

/// `waygate sim discord`.
pub async fn sim_discord(args: SimDiscordArgs) -> Result<(), Failure> {
    let _ = waygate_telemetry::init_logging(
        &std::env::var("WAYGATE_LOG").unwrap_or_else(|_| "info".into()),
        std::env::var("WAYGATE_LOG_FORMAT").as_deref() != Ok("pretty"),
        "sim-discord",
    );
    let cfg = SimConfig {
        listen: args.listen,
        guilds: args.guilds,
        interactions: args.interactions,
        messages: args.messages,
        rate: args.rate,
        shards: args.shards,
        max_concurrency: args.max_concurrency,
        heartbeat_interval: Duration::from_millis(args.heartbeat_ms.max(1)),
        identify_interval: Duration::from_millis(args.identify_interval_ms),
        token: args.token,
        faults: args.faults,
        ..SimConfig::default()
    };
    let sim = Simulator::start(cfg).await.context("cannot start the simulator")?;
    let shutdown = shutdown_signal().context("cannot install signal handlers")?;
    write_ready(&args.ready_file, serde_json::json!({"http": sim.addr().to_string()}))?;
    shutdown.await;
    sim.stop().await;
    Ok(())
}
