use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use crate::state::AppState;

/// Liveness: 200 while the process serves requests.
pub async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: 200 only when every configured backend answers and the instance is not draining.
pub async fn ready(State(state): State<AppState>) -> Response {
    let mut reasons = Vec::new();
    if state.lifecycle.is_draining() {
        reasons.push("draining".to_owned());
    }
    let check = Duration::from_secs(2);
    let database = matches!(tokio::time::timeout(check, state.store.ping()).await, Ok(Ok(())));
    state.metrics.backend_database.set(if database { 1.0 } else { 0.0 });
    if !database {
        reasons.push("database unreachable".to_owned());
    }
    let mut checks = json!({ "database": if database { "ok" } else { "unreachable" } });
    if state.bus.is_distributed() {
        let redis = matches!(tokio::time::timeout(check, state.bus.ping()).await, Ok(Ok(())));
        state.metrics.backend_redis.set(if redis { 1.0 } else { 0.0 });
        if !redis {
            reasons.push("redis unreachable".to_owned());
        }
        checks["redis"] = json!(if redis { "ok" } else { "unreachable" });
    }
    if let Some(amqp) = state.routing.amqp_ready().await {
        if !amqp {
            reasons.push("amqp unreachable".to_owned());
        }
        checks["amqp"] = json!(if amqp { "ok" } else { "unreachable" });
    }
    if reasons.is_empty() {
        return Json(json!({ "status": "ready", "checks": checks })).into_response();
    }
    ApiError::unavailable(format!("not ready: {}", reasons.join(", ")))
        .with_detail("reasons", reasons)
        .with_detail("checks", checks)
        .into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.registry.render())
        .into_response()
}
