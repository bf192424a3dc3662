//! What both Rust peers share: the frames of docs/protocol.md (welcome; ping → pong echoing the
//! id; anything else → unknown_action). Echo only: these are the floors for the WS stack
//! comparison, not full servers (the fan-out peers are Node, Bun and Python).

use serde::Deserialize;
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow)]
    action: Option<&'a str>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

pub fn welcome() -> String {
    let id = NEXT.fetch_add(1, Ordering::Relaxed) + 1;
    let ms = now_ms();
    format!(
        r#"{{"type":"welcome","connectionId":"{id:032x}","protocolVersion":1,"heartbeatIntervalMs":25000,"serverTime":"{ms}"}}"#
    )
}

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

/// The reply to one text message, written into `out`.
pub fn reply(msg: &[u8], out: &mut Vec<u8>) {
    use std::io::Write;
    out.clear();
    match serde_json::from_slice::<Request>(msg) {
        Ok(Request { action: Some("ping"), id }) => {
            let id = id.map(|r| r.get()).unwrap_or("null");
            let _ = write!(out, r#"{{"type":"pong","ts":{},"id":{id}}}"#, now_ms());
        }
        Ok(Request { id, .. }) => {
            let id = id.map(|r| r.get()).unwrap_or("null");
            let _ = write!(
                out,
                r#"{{"type":"error","id":{id},"error":{{"code":"unknown_action","message":"echo peer"}}}}"#
            );
        }
        Err(_) => out.extend_from_slice(br#"{"type":"error","error":{"code":"bad_request","message":"invalid JSON"}}"#),
    }
}

pub fn port(default: u16) -> u16 {
    std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(default)
}
