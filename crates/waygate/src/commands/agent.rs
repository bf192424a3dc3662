use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::Failure;
use super::serve::shutdown_signal;
use crate::cli::AgentArgs;

/// `waygate agent`: runs until SIGTERM/SIGINT, then kills its sessions and exits 0.
pub async fn run(args: AgentArgs) -> Result<(), Failure> {
    let _ = waygate_telemetry::init_logging(
        &std::env::var("WAYGATE_LOG").unwrap_or_else(|_| "info".into()),
        std::env::var("WAYGATE_LOG_FORMAT").as_deref() != Ok("pretty"),
        &format!("agent-{}", args.node_id),
    );
    let config = waygate_agent::AgentConfig {
        gateway: args.gateway,
        node_id: args.node_id,
        token: args.token,
        max_backoff: Duration::from_secs(args.max_backoff_secs.max(1)),
    };
    let stop = CancellationToken::new();
    let signal = shutdown_signal().context("cannot install signal handlers")?;
    let on_signal = stop.clone();
    tokio::spawn(async move {
        signal.await;
        on_signal.cancel();
    });
    waygate_agent::run_until(config, stop).await.context("agent")?;
    Ok(())
}
