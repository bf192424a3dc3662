//! Channels: subscribers on this instance, offsets, bounded history for recovery, presence.
//!
//! A published message is encoded once: the JSON payload
//! `{"type":"message","channel":…,"data":…,"offset":N}` and its WebSocket frame are built a
//! single time and the frame (`Bytes`) is reference-counted into every subscriber's outbox.
//!
//! Embedded mode keeps offsets and history here. Cluster mode keeps them in Redis: one Lua
//! script assigns the offset, appends to the history and PUBLISHes the payload; every instance
//! with local subscribers receives it from Redis and fans it out locally, so all instances see
//! one order.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use serde_json::value::RawValue;
use waygate_bus::Bus;

use crate::ws::{ConnShared, Push};

/// Most members a presence answer lists (the count is always exact).
pub const PRESENCE_LIMIT: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum RealtimeError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("bus: {0}")]
    Bus(#[from] waygate_bus::BusError),
}

/// What a subscription learned about the channel.
#[derive(Debug, Default)]
pub struct Subscribed {
    /// Offset of the newest message (0 when none yet).
    pub offset: u64,
    pub epoch: String,
    /// Set when the client asked to recover (`since`).
    pub recovered: Option<bool>,
    /// Payloads to replay, oldest first.
    pub replay: Vec<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub connection_id: String,
    pub user_id: Option<String>,
}

struct Channel {
    state: Mutex<ChannelState>,
}

struct ChannelState {
    subs: Vec<Arc<ConnShared>>,
    /// Embedded mode only: `(offset, payload)`, oldest first.
    history: VecDeque<(u64, Bytes)>,
    next_offset: u64,
    epoch: String,
    last_publish: Instant,
}

pub struct Realtime {
    channels: DashMap<Box<str>, Arc<Channel>>,
    redis: Option<RedisEngine>,
    history_size: usize,
    history_ttl: Duration,
}

struct RedisEngine {
    bus: Bus,
    con: redis::aio::ConnectionManager,
    publish: redis::Script,
    recover: redis::Script,
    instance_id: String,
}

/// KEYS: seq, hist, epoch, pubsub channel. ARGV: payload prefix, suffix, history size, ttl, new epoch.
const PUBLISH_LUA: &str = r#"
local off = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[3], ARGV[5], 'NX')
local payload = ARGV[1] .. off .. ARGV[2]
local size = tonumber(ARGV[3])
if size > 0 then
  redis.call('ZADD', KEYS[2], off, payload)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(size + 1))
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[4])
redis.call('PUBLISH', KEYS[4], payload)
return off
"#;

/// KEYS: seq, hist, epoch. ARGV: since (or -1), new epoch. Returns {last, epoch, oldest|-1, payloads...}.
const RECOVER_LUA: &str = r#"
redis.call('SET', KEYS[3], ARGV[2], 'NX')
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local epoch = redis.call('GET', KEYS[3])
local since = tonumber(ARGV[1])
local out = {last, epoch, -1}
if since >= 0 and since < last then
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if first[2] then out[3] = tonumber(first[2]) end
  local items = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. since, '+inf')
  for i = 1, #items do out[#out + 1] = items[i] end
end
return out
"#;

