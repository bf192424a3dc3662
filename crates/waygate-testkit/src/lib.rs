//! Test support for real backends. A test asks for a backend; when it is unreachable the test
//! is skipped with a loud message, except under `CI=true`, where an unreachable backend is a
//! failure (CI starts every service, so a skip there would hide a broken setup).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips (returns `None`) or, in CI, panics, explaining which backend is missing.
fn unreachable<T>(backend: &str, url: &str, err: impl std::fmt::Display) -> Option<T> {
    if in_ci() {
        panic!("{backend} unreachable at {url} under CI=true: {err}");
    }
    eprintln!("\n*** SKIP: {backend} unreachable at {url}: {err} (start it with scripts/services.sh) ***\n");
    None
}

fn unique(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    format!("{prefix}{:012x}", h.finish() & 0xffff_ffff_ffff)
}

/// A fresh PostgreSQL schema; its URL selects it through `search_path`. Dropped on drop.
pub struct PgSchema {
    pub url: String,
    pub schema: String,
    admin_url: String,
}

impl PgSchema {
    pub async fn create() -> Option<PgSchema> {
        let admin_url = std::env::var("WAYGATE_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let schema = unique("wgt_");
        let connect = tokio::time::timeout(Duration::from_secs(5), sqlx::PgPool::connect(&admin_url)).await;
        let pool = match connect {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return unreachable("PostgreSQL", &admin_url, e),
            Err(_) => return unreachable("PostgreSQL", &admin_url, "timed out"),
        };
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\""))).execute(&pool).await.unwrap();
        pool.close().await;
        let sep = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{sep}options=-c%20search_path%3D{schema}");
        Some(PgSchema { url, schema, admin_url })
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        // Best effort, on a thread of its own: Drop may run inside or outside a runtime.
        let (admin, schema) = (self.admin_url.clone(), self.schema.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(pool) = sqlx::PgPool::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")))
                        .execute(&pool)
                        .await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

/// Redis at `WAYGATE_TEST_REDIS_URL` (default 127.0.0.1:6379) with a key prefix of its own.
pub struct RedisNs {
    pub url: String,
    pub prefix: String,
}

impl RedisNs {
    pub async fn create() -> Option<RedisNs> {
        let url = std::env::var("WAYGATE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let ok = async {
            let client = redis::Client::open(url.as_str())?;
            let mut con = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut con).await
        };
        match tokio::time::timeout(Duration::from_secs(5), ok).await {
            Ok(Ok(_)) => Some(RedisNs { url, prefix: unique("wgt") }),
            Ok(Err(e)) => unreachable("Redis", &url, e),
            Err(_) => unreachable("Redis", &url, "timed out"),
        }
    }
}

/// A TCP proxy in front of a backend whose link a test can cut and restore, to show what
/// happens when a backend goes away without stopping the shared service.
pub struct CutProxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    cut: Arc<std::sync::Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl CutProxy {
    pub async fn start(target: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let (up2, cut2, stop2) = (up.clone(), cut.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    _ = stop2.cancelled() => break,
                    r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let token = cut2.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else { return };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy(&mut cr, &mut sw) => {}
                        _ = tokio::io::copy(&mut sr, &mut cw) => {}
                    }
                });
            }
        });
        CutProxy { addr, up, cut, stop }
    }

    /// Drops every proxied connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let mut token = self.cut.lock().unwrap();
        token.cancel();
        *token = CancellationToken::new();
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut.lock().unwrap().cancel();
    }
}
