//! RabbitMQ plumbing shared by ingest, worker and the DLQ tools: connecting, the topology under
//! one namespace, header helpers and the standard dead-letter headers.

use std::collections::BTreeMap;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use waygate_config::Secret;

use crate::error::{Error, Result};

/// The interaction deadline: Discord expects the first answer within 3 s.
pub const INTERACTION_TTL_MS: i64 = 3_000;
/// AMQP heartbeat used when the URL does not set one, so a dead broker is noticed in ~20 s.
const DEFAULT_HEARTBEAT_SECS: u16 = 10;
/// Bound on connecting and on each topology call.
pub const AMQP_TIMEOUT: Duration = Duration::from_secs(15);

/// Headers waygate adds to the messages it publishes.
pub mod header {
    pub const SHARD: &str = "x-waygate-shard";
    pub const SEQ: &str = "x-waygate-seq";
    pub const RECEIVED_AT: &str = "x-waygate-received-at";
    pub const EXPIRES_AT: &str = "x-waygate-expires-at";
    pub const ATTEMPT: &str = "x-waygate-attempt";
    pub const ERROR: &str = "x-waygate-error";
    pub const REPLAY_COUNT: &str = "x-waygate-replay-count";
    pub const ORIGINAL_EXPIRES_AT: &str = "x-waygate-original-expires-at";
    pub const X_DEATH: &str = "x-death";
    pub const FIRST_DEATH_REASON: &str = "x-first-death-reason";
    pub const FIRST_DEATH_QUEUE: &str = "x-first-death-queue";
    pub const FIRST_DEATH_EXCHANGE: &str = "x-first-death-exchange";
    pub const LAST_DEATH_REASON: &str = "x-last-death-reason";
    pub const LAST_DEATH_QUEUE: &str = "x-last-death-queue";
    pub const LAST_DEATH_EXCHANGE: &str = "x-last-death-exchange";
}

/// Queue and exchange names under `WAYGATE_AMQP_NAMESPACE`.
#[derive(Debug, Clone)]
pub struct Topology {
    pub ns: String,
}

impl Topology {
    pub fn new(ns: impl Into<String>) -> Topology {
        Topology { ns: ns.into() }
    }
    /// Queue of `INTERACTION_CREATE` events (TTL 3 s, dead-lettering to the DLQ).
    pub fn interactions(&self) -> String {
        format!("{}.interactions", self.ns)
    }
    /// Topic exchange of every other dispatch event, routing key = event type.
    pub fn events(&self) -> String {
        format!("{}.events", self.ns)
    }
    pub fn dlq(&self) -> String {
        format!("{}.dlq", self.ns)
    }
    /// Fanout exchange the broker dead-letters into; bound to the DLQ.
    pub fn dlx(&self) -> String {
        format!("{}.dlx", self.ns)
    }
    /// Holds one message: the ingestor's last confirmed resume state.
    pub fn ingest_state(&self) -> String {
        format!("{}.ingest.state", self.ns)
    }
    /// Delay queue for retries of `queue` after `delay_ms`.
    pub fn retry_queue(queue: &str, delay_ms: u64) -> String {
        format!("{queue}.retry.{delay_ms}ms")
    }
    pub fn is_retry_queue(queue: &str) -> bool {
        queue.rsplit_once(".retry.").is_some_and(|(_, tail)| tail.ends_with("ms"))
    }

    /// Declares every queue and exchange of the namespace. Idempotent: the same arguments
    /// every time, so ingest and worker can both run it at start in any order.
    pub async fn declare(&self, channel: &Channel) -> Result<()> {
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        timed(channel.exchange_declare(self.events().into(), ExchangeKind::Topic, durable, FieldTable::default()))
            .await?;
        timed(channel.exchange_declare(self.dlx().into(), ExchangeKind::Fanout, durable, FieldTable::default()))
            .await?;
        timed(channel.queue_declare(self.dlq().into(), QueueDeclareOptions::durable(), FieldTable::default())).await?;
        timed(channel.queue_bind(
            self.dlq().into(),
            self.dlx().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ))
        .await?;
        let mut args = FieldTable::default();
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(INTERACTION_TTL_MS));
        args.insert("x-dead-letter-exchange".into(), long_str(&self.dlx()));
        timed(channel.queue_declare(self.interactions().into(), QueueDeclareOptions::durable(), args)).await?;
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
        timed(channel.queue_declare(self.ingest_state().into(), QueueDeclareOptions::durable(), args)).await?;
        Ok(())
    }

    /// Declares the delay queue of `queue` for `delay_ms`: its messages expire after the delay
    /// and the broker dead-letters them back to `queue`. One queue per delay keeps every queue
    /// FIFO in expiry order (a per-message TTL would block behind a longer one at the head).
    pub async fn declare_retry_queue(channel: &Channel, queue: &str, delay_ms: u64) -> Result<String> {
        let name = Topology::retry_queue(queue, delay_ms);
        let mut args = FieldTable::default();
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(delay_ms as i64));
        args.insert("x-dead-letter-exchange".into(), long_str(""));
        args.insert("x-dead-letter-routing-key".into(), long_str(queue));
        timed(channel.queue_declare(name.as_str().into(), QueueDeclareOptions::durable(), args)).await?;
        Ok(name)
    }

    /// Every queue name of the namespace (for cleanup and gauges).
    pub fn queues(&self) -> Vec<String> {
        vec![self.interactions(), self.dlq(), self.ingest_state()]
    }
}

