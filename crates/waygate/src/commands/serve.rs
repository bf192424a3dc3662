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
    let mode = if config.is_postgres() { "cluster" } else { "embedded" };
    let app = App::build(config, log).await.context("cannot start the gateway")?;
    let http = app.http_addr();
    let ws = app.ws_addr();
    tracing::info!(http = %http, ws = %ws.map(|a| a.to_string()).unwrap_or_else(|| "off".into()), mode, "listeners bound");
    if let Some(path) = &args.ready_file {
        write_ready_file(path, http, ws).with_context(|| format!("cannot write {}", path.display()))?;
    }
    app.run_until(shutdown_signal()).await;
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

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => tracing::info!(signal = "SIGINT", "shutdown requested"),
        _ = term => tracing::info!(signal = "SIGTERM", "shutdown requested"),
    }
}
