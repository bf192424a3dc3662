use serde_json::Value;

#[derive(Debug, Clone, sqlx::FromRow)]
#[sqlx(rename_all = "camelCase")]
pub struct User {
    pub id: String,
    pub email: String,
    pub created_at: i64,
}

/// Capabilities are stored as a JSON array in one TEXT column (and indexed separately in
/// `"GatewayDeviceCapability"` for matching).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities(pub Vec<String>);

impl TryFrom<String> for Capabilities {
    type Error = serde_json::Error;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        serde_json::from_str(&s).map(Capabilities)
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
#[sqlx(rename_all = "camelCase")]
pub struct DeviceRow {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub platform: String,
    #[sqlx(try_from = "String")]
    pub capabilities: Capabilities,
    pub connected_instance: Option<String>,
    pub created_at: i64,
    pub last_seen_at: Option<i64>,
    /// Connected to an instance whose heartbeat is fresh.
    pub online: bool,
}

/// What a device's `register` message is checked against.
#[derive(Debug, Clone, sqlx::FromRow)]
#[sqlx(rename_all = "camelCase")]
pub struct RegisterTarget {
    pub id: String,
    pub user_id: String,
    pub session_token_hash: String,
    #[sqlx(try_from = "String")]
    pub capabilities: Capabilities,
}

#[derive(Debug, Clone)]
pub struct NewToolCall {
    /// Chosen by the caller so it can wait on the id before the row exists.
    pub id: String,
    pub user_id: String,
    pub capability: String,
    pub tool: String,
    pub args: Value,
    pub device_id: Option<String>,
    pub accepted_by: String,
    pub now: i64,
    pub expires_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
#[sqlx(rename_all = "camelCase")]
pub struct ToolCallRow {
    pub id: String,
    pub user_id: String,
    pub required_capability: String,
    pub tool: String,
    pub args: String,
    pub device_id: Option<String>,
    pub assigned_device_id: Option<String>,
    pub status: String,
    pub result: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub attempt: i64,
    pub accepted_by: String,
    pub claimed_by: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub created_at: i64,
    pub claimed_at: Option<i64>,
    pub expires_at: i64,
    pub finished_at: Option<i64>,
}

/// A call this instance claimed and must now deliver. `attempt` is the fencing token.
#[derive(Debug, Clone, sqlx::FromRow)]
#[sqlx(rename_all = "camelCase")]
pub struct Claimed {
    pub id: String,
    pub user_id: String,
    pub required_capability: String,
    pub tool: String,
    pub args: String,
    pub device_id: Option<String>,
    pub attempt: i64,
    pub created_at: i64,
    pub expires_at: i64,
}

/// How a claimed call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CallOutcome {
    Completed {
        result: Value,
    },
    /// `detail` (for example the device's own error) is kept in the `result` column.
    Failed {
        code: String,
        message: String,
        detail: Option<Value>,
    },
}
