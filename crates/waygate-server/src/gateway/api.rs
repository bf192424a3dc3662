//! HTTP API of the device gateway (SPEC 4.1).

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use waygate_proto::device::{
    Device, DeviceList, DeviceStatus, GatewayHealth, GatewayHealthBody, RegisterDeviceRequest, RegisterDeviceResponse,
    ToolCallRequest, ToolCallStatus, ToolCallView, ToolError,
};
use waygate_proto::{ErrorCode, PROTOCOL_VERSION, close};
use waygate_store::{DeviceRow, NewToolCall, ToolCallRow};

use crate::http::auth::{AuthUser, bearer};
use crate::http::client::ClientInfo;
use crate::http::error::{ApiError, ApiResult};
use crate::http::json::{ApiJson, parse};
use crate::state::AppState;

fn device_view(row: DeviceRow) -> Device {
    Device {
        id: row.id,
        name: row.name,
        platform: row.platform,
        capabilities: row.capabilities.0,
        status: if row.online { DeviceStatus::Online } else { DeviceStatus::Offline },
        created_at: waygate_telemetry::millis_to_rfc3339(row.created_at),
        last_seen_at: row.last_seen_at.map(waygate_telemetry::millis_to_rfc3339),
    }
}

fn validation_error(problems: Vec<String>) -> ApiError {
    ApiError::bad_request(problems.join("; ")).with_detail("problems", problems)
}

/// The WebSocket URL a device should use: `GATEWAY_WS_PUBLIC_URL`, else built from
/// `GATEWAY_WS_PUBLIC_HOST/PORT/PATH`, else from the request (the main listener serves the
/// WebSocket paths too, so this default always works).
fn ws_endpoint(state: &AppState, req: &Request) -> String {
    let c = &state.config;
    if let Some(url) = &c.gateway_ws_public_url {
        return url.clone();
    }
    let https = ClientInfo::of(state, req).https;
    if let Some(host) = &c.gateway_ws_public_host {
        let secure = https || c.gateway_ws_public_port == Some(443);
        let scheme = if secure { "wss" } else { "ws" };
        let port = match c.gateway_ws_public_port {
            Some(443) if secure => String::new(),
            Some(80) if !secure => String::new(),
            Some(p) => format!(":{p}"),
            None => String::new(),
        };
        return format!("{scheme}://{host}{port}{}", c.gateway_ws_path);
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("localhost:{}", c.websocket_port));
    format!("{}://{host}{}", if https { "wss" } else { "ws" }, c.gateway_ws_path)
}

pub async fn create_device(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    req: Request,
) -> ApiResult<Response> {
    let endpoint = ws_endpoint(&state, &req);
    let ApiJson(body) =
        <ApiJson<RegisterDeviceRequest> as axum::extract::FromRequest<AppState>>::from_request(req, &state).await?;
    if let Err(problems) = body.validate() {
        state.metrics.device_registration("invalid");
        return Err(validation_error(problems));
    }
    let now = waygate_telemetry::now_millis();
    let (row, token) = state.store.create_device(&user.id, &body.name, &body.platform, &body.capabilities, now).await?;
    tracing::info!(device_id = %row.id, user_id = %user.id, "device registered through the API");
    let device = device_view(row);
    let res = RegisterDeviceResponse {
        device_id: device.id.clone(),
        device,
        ws_endpoint: endpoint,
        protocol_version: PROTOCOL_VERSION,
        session_token: token,
    };
    Ok((StatusCode::CREATED, Json(res)).into_response())
}

pub async fn list_devices(State(state): State<AppState>, AuthUser(user): AuthUser) -> ApiResult<Json<DeviceList>> {
    let rows = state.store.list_devices(&user.id, waygate_telemetry::now_millis()).await?;
    Ok(Json(DeviceList { devices: rows.into_iter().map(device_view).collect() }))
}

