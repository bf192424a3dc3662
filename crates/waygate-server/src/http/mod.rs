//! HTTP routing for the two listeners.

pub mod auth;
pub mod client;
pub mod error;
pub mod health;
pub mod ids;
pub mod json;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get, post};

use crate::gateway::api;
use crate::realtime;
use crate::state::AppState;
use crate::terminal;
use crate::ws;
use error::ApiError;

/// Every WebSocket path, served by both listeners.
fn ws_routes() -> Router<AppState> {
    Router::new()
        .route("/ws", any(ws::realtime))
        .route("/ws/{*rest}", any(ws::realtime))
        .route("/websocket", any(ws::realtime))
        .route("/websocket/{*rest}", any(ws::realtime))
        .route("/ws/terminal/{allocation_id}", any(crate::terminal::session::upgrade))
        .route("/ws/notifications", any(crate::notifications::upgrade))
        .route("/api/agent/ws", any(crate::terminal::agent::upgrade))
        .route("/api/gateway/ws", any(ws::device))
        .route("/api/gateway/ws/{*rest}", any(ws::device))
}

/// The main listener: HTTP API, WebSocket paths, health and metrics.
pub fn main_router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health::live))
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/api/auth/login", post(auth::login))
        .route("/api/auth/logout", post(auth::logout))
        .route("/api/auth/me", get(auth::me))
        .route("/api/gateway", get(api::list_devices))
        .route("/api/gateway/devices", post(api::create_device))
        .route("/api/gateway/devices/{id}", get(api::get_device).delete(api::delete_device))
        .route("/api/gateway/tool-calls", post(api::create_tool_call))
        .route("/api/gateway/tool-calls/{id}", get(api::get_tool_call))
        .route("/api/gateway/health", get(api::gateway_health))
        .route("/api/gateway/control", post(api::control))
        .route(
            "/api/connections/{id}",
            post(realtime::push::send).get(realtime::push::info).delete(realtime::push::disconnect),
        )
        .route("/api/channels/{channel}/publish", post(realtime::push::publish))
        .route("/api/terminal/config", get(terminal::api::client_config))
        .route("/api/terminal/allocations", post(terminal::api::create).get(terminal::api::list))
        .route("/api/terminal/allocations/{id}", get(terminal::api::get).delete(terminal::api::delete))
        .route("/api/terminal/allocations/{id}/tokens", post(terminal::api::mint_token))
        .route("/terminal/assets/{name}", get(terminal::page::asset))
        .route("/terminal/{allocation_id}", get(terminal::page::page))
        .merge(ws_routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// The standalone WebSocket listener: WebSocket paths and its health path only.
pub fn ws_router(state: AppState) -> Router {
    let health_path = state.config.gateway_ws_health_path.clone();
    ws_routes()
        .route(&health_path, get(health::live))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::bad_request("method not allowed on this route").with_status(axum::http::StatusCode::METHOD_NOT_ALLOWED)
}

/// Assigns correlation/trace ids and counts responses by status class.
async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let res = ids::middleware(req, next).await;
    state.metrics.http_request(res.status().as_u16());
    res
}
