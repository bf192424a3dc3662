//! Single-use terminal tokens: 256 random bits, stored only as SHA-256 digests, valid for
//! `TERMINAL_TOKEN_TTL_SECONDS`, consumed atomically. Embedded mode keeps them in this
//! process; with Redis every instance shares them, so a replay on any instance is refused.
//!
//! A used token is kept as a marker (until its record would have expired anyway) so that a
//! replay is reported as `token_replayed`, not as an unknown token.

use std::future::Future;
use std::pin::Pin;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

/// How long a record outlives its expiry, so an expired or replayed token is still recognised
/// (and reported precisely) for a while instead of looking unknown.
const KEEP_AFTER_EXPIRY_MS: i64 = 10 * 60 * 1000;
/// The embedded store sweeps stale records when it grows past this many.
const SWEEP_ABOVE: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    #[serde(rename = "a")]
    pub allocation_id: String,
    #[serde(rename = "u")]
    pub user_id: String,
    /// Unix milliseconds.
    #[serde(rename = "e")]
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Unknown,
    Used,
    Valid(TokenRecord),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consume {
    Consumed,
    /// Someone used it first (the losing side of a race, or a replay).
    AlreadyUsed,
    Unknown,
}

#[derive(Debug, thiserror::Error)]
#[error("token store unavailable: {0}")]
pub struct TokenStoreError(String);

type Fut<'a, T> = Pin<Box<dyn Future<Output = Result<T, TokenStoreError>> + Send + 'a>>;

/// Where tokens live. `peek` lets the gateway run every other check (allocation, agent
/// online) before `consume`, so a refused connection does not use the token up.
pub trait TokenStore: Send + Sync {
    fn put<'a>(&'a self, hash: &'a str, record: &'a TokenRecord) -> Fut<'a, ()>;
    fn peek<'a>(&'a self, hash: &'a str) -> Fut<'a, Lookup>;
    fn consume<'a>(&'a self, hash: &'a str) -> Fut<'a, Consume>;
}

/// Embedded mode: a map in this process.
#[derive(Default)]
pub struct LocalTokens {
    map: DashMap<String, (TokenRecord, bool)>,
}

impl TokenStore for LocalTokens {
    fn put<'a>(&'a self, hash: &'a str, record: &'a TokenRecord) -> Fut<'a, ()> {
        Box::pin(async move {
            if self.map.len() > SWEEP_ABOVE {
                let cutoff = waygate_telemetry::now_millis() - KEEP_AFTER_EXPIRY_MS;
                self.map.retain(|_, (r, _)| r.expires_at > cutoff);
            }
            self.map.insert(hash.to_owned(), (record.clone(), false));
            Ok(())
        })
    }

    fn peek<'a>(&'a self, hash: &'a str) -> Fut<'a, Lookup> {
        Box::pin(async move {
            Ok(match self.map.get(hash) {
                None => Lookup::Unknown,
                Some(e) if e.1 => Lookup::Used,
                Some(e) => Lookup::Valid(e.0.clone()),
            })
        })
    }

    fn consume<'a>(&'a self, hash: &'a str) -> Fut<'a, Consume> {
        Box::pin(async move {
            // The shard lock held by `get_mut` makes check-and-mark one step.
            Ok(match self.map.get_mut(hash) {
                None => Consume::Unknown,
                Some(e) if e.1 => Consume::AlreadyUsed,
                Some(mut e) => {
                    e.1 = true;
                    Consume::Consumed
                }
            })
        })
    }
}

/// One round trip, atomic on the Redis server: 0 unknown, 1 already used, 2 consumed now.
const CONSUME_LUA: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
if v == 'used' then return 1 end
redis.call('SET', KEYS[1], 'used', 'KEEPTTL')
return 2
"#;

/// Cluster mode: `{prefix}:tt:{sha256}` keys with a TTL.
pub struct RedisTokens {
    con: redis::aio::ConnectionManager,
    prefix: String,
    consume: redis::Script,
}

impl RedisTokens {
    pub fn new(con: redis::aio::ConnectionManager, prefix: String) -> RedisTokens {
        RedisTokens { con, prefix, consume: redis::Script::new(CONSUME_LUA) }
    }

    fn key(&self, hash: &str) -> String {
        format!("{}:tt:{hash}", self.prefix)
    }
}

fn redis_err(e: redis::RedisError) -> TokenStoreError {
    TokenStoreError(e.to_string())
}

impl TokenStore for RedisTokens {
    fn put<'a>(&'a self, hash: &'a str, record: &'a TokenRecord) -> Fut<'a, ()> {
        Box::pin(async move {
            let ttl = (record.expires_at - waygate_telemetry::now_millis()).max(1) + KEEP_AFTER_EXPIRY_MS;
            let value = serde_json::to_string(record).expect("record serializes");
            let mut con = self.con.clone();
            redis::cmd("SET")
                .arg(self.key(hash))
                .arg(value)
                .arg("PX")
                .arg(ttl)
                .query_async::<()>(&mut con)
                .await
                .map_err(redis_err)
        })
    }

    fn peek<'a>(&'a self, hash: &'a str) -> Fut<'a, Lookup> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let v: Option<String> =
                redis::cmd("GET").arg(self.key(hash)).query_async(&mut con).await.map_err(redis_err)?;
            Ok(match v.as_deref() {
                None => Lookup::Unknown,
                Some("used") => Lookup::Used,
                Some(json) => match serde_json::from_str(json) {
                    Ok(r) => Lookup::Valid(r),
                    Err(_) => Lookup::Unknown,
                },
            })
        })
    }

    fn consume<'a>(&'a self, hash: &'a str) -> Fut<'a, Consume> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let n: i64 = self.consume.key(self.key(hash)).invoke_async(&mut con).await.map_err(redis_err)?;
            Ok(match n {
                2 => Consume::Consumed,
                1 => Consume::AlreadyUsed,
                _ => Consume::Unknown,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_tokens_are_single_use() {
        let s = LocalTokens::default();
        let r = TokenRecord { allocation_id: "a".into(), user_id: "u".into(), expires_at: i64::MAX };
        assert_eq!(s.peek("h").await.unwrap(), Lookup::Unknown);
        s.put("h", &r).await.unwrap();
        assert_eq!(s.peek("h").await.unwrap(), Lookup::Valid(r));
        assert_eq!(s.consume("h").await.unwrap(), Consume::Consumed);
        assert_eq!(s.consume("h").await.unwrap(), Consume::AlreadyUsed);
        assert_eq!(s.peek("h").await.unwrap(), Lookup::Used);
        assert_eq!(s.consume("x").await.unwrap(), Consume::Unknown);
    }
}