/// Connects with a bounded wait and a heartbeat, naming the connection after the process role.
pub async fn connect(url: &Secret, name: &str) -> Result<Connection> {
    let mut uri: lapin::uri::AMQPUri = url.expose().parse().map_err(|e: String| Error::invalid("AMQP_URL", e))?;
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(DEFAULT_HEARTBEAT_SECS);
    }
    if uri.query.connection_timeout.is_none() {
        uri.query.connection_timeout = Some(AMQP_TIMEOUT.as_millis() as u64);
    }
    let props = ConnectionProperties::default().with_connection_name(name.into());
    timed(Connection::connect_uri(uri, props)).await
}

/// Bounds a broker call: a half-open connection must not hang a task forever.
pub async fn timed<T>(fut: impl std::future::IntoFuture<Output = lapin::Result<T>>) -> Result<T> {
    match tokio::time::timeout(AMQP_TIMEOUT, fut.into_future()).await {
        Ok(r) => r.map_err(Error::from),
        Err(_) => Err(Error::AmqpTimeout(AMQP_TIMEOUT)),
    }
}

pub fn long_str(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

pub fn header<'a>(headers: &'a Option<FieldTable>, key: &str) -> Option<&'a AMQPValue> {
    headers.as_ref()?.inner().get(key)
}

pub fn value_i64(v: &AMQPValue) -> Option<i64> {
    match v {
        AMQPValue::ShortShortInt(x) => Some(i64::from(*x)),
        AMQPValue::ShortShortUInt(x) => Some(i64::from(*x)),
        AMQPValue::ShortInt(x) => Some(i64::from(*x)),
        AMQPValue::ShortUInt(x) => Some(i64::from(*x)),
        AMQPValue::LongInt(x) => Some(i64::from(*x)),
        AMQPValue::LongUInt(x) => Some(i64::from(*x)),
        AMQPValue::LongLongInt(x) => Some(*x),
        AMQPValue::Timestamp(x) => i64::try_from(*x).ok(),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok(),
        AMQPValue::ShortString(s) => s.as_str().parse().ok(),
        _ => None,
    }
}

pub fn value_str(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        other => value_i64(other).map(|i| i.to_string()),
    }
}

pub fn header_i64(headers: &Option<FieldTable>, key: &str) -> Option<i64> {
    header(headers, key).and_then(value_i64)
}

pub fn header_str(headers: &Option<FieldTable>, key: &str) -> Option<String> {
    header(headers, key).and_then(value_str)
}

/// A header table as JSON, for `dlq show` and logs.
pub fn value_to_json(v: &AMQPValue) -> serde_json::Value {
    use serde_json::Value;
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::Float(f) => serde_json::json!(f),
        AMQPValue::Double(f) => serde_json::json!(f),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_to_json).collect()),
        AMQPValue::FieldTable(t) => table_to_json(t),
        AMQPValue::Timestamp(t) => Value::String(waygate_telemetry::millis_to_rfc3339(*t as i64 * 1000)),
        AMQPValue::ByteArray(b) => Value::String(format!("{} bytes", b.len())),
        AMQPValue::Void => Value::Null,
        AMQPValue::DecimalValue(d) => Value::String(format!("{d:?}")),
        other => match value_i64(other) {
            Some(i) if !matches!(other, AMQPValue::LongString(_) | AMQPValue::ShortString(_)) => Value::from(i),
            _ => Value::String(value_str(other).unwrap_or_default()),
        },
    }
}

