use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use waygate_server::App;

use super::{Failure, db_flags, load_config};
use crate::cli::ServeArgs;

/// `waygate serve`: validate, log, bind, write the ready file, serve until SIGTERM/SIGINT,
/// drain, exit 0.
pub async fn run(file: Option<PathBuf>, args: ServeArgs) -> Result<(), Failure> {
    let mut flags: BTreeMap<String, String> = db_flags(&args.db);
    for (key, value) in
        [("WEBSOCKET_HOST", &args.host), ("WEBSOCKET_PORT", &args.port), ("GATEWAY_WS_PORT", &args.ws_port)]
    {
        if let Some(v) = value {
            flags.insert(key.to_owned(), v.clone());
        }
    }
    let config = load_config(file, flags)?;
    let log = waygate_telemetry::init_logging(
        &config.reloadable.log,
        config.log_format == waygate_config::LogFormat::Json,
        &config.instance_id,
    )
    .context("cannot start logging")?;
    // Handlers go in before the ready file promises anything: a signal that arrives right
    // after it must drain, not kill the process with the default action.
    let shutdown = shutdown_signal().context("cannot install signal handlers")?;
    let mode = if config.is_postgres() { "cluster" } else { "embedded" };
    let app = App::build(config, log).await.context("cannot start the gateway")?;
    let http = app.http_addr();
    let ws = app.ws_addr();
    tracing::info!(http = %http, ws = %ws.map(|a| a.to_string()).unwrap_or_else(|| "off".into()), mode, "listeners bound");
    if let Some(path) = &args.ready_file {
        write_ready_file(path, http, ws).with_context(|| format!("cannot write {}", path.display()))?;
    }
    app.run_until(shutdown).await;
    Ok(())
}

/// Written to a temporary name and renamed, so a reader never sees half a file.
fn write_ready_file(path: &Path, http: std::net::SocketAddr, ws: Option<std::net::SocketAddr>) -> std::io::Result<()> {
    let body = serde_json::json!({
        "http": http.to_string(),
        "ws": ws.map(|a| a.to_string()),
        "pid": std::process::id(),
    });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body.to_string())?;
    std::fs::rename(&tmp, path)
}

/// Resolves on the first SIGTERM or SIGINT; the handlers are installed when this returns.
pub(crate) fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
        }
    })
}
