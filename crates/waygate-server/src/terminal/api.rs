//! Allocations and token minting (SPEC 4.2). Every allocation belongs to a user; another
//! user's allocation answers 404 exactly like a missing one.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use waygate_proto::terminal::TERMINAL_PROTOCOL;
use waygate_store::{AllocationRow, NewAllocation};

use super::tokens::TokenRecord;
use crate::http::auth::AuthUser;
use crate::http::error::{ApiError, ApiResult};
use crate::http::json::ApiJson;
use crate::state::AppState;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateAllocation {
    node_id: String,
    tenant_id: String,
    project_id: String,
    #[serde(default)]
    command: Option<String>,
}

/// Tenant and project ids go into `:`-separated resource names, so they may not hold `:`.
fn valid_segment(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl CreateAllocation {
    fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if !super::agent::valid_node_id(&self.node_id) {
            problems.push("nodeId must be 1-128 characters of [A-Za-z0-9._:-]".to_owned());
        }
        if !valid_segment(&self.tenant_id) {
            problems.push("tenantId must be 1-128 characters of [A-Za-z0-9._-]".to_owned());
        }
        if !valid_segment(&self.project_id) {
            problems.push("projectId must be 1-128 characters of [A-Za-z0-9._-]".to_owned());
        }
        if self.command.as_ref().is_some_and(|c| c.is_empty() || c.len() > 4096) {
            problems.push("command must be 1-4096 bytes when given".to_owned());
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }
}

async fn view(state: &AppState, a: &AllocationRow) -> ApiResult<Value> {
    let online = state.terminal.agents.contains_key(&a.node_id)
        || state.store.agent_instance(&a.node_id, waygate_telemetry::now_millis()).await?.is_some();
    Ok(json!({
        "allocationId": a.id,
        "resourceName": super::resource_name(&state.config, &a.tenant_id, &a.project_id, &a.id),
        "nodeOnline": online,
        "nodeId": a.node_id,
        "tenantId": a.tenant_id,
        "projectId": a.project_id,
        "command": a.command,
        "createdAt": waygate_telemetry::millis_to_rfc3339(a.created_at),
    }))
}

/// The caller's allocation, or 404 (also for another user's).
async fn owned(state: &AppState, user_id: &str, id: &str) -> ApiResult<AllocationRow> {
    match state.store.get_allocation(id).await? {
        Some(a) if a.user_id == user_id => Ok(a),
        _ => Err(ApiError::not_found("allocation")),
    }
}

pub async fn create(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    ApiJson(body): ApiJson<CreateAllocation>,
) -> ApiResult<Response> {
    if let Err(problems) = body.validate() {
        return Err(ApiError::bad_request(problems.join("; ")).with_detail("problems", problems));
    }
    let new = NewAllocation {
        user_id: &user.id,
        node_id: &body.node_id,
        tenant_id: &body.tenant_id,
        project_id: &body.project_id,
        command: body.command.as_deref(),
    };
    let row = state.store.create_allocation(new, waygate_telemetry::now_millis()).await?;
    let v = view(&state, &row).await?;
    tracing::info!(allocation_id = %row.id, user_id = %user.id, resource_name = %v["resourceName"].as_str().unwrap_or_default(), "terminal allocation created");
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

pub async fn list(State(state): State<AppState>, AuthUser(user): AuthUser) -> ApiResult<Json<Value>> {
    let mut out = Vec::new();
    for a in state.store.list_allocations(&user.id).await? {
        out.push(view(&state, &a).await?);
    }
    Ok(Json(json!({ "allocations": out })))
}

pub async fn get(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let a = owned(&state, &user.id, &id).await?;
    Ok(Json(view(&state, &a).await?))
}

pub async fn delete(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if state.store.delete_allocation(&user.id, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("allocation"))
    }
}

/// Mints a single-use token: returned once, stored only as its SHA-256 digest.
pub async fn mint_token(
    State(state): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let a = owned(&state, &user.id, &id).await?;
    let token = waygate_store::random_token();
    let expires_at = waygate_telemetry::now_millis() + state.config.terminal_token_ttl.as_millis() as i64;
    let record = TokenRecord { allocation_id: a.id.clone(), user_id: user.id.clone(), expires_at };
    state.terminal.tokens.put(&waygate_store::hash_token(&token), &record).await.map_err(|e| {
        tracing::warn!(error = %e, "terminal token store unavailable");
        ApiError::unavailable("the token store is unavailable; retry shortly")
    })?;
    Ok(Json(json!({
        "token": token,
        "expiresAt": waygate_telemetry::millis_to_rfc3339(expires_at),
        "protocol": TERMINAL_PROTOCOL,
    })))
}

/// What the terminal page needs to know at run time: where to open its WebSocket. `wsBase`
/// null means the page's own origin (SPEC 4.2: never baked into the page).
pub async fn client_config(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "wsBase": state.config.public_ws_url.as_deref().map(|u| u.trim_end_matches('/')),
        "protocol": TERMINAL_PROTOCOL,
    }))
}
