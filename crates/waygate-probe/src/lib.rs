//! Operator checks against a running gateway: [`smoke`] walks the device lifecycle over the
//! public API (SPEC 5, seed 000), [`probe`] connects to WebSocket paths, measures handshake and
//! round-trip times, optionally holds connections and repeats rounds (SPEC 5, seed 003).
//!
//! Every network operation is bounded by a timeout. Reports are plain data (serde) so the CLI
//! decides how to print them.

pub mod probe;
pub mod smoke;
mod tls;
mod ws;

use std::time::Duration;

pub use tls::tls_config;

/// What can go wrong while checking a gateway.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("invalid URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error(transparent)]
    Http(#[from] waygate_http::HttpError),
    #[error("no answer within {0:?} ({1})")]
    Timeout(Duration, &'static str),
    #[error("HTTP {status} on upgrade{}", envelope.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Upgrade { status: u16, envelope: Option<serde_json::Value> },
    #[error("websocket: {0}")]
    WebSocket(String),
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

impl CheckError {
    /// The server's error envelope (`{"error":{…}}`) when the failure carried one.
    pub fn envelope(&self) -> Option<&serde_json::Value> {
        match self {
            CheckError::Upgrade { envelope, .. } => envelope.as_ref(),
            _ => None,
        }
    }
}

/// `Ok` of `fut`, or [`CheckError::Timeout`] naming what was awaited.
pub(crate) async fn within<T>(
    limit: Duration,
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, CheckError>>,
) -> Result<T, CheckError> {
    tokio::time::timeout(limit, fut).await.map_err(|_| CheckError::Timeout(limit, what))?
}

/// Milliseconds with microsecond precision, for reports.
pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}
