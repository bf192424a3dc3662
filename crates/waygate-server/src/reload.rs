//! `config.reload`: re-read the config file and apply its reloadable part.

use crate::http::error::ApiError;
use crate::state::AppState;

/// Applies a fresh read of the configuration here and asks every other instance to do the
/// same; returns the names of what changed here. An invalid file changes nothing and reports
/// every problem.
pub async fn apply(state: &AppState) -> Result<Vec<String>, ApiError> {
    let changed = apply_local(state)?;
    let msg = crate::cluster::ClusterMessage::ConfigReload { origin: state.instance_id.clone() };
    crate::cluster::send(state, waygate_bus::Topic::All, msg).await;
    Ok(changed)
}

/// Applies a fresh read of the configuration on this instance only.
pub fn apply_local(state: &AppState) -> Result<Vec<String>, ApiError> {
    let current = state.live.current.read().expect("config lock").clone();
    let reload = current.reload().map_err(|e| {
        state
            .metrics
            .registry
            .counter(waygate_telemetry::names::CONFIG_RELOADS_TOTAL, &[("outcome", "invalid".into())])
            .increment(1);
        let problems: Vec<String> = e.problems().iter().map(|p| p.to_string()).collect();
        ApiError::bad_request("the configuration file is invalid; nothing was changed")
            .with_detail("problems", problems)
    })?;
    state.live.apply(&reload.config.reloadable);
    if current.reloadable.log != reload.config.reloadable.log
        && let Err(e) = state.log.set_filter(&reload.config.reloadable.log)
    {
        tracing::warn!(error = %e, "log filter not changed");
    }
    if !reload.needs_restart.is_empty() {
        tracing::warn!(keys = ?reload.needs_restart, "changed settings need a restart to take effect");
    }
    tracing::info!(changed = ?reload.changed, "configuration reloaded");
    state
        .metrics
        .registry
        .counter(waygate_telemetry::names::CONFIG_RELOADS_TOTAL, &[("outcome", "applied".into())])
        .increment(1);
    let changed = reload.changed.clone();
    *state.live.current.write().expect("config lock") = reload.config;
    Ok(changed)
}
