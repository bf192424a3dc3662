//! Timers every instance runs: instance heartbeat, lease renewal, expiry sweep, lease-lapse
//! recovery for crashed peers, queue gauges and pruning of finished rows.

use std::time::Duration;

use crate::state::AppState;

const TICK: Duration = Duration::from_secs(1);
/// Heartbeat, reaping and gauges every 5 ticks.
const SLOW_EVERY: u64 = 5;
pub const SLOW_PERIOD: Duration = Duration::from_secs(SLOW_EVERY);
/// Pruning every 10 minutes.
const PRUNE_EVERY: u64 = 600;
/// Finished calls are kept for a day (SPEC 4.1).
const RETENTION_MS: i64 = 24 * 3_600_000;

pub async fn run(state: AppState) {
    // Leases are renewed three times per lease period, so one missed round is harmless.
    let lease = state.config.dispatch_lease;
    let mut renew = tokio::time::interval(lease / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = state.lifecycle.stop.cancelled() => break,
            _ = renew.tick() => {
                renew_leases(&state, lease).await;
                continue;
            }
            _ = tick.tick() => {}
        }
        let now = waygate_telemetry::now_millis();
        sweep(&state, now).await;
        if n.is_multiple_of(SLOW_EVERY) {
            slow_round(&state, now).await;
        }
        if n.is_multiple_of(PRUNE_EVERY) {
            prune(&state, now).await;
        }
        n += 1;
    }
}

async fn renew_leases(state: &AppState, lease: Duration) {
    if state.dispatch.in_flight() == 0 {
        return;
    }
    let now = waygate_telemetry::now_millis();
    if let Err(e) = state.store.renew_leases(&state.instance_id, now, lease.as_millis() as i64).await {
        tracing::warn!(error = %e, "lease renewal failed");
    }
}

async fn sweep(state: &AppState, now: i64) {
    match state.store.sweep_expired(now).await {
        Ok(rows) => {
            for (id, status) in rows {
                tracing::info!(call_id = %id, status = %status, "tool call reached its deadline");
                state.metrics.tool_call_finished(&status);
            }
        }
        Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
    }
    match state.store.fail_lapsed_leases(now).await {
        Ok(ids) => {
            for id in ids {
                tracing::warn!(call_id = %id, "claim lease lapsed; call failed as device_disconnected");
                state.metrics.tool_call_finished("failed");
            }
        }
        Err(e) => tracing::warn!(error = %e, "lease recovery failed"),
    }
}

/// Heartbeat, dead-instance reaping and gauges; also the liveness signal for the database.
pub async fn slow_round(state: &AppState, now: i64) {
    state.realtime.sweep();
    crate::realtime::routes::deliver_owed(state).await;
    state.realtime.heartbeat(SLOW_PERIOD).await;
    let draining = state.lifecycle.is_draining();
    let ok = state.store.heartbeat_instance(&state.instance_id, now, draining).await.is_ok();
    state.metrics.backend_database.set(if ok { 1.0 } else { 0.0 });
    if !ok {
        tracing::warn!("instance heartbeat failed: database unreachable");
        return;
    }
    super::dispatch::forget_stale(state, now);
    match state.store.reap_dead_instances(now).await {
        Ok(dead) if !dead.is_empty() => tracing::warn!(instances = ?dead, "reaped instances whose heartbeat lapsed"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "reaping dead instances failed"),
    }
    if let Ok(c) = state.store.queue_counters(now).await {
        state.metrics.dispatch_queue_pending.set(c.pending as f64);
        state.metrics.dispatch_queue_processing.set(c.processing as f64);
    }
}

async fn prune(state: &AppState, now: i64) {
    match state.store.prune_tool_calls(now - RETENTION_MS).await {
        Ok(n) if n > 0 => tracing::info!(rows = n, "pruned finished tool calls"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "pruning tool calls failed"),
    }
    if let Err(e) = state.store.prune_sessions(now).await {
        tracing::warn!(error = %e, "pruning sessions failed");
    }
}
