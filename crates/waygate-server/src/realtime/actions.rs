//! The realtime actions a client sends on its connection: subscribe (with recovery),
//! unsubscribe, publish and presence.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use waygate_proto::ErrorCode;

use crate::ws::conn::{Connection, Flow};

/// Most channels one connection may subscribe to.
pub const MAX_SUBSCRIPTIONS: usize = 256;

#[derive(Deserialize)]
struct ChannelAction<'a> {
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(default)]
    since: Option<u64>,
    #[serde(borrow, default)]
    epoch: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// Channel names are used in Redis keys and URLs: keep them plain.
pub fn valid_channel(name: &str) -> bool {
    (1..=128).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:@/=-".contains(&b))
}

fn parse<'a>(conn: &mut Connection, text: &'a [u8], id: Option<&RawValue>) -> Option<ChannelAction<'a>> {
    let msg: ChannelAction<'a> = match serde_json::from_slice(text) {
        Ok(m) => m,
        Err(e) => {
            conn.send_error(id, ErrorCode::BadRequest, &format!("invalid message: {e}"));
            return None;
        }
    };
    match msg.channel.as_deref() {
        Some(c) if valid_channel(c) => Some(msg),
        _ => {
            conn.send_error(id, ErrorCode::BadRequest, "\"channel\" must be 1-128 characters of [A-Za-z0-9_.:@/=-]");
            None
        }
    }
}

fn with_id(mut reply: serde_json::Value, id: Option<&RawValue>) -> serde_json::Value {
    if let Some(id) = id.and_then(|raw| serde_json::from_str::<serde_json::Value>(raw.get()).ok()) {
        reply["id"] = id;
    }
    reply
}

pub async fn subscribe(conn: &mut Connection, text: &[u8], id: Option<&RawValue>) -> Flow {
    let Some(msg) = parse(conn, text, id) else { return Flow::Continue };
    let channel = msg.channel.as_deref().expect("checked");
    if !conn.auth.as_ref().is_none_or(|a| a.may_subscribe(channel)) {
        conn.send_error(id, ErrorCode::Forbidden, &format!("your token does not allow subscribing to {channel}"));
        return Flow::Continue;
    }
    let already = conn.shared.has_channel(channel);
    if !already && conn.shared.channel_count() >= MAX_SUBSCRIPTIONS {
        conn.send_error(
            id,
            ErrorCode::BadRequest,
            &format!("at most {MAX_SUBSCRIPTIONS} subscriptions per connection"),
        );
        return Flow::Continue;
    }
    let state = conn.state.clone();
    let sub = match state.realtime.subscribe(&conn.shared, channel, msg.since, msg.epoch.as_deref()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(channel, error = %e, "subscribe failed");
            conn.send_error(id, ErrorCode::ServiceUnavailable, "subscription backend unavailable; retry shortly");
            return Flow::Continue;
        }
    };
    if !already {
        conn.shared.add_channel(channel);
    }
    let mut reply = json!({"type": "subscribed", "channel": channel, "offset": sub.offset, "epoch": sub.epoch});
    if let Some(r) = sub.recovered {
        reply["recovered"] = json!(r);
    }
    let _ = conn.send_json(&with_id(reply, id));
    // Replayed messages go out before anything queued since: the outbox is drained only after
    // this handler returns.
    for payload in &sub.replay {
        conn.send_text(payload);
    }
    Flow::Continue
}

pub async fn unsubscribe(conn: &mut Connection, text: &[u8], id: Option<&RawValue>) -> Flow {
    let Some(msg) = parse(conn, text, id) else { return Flow::Continue };
    let channel = msg.channel.as_deref().expect("checked");
    if conn.shared.remove_channel(channel) {
        conn.state.realtime.unsubscribe(conn.shared.id, channel).await;
    }
    let _ = conn.send_json(&with_id(json!({"type": "unsubscribed", "channel": channel}), id));
    Flow::Continue
}

pub async fn publish(conn: &mut Connection, text: &[u8], id: Option<&RawValue>) -> Flow {
    let Some(msg) = parse(conn, text, id) else { return Flow::Continue };
    let channel = msg.channel.as_deref().expect("checked");
    if !conn.auth.as_ref().is_none_or(|a| a.may_publish(channel)) {
        conn.send_error(id, ErrorCode::Forbidden, &format!("your token does not allow publishing to {channel}"));
        return Flow::Continue;
    }
    let Some(data) = msg.data else {
        conn.send_error(id, ErrorCode::BadRequest, "publish needs \"data\"");
        return Flow::Continue;
    };
    let state = conn.state.clone();
    match state.realtime.publish(channel, data, state.live.send_queue()).await {
        Ok(offset) => {
            if id.is_some() {
                let _ =
                    conn.send_json(&with_id(json!({"type": "published", "channel": channel, "offset": offset}), id));
            }
        }
        Err(e) => {
            tracing::warn!(channel, error = %e, "publish failed");
            conn.send_error(id, ErrorCode::ServiceUnavailable, "publish backend unavailable; the message was not sent");
        }
    }
    Flow::Continue
}

pub async fn presence(conn: &mut Connection, text: &[u8], id: Option<&RawValue>) -> Flow {
    let Some(msg) = parse(conn, text, id) else { return Flow::Continue };
    let channel = msg.channel.as_deref().expect("checked");
    if !conn.auth.as_ref().is_none_or(|a| a.may_subscribe(channel)) {
        conn.send_error(id, ErrorCode::Forbidden, &format!("your token does not allow seeing {channel}"));
        return Flow::Continue;
    }
    let state = conn.state.clone();
    match state.realtime.presence(channel).await {
        Ok((count, members)) => {
            let reply = json!({"type": "presence", "channel": channel, "count": count, "members": members});
            let _ = conn.send_json(&with_id(reply, id));
        }
        Err(e) => {
            tracing::warn!(channel, error = %e, "presence failed");
            conn.send_error(id, ErrorCode::ServiceUnavailable, "presence backend unavailable; retry shortly");
        }
    }
    Flow::Continue
}
