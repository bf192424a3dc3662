//! Terminal gateway wire types: the browser's control frames and the agent protocol spoken
//! between `waygate serve` and `waygate agent` on `/api/agent/ws` (see docs/protocol.md).
//!
//! Data travels in binary frames both ways. On the browser socket a binary frame is raw terminal
//! bytes. On the agent socket it is a 16-byte session id (big-endian `u128`) followed by the
//! bytes, so any number of sessions share one agent connection.

use serde::{Deserialize, Serialize};

/// The subprotocol a browser offers (with its token) and the server echoes.
pub const TERMINAL_PROTOCOL: &str = "waygate.terminal.v1";
/// Path the agent connects to, relative to the gateway base URL.
pub const AGENT_PATH: &str = "/api/agent/ws";
/// Header carrying the agent's node id on the agent upgrade request.
pub const NODE_ID_HEADER: &str = "x-waygate-node-id";
/// Bytes of PTY output a session may have in flight (sent by the agent, not yet written to the
/// browser's socket). The agent starts with this much credit; the gateway returns credit as the
/// browser's socket takes the bytes, so a stalled browser stalls the PTY read.
pub const SESSION_WINDOW: u32 = 256 * 1024;
/// Largest data payload in one frame.
pub const MAX_CHUNK: usize = 32 * 1024;
/// Length of the session id prefix of an agent data frame.
pub const SESSION_ID_LEN: usize = 16;

/// Browser → gateway control messages (text frames).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientControl {
    Resize { cols: u16, rows: u16 },
}

/// Gateway → agent control messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToAgent {
    /// Start a session: `command` runs through `/bin/sh -c` (absent: the user's login shell).
    Open {
        session: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command: Option<String>,
        cols: u16,
        rows: u16,
        #[serde(default, rename = "resourceName", skip_serializing_if = "Option::is_none")]
        resource_name: Option<String>,
    },
    Resize {
        session: String,
        cols: u16,
        rows: u16,
    },
    /// The browser left or the session hit a limit: kill the process group.
    Close {
        session: String,
    },
    /// The gateway wrote `bytes` more of this session's output to the browser.
    Credit {
        session: String,
        bytes: u32,
    },
}

/// Agent → gateway control messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromAgent {
    Opened {
        session: String,
        pid: u32,
    },
    /// The process ended and all of its output was sent before this message. `code` is the
    /// exit status, or 128 + the signal number when a signal ended it.
    Exit {
        session: String,
        code: i32,
    },
    /// The session could not start or broke; it is over.
    Error {
        session: String,
        message: String,
    },
}

/// Gateway → browser control messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerControl {
    Exit { code: i32 },
}

/// Session ids travel as 32 lowercase hex characters in JSON and as 16 bytes in data frames.
pub fn session_hex(id: u128) -> String {
    format!("{id:032x}")
}

pub fn parse_session(hex: &str) -> Option<u128> {
    if hex.len() != 32 {
        return None;
    }
    u128::from_str_radix(hex, 16).ok()
}

/// Splits an agent data frame into its session id and payload.
pub fn split_data(frame: &[u8]) -> Option<(u128, &[u8])> {
    let (id, rest) = frame.split_at_checked(SESSION_ID_LEN)?;
    Some((u128::from_be_bytes(id.try_into().ok()?), rest))
}

/// Builds an agent data frame payload: session id then bytes.
pub fn data_payload(session: u128, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SESSION_ID_LEN + bytes.len());
    out.extend_from_slice(&session.to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_have_their_documented_shape() {
        let open = ToAgent::Open { session: session_hex(7), command: None, cols: 80, rows: 24, resource_name: None };
        assert_eq!(
            serde_json::to_string(&open).unwrap(),
            r#"{"type":"open","session":"00000000000000000000000000000007","cols":80,"rows":24}"#
        );
        let exit: FromAgent = serde_json::from_str(r#"{"type":"exit","session":"ab","code":3}"#).unwrap();
        assert_eq!(exit, FromAgent::Exit { session: "ab".into(), code: 3 });
        assert_eq!(
            serde_json::from_str::<ClientControl>(r#"{"type":"resize","cols":100,"rows":40}"#).unwrap(),
            ClientControl::Resize { cols: 100, rows: 40 }
        );
    }

    #[test]
    fn data_frames_round_trip() {
        let p = data_payload(0xdead_beef, b"hi");
        assert_eq!(split_data(&p), Some((0xdead_beef, &b"hi"[..])));
        assert_eq!(split_data(b"short"), None);
        assert_eq!(parse_session(&session_hex(42)), Some(42));
    }
}
