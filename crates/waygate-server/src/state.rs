//! State shared by every listener, connection and background task of one instance.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use waygate_config::{Config, Reloadable, Route};
use waygate_store::Store;
use waygate_telemetry::LogHandle;

use crate::gateway::{DeviceRegistry, DispatchState};
use crate::metrics::Metrics;
use crate::ws::ConnRegistry;

pub type AppState = Arc<Shared>;

pub struct Shared {
    /// Configuration as loaded at start; reloadable values live in `live`.
    pub config: Config,
    pub live: Live,
    pub store: Store,
    pub bus: waygate_bus::Bus,
    pub realtime: crate::realtime::Realtime,
    pub routing: crate::realtime::routes::Routing,
    pub jwt: Option<crate::realtime::auth::JwtVerifier>,
    pub metrics: Metrics,
    pub instance_id: String,
    pub conns: ConnRegistry,
    pub devices: DeviceRegistry,
    pub dispatch: DispatchState,
    pub lifecycle: Lifecycle,
    pub log: LogHandle,
    pub terminal: crate::terminal::Terminal,
    pub notifier: crate::notifications::Notifier,
}

/// Settings `config.reload` can change while connections are open. Hot-path values are
/// atomics so a connection reads them without a lock.
pub struct Live {
    pub max_connections: AtomicUsize,
    pub max_connections_per_ip: AtomicUsize,
    pub max_message_bytes: AtomicUsize,
    pub messages_per_second: AtomicU32,
    pub send_queue: AtomicUsize,
    pub allowed_origins: RwLock<Option<Vec<String>>>,
    pub routes: RwLock<Arc<Vec<Route>>>,
    /// The configuration the next reload is compared against.
    pub current: RwLock<Config>,
}

impl Live {
    pub fn new(config: &Config) -> Live {
        let r = &config.reloadable;
        Live {
            max_connections: AtomicUsize::new(r.max_connections),
            max_connections_per_ip: AtomicUsize::new(r.max_connections_per_ip),
            max_message_bytes: AtomicUsize::new(r.max_message_bytes),
            messages_per_second: AtomicU32::new(r.messages_per_second),
            send_queue: AtomicUsize::new(r.send_queue),
            allowed_origins: RwLock::new(r.allowed_origins.clone()),
            routes: RwLock::new(Arc::new(r.routes.clone())),
            current: RwLock::new(config.clone()),
        }
    }

    pub fn apply(&self, r: &Reloadable) {
        self.max_connections.store(r.max_connections, Ordering::Relaxed);
        self.max_connections_per_ip.store(r.max_connections_per_ip, Ordering::Relaxed);
        self.max_message_bytes.store(r.max_message_bytes, Ordering::Relaxed);
        self.messages_per_second.store(r.messages_per_second, Ordering::Relaxed);
        self.send_queue.store(r.send_queue, Ordering::Relaxed);
        *self.allowed_origins.write().expect("origins lock") = r.allowed_origins.clone();
        *self.routes.write().expect("routes lock") = Arc::new(r.routes.clone());
    }

    pub fn send_queue(&self) -> usize {
        self.send_queue.load(Ordering::Relaxed)
    }

    pub fn max_message(&self) -> usize {
        self.max_message_bytes.load(Ordering::Relaxed)
    }
}

/// One drain signal for the whole instance, in three stages.
pub struct Lifecycle {
    draining: AtomicBool,
    /// Cancelled when draining starts: HTTP connections stop keep-alive.
    pub drain_started: CancellationToken,
    /// Cancelled at the drain deadline: every connection closes with 1001.
    pub close_connections: CancellationToken,
    /// Cancelled once connections are gone: background tasks and accept loops stop.
    pub stop: CancellationToken,
    /// Every connection task (HTTP and WebSocket).
    pub connections: TaskTracker,
    /// Background tasks (dispatcher, maintenance).
    pub background: TaskTracker,
}

impl Lifecycle {
    pub fn new() -> Lifecycle {
        Lifecycle {
            draining: AtomicBool::new(false),
            drain_started: CancellationToken::new(),
            close_connections: CancellationToken::new(),
            stop: CancellationToken::new(),
            connections: TaskTracker::new(),
            background: TaskTracker::new(),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn start_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.drain_started.cancel();
    }
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}