fn new_epoch() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// `{"type":"message","channel":…,"data":…,"offset":` — the part before the offset.
fn payload_prefix(channel: &str, data: &RawValue) -> String {
    let mut s = String::with_capacity(48 + channel.len() + data.get().len());
    s.push_str(r#"{"type":"message","channel":"#);
    s.push_str(&serde_json::to_string(channel).expect("strings serialize"));
    s.push_str(r#","data":"#);
    s.push_str(data.get());
    s.push_str(r#","offset":"#);
    s
}

impl Realtime {
    pub fn new(bus: &Bus, history_size: usize, history_ttl: Duration, instance_id: &str) -> Realtime {
        let redis = bus.redis_connection().map(|con| RedisEngine {
            bus: bus.clone(),
            con,
            publish: redis::Script::new(PUBLISH_LUA),
            recover: redis::Script::new(RECOVER_LUA),
            instance_id: instance_id.to_owned(),
        });
        Realtime { channels: DashMap::new(), redis, history_size, history_ttl }
    }

    fn channel(&self, name: &str) -> Arc<Channel> {
        if let Some(c) = self.channels.get(name) {
            return c.clone();
        }
        self.channels
            .entry(name.into())
            .or_insert_with(|| {
                Arc::new(Channel {
                    state: Mutex::new(ChannelState {
                        subs: Vec::new(),
                        history: VecDeque::new(),
                        next_offset: 1,
                        epoch: new_epoch(),
                        last_publish: Instant::now(),
                    }),
                })
            })
            .clone()
    }

    /// Adds `conn` to the channel and, with `since`, collects the messages it missed.
    pub async fn subscribe(
        &self,
        conn: &Arc<ConnShared>,
        channel: &str,
        since: Option<u64>,
        epoch: Option<&str>,
    ) -> Result<Subscribed, RealtimeError> {
        let ch = self.channel(channel);
        let first_here = {
            let mut st = ch.state.lock().expect("channel lock");
            let first = st.subs.is_empty();
            if !st.subs.iter().any(|s| s.id == conn.id) {
                st.subs.push(conn.clone());
            }
            if self.redis.is_none() {
                return Ok(recover_local(&st, since, epoch));
            }
            first
        };
        let engine = self.redis.as_ref().expect("cluster engine");
        // Subscribe before reading the history so nothing published in between is missed
        // (it may arrive twice instead: clients drop offsets they already have).
        if first_here {
            engine.bus.subscribe_channel(channel).await?;
        }
        let mut con = engine.con.clone();
        let member = serde_json::json!({ "i": engine.instance_id, "u": conn.user_id.as_deref() }).to_string();
        redis::cmd("HSET")
            .arg(engine.bus.key(&format!("ch:{channel}:pres")))
            .arg(conn.id_hex())
            .arg(member)
            .query_async::<i64>(&mut con)
            .await?;
        let reply: Vec<redis::Value> = engine
            .recover
            .key(engine.bus.key(&format!("ch:{channel}:seq")))
            .key(engine.bus.key(&format!("ch:{channel}:hist")))
            .key(engine.bus.key(&format!("ch:{channel}:epoch")))
            .arg(since.map_or(-1, |s| s as i64))
            .arg(new_epoch())
            .invoke_async(&mut con)
            .await?;
        Ok(recover_remote(&reply, since, epoch))
    }

    /// Removes `conn` from the channel.
    pub async fn unsubscribe(&self, conn_id: u128, channel: &str) {
        let Some(ch) = self.channels.get(channel).map(|c| c.clone()) else { return };
        let now_empty = {
            let mut st = ch.state.lock().expect("channel lock");
            let before = st.subs.len();
            st.subs.retain(|s| s.id != conn_id);
            before > 0 && st.subs.is_empty()
        };
        let Some(engine) = &self.redis else { return };
        let mut con = engine.con.clone();
        let removed = redis::cmd("HDEL")
            .arg(engine.bus.key(&format!("ch:{channel}:pres")))
            .arg(format!("{conn_id:032x}"))
            .query_async::<i64>(&mut con)
            .await;
        if let Err(e) = removed {
            tracing::warn!(channel, error = %e, "presence not updated");
        }
        if now_empty && let Err(e) = engine.bus.unsubscribe_channel(channel).await {
            tracing::warn!(channel, error = %e, "could not unsubscribe the instance from the channel");
        }
    }

    /// Publishes `data`; returns its offset.
    pub async fn publish(&self, channel: &str, data: &RawValue, send_queue: usize) -> Result<u64, RealtimeError> {
        let prefix = payload_prefix(channel, data);
        let Some(engine) = &self.redis else {
            let ch = self.channel(channel);
            let mut st = ch.state.lock().expect("channel lock");
            let offset = st.next_offset;
            st.next_offset += 1;
            st.last_publish = Instant::now();
            let mut payload = prefix.into_bytes();
            payload.extend_from_slice(offset.to_string().as_bytes());
            payload.push(b'}');
            let payload = Bytes::from(payload);
            if self.history_size > 0 {
                if st.history.len() >= self.history_size {
                    st.history.pop_front();
                }
                st.history.push_back((offset, payload.clone()));
            }
            fan_out(&st.subs, &waygate_ws::text_frame(&payload), send_queue);
            return Ok(offset);
        };
        let mut con = engine.con.clone();
        let offset: u64 = engine
            .publish
            .key(engine.bus.key(&format!("ch:{channel}:seq")))
            .key(engine.bus.key(&format!("ch:{channel}:hist")))
            .key(engine.bus.key(&format!("ch:{channel}:epoch")))
            .key(engine.bus.key(&format!("c:{channel}")))
            .arg(prefix)
            .arg("}")
            .arg(self.history_size)
            .arg(self.history_ttl.as_secs().max(1))
            .arg(new_epoch())
            .invoke_async(&mut con)
            .await?;
        Ok(offset)
    }

    /// Cluster mode: a message for `channel` arrived from Redis; fan it out locally.
    pub fn deliver(&self, channel: &str, payload: &[u8], send_queue: usize) {
        let Some(ch) = self.channels.get(channel).map(|c| c.clone()) else { return };
        let frame = waygate_ws::text_frame(payload);
        let st = ch.state.lock().expect("channel lock");
        fan_out(&st.subs, &frame, send_queue);
    }

    /// Who is subscribed: `(count, first PRESENCE_LIMIT members)`.
    pub async fn presence(&self, channel: &str) -> Result<(usize, Vec<Member>), RealtimeError> {
        let Some(engine) = &self.redis else {
            let Some(ch) = self.channels.get(channel).map(|c| c.clone()) else { return Ok((0, vec![])) };
            let st = ch.state.lock().expect("channel lock");
            let members = st
                .subs
                .iter()
                .take(PRESENCE_LIMIT)
                .map(|c| Member { connection_id: c.id_hex(), user_id: c.user_id.as_deref().map(str::to_owned) })
                .collect();
            return Ok((st.subs.len(), members));
        };
        let mut con = engine.con.clone();
        let key = engine.bus.key(&format!("ch:{channel}:pres"));
        let all: Vec<(String, String)> = redis::cmd("HGETALL").arg(&key).query_async(&mut con).await?;
        // Members of instances that stopped heartbeating are dropped here (and from Redis).
        let mut alive = std::collections::HashMap::new();
        let mut members = Vec::new();
        let mut dead = Vec::new();
        for (conn, raw) in all {
            let v: serde_json::Value = serde_json::from_str(&raw).unwrap_or_default();
            let instance = v["i"].as_str().unwrap_or_default().to_owned();
            let live = match alive.get(&instance) {
                Some(l) => *l,
                None => {
                    let l: bool = redis::cmd("EXISTS")
                        .arg(engine.bus.key(&format!("alive:{instance}")))
                        .query_async(&mut con)
                        .await?;
                    alive.insert(instance.clone(), l);
                    l
                }
            };
            if live {
                members.push(Member { connection_id: conn, user_id: v["u"].as_str().map(str::to_owned) });
            } else {
                dead.push(conn);
            }
        }
        if !dead.is_empty() {
            let _ = redis::cmd("HDEL").arg(&key).arg(&dead).query_async::<i64>(&mut con).await;
        }
        let count = members.len();
        members.truncate(PRESENCE_LIMIT);
        Ok((count, members))
    }

    /// Cluster mode: tells other instances this one is alive (presence filters on it).
    pub async fn heartbeat(&self, period: Duration) {
        let Some(engine) = &self.redis else { return };
        let mut con = engine.con.clone();
        let r = redis::cmd("SET")
            .arg(engine.bus.key(&format!("alive:{}", engine.instance_id)))
            .arg(1)
            .arg("EX")
            .arg((period.as_secs() * 3).max(3))
            .query_async::<String>(&mut con)
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "instance liveness not refreshed in redis");
        }
    }

    /// Forgets channels with no subscribers whose history has outlived its TTL.
    pub fn sweep(&self) {
        let ttl = self.history_ttl;
        self.channels.retain(|_, ch| {
            let st = ch.state.lock().expect("channel lock");
            !st.subs.is_empty() || st.last_publish.elapsed() < ttl
        });
    }
}

/// Queues one shared frame for every subscriber. A full outbox closes that subscriber as a
/// slow consumer; the others are unaffected.
fn fan_out(subs: &[Arc<ConnShared>], frame: &Bytes, send_queue: usize) {
    for sub in subs {
        if sub.push(frame.clone(), send_queue) == Push::Overflow {
            tracing::info!(connection_id = %sub.id_hex(), "slow consumer: send queue full");
        }
    }
}

fn recover_local(st: &ChannelState, since: Option<u64>, epoch: Option<&str>) -> Subscribed {
    let last = st.next_offset - 1;
    let mut out = Subscribed { offset: last, epoch: st.epoch.clone(), ..Default::default() };
    let Some(since) = since else { return out };
    if epoch.is_some_and(|e| e != st.epoch) || since > last {
        out.recovered = Some(false);
        return out;
    }
    if since == last {
        out.recovered = Some(true);
        return out;
    }
    match st.history.front() {
        Some((oldest, _)) if *oldest <= since + 1 => {
            out.recovered = Some(true);
            out.replay = st.history.iter().filter(|(o, _)| *o > since).map(|(_, p)| p.clone()).collect();
        }
        _ => out.recovered = Some(false),
    }
    out
}

fn recover_remote(reply: &[redis::Value], since: Option<u64>, epoch: Option<&str>) -> Subscribed {
    use redis::Value as V;
    let int = |v: Option<&V>| match v {
        Some(V::Int(i)) => *i,
        _ => -1,
    };
    let text = |v: Option<&V>| match v {
        Some(V::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(V::SimpleString(s)) => s.clone(),
        _ => String::new(),
    };
    let last = int(reply.first()).max(0) as u64;
    let current_epoch = text(reply.get(1));
    let oldest = int(reply.get(2));
    let mut out = Subscribed { offset: last, epoch: current_epoch.clone(), ..Default::default() };
    let Some(since) = since else { return out };
    if epoch.is_some_and(|e| e != current_epoch) || since > last {
        out.recovered = Some(false);
    } else if since == last {
        out.recovered = Some(true);
    } else if oldest >= 0 && oldest as u64 <= since + 1 {
        out.recovered = Some(true);
        out.replay = reply[3..]
            .iter()
            .filter_map(|v| match v {
                V::BulkString(b) => Some(Bytes::copy_from_slice(b)),
                _ => None,
            })
            .collect();
    } else {
        out.recovered = Some(false);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[tokio::test]
    async fn embedded_offsets_history_and_recovery() {
        let bus = Bus::local("t");
        let rt = Realtime::new(&bus, 3, Duration::from_secs(60), "t");
        let conn = Arc::new(ConnShared::new(7, None));
        let sub = rt.subscribe(&conn, "room", None, None).await.unwrap();
        assert_eq!((sub.offset, sub.recovered), (0, None));
        for i in 1..=5 {
            assert_eq!(rt.publish("room", &raw(&i.to_string()), 100).await.unwrap(), i);
        }
        assert_eq!(conn.len(), 5, "every message queued once");
        let mut frames = vec![];
        conn.drain_into(|f| frames.push(f));
        assert!(frames[0].ends_with(br#"{"type":"message","channel":"room","data":1,"offset":1}"#));

        let other = Arc::new(ConnShared::new(8, None));
        let got = rt.subscribe(&other, "room", Some(3), Some(&sub.epoch)).await.unwrap();
        assert_eq!(got.recovered, Some(true));
        assert_eq!(got.replay.len(), 2, "offsets 4 and 5");
        let too_old = rt.subscribe(&other, "room", Some(1), None).await.unwrap();
        assert_eq!((too_old.recovered, too_old.replay.len()), (Some(false), 0), "history keeps 3");
        let wrong_epoch = rt.subscribe(&other, "room", Some(4), Some("other")).await.unwrap();
        assert_eq!(wrong_epoch.recovered, Some(false));
        let current = rt.subscribe(&other, "room", Some(5), None).await.unwrap();
        assert_eq!((current.recovered, current.replay.len()), (Some(true), 0));
        assert_eq!(rt.presence("room").await.unwrap().0, 2, "subscribing twice counts once");
        rt.unsubscribe(7, "room").await;
        assert_eq!(rt.presence("room").await.unwrap().1[0].connection_id, format!("{:032x}", 8));
    }
}
