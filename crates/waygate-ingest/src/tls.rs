//! One TLS client configuration (rustls on ring, the platform's root certificates) for the
//! Discord REST calls, the gateway WebSocket and https handlers.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::error::{Error, Result};

pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Built explicitly on ring, so it does not matter which rustls providers other crates enable.
pub fn client_config() -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    // A host without CA certificates still serves plain http:// and ws:// (the simulator);
    // https:// then fails with a certificate error that names the cause.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A pooled HTTP/1.1 client for http:// and https:// URLs.
pub fn http_client(tls: Arc<rustls::ClientConfig>, max_idle_per_host: usize) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(max_idle_per_host).build(connector)
}

/// Sends `req` and reads at most `limit` bytes of the answer.
pub async fn send(
    client: &HttpClient,
    req: http::Request<Full<Bytes>>,
    limit: usize,
) -> Result<(http::StatusCode, Bytes), String> {
    let res = client.request(req).await.map_err(|e| describe(&e))?;
    let status = res.status();
    let body = Limited::new(res.into_body(), limit).collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, body))
}

/// hyper-util's error says only "client error (Connect)"; the source says why.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
