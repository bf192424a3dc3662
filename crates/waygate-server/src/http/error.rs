//! `ApiError` and the one place that renders the error envelope.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use waygate_proto::{ErrorCode, ErrorEnvelope};

use super::ids::RequestIds;

/// An error a handler returns; rendered as the SPEC 3 envelope with the request's ids.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: serde_json::Map<String, serde_json::Value>,
    /// Extra response headers (for example `Sec-WebSocket-Version` on a 426).
    pub status_override: Option<StatusCode>,
    pub headers: Vec<(axum::http::HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into(), details: Default::default(), status_override: None, headers: vec![] }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, message)
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(ErrorCode::Unauthorized, "sign in first: send the waygate_session cookie or a bearer token")
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::ServiceUnavailable, message)
    }

    /// An internal failure: the cause is logged with the correlation id, never sent.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        let ids = RequestIds::current();
        tracing::error!(correlation_id = %ids.correlation_id, error = %cause, "internal error");
        ApiError::new(ErrorCode::InternalError, "internal error; quote the correlation_id when reporting it")
    }

    pub fn with_detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> ApiError {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status_override = Some(status);
        self
    }

    pub fn with_header(mut self, name: axum::http::HeaderName, value: &'static str) -> ApiError {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }

    pub fn envelope(&self) -> ErrorEnvelope {
        let ids = RequestIds::current();
        let mut env = ErrorEnvelope::new(self.code, self.message.clone(), ids.correlation_id, ids.trace_id);
        env.error.details.extra = self.details.clone();
        env
    }
}

impl From<waygate_store::StoreError> for ApiError {
    fn from(e: waygate_store::StoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "database unavailable");
            return ApiError::unavailable("the database is unavailable; retry shortly");
        }
        ApiError::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_override.unwrap_or_else(|| {
            StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        });
        let body = self.envelope().to_json();
        let mut res = (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response();
        for (name, value) in self.headers {
            res.headers_mut().insert(name, value);
        }
        res
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
