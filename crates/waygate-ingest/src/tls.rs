//! Outbound HTTP and TLS for the Discord REST calls, the gateway WebSocket and https handlers:
//! the workspace's one client setup (`waygate-http`: rustls on ring, platform roots).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;

use crate::error::{Error, Result};

pub use waygate_http::HttpClient;

pub fn client_config() -> Result<Arc<rustls::ClientConfig>> {
    waygate_http::client_config().map_err(|e| Error::Tls(e.to_string()))
}

pub fn http_client(tls: Arc<rustls::ClientConfig>, max_idle_per_host: usize) -> HttpClient {
    waygate_http::http_client(tls, max_idle_per_host)
}

/// Sends `req` and reads at most `limit` bytes of the answer.
pub async fn send(
    client: &HttpClient,
    req: http::Request<Full<Bytes>>,
    limit: usize,
) -> std::result::Result<(http::StatusCode, Bytes), String> {
    waygate_http::send(client, req, limit).await.map_err(|e| e.to_string())
}
