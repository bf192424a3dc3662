//! Cross-instance messaging. Each instance receives messages addressed to it, messages for
//! every instance, and messages on the channels it subscribed to. Embedded mode delivers in
//! process; cluster mode uses Redis pub/sub over a RESP3 connection manager that reconnects
//! and resubscribes by itself.
//!
//! Payloads are opaque bytes: the server defines what they mean.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::mpsc;

/// Deliveries waiting for the server's bus task; past this they are dropped and counted.
const INBOX: usize = 16_384;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("bus timed out talking to redis")]
    Timeout,
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// One instance, by id.
    Instance(String),
    /// Every instance, this one included.
    All,
    /// Every instance subscribed to the channel.
    Channel(String),
}

/// Something that arrived for this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Message {
        topic: Topic,
        payload: Bytes,
    },
    /// The Redis link dropped and came back: messages in between were lost.
    Reconnected,
}

#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    instance_id: String,
    prefix: String,
    tx: mpsc::Sender<Delivery>,
    rx: Mutex<Option<mpsc::Receiver<Delivery>>>,
    redis: Option<RedisLink>,
    dropped: Arc<AtomicU64>,
}

struct RedisLink {
    /// Commands and PUBLISH.
    cmd: ConnectionManager,
    /// SUBSCRIBE only: pushes arrive on this connection.
    sub: ConnectionManager,
    channels: tokio::sync::Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.inner.redis.is_some() { "Bus(redis)" } else { "Bus(local)" })
    }
}

impl Bus {
    /// Embedded mode: everything stays in this process.
    pub fn local(instance_id: &str) -> Bus {
        let (tx, rx) = mpsc::channel(INBOX);
        Bus::assemble(instance_id, "waygate", tx, rx, Arc::default(), None)
    }

    fn assemble(
        instance_id: &str,
        prefix: &str,
        tx: mpsc::Sender<Delivery>,
        rx: mpsc::Receiver<Delivery>,
        dropped: Arc<AtomicU64>,
        redis: Option<RedisLink>,
    ) -> Bus {
        Bus {
            inner: Arc::new(Inner {
                instance_id: instance_id.to_owned(),
                prefix: prefix.to_owned(),
                tx,
                rx: Mutex::new(Some(rx)),
                redis,
                dropped,
            }),
        }
    }