pub fn table_to_json(t: &FieldTable) -> serde_json::Value {
    serde_json::Value::Object(t.inner().iter().map(|(k, v)| (k.as_str().to_owned(), value_to_json(v))).collect())
}

/// A persistent copy of `props` with new headers, for moving a message to another queue.
/// The per-message `expiration` is dropped on purpose: the copy must not expire on arrival.
pub fn copy_properties(props: &BasicProperties, headers: BTreeMap<ShortString, AMQPValue>) -> BasicProperties {
    let mut out = BasicProperties::default().with_delivery_mode(2).with_headers(FieldTable::from(headers));
    if let Some(v) = props.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = props.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = props.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = props.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = props.app_id() {
        out = out.with_app_id(v.clone());
    }
    out
}

/// Publishes to `queue` through the default exchange on a confirm-mode channel and waits for
/// the broker's confirm; a missing queue (returned message) or a nack is an error.
pub async fn publish_confirmed(channel: &Channel, queue: &str, props: BasicProperties, body: &[u8]) -> Result<()> {
    let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
    let confirm = timed(channel.basic_publish("".into(), queue.into(), opts, body, props)).await?;
    match timed(confirm).await? {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(Error::invalid("queue", format!("{queue} does not exist"))),
        _ => Err(Error::invalid("publish", format!("the broker refused the message for {queue}"))),
    }
}

/// Why a message was dead-lettered, in the broker's own vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeathReason {
    /// The handler failed it (after the last attempt, or with a permanent 4xx).
    Rejected,
    /// Its deadline passed before a handler could take it.
    Expired,
}

impl DeathReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeathReason::Rejected => "rejected",
            DeathReason::Expired => "expired",
        }
    }
}

/// Removes what the retry delay queues wrote into the headers (their `expired` entries in
/// `x-death` and any `x-first-death-*`/`x-last-death-*` naming one), so the history shows
/// only where the message really failed, not the delays it waited through.
pub fn strip_retry_deaths(headers: &mut BTreeMap<ShortString, AMQPValue>) {
    if let Some(AMQPValue::FieldArray(deaths)) = headers.get(header::X_DEATH) {
        let kept: Vec<AMQPValue> = deaths
            .as_slice()
            .iter()
            .filter(|d| {
                let AMQPValue::FieldTable(t) = d else { return true };
                !t.inner().get("queue").and_then(value_str).is_some_and(|q| Topology::is_retry_queue(&q))
            })
            .cloned()
            .collect();
        if kept.is_empty() {
            headers.remove(header::X_DEATH);
        } else {
            headers.insert(header::X_DEATH.into(), AMQPValue::FieldArray(FieldArray::from(kept)));
        }
    }
    for (queue, related) in [
        (header::FIRST_DEATH_QUEUE, [header::FIRST_DEATH_REASON, header::FIRST_DEATH_EXCHANGE]),
        (header::LAST_DEATH_QUEUE, [header::LAST_DEATH_REASON, header::LAST_DEATH_EXCHANGE]),
    ] {
        if headers.get(queue).and_then(value_str).is_some_and(|q| Topology::is_retry_queue(&q)) {
            headers.remove(queue);
            for key in related {
                headers.remove(key);
            }
        }
    }
}

