//! The small HTTP server every ingest and worker process runs on `--metrics-addr`:
//! `/healthz` (liveness), `/readyz` (503 envelope with reasons) and `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use waygate_proto::{ErrorCode, ErrorEnvelope};
use waygate_telemetry::Registry;

/// Returns the reasons the process is not ready (empty when ready).
pub type ReadinessFn = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

#[derive(Clone)]
struct ProbeState {
    registry: Arc<Registry>,
    readiness: ReadinessFn,
}

/// Binds `addr` and serves until `stop` is cancelled; returns the bound address.
pub async fn serve_probes(
    addr: SocketAddr,
    registry: Arc<Registry>,
    readiness: ReadinessFn,
    tracker: &TaskTracker,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/health", get(live))
        .route("/healthz", get(live))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(ProbeState { registry, readiness });
    tracker.spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "probe server stopped");
        }
    });
    Ok(bound)
}

async fn live() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn ready(axum::extract::State(state): axum::extract::State<ProbeState>) -> Response {
    let reasons = (state.readiness)();
    if reasons.is_empty() {
        return axum::Json(json!({"status": "ready"})).into_response();
    }
    let envelope = ErrorEnvelope::new(
        ErrorCode::ServiceUnavailable,
        format!("not ready: {}", reasons.join(", ")),
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().simple().to_string(),
    )
    .with_detail("reasons", json!(reasons));
    envelope_response(StatusCode::SERVICE_UNAVAILABLE, &envelope)
}

async fn metrics(axum::extract::State(state): axum::extract::State<ProbeState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.registry.render()).into_response()
}

async fn not_found() -> Response {
    let envelope = ErrorEnvelope::new(
        ErrorCode::NotFound,
        "no such path",
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().simple().to_string(),
    );
    envelope_response(StatusCode::NOT_FOUND, &envelope)
}

pub(crate) fn envelope_response(status: StatusCode, envelope: &ErrorEnvelope) -> Response {
    let correlation = envelope.error.correlation_id.clone();
    let trace = envelope.error.details.trace_id.clone();
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::HeaderName::from_static("x-correlation-id"), correlation),
            (header::HeaderName::from_static("x-trace-id"), trace),
        ],
        envelope.to_json(),
    )
        .into_response()
}

/// Writes `body` to `path` through a temporary file, so a reader never sees half of it.
pub fn write_ready_file(path: &std::path::Path, body: &serde_json::Value) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body.to_string())?;
    std::fs::rename(&tmp, path)
}