    /// Cluster mode on Redis. Keys and channels are named `{prefix}:…`.
    pub async fn redis(url: &str, prefix: &str, instance_id: &str) -> Result<Bus, BusError> {
        let info = url.into_connection_info()?;
        let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))?;
        let base = || {
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(3)))
                .set_response_timeout(Some(Duration::from_secs(3)))
                .set_max_delay(Duration::from_secs(2))
        };
        let cmd = with_timeout(client.get_connection_manager_with_config(base())).await?;

        // The push sender runs on the connection's driver: it must not block, so it hands
        // messages to a bounded queue and counts what does not fit.
        let (tx, rx) = mpsc::channel(INBOX);
        let connected = Arc::new(AtomicBool::new(true));
        let channel_prefix = format!("{prefix}:");
        let (push_tx, push_connected) = (tx.clone(), connected.clone());
        let dropped = Arc::new(AtomicU64::new(0));
        let push_dropped = dropped.clone();
        let push = move |info: PushInfo| -> Result<(), std::convert::Infallible> {
            let delivery = match info.kind {
                PushKind::Message => decode_message(&channel_prefix, &info.data),
                PushKind::Disconnection => {
                    push_connected.store(false, Ordering::Relaxed);
                    None
                }
                PushKind::Subscribe => {
                    // A (re)subscription confirmed after a disconnection: tell the server.
                    if !push_connected.swap(true, Ordering::Relaxed) { Some(Delivery::Reconnected) } else { None }
                }
                _ => None,
            };
            if let Some(d) = delivery
                && push_tx.try_send(d).is_err()
            {
                push_dropped.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        };
        let mut sub = with_timeout(
            client.get_connection_manager_with_config(base().set_push_sender(push).set_automatic_resubscription()),
        )
        .await?;
        with_timeout(sub.subscribe(&[format!("{prefix}:i:{instance_id}"), format!("{prefix}:all")])).await?;
        let link = RedisLink { cmd, sub, channels: Default::default() };
        Ok(Bus::assemble(instance_id, prefix, tx, rx, dropped, Some(link)))
    }

    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
    }

    pub fn is_distributed(&self) -> bool {
        self.inner.redis.is_some()
    }

    /// Messages dropped because the inbox was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// The receiving end, for the one task that handles deliveries. `None` after the first call.
    pub fn take_deliveries(&self) -> Option<mpsc::Receiver<Delivery>> {
        self.inner.rx.lock().expect("bus lock").take()
    }

    /// A Redis key in this deployment's namespace.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}:{suffix}", self.inner.prefix)
    }

    /// A command connection for other Redis users (presence, history, tokens).
    pub fn redis_connection(&self) -> Option<ConnectionManager> {
        self.inner.redis.as_ref().map(|r| r.cmd.clone())
    }

    fn channel_name(&self, topic: &Topic) -> String {
        match topic {
            Topic::Instance(id) => self.key(&format!("i:{id}")),
            Topic::All => self.key("all"),
            Topic::Channel(c) => self.key(&format!("c:{c}")),
        }
    }

    /// Sends a message. In embedded mode it is delivered here when this instance is a
    /// recipient; with Redis it goes through PUBLISH (so this instance hears its own `All`
    /// and channel messages like every other instance does).
    pub async fn publish(&self, topic: Topic, payload: Bytes) -> Result<(), BusError> {
        match &self.inner.redis {
            None => {
                let for_me = match &topic {
                    Topic::Instance(id) => *id == self.inner.instance_id,
                    Topic::All | Topic::Channel(_) => true,
                };
                if for_me && self.inner.tx.try_send(Delivery::Message { topic, payload }).is_err() {
                    self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
            Some(link) => {
                let mut con = link.cmd.clone();
                let channel = self.channel_name(&topic);
                with_timeout(redis::cmd("PUBLISH").arg(channel).arg(payload.as_ref()).query_async::<i64>(&mut con))
                    .await?;
                Ok(())
            }
        }
    }

    /// Starts receiving a channel's messages on this instance (idempotent).
    pub async fn subscribe_channel(&self, channel: &str) -> Result<(), BusError> {
        let Some(link) = &self.inner.redis else { return Ok(()) };
        let mut subscribed = link.channels.lock().await;
        if subscribed.insert(channel.to_owned()) {
            let mut sub = link.sub.clone();
            if let Err(e) = with_timeout(sub.subscribe(self.channel_name(&Topic::Channel(channel.to_owned())))).await {
                subscribed.remove(channel);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Stops receiving a channel's messages on this instance (idempotent).
    pub async fn unsubscribe_channel(&self, channel: &str) -> Result<(), BusError> {
        let Some(link) = &self.inner.redis else { return Ok(()) };
        let mut subscribed = link.channels.lock().await;
        if subscribed.remove(channel) {
            let mut sub = link.sub.clone();
            with_timeout(sub.unsubscribe(self.channel_name(&Topic::Channel(channel.to_owned())))).await?;
        }
        Ok(())
    }

    /// Readiness: a round trip to Redis (always fine in embedded mode).
    pub async fn ping(&self) -> Result<(), BusError> {
        let Some(link) = &self.inner.redis else { return Ok(()) };
        let mut con = link.cmd.clone();
        with_timeout(redis::cmd("PING").query_async::<String>(&mut con)).await?;
        Ok(())
    }
}

async fn with_timeout<T>(f: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T, BusError> {
    match tokio::time::timeout(Duration::from_secs(5), f).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(BusError::Timeout),
    }
}

fn decode_message(prefix: &str, data: &[Value]) -> Option<Delivery> {
    let [channel, payload] = data else { return None };
    let channel = match channel {
        Value::BulkString(b) => std::str::from_utf8(b).ok()?,
        _ => return None,
    };
    let payload = match payload {
        Value::BulkString(b) => Bytes::copy_from_slice(b),
        _ => return None,
    };
    let rest = channel.strip_prefix(prefix)?;
    let topic = if rest == "all" {
        Topic::All
    } else if let Some(id) = rest.strip_prefix("i:") {
        Topic::Instance(id.to_owned())
    } else if let Some(c) = rest.strip_prefix("c:") {
        Topic::Channel(c.to_owned())
    } else {
        return None;
    };
    Some(Delivery::Message { topic, payload })
}

#[cfg(test)]
mod tests;
