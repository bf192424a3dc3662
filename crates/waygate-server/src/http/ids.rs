//! Correlation and trace ids: taken from the request when given (`X-Correlation-ID`,
//! W3C `traceparent`), otherwise generated; echoed as response headers and available to
//! error rendering and logs through a task-local for the duration of the request.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

pub const CORRELATION_HEADER: &str = "x-correlation-id";
pub const TRACE_HEADER: &str = "x-trace-id";

#[derive(Debug, Clone)]
pub struct RequestIds {
    pub correlation_id: String,
    pub trace_id: String,
}

tokio::task_local! {
    static IDS: RequestIds;
}

impl RequestIds {
    pub fn generate() -> RequestIds {
        RequestIds { correlation_id: uuid::Uuid::new_v4().to_string(), trace_id: random_trace_id() }
    }

    /// The ids of the request being handled, or fresh ones outside a request.
    pub fn current() -> RequestIds {
        IDS.try_with(|ids| ids.clone()).unwrap_or_else(|_| RequestIds::generate())
    }

    pub fn from_headers(headers: &axum::http::HeaderMap) -> RequestIds {
        let correlation_id = headers
            .get(CORRELATION_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| is_safe_id(v))
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        // traceparent: version-traceid-parentid-flags
        let trace_id = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split('-').nth(1))
            .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_owned)
            .unwrap_or_else(random_trace_id);
        RequestIds { correlation_id, trace_id }
    }

    pub async fn scope<F: std::future::Future>(self, f: F) -> F::Output {
        IDS.scope(self, f).await
    }
}

/// Kept ids are echoed in headers and logs, so only short printable ones are believed.
fn is_safe_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic())
}

fn random_trace_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Middleware: assigns ids, runs the handler inside their scope and a tracing span, and
/// stamps the response headers.
pub async fn middleware(mut req: Request, next: Next) -> Response {
    let ids = RequestIds::from_headers(req.headers());
    req.extensions_mut().insert(ids.clone());
    let span = tracing::info_span!("request", correlation_id = %ids.correlation_id, trace_id = %ids.trace_id);
    let mut res = tracing::Instrument::instrument(ids.clone().scope(next.run(req)), span).await;
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&ids.correlation_id) {
        headers.insert(CORRELATION_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&ids.trace_id) {
        headers.insert(TRACE_HEADER, v);
    }
    res
}
