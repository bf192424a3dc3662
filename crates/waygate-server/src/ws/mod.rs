//! WebSocket endpoints: checks before the upgrade, the handshake, and the connection task.

pub(crate) mod conn;
mod outbox;
mod rate;
mod registry;

use std::net::IpAddr;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use waygate_proto::ErrorCode;
use waygate_ws::{HandshakeError, WsStream};

pub use conn::{PathKind, frame_json};
pub use outbox::{ConnShared, Push};
pub use registry::{ConnRegistry, Refusal};

use crate::http::client::ClientInfo;
use crate::http::error::{ApiError, ApiResult};
use crate::state::AppState;

/// `/ws`, `/ws/*`, `/websocket`, `/websocket/*`: realtime actions, and device messages on `/ws*`.
pub async fn realtime(State(state): State<AppState>, req: Request) -> Response {
    upgrade(state, req, PathKind::Realtime).await.unwrap_or_else(IntoResponse::into_response)
}

/// `/api/gateway/ws`, `/api/gateway/ws/*`: device messages only.
pub async fn device(State(state): State<AppState>, req: Request) -> Response {
    upgrade(state, req, PathKind::DeviceOnly).await.unwrap_or_else(IntoResponse::into_response)
}

/// Holds one connection slot (total and per-IP) until dropped.
pub struct Slot {
    state: AppState,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.state.conns.release(self.ip);
    }
}

/// Runs every pre-upgrade check, so a refused client costs one HTTP response and no task.
pub fn precheck(state: &AppState, req: &Request, reject: &'static str) -> ApiResult<(Slot, String)> {
    let refuse = |reason: &'static str, err: ApiError| {
        state.metrics.upgrade_rejected(reason).increment(1);
        err
    };
    if state.lifecycle.is_draining() {
        return Err(refuse("draining", ApiError::unavailable(reject)));
    }
    let key = waygate_ws::check_upgrade(req.method(), req.headers()).map_err(|e| {
        let err = ApiError::bad_request(e.to_string());
        refuse(
            "bad_request",
            match e {
                HandshakeError::UnsupportedVersion => {
                    err.with_status(StatusCode::UPGRADE_REQUIRED).with_header(header::SEC_WEBSOCKET_VERSION, "13")
                }
                _ => err,
            },
        )
    })?;
    let accept = waygate_ws::accept_key(key);
    if let Some(origin) = req.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        let allowed = state.live.allowed_origins.read().expect("origins lock");
        if let Some(list) = allowed.as_ref()
            && !list.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
        {
            return Err(refuse(
                "origin",
                ApiError::new(ErrorCode::Forbidden, format!("origin {origin} is not allowed")),
            ));
        }
    }
    let ip = ClientInfo::of(state, req).ip;
    let max = state.live.max_connections.load(std::sync::atomic::Ordering::Relaxed);
    let max_ip = state.live.max_connections_per_ip.load(std::sync::atomic::Ordering::Relaxed);
    match state.conns.try_reserve(ip, max, max_ip) {
        Ok(()) => Ok((Slot { state: state.clone(), ip }, accept)),
        Err(Refusal::Total) => {
            Err(refuse("max_connections", ApiError::unavailable("connection limit reached; retry with backoff")))
        }
        Err(Refusal::PerIp) => Err(refuse(
            "max_connections_per_ip",
            ApiError::new(ErrorCode::RateLimited, "too many connections from this address"),
        )),
    }
}

/// Switches the request's connection to WebSocket and hands the raw socket to `run`.
/// `protocol` is the subprotocol to echo, if one was negotiated.
pub fn switch<F, Fut>(
    state: &AppState,
    mut req: Request,
    accept: String,
    protocol: Option<&'static str>,
    run: F,
) -> ApiResult<Response>
where
    F: FnOnce(WsStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let on_upgrade = req
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| ApiError::internal("request carries no upgrade handle"))?;
    let max_message = state.live.max_message();
    state.lifecycle.connections.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => run(WsStream::new(parts.io.into_inner(), parts.read_buf, max_message)).await,
            Err(_) => tracing::error!("upgraded connection is not a TCP stream"),
        }
    });
    let mut res = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(p) = protocol {
        res = res.header(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    Ok(res.body(Body::empty()).expect("static response parts are valid"))
}

async fn upgrade(state: AppState, req: Request, kind: PathKind) -> ApiResult<Response> {
    let (auth, protocol) = match kind {
        PathKind::Realtime => connect_auth(&state, &req)?,
        // Devices authenticate with their session token in `register`.
        PathKind::DeviceOnly => (None, None),
    };
    let (slot, accept) = precheck(&state, &req, "gateway draining")?;
    let id: u128 = rand::random();
    if kind == PathKind::Realtime {
        // Built in its own scope: nothing borrowing the request may live across the await.
        let info = {
            let client = ClientInfo::of(&state, &req);
            let header =
                |name: header::HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            serde_json::json!({
                "path": req.uri().path(),
                "sourceIp": client.ip.to_string(),
                "origin": header(header::ORIGIN),
                "userAgent": header(header::USER_AGENT),
            })
        };
        let user = auth.as_ref().and_then(|a| a.user_id.as_deref());
        crate::realtime::routes::on_connect(&state, &format!("{id:032x}"), user, info).await?;
    }
    let s = state.clone();
    switch(&state, req, accept, protocol, move |ws| conn::Connection::new(s, ws, kind, slot, id, auth).run())
}

/// JWT connect auth for realtime paths: from `Authorization: Bearer` or the
/// `waygate.jwt, <token>` subprotocol, never from the query string. Required when a JWT key is
/// configured; without one, connections are anonymous.
fn connect_auth(
    state: &AppState,
    req: &Request,
) -> ApiResult<(Option<Box<crate::realtime::auth::ConnAuth>>, Option<&'static str>)> {
    use crate::realtime::auth::JWT_PROTOCOL;
    let query = req.uri().query().unwrap_or("");
    if query.split('&').any(|kv| kv.starts_with("access_token=") || kv.starts_with("token=")) {
        return Err(ApiError::new(
            ErrorCode::TokenInQueryForbidden,
            "tokens in the URL are refused (they end up in logs): use Authorization: Bearer or Sec-WebSocket-Protocol: waygate.jwt, <token>",
        ));
    }
    let Some(verifier) = &state.jwt else { return Ok((None, None)) };
    let offered: Vec<&str> = waygate_ws::requested_protocols(req.headers()).collect();
    let from_protocol = offered.iter().position(|p| *p == JWT_PROTOCOL).and_then(|i| offered.get(i + 1)).copied();
    let token = crate::http::auth::bearer(req.headers()).or(from_protocol);
    let Some(token) = token else {
        state.metrics.upgrade_rejected("unauthorized").increment(1);
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "a JWT is required: send Authorization: Bearer <jwt> or Sec-WebSocket-Protocol: waygate.jwt, <jwt>",
        ));
    };
    let auth = verifier.verify(token).inspect_err(|_| state.metrics.upgrade_rejected("unauthorized").increment(1))?;
    Ok((Some(Box::new(auth)), from_protocol.is_some().then_some(JWT_PROTOCOL)))
}