pub async fn get_device(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Device>> {
    let row = state.store.get_device(&user.id, &id, waygate_telemetry::now_millis()).await?;
    row.map(|r| Json(device_view(r))).ok_or_else(|| ApiError::not_found("device"))
}

pub async fn delete_device(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let now = waygate_telemetry::now_millis();
    let holder = state.store.get_device(&user.id, &id, now).await?.and_then(|d| d.connected_instance);
    if !state.store.delete_device(&user.id, &id).await? {
        return Err(ApiError::not_found("device"));
    }
    if let Some(local) = state.devices.get(&id) {
        local.conn.kick(close::DEVICE_DELETED, "device deleted");
    } else if let Some(instance) = holder {
        let msg = crate::cluster::ClusterMessage::KickDevice {
            device_id: id.clone(),
            code: close::DEVICE_DELETED,
            reason: "device deleted".into(),
        };
        crate::cluster::send(&state, waygate_bus::Topic::Instance(instance), msg).await;
    }
    tracing::info!(device_id = %id, user_id = %user.id, "device deleted");
    Ok(StatusCode::NO_CONTENT)
}

pub async fn create_tool_call(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(req): ApiJson<ToolCallRequest>,
) -> ApiResult<Response> {
    req.validate().map_err(validation_error)?;
    let now = waygate_telemetry::now_millis();
    let (registered, online) =
        state.store.capable_devices(&user.id, &req.capability, req.device_id.as_deref(), now).await?;
    if !registered {
        let what = match &req.device_id {
            Some(d) => format!("device {d} is not registered with capability {:?}", req.capability),
            None => format!("no registered device has capability {:?}", req.capability),
        };
        return Err(ApiError::new(ErrorCode::NoCapableDevice, what));
    }
    let id = uuid::Uuid::now_v7().to_string();
    let waiter = state.dispatch.waiter(&id);
    let new = NewToolCall {
        id: id.clone(),
        user_id: user.id.clone(),
        capability: req.capability.clone(),
        tool: req.tool.clone(),
        args: req.args.clone(),
        device_id: req.device_id.clone(),
        accepted_by: state.instance_id.clone(),
        now,
        expires_at: now + req.timeout_ms() as i64,
    };
    state.store.insert_tool_call(&new).await?;
    tracing::info!(call_id = %id, capability = %req.capability, tool = %req.tool, "tool call accepted");
    if !online && !req.wait_for_device {
        let msg = "no device with the capability is online";
        if state.store.fail_unclaimed(&id, "no_capable_device", msg, now).await? {
            state.metrics.tool_call_finished("failed");
        }
        return Err(ApiError::new(ErrorCode::NoCapableDevice, msg).with_detail("callId", id));
    }
    state.dispatch.wake();
    if !req.wait {
        return Ok((StatusCode::ACCEPTED, Json(json!({ "id": id, "status": "pending" }))).into_response());
    }
    let row = wait_finished(&state, &user.id, &id, new.expires_at, &waiter.notify).await?;
    outcome_response(row)
}

/// Waits for the call to finish: woken by its finish event, polling at the dispatch interval
/// as a fallback, and ending the call itself at its deadline.
async fn wait_finished(
    state: &AppState,
    user_id: &str,
    id: &str,
    expires_at: i64,
    notify: &tokio::sync::Notify,
) -> ApiResult<ToolCallRow> {
    let poll = state.config.dispatch_poll.as_millis() as i64;
    loop {
        let now = waygate_telemetry::now_millis();
        if now >= expires_at {
            if let Some(status) = state.store.expire_tool_call(id, now).await? {
                state.metrics.tool_call_finished(&status);
            }
        } else {
            let wait = Duration::from_millis((expires_at - now).min(poll) as u64);
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let row = state
            .store
            .get_tool_call(user_id, id)
            .await?
            .ok_or_else(|| ApiError::internal("accepted call vanished"))?;
        if ToolCallStatus::parse(&row.status).is_some_and(ToolCallStatus::is_finished) {
            return Ok(row);
        }
    }
}

/// Maps a finished call to the SPEC 4.1 answer: 200 with the result, or the exact error code.
fn outcome_response(row: ToolCallRow) -> ApiResult<Response> {
    let message = row.error_message.clone().unwrap_or_default();
    match (row.status.as_str(), row.error_code.as_deref()) {
        ("completed", _) => {
            let result: serde_json::Value =
                row.result.as_deref().and_then(|r| serde_json::from_str(r).ok()).unwrap_or_default();
            Ok(Json(json!({ "id": row.id, "status": "completed", "result": result })).into_response())
        }
        ("expired", _) => Err(ApiError::new(ErrorCode::ToolCallTimeout, message).with_detail("callId", row.id)),
        (_, Some("no_capable_device")) => {
            Err(ApiError::new(ErrorCode::NoCapableDevice, message).with_detail("callId", row.id))
        }
        (_, Some("device_disconnected")) => {
            Err(ApiError::new(ErrorCode::DeviceDisconnected, message).with_detail("callId", row.id))
        }
        _ => {
            let device_error: serde_json::Value =
                row.result.as_deref().and_then(|r| serde_json::from_str(r).ok()).unwrap_or_default();
            Err(ApiError::new(ErrorCode::ToolCallFailed, message)
                .with_detail("callId", row.id)
                .with_detail("deviceError", device_error))
        }
    }
}

pub async fn get_tool_call(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<ToolCallView>> {
    let row = state.store.get_tool_call(&user.id, &id).await?.ok_or_else(|| ApiError::not_found("tool call"))?;
    let status =
        ToolCallStatus::parse(&row.status).ok_or_else(|| ApiError::internal(format!("bad status {}", row.status)))?;
    let parsed_result = row.result.as_deref().and_then(|r| serde_json::from_str(r).ok());
    let (result, error) = match status {
        ToolCallStatus::Completed => (parsed_result, None),
        ToolCallStatus::Failed | ToolCallStatus::Expired => (
            None,
            Some(ToolError {
                code: row.error_code.clone().unwrap_or_default(),
                message: row.error_message.clone().unwrap_or_default(),
            }),
        ),
        _ => (None, None),
    };
    Ok(Json(ToolCallView {
        id: row.id,
        status,
        result,
        error,
        capability: row.required_capability,
        tool: row.tool,
        device_id: row.assigned_device_id.or(row.device_id),
        created_at: waygate_telemetry::millis_to_rfc3339(row.created_at),
        expires_at: waygate_telemetry::millis_to_rfc3339(row.expires_at),
        finished_at: row.finished_at.map(waygate_telemetry::millis_to_rfc3339),
    }))
}

/// `connectedDevices` is this instance's; `dispatchQueue` is cluster-wide (from the database).
pub async fn gateway_health(State(state): State<AppState>) -> ApiResult<Json<GatewayHealth>> {
    let counters = state.store.queue_counters(waygate_telemetry::now_millis()).await?;
    Ok(Json(GatewayHealth {
        status: "ok".to_owned(),
        instance_id: state.instance_id.clone(),
        gateway: GatewayHealthBody { connected_devices: state.devices.len() as u64, dispatch_queue: counters },
    }))
}

#[derive(Deserialize)]
struct ControlCommand {
    command: String,
}

/// Control commands; the bearer is checked before the body is even parsed.
pub async fn control(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let Some(expected) = &state.config.agent_control_plane_token else {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "control commands are disabled: AGENT_CONTROL_PLANE_TOKEN is not set",
        ));
    };
    if !bearer(&headers).is_some_and(|t| expected.matches(t)) {
        tracing::warn!("control command refused: bearer does not match AGENT_CONTROL_PLANE_TOKEN");
        return Err(ApiError::new(ErrorCode::Forbidden, "invalid control plane token"));
    }
    let cmd: ControlCommand = parse(&body)?;
    match cmd.command.as_str() {
        "config.reload" => {
            let changed = crate::reload::apply(&state).await?;
            Ok(Json(json!({ "reloaded": true, "changed": changed })))
        }
        other => Err(ApiError::bad_request(format!("unknown command {other:?}; supported: config.reload"))),
    }
}
