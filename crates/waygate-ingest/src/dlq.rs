//! `waygate dlq list|show|replay|purge`: inspect and act on a dead-letter queue.
//!
//! RabbitMQ has no browse operation, so `list` and `show` take messages with `basic.get`
//! without acknowledging them and close the channel, which puts every one of them back in its
//! original position. `replay` publishes a copy to the queue the message died in (or `--to`),
//! with publisher confirms, and acknowledges the original only after the broker confirmed
//! the copy: a crash in between leaves a duplicate, never a loss.

use std::collections::BTreeMap;

use lapin::options::{BasicAckOptions, BasicGetOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use serde::Serialize;
use serde_json::{Value, json};
use waygate_config::Secret;

use crate::amqp::{self, header};
use crate::error::{Error, Result};

/// One dead letter, as `list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// `message_id`, or a hash of the body when the publisher set none.
    pub id: String,
    pub event: Option<String>,
    /// `x-first-death-reason`.
    pub reason: Option<String>,
    /// The queue it died in.
    pub queue: Option<String>,
    /// `count` of the newest `x-death` entry.
    pub count: Option<i64>,
    pub attempts: Option<i64>,
    pub error: Option<String>,
    pub replays: i64,
    pub died_at: Option<String>,
    pub bytes: usize,
}

/// A dead letter with everything: headers, properties and body.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterDetail {
    #[serde(flatten)]
    pub summary: DeadLetter,
    pub properties: Value,
    pub headers: Value,
    /// The body as JSON when it is JSON, else as text.
    pub body: Value,
}

pub struct Dlq {
    conn: Connection,
    queue: String,
}

fn body_id(body: &[u8]) -> String {
    // FNV-1a: stable across runs and processes (std's hasher is seeded per process).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("body-{h:016x}")
}

fn summarize(props: &BasicProperties, body: &[u8]) -> DeadLetter {
    let h = props.headers();
    let died_at = match amqp::header(h, header::X_DEATH) {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().first().and_then(|d| match d {
            AMQPValue::FieldTable(t) => {
                t.inner().get("time").map(amqp::value_to_json).and_then(|v| v.as_str().map(str::to_owned))
            }
            _ => None,
        }),
        _ => None,
    };
    DeadLetter {
        id: props.message_id().as_ref().map(|m| m.to_string()).unwrap_or_else(|| body_id(body)),
        event: props.kind().as_ref().map(|k| k.to_string()),
        reason: amqp::header_str(h, header::FIRST_DEATH_REASON),
        queue: amqp::death_queue(h),
        count: amqp::death_count(h),
        attempts: amqp::header_i64(h, header::ATTEMPT),
        error: amqp::header_str(h, header::ERROR),
        replays: amqp::header_i64(h, header::REPLAY_COUNT).unwrap_or(0),
        died_at,
        bytes: body.len(),
    }
}

fn detail(props: &BasicProperties, body: &[u8]) -> DeadLetterDetail {
    let mut p = serde_json::Map::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            p.insert(k.to_owned(), Value::String(v));
        }
    };
    put("message_id", props.message_id().as_ref().map(|v| v.to_string()));
    put("type", props.kind().as_ref().map(|v| v.to_string()));
    put("content_type", props.content_type().as_ref().map(|v| v.to_string()));
    put("app_id", props.app_id().as_ref().map(|v| v.to_string()));
    put("timestamp", props.timestamp().map(|t| waygate_telemetry::millis_to_rfc3339(t as i64 * 1000)));
    let body_json = serde_json::from_slice::<Value>(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
    DeadLetterDetail {
        summary: summarize(props, body),
        properties: Value::Object(p),
        headers: props.headers().as_ref().map(amqp::table_to_json).unwrap_or_else(|| json!({})),
        body: body_json,
    }
}

/// Which messages `replay` takes.
pub enum Select<'a> {
    All,
    Ids(&'a [String]),
}

impl Dlq {
    pub async fn open(url: &Secret, queue: &str) -> Result<Dlq> {
        let conn = amqp::connect(url, "waygate-dlq").await?;
        let dlq = Dlq { conn, queue: queue.to_owned() };
        dlq.depth().await?;
        Ok(dlq)
    }

    /// Messages in the queue; an error naming the queue when it does not exist.
    pub async fn depth(&self) -> Result<u32> {
        let channel = amqp::timed(self.conn.create_channel()).await?;
        let declared = amqp::timed(channel.queue_declare(
            self.queue.as_str().into(),
            QueueDeclareOptions::default().passive(),
            FieldTable::default(),
        ))
        .await;
        match declared {
            Ok(q) => {
                let _ = channel.close(200, "bye".into()).await;
                Ok(q.message_count())
            }
            Err(e) => Err(Error::invalid("--queue", format!("queue {} cannot be read: {e}", self.queue))),
        }
    }

