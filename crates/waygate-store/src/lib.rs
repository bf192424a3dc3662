//! waygate state: users and sessions, devices, gateway instances and the `"GatewayToolCall"`
//! queue, on SQLite (embedded mode) or PostgreSQL (cluster mode).
//!
//! Both backends run the same SQL text (sqlx accepts `$N` placeholders on SQLite too); only
//! the queue claim differs (`FOR UPDATE SKIP LOCKED` on PostgreSQL). Timestamps are epoch
//! milliseconds passed in by the caller, so every query is deterministic under test.

mod connections;
mod devices;
mod events;
mod instances;
mod models;
mod terminal;
mod token;
mod tool_calls;
mod users;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

pub use connections::ClosedConnection;
pub use devices::INSTANCE_STALE_MS;
pub use events::QueueEvent;
pub use models::{CallOutcome, Claimed, DeviceRow, NewToolCall, RegisterTarget, ToolCallRow, User};
pub use terminal::{AllocationRow, NewAllocation};
pub use token::{hash_token, random_token};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0} already exists")]
    Conflict(&'static str),
    #[error("unsupported database URL (use sqlite:// or postgres://)")]
    UnsupportedUrl,
    #[error("password hashing failed: {0}")]
    Hash(String),
}

impl StoreError {
    /// Whether the backend itself is unreachable (as opposed to a bad request).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Db(
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_)
            )
        )
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Clone)]
pub(crate) enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same query code against whichever pool backs the store.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.backend {
            $crate::Backend::Sqlite($pool) => $body,
            $crate::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) backend: Backend,
    pub(crate) events: events::Events,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_postgres() { "Store(postgres)" } else { "Store(sqlite)" })
    }
}

impl Store {
    /// Opens `sqlite://PATH` (created if missing) or `postgres://…`.
    pub async fn connect(url: &str) -> Result<Store> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(opts)
                .await?;
            Ok(Store { backend: Backend::Sqlite(pool), events: events::Events::new() })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts = PgConnectOptions::from_str(url)?;
            Store::connect_postgres(opts).await
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }

    /// Opens PostgreSQL with explicit options (for example a `search_path` in `options`).
    pub async fn connect_postgres(opts: PgConnectOptions) -> Result<Store> {
        let pool =
            PgPoolOptions::new().max_connections(16).acquire_timeout(Duration::from_secs(5)).connect_with(opts).await?;
        let (schema,): (String,) = sqlx::query_as("SELECT current_schema()").fetch_one(&pool).await?;
        Ok(Store { backend: Backend::Postgres(pool), events: events::Events::postgres(&schema) })
    }

    /// Cross-instance queue events: on PostgreSQL, runs the batched NOTIFY sender and the
    /// LISTEN loop until `stop` (spawn it once per instance). Returns at once on SQLite, where
    /// every event is in process.
    pub async fn run_events(&self, instance_id: &str, stop: tokio_util::sync::CancellationToken) {
        if let Backend::Postgres(pool) = &self.backend {
            self.events.run_postgres(pool.clone(), instance_id, stop).await;
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Applies pending migrations; safe to run on every start and from many instances.
    pub async fn migrate(&self) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(pool) => sqlx::migrate!("./migrations/sqlite").run(pool).await?,
            Backend::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    /// A cheap round trip for readiness checks.
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, |pool| sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// Queue events (new calls, finished calls) from this process and, on PostgreSQL, others.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<QueueEvent> {
        self.events.subscribe()
    }

    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Keeps a test database alive (a temp dir or a Postgres schema) while the test runs.
    pub enum Guard {
        Sqlite(#[allow(dead_code)] tempfile::TempDir),
        Postgres(#[allow(dead_code)] waygate_testkit::PgSchema),
    }

    /// A fresh SQLite database in a temp directory that lives as long as the returned guard.
    pub async fn sqlite() -> (Store, Guard) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        (store, Guard::Sqlite(dir))
    }

    /// A fresh PostgreSQL schema, or `None` (after a loud skip) when PostgreSQL is unreachable.
    pub async fn postgres() -> Option<(Store, Guard)> {
        let schema = waygate_testkit::PgSchema::create().await?;
        let store = Store::connect(&schema.url).await.unwrap();
        store.migrate().await.unwrap();
        Some((store, Guard::Postgres(schema)))
    }

    /// Every backend a test should run on: SQLite always, PostgreSQL when reachable.
    pub async fn backends() -> Vec<(Store, Guard)> {
        let mut all = vec![sqlite().await];
        all.extend(postgres().await);
        all
    }
}