/// Records one death the way RabbitMQ does when it dead-letters: the `x-death` entry for
/// (queue, reason) gets `count + 1` and moves to the front (or a new entry with count 1 is put
/// there), `x-first-death-*` is set only if absent, `x-last-death-*` always.
pub fn record_death(
    headers: &mut BTreeMap<ShortString, AMQPValue>,
    queue: &str,
    exchange: &str,
    routing_key: &str,
    reason: DeathReason,
    now_secs: u64,
) {
    let mut deaths: Vec<AMQPValue> = match headers.remove(header::X_DEATH) {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
        _ => Vec::new(),
    };
    let same = |d: &AMQPValue| match d {
        AMQPValue::FieldTable(t) => {
            t.inner().get("queue").and_then(value_str).as_deref() == Some(queue)
                && t.inner().get("reason").and_then(value_str).as_deref() == Some(reason.as_str())
        }
        _ => false,
    };
    let count = match deaths.iter().position(same) {
        Some(i) => {
            let old = deaths.remove(i);
            match old {
                AMQPValue::FieldTable(t) => t.inner().get("count").and_then(value_i64).unwrap_or(0) + 1,
                _ => 1,
            }
        }
        None => 1,
    };
    let mut entry = FieldTable::default();
    entry.insert("count".into(), AMQPValue::LongLongInt(count));
    entry.insert("reason".into(), long_str(reason.as_str()));
    entry.insert("queue".into(), long_str(queue));
    entry.insert("time".into(), AMQPValue::Timestamp(now_secs));
    entry.insert("exchange".into(), long_str(exchange));
    entry.insert("routing-keys".into(), AMQPValue::FieldArray(FieldArray::from(vec![long_str(routing_key)])));
    deaths.insert(0, AMQPValue::FieldTable(entry));
    headers.insert(header::X_DEATH.into(), AMQPValue::FieldArray(FieldArray::from(deaths)));
    if !headers.contains_key(header::FIRST_DEATH_REASON) {
        headers.insert(header::FIRST_DEATH_REASON.into(), long_str(reason.as_str()));
        headers.insert(header::FIRST_DEATH_QUEUE.into(), long_str(queue));
        headers.insert(header::FIRST_DEATH_EXCHANGE.into(), long_str(exchange));
    }
    headers.insert(header::LAST_DEATH_REASON.into(), long_str(reason.as_str()));
    headers.insert(header::LAST_DEATH_QUEUE.into(), long_str(queue));
    headers.insert(header::LAST_DEATH_EXCHANGE.into(), long_str(exchange));
}

/// The queue a dead letter came from: the newest `x-death` entry that is not a retry queue.
pub fn death_queue(headers: &Option<FieldTable>) -> Option<String> {
    match header(headers, header::X_DEATH)? {
        AMQPValue::FieldArray(a) => a.as_slice().iter().find_map(|d| match d {
            AMQPValue::FieldTable(t) => {
                t.inner().get("queue").and_then(value_str).filter(|q| !Topology::is_retry_queue(q))
            }
            _ => None,
        }),
        _ => None,
    }
    .or_else(|| header_str(headers, header::FIRST_DEATH_QUEUE))
}

/// `count` of the newest `x-death` entry.
pub fn death_count(headers: &Option<FieldTable>) -> Option<i64> {
    match header(headers, header::X_DEATH)? {
        AMQPValue::FieldArray(a) => match a.as_slice().first()? {
            AMQPValue::FieldTable(t) => t.inner().get("count").and_then(value_i64),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deaths_are_recorded_like_the_broker_and_retry_hops_are_removed() {
        let mut h = BTreeMap::new();
        // A hop through a delay queue, as the broker writes it.
        record_death(&mut h, "ns.interactions.retry.200ms", "", "ns.interactions.retry.200ms", DeathReason::Expired, 1);
        assert_eq!(h.get(header::FIRST_DEATH_REASON).and_then(value_str).as_deref(), Some("expired"));
        strip_retry_deaths(&mut h);
        assert!(h.is_empty(), "{h:?}");

        record_death(&mut h, "ns.interactions", "", "ns.interactions", DeathReason::Rejected, 2);
        record_death(&mut h, "ns.interactions", "", "ns.interactions", DeathReason::Expired, 3);
        record_death(&mut h, "ns.interactions", "", "ns.interactions", DeathReason::Rejected, 4);
        let table = FieldTable::from(h.clone());
        let json = table_to_json(&table);
        let deaths = json["x-death"].as_array().unwrap();
        assert_eq!(deaths.len(), 2);
        assert_eq!((deaths[0]["reason"].as_str(), deaths[0]["count"].as_i64()), (Some("rejected"), Some(2)));
        assert_eq!((deaths[1]["reason"].as_str(), deaths[1]["count"].as_i64()), (Some("expired"), Some(1)));
        assert_eq!(deaths[0]["routing-keys"][0], "ns.interactions");
        assert_eq!(json["x-first-death-reason"], "rejected");
        assert_eq!(json["x-last-death-reason"], "rejected");
        let headers = Some(table);
        assert_eq!(death_queue(&headers).as_deref(), Some("ns.interactions"));
        assert_eq!(death_count(&headers), Some(2));
    }

    #[test]
    fn retry_queue_names() {
        assert_eq!(Topology::retry_queue("a.interactions", 400), "a.interactions.retry.400ms");
        assert!(Topology::is_retry_queue("a.interactions.retry.400ms"));
        assert!(!Topology::is_retry_queue("a.interactions"));
        assert!(!Topology::is_retry_queue("a.retry.queue"));
    }
}
