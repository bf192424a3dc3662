//! The benchmark harness behind `waygate bench`: realtime echo, fan-out, connect storm, idle
//! memory and cross-instance tool-call dispatch, with HDR-histogram latencies, server CPU/RSS
//! from `/proc/<pid>`, a JSON report and a PNG plot.
//!
//! Every workload speaks the realtime protocol of `docs/protocol.md` (welcome on connect,
//! `{"action":"ping","id"}` → `{"type":"pong","id"}`, subscribe/publish → message), so the same
//! client measures waygate and the peers in `bench/peers/`. All tasks stop on one shared
//! [`CancellationToken`]; every queue and concurrency level is bounded.

mod connect;
mod dispatch;
mod drive;
mod echo;
pub mod error;
mod fanout;
mod idle;
pub mod plot;
pub mod procstat;
pub mod report;
mod ws;

use std::time::Duration;

pub use dispatch::DispatchOptions;
pub use error::BenchError;
pub use report::Report;
use tokio_util::sync::CancellationToken;

/// Options shared by the realtime workloads.
#[derive(Debug, Clone)]
pub struct Options {
    /// `ws://host:port/path` of a realtime endpoint.
    pub url: String,
    /// Connections (echo, idle), subscribers (fanout) or concurrent handshakes (connect).
    pub connections: usize,
    /// Open loop at this many messages (publishes for fanout) per second; `None`: closed loop.
    pub rate: Option<f64>,
    /// Size of each request frame in bytes (padded with a `pad` field).
    pub payload: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Server process to sample for CPU and RSS.
    pub server_pid: Option<u32>,
    /// Draw an indicatif progress bar (on a terminal only).
    pub progress: bool,
    /// Fan-out channel name.
    pub channel: String,
    /// How many connections are being opened at once (idle, fanout set-up).
    pub open_concurrency: usize,
    /// Per-reply timeout.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            url: "ws://127.0.0.1:8080/ws".into(),
            connections: 100,
            rate: None,
            payload: 64,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            server_pid: None,
            progress: true,
            channel: "bench".into(),
            open_concurrency: 256,
            timeout: Duration::from_secs(10),
        }
    }
}

impl Options {
    fn validate(&self) -> Result<(), BenchError> {
        if self.connections == 0 {
            return Err(BenchError::Options("--connections must be at least 1".into()));
        }
        if let Some(r) = self.rate
            && !(r > 0.0 && r.is_finite())
        {
            return Err(BenchError::Options("--rate must be a positive number".into()));
        }
        if self.duration.is_zero() {
            return Err(BenchError::Options("--duration must be positive".into()));
        }
        if !(self.url.starts_with("ws://") || self.url.starts_with("wss://")) {
            return Err(BenchError::Options(format!("target must be a ws:// URL, got {}", self.url)));
        }
        Ok(())
    }
}

/// The realtime workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `ping` → `pong` round trips on every connection.
    Echo,
    /// N subscribers on one channel, one publisher; publish → deliver latency.
    Fanout,
    /// Handshakes per second: connect, receive the welcome, close.
    Connect,
    /// Open N connections, hold them, report server RSS per connection.
    Idle,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Echo => "echo",
            Workload::Fanout => "fanout",
            Workload::Connect => "connect",
            Workload::Idle => "idle",
        }
    }
}

/// Runs one realtime workload until its duration ends or `cancel` fires.
pub async fn run(workload: Workload, opts: Options, cancel: CancellationToken) -> Result<Report, BenchError> {
    opts.validate()?;
    procstat::raise_nofile_limit();
    match workload {
        Workload::Echo => echo::run(opts, cancel).await,
        Workload::Fanout => fanout::run(opts, cancel).await,
        Workload::Connect => connect::run(opts, cancel).await,
        Workload::Idle => idle::run(opts, cancel).await,
    }
}

/// Runs the cross-instance dispatch benchmark (issue 4).
pub async fn run_dispatch(opts: DispatchOptions, cancel: CancellationToken) -> Result<Report, BenchError> {
    procstat::raise_nofile_limit();
    dispatch::run(opts, cancel).await
}
