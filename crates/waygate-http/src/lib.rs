//! Outbound HTTP: one pooled HTTP/1.1 client for `http://` and `https://`, on rustls with the
//! ring provider and the platform's root certificates, whatever providers other crates enable.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("{0}")]
    Request(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// The TLS client configuration: ring, platform roots. A host without CA certificates still
/// reaches plain `http://`; `https://` then fails with a certificate error naming the cause.
pub fn client_config() -> Result<Arc<rustls::ClientConfig>, HttpError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| HttpError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A pooled client keeping at most `max_idle_per_host` idle connections per host.
pub fn http_client(tls: Arc<rustls::ClientConfig>, max_idle_per_host: usize) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(max_idle_per_host).build(connector)
}

/// Sends `req` and reads at most `limit` bytes of the answer. Callers bound the time.
pub async fn send(
    client: &HttpClient,
    req: http::Request<Full<Bytes>>,
    limit: usize,
) -> Result<(http::StatusCode, Bytes), HttpError> {
    let res = client.request(req).await.map_err(|e| HttpError::Request(describe(&e)))?;
    let status = res.status();
    let body =
        Limited::new(res.into_body(), limit).collect().await.map_err(|e| HttpError::Request(e.to_string()))?.to_bytes();
    Ok((status, body))
}

/// [`send`] bounded by `timeout`.
pub async fn send_within(
    client: &HttpClient,
    req: http::Request<Full<Bytes>>,
    limit: usize,
    timeout: Duration,
) -> Result<(http::StatusCode, Bytes), HttpError> {
    tokio::time::timeout(timeout, send(client, req, limit)).await.map_err(|_| HttpError::Timeout(timeout))?
}

/// A JSON POST request.
pub fn post_json(url: &str, body: Bytes) -> Result<http::Request<Full<Bytes>>, HttpError> {
    http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| HttpError::Request(format!("invalid request to {url}: {e}")))
}

/// hyper-util's error says only "client error (Connect)"; the sources say why.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
