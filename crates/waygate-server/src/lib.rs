//! The waygate gateway: listeners, HTTP API, WebSocket connections, the device gateway with
//! its tool-call dispatcher, and drain.
//!
//! ```no_run
//! # async fn demo(config: waygate_config::Config) -> Result<(), waygate_server::BuildError> {
//! let app = waygate_server::App::build(config, waygate_telemetry::LogHandle::noop()).await?;
//! println!("listening on {}", app.http_addr());
//! app.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(()) }
//! ```

mod app;
mod cluster;
mod gateway;
mod http;
mod listener;
mod metrics;
mod notifications;
mod realtime;
mod reload;
mod state;
mod terminal;
mod ws;

pub use app::{App, BuildError};