    /// Takes up to `limit` messages without acknowledging them, runs `f` on each, then closes
    /// the channel so the broker puts them all back where they were.
    async fn peek<T>(&self, limit: usize, mut f: impl FnMut(&BasicProperties, &[u8]) -> Option<T>) -> Result<Vec<T>> {
        let channel = amqp::timed(self.conn.create_channel()).await?;
        let mut out = Vec::new();
        let mut seen = 0;
        while seen < limit {
            let got =
                amqp::timed(channel.basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: false })).await?;
            let Some(msg) = got else { break };
            seen += 1;
            if let Some(t) = f(&msg.delivery.properties, &msg.delivery.data) {
                out.push(t);
            }
            if msg.message_count == 0 {
                break;
            }
        }
        let _ = amqp::timed(channel.close(200, "peek done".into())).await;
        Ok(out)
    }

    pub async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        self.peek(limit, |p, b| Some(summarize(p, b))).await
    }

    pub async fn show(&self, id: &str) -> Result<Option<DeadLetterDetail>> {
        let depth = self.depth().await? as usize;
        let found = self.peek(depth, |p, b| (summarize(p, b).id == id).then(|| detail(p, b))).await?;
        Ok(found.into_iter().next())
    }

    /// Replays the selected messages to their original queue (or `to`); returns what moved.
    /// Only the messages present when it starts are considered, so a message that fails again
    /// and comes back during the replay is not replayed twice.
    pub async fn replay(&self, select: Select<'_>, to: Option<&str>) -> Result<Vec<(String, String)>> {
        let depth = self.depth().await? as usize;
        let get = amqp::timed(self.conn.create_channel()).await?;
        let publish = amqp::timed(self.conn.create_channel()).await?;
        amqp::timed(publish.confirm_select(ConfirmSelectOptions::default())).await?;
        let mut moved = Vec::new();
        let mut problems = Vec::new();
        for _ in 0..depth {
            let got = amqp::timed(get.basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: false })).await?;
            let Some(msg) = got else { break };
            let props = &msg.delivery.properties;
            let summary = summarize(props, &msg.delivery.data);
            let wanted = match &select {
                Select::All => true,
                Select::Ids(ids) => ids.contains(&summary.id),
            };
            if !wanted {
                continue;
            }
            let Some(target) = to.map(str::to_owned).or(summary.queue.clone()) else {
                problems.push(format!("{}: no x-death queue to return it to (use --to)", summary.id));
                continue;
            };
            replay_one(&publish, &target, props, &msg.delivery.data).await?;
            amqp::timed(msg.delivery.acker.ack(BasicAckOptions::default())).await?;
            moved.push((summary.id, target));
        }
        // Unselected messages go back when the channel closes.
        let _ = amqp::timed(get.close(200, "replay done".into())).await;
        let _ = amqp::timed(publish.close(200, "replay done".into())).await;
        if let Select::Ids(ids) = select {
            for id in ids {
                if !moved.iter().any(|(m, _)| m == id) && !problems.iter().any(|p| p.starts_with(id.as_str())) {
                    problems.push(format!("{id}: not in {}", self.queue));
                }
            }
        }
        if !problems.is_empty() {
            return Err(Error::invalid("replay", format!("moved {} message(s); {}", moved.len(), problems.join("; "))));
        }
        Ok(moved)
    }

    pub async fn purge(&self) -> Result<u32> {
        let channel = amqp::timed(self.conn.create_channel()).await?;
        let n = amqp::timed(channel.queue_purge(self.queue.as_str().into(), Default::default())).await?;
        let _ = channel.close(200, "bye".into()).await;
        Ok(n)
    }

    pub async fn close(self) {
        let _ = amqp::timed(self.conn.close(200, "bye".into())).await;
    }
}

/// Publishes a replay copy: the death history stays for the record, the attempt count starts
/// over, `x-waygate-replay-count` goes up, and the deadline is lifted (an operator replaying a
/// message decided it is still worth handling; the old deadline is kept for reference).
async fn replay_one(channel: &Channel, queue: &str, props: &BasicProperties, body: &[u8]) -> Result<()> {
    let mut headers: BTreeMap<ShortString, AMQPValue> =
        props.headers().as_ref().map(|t| t.inner().clone()).unwrap_or_default();
    let replays = amqp::header_i64(props.headers(), header::REPLAY_COUNT).unwrap_or(0);
    headers.insert(header::REPLAY_COUNT.into(), AMQPValue::LongLongInt(replays + 1));
    headers.insert(header::ATTEMPT.into(), AMQPValue::LongLongInt(1));
    if let Some(e) = headers.remove(header::EXPIRES_AT) {
        headers.insert(header::ORIGINAL_EXPIRES_AT.into(), e);
    }
    amqp::publish_confirmed(channel, queue, amqp::copy_properties(props, headers), body).await
}
