//! Users log in with email and password (argon2id); sessions live in the database so a token
//! minted on one instance works on all. APIs take the `waygate_session` cookie or a bearer.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use waygate_store::User;

use super::error::{ApiError, ApiResult};
use super::json::ApiJson;
use crate::state::AppState;

pub const SESSION_COOKIE: &str = "waygate_session";
const SESSION_TTL_MS: i64 = 7 * 24 * 3_600_000;

#[derive(Deserialize)]
pub struct Login {
    email: String,
    password: String,
}

pub async fn login(State(state): State<AppState>, ApiJson(body): ApiJson<Login>) -> ApiResult<Response> {
    let Some(user) = state.store.authenticate(&body.email, &body.password).await? else {
        tracing::info!("login refused");
        return Err(ApiError::new(waygate_proto::ErrorCode::Unauthorized, "invalid email or password"));
    };
    let token = state.store.create_session(&user.id, waygate_telemetry::now_millis(), SESSION_TTL_MS).await?;
    tracing::info!(user_id = %user.id, "user logged in");
    let cookie = format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}", SESSION_TTL_MS / 1000);
    Ok(([(header::SET_COOKIE, cookie)], Json(serde_json::json!({ "token": token }))).into_response())
}

pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if let Some(token) = session_token(&headers) {
        state.store.delete_session(token).await?;
    }
    let cookie = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0");
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

pub async fn me(AuthUser(user): AuthUser) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "id": user.id, "email": user.email }))
}

/// The bearer token, else the session cookie.
pub fn session_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(token) = bearer(headers) {
        return Some(token);
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The signed-in user; rejects with 401 `unauthorized`.
pub struct AuthUser(pub User);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = session_token(&parts.headers).ok_or_else(ApiError::unauthorized)?;
        let user = state.store.session_user(token, waygate_telemetry::now_millis()).await?;
        user.map(AuthUser).ok_or_else(ApiError::unauthorized)
    }
}
