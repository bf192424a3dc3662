//! WebSocket close codes used by waygate (RFC 6455 section 7.4 plus application codes).

pub const NORMAL: u16 = 1000;
/// Server going away: drain deadline reached.
pub const GOING_AWAY: u16 = 1001;
pub const PROTOCOL_ERROR: u16 = 1002;
pub const UNSUPPORTED_DATA: u16 = 1003;
pub const INVALID_PAYLOAD: u16 = 1007;
/// Policy violation: sustained rate-limit abuse.
pub const POLICY_VIOLATION: u16 = 1008;
/// Message larger than `WAYGATE_MAX_MESSAGE_BYTES`.
pub const MESSAGE_TOO_BIG: u16 = 1009;
pub const INTERNAL_ERROR: u16 = 1011;
/// Try again later: the connection's send queue overflowed (`slow_consumer`).
pub const TRY_AGAIN_LATER: u16 = 1013;
/// Application code: device registration refused (bad or missing session token).
pub const UNAUTHORIZED: u16 = 4401;
/// Application code: the device was deleted through the API.
pub const DEVICE_DELETED: u16 = 4404;
/// Application code: the server's heartbeat went unanswered.
pub const HEARTBEAT_TIMEOUT: u16 = 4408;
/// Application code: a newer connection registered the same device.
pub const REPLACED: u16 = 4409;
