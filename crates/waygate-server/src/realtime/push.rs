//! Server push, like API Gateway's `@connections`: send to, inspect or close one connection,
//! and publish to a channel, from a backend (`WAYGATE_API_KEY`) or a signed-in user (who may
//! only reach connections authenticated as themselves). Works across instances in cluster mode.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use waygate_bus::Topic;
use waygate_proto::ErrorCode;

use super::actions::valid_channel;
use crate::cluster::ClusterMessage;
use crate::http::auth::{AuthUser, bearer};
use crate::http::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Who is calling the push API.
pub enum Caller {
    Backend,
    User(String),
}

impl Caller {
    fn may_reach(&self, owner: Option<&str>) -> bool {
        match self {
            Caller::Backend => true,
            Caller::User(id) => owner == Some(id.as_str()),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let (Some(key), Some(presented)) = (&state.config.api_key, bearer(&parts.headers))
            && key.matches(presented)
        {
            return Ok(Caller::Backend);
        }
        let AuthUser(user) = AuthUser::from_request_parts(parts, state).await?;
        Ok(Caller::User(user.id))
    }
}

/// Where a connection lives, from Redis in cluster mode: `(instance, user)`.
async fn remote_owner(state: &AppState, id: &str) -> ApiResult<Option<(String, Option<String>, i64)>> {
    let Some(mut con) = state.bus.redis_connection() else { return Ok(None) };
    let raw: Option<String> = redis::cmd("GET")
        .arg(state.bus.key(&format!("conn:{id}")))
        .query_async(&mut con)
        .await
        .map_err(|e| ApiError::unavailable(format!("connection registry unavailable: {e}")))?;
    let Some(raw) = raw else { return Ok(None) };
    let v: Value = serde_json::from_str(&raw).unwrap_or_default();
    let instance = v["i"].as_str().unwrap_or_default().to_owned();
    let alive: bool = redis::cmd("EXISTS")
        .arg(state.bus.key(&format!("alive:{instance}")))
        .query_async(&mut con)
        .await
        .map_err(|e| ApiError::unavailable(format!("connection registry unavailable: {e}")))?;
    Ok(alive.then(|| (instance, v["u"].as_str().map(str::to_owned), v["t"].as_i64().unwrap_or(0))))
}

fn parse_id(id: &str) -> ApiResult<u128> {
    if id.len() != 32 {
        return Err(ApiError::not_found("connection"));
    }
    u128::from_str_radix(id, 16).map_err(|_| ApiError::not_found("connection"))
}

/// `POST /api/connections/{id}`: the body (UTF-8) is sent to the client as one text message.
pub async fn send(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("the body must be UTF-8 text"))?;
    if body.len() > state.live.max_message() {
        return Err(ApiError::new(ErrorCode::PayloadTooLarge, "the body is larger than WAYGATE_MAX_MESSAGE_BYTES"));
    }
    let n = parse_id(&id)?;
    if let Some(conn) = state.conns.get(n) {
        if !caller.may_reach(conn.user_id.as_deref()) {
            return Err(ApiError::not_found("connection"));
        }
        return match conn.push(waygate_ws::text_frame(text.as_bytes()), state.live.send_queue()) {
            crate::ws::Push::Queued => Ok(StatusCode::NO_CONTENT),
            _ => Err(ApiError::not_found("connection")),
        };
    }
    let Some((instance, owner, _)) = remote_owner(&state, &id).await? else {
        return Err(ApiError::not_found("connection"));
    };
    if !caller.may_reach(owner.as_deref()) {
        return Err(ApiError::not_found("connection"));
    }
    let msg = ClusterMessage::PushToConnection { connection_id: id, payload: text.to_owned() };
    crate::cluster::send(&state, Topic::Instance(instance), msg).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/connections/{id}`.
pub async fn info(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let n = parse_id(&id)?;
    if let Some(conn) = state.conns.get(n) {
        if !caller.may_reach(conn.user_id.as_deref()) {
            return Err(ApiError::not_found("connection"));
        }
        return Ok(Json(json!({
            "connectionId": id,
            "userId": conn.user_id.as_deref(),
            "instanceId": state.instance_id,
            "connectedAt": waygate_telemetry::millis_to_rfc3339(conn.connected_at),
            "channels": conn.channels(),
            "queued": conn.len(),
        })));
    }
    let Some((instance, owner, at)) = remote_owner(&state, &id).await? else {
        return Err(ApiError::not_found("connection"));
    };
    if !caller.may_reach(owner.as_deref()) {
        return Err(ApiError::not_found("connection"));
    }
    Ok(Json(json!({
        "connectionId": id,
        "userId": owner,
        "instanceId": instance,
        "connectedAt": waygate_telemetry::millis_to_rfc3339(at),
    })))
}

/// `DELETE /api/connections/{id}`: closes the connection with 1000.
pub async fn disconnect(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let n = parse_id(&id)?;
    if let Some(conn) = state.conns.get(n) {
        if !caller.may_reach(conn.user_id.as_deref()) {
            return Err(ApiError::not_found("connection"));
        }
        conn.kick(waygate_proto::close::NORMAL, "disconnected by the server");
        return Ok(StatusCode::NO_CONTENT);
    }
    let Some((instance, owner, _)) = remote_owner(&state, &id).await? else {
        return Err(ApiError::not_found("connection"));
    };
    if !caller.may_reach(owner.as_deref()) {
        return Err(ApiError::not_found("connection"));
    }
    crate::cluster::send(&state, Topic::Instance(instance), ClusterMessage::DisconnectConnection { connection_id: id })
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/channels/{channel}/publish`: the JSON body is the message `data`.
pub async fn publish(
    State(state): State<AppState>,
    _caller: Caller,
    Path(channel): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    if !valid_channel(&channel) {
        return Err(ApiError::bad_request("channel must be 1-128 characters of [A-Za-z0-9_.:@/=-]"));
    }
    if body.len() > state.live.max_message() {
        return Err(ApiError::new(ErrorCode::PayloadTooLarge, "the body is larger than WAYGATE_MAX_MESSAGE_BYTES"));
    }
    let data: &RawValue = serde_json::from_slice(&body).map_err(|_| ApiError::bad_request("the body must be JSON"))?;
    let offset = state.realtime.publish(&channel, data, state.live.send_queue()).await.map_err(|e| {
        tracing::warn!(channel, error = %e, "publish failed");
        ApiError::unavailable("publish backend unavailable; the message was not sent")
    })?;
    Ok(Json(json!({ "channel": channel, "offset": offset })))
}
