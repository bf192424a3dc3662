//! `App::build` binds and prepares everything; `App::run_until` serves until the shutdown
//! future resolves, then drains (SPEC 3): readiness turns 503 and upgrades are refused,
//! connections continue until they close or the drain timeout ends, then the rest get 1001.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use waygate_config::Config;
use waygate_store::{Store, StoreError};
use waygate_telemetry::LogHandle;

use crate::gateway::{DeviceRegistry, DispatchState};
use crate::metrics::Metrics;
use crate::state::{AppState, Lifecycle, Live, Shared};
use crate::ws::ConnRegistry;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot open the database: {0}")]
    Store(#[source] StoreError),
    #[error("cannot set up action routes: {0}")]
    Routes(String),
    #[error("invalid JWT configuration: {0}")]
    Jwt(String),
    #[error("cannot reach Redis: {0}")]
    Bus(#[source] waygate_bus::BusError),
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

pub struct App {
    state: AppState,
    main: TcpListener,
    ws: Option<TcpListener>,
}

impl App {
    /// Opens the store (running migrations), registers the instance and binds both listeners.
    /// Port 0 binds any free port; see [`App::http_addr`].
    pub async fn build(config: Config, log: LogHandle) -> Result<App, BuildError> {
        raise_fd_limit();
        let store = Store::connect(config.database_url.expose()).await.map_err(BuildError::Store)?;
        store.migrate().await.map_err(BuildError::Store)?;
        let instance_id = config.instance_id.clone();
        store
            .heartbeat_instance(&instance_id, waygate_telemetry::now_millis(), false)
            .await
            .map_err(BuildError::Store)?;
        let bus = match &config.redis_url {
            Some(url) => waygate_bus::Bus::redis(url.expose(), &config.redis_prefix, &instance_id)
                .await
                .map_err(BuildError::Bus)?,
            None => waygate_bus::Bus::local(&instance_id),
        };
        let jwt = crate::realtime::auth::JwtVerifier::from_config(&config).map_err(BuildError::Jwt)?;
        let realtime = crate::realtime::Realtime::new(&bus, config.history_size, config.history_ttl, &instance_id);
        let routing = crate::realtime::routes::Routing::new(&config).map_err(BuildError::Routes)?;
        let bind = |port: u16| {
            let addr = SocketAddr::new(config.websocket_host, port);
            async move { TcpListener::bind(addr).await.map_err(|source| BuildError::Bind { addr, source }) }
        };
        let main = bind(config.websocket_port).await?;
        let ws = match config.gateway_ws_port {
            Some(port) => Some(bind(port).await?),
            None => None,
        };
        let metrics = Metrics::new();
        let notifier = crate::notifications::Notifier::new(metrics.notification_write_errors.clone());
        let terminal = crate::terminal::Terminal::new(&bus);
        let state = Arc::new(Shared {
            live: Live::new(&config),
            store,
            bus,
            realtime,
            routing,
            jwt,
            metrics,
            terminal,
            notifier,
            instance_id,
            conns: ConnRegistry::default(),
            devices: DeviceRegistry::default(),
            dispatch: DispatchState::default(),
            lifecycle: Lifecycle::new(),
            log,
            config,
        });
        Ok(App { state, main, ws })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.main.local_addr().expect("bound listener has an address")
    }

    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws.as_ref().map(|l| l.local_addr().expect("bound listener has an address"))
    }

    pub fn instance_id(&self) -> &str {
        &self.state.instance_id
    }

    /// Serves until `shutdown` resolves, then drains and returns once everything stopped.
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()>) {
        let state = self.state;
        let lc = &state.lifecycle;
        // Presence trusts only instances marked alive: be marked before the first connection.
        state.realtime.heartbeat(crate::gateway::maintenance::SLOW_PERIOD).await;
        lc.background.spawn(crate::gateway::dispatch::run(state.clone()));
        lc.background.spawn(crate::gateway::dispatch::pump_events(state.clone()));
        lc.background.spawn(crate::gateway::maintenance::run(state.clone()));
        lc.background.spawn(crate::cluster::run(state.clone()));
        if state.config.dispatch_notify {
            let (store, instance, stop) = (state.store.clone(), state.instance_id.clone(), lc.stop.clone());
            lc.background.spawn(async move { store.run_events(&instance, stop).await });
        }
        lc.background.spawn(crate::listener::accept_loop(
            self.main,
            crate::http::main_router(state.clone()),
            state.clone(),
        ));
        if let Some(ws) = self.ws {
            lc.background.spawn(crate::listener::accept_loop(ws, crate::http::ws_router(state.clone()), state.clone()));
        }
        tracing::info!(instance_id = %state.instance_id, "serving");
        shutdown.await;
        drain(&state).await;
    }
}

async fn drain(state: &AppState) {
    let lc = &state.lifecycle;
    let timeout = state.config.drain_timeout;
    tracing::info!(
        connections = state.conns.count(),
        drain_timeout_seconds = timeout.as_secs(),
        "drain started: readiness is 503 and new upgrades are refused"
    );
    lc.start_drain();
    state.metrics.draining.set(1.0);
    let _ = state.store.heartbeat_instance(&state.instance_id, waygate_telemetry::now_millis(), true).await;

    lc.connections.close();
    if tokio::time::timeout(timeout, lc.connections.wait()).await.is_err() {
        tracing::info!(
            connections = state.conns.count(),
            "drain timeout reached: closing remaining connections with 1001"
        );
        lc.close_connections.cancel();
        if tokio::time::timeout(Duration::from_secs(5), lc.connections.wait()).await.is_err() {
            tracing::warn!("some connections did not finish closing");
        }
    }
    lc.stop.cancel();
    lc.background.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), lc.background.wait()).await;
    if let Err(e) = state.store.remove_instance(&state.instance_id, waygate_telemetry::now_millis()).await {
        tracing::warn!(error = %e, "could not deregister the instance");
    }
    state.store.close().await;
    tracing::info!("drain complete");
}

/// Many idle sockets need many descriptors: lift the soft limit to the hard one.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
