//! The one error envelope used by every HTTP error response and every WebSocket error frame.

use serde::{Deserialize, Serialize};

/// Machine-readable error codes. The serialized names are part of the public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    RateLimited,
    PayloadTooLarge,
    ServiceUnavailable,
    InternalError,
    TokenInvalid,
    TokenExpired,
    TokenReplayed,
    TokenInQueryForbidden,
    NoCapableDevice,
    DeviceDisconnected,
    ToolCallTimeout,
    ToolCallFailed,
    SlowConsumer,
    UnknownAction,
    AgentUnavailable,
    RouteFailed,
}

impl ErrorCode {
    /// HTTP status used when this code is returned by the HTTP API.
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            BadRequest | TokenInQueryForbidden | UnknownAction => 400,
            Unauthorized | TokenInvalid | TokenExpired | TokenReplayed => 401,
            Forbidden => 403,
            NotFound => 404,
            Conflict | NoCapableDevice => 409,
            PayloadTooLarge => 413,
            RateLimited => 429,
            InternalError => 500,
            DeviceDisconnected | ToolCallFailed | RouteFailed => 502,
            ServiceUnavailable | AgentUnavailable | SlowConsumer => 503,
            ToolCallTimeout => 504,
        }
    }

    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BadRequest => "bad_request",
            Unauthorized => "unauthorized",
            Forbidden => "forbidden",
            NotFound => "not_found",
            Conflict => "conflict",
            RateLimited => "rate_limited",
            PayloadTooLarge => "payload_too_large",
            ServiceUnavailable => "service_unavailable",
            InternalError => "internal_error",
            TokenInvalid => "token_invalid",
            TokenExpired => "token_expired",
            TokenReplayed => "token_replayed",
            TokenInQueryForbidden => "token_in_query_forbidden",
            NoCapableDevice => "no_capable_device",
            DeviceDisconnected => "device_disconnected",
            ToolCallTimeout => "tool_call_timeout",
            ToolCallFailed => "tool_call_failed",
            SlowConsumer => "slow_consumer",
            UnknownAction => "unknown_action",
            AgentUnavailable => "agent_unavailable",
            RouteFailed => "route_failed",
        }
    }

    /// Parses a code name; unknown names (from a device, say) map to `None`.
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetails {
    pub trace_id: String,
    /// Extra machine-readable context (for example the upstream device error). Never internals.
    #[serde(flatten, skip_serializing_if = "serde_json::Map::is_empty", default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    pub correlation_id: String,
    pub details: ErrorDetails,
}

/// `{"error":{...}}`; WebSocket frames carry `"type":"error"` and may echo the request `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none", default)]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub id: Option<serde_json::Value>,
    pub error: ErrorBody,
}

impl ErrorEnvelope {
    pub fn new(
        code: ErrorCode,
        message: impl Into<String>,
        correlation_id: impl Into<String>,
        trace_id: impl Into<String>,
    ) -> Self {
        ErrorEnvelope {
            kind: None,
            id: None,
            error: ErrorBody {
                code,
                message: message.into(),
                correlation_id: correlation_id.into(),
                details: ErrorDetails { trace_id: trace_id.into(), extra: serde_json::Map::new() },
            },
        }
    }

    /// Turns the envelope into a WebSocket error frame echoing the request's `id`, if any.
    pub fn into_frame(mut self, id: Option<serde_json::Value>) -> Self {
        self.kind = Some("error".to_owned());
        self.id = id;
        self
    }

    pub fn with_detail(mut self, key: &str, value: serde_json::Value) -> Self {
        self.error.details.extra.insert(key.to_owned(), value);
        self
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("error envelope serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_the_contract_shape() {
        let env = ErrorEnvelope::new(ErrorCode::TokenReplayed, "token already used", "c-1", "t-1");
        let v: serde_json::Value = serde_json::from_str(&env.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error":{"code":"token_replayed","message":"token already used",
                "correlation_id":"c-1","details":{"trace_id":"t-1"}}})
        );
        let frame = env.into_frame(Some(serde_json::json!(7)));
        let v: serde_json::Value = serde_json::from_str(&frame.to_json()).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["id"], 7);
    }

    #[test]
    fn as_str_matches_serde_names() {
        use ErrorCode::*;
        for code in [
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            RateLimited,
            PayloadTooLarge,
            ServiceUnavailable,
            InternalError,
            TokenInvalid,
            TokenExpired,
            TokenReplayed,
            TokenInQueryForbidden,
            NoCapableDevice,
            DeviceDisconnected,
            ToolCallTimeout,
            ToolCallFailed,
            SlowConsumer,
            UnknownAction,
            AgentUnavailable,
            RouteFailed,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::parse("nope"), None);
    }
}
