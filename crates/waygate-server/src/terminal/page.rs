//! `/terminal/{allocation_id}`: the browser terminal, with xterm.js and its fit addon shipped
//! inside the binary (no CDN). The page asks `/api/terminal/config` for its WebSocket base at
//! run time, so a deployment can move the gateway without rebuilding anything. The session
//! logic is the client SDK's `TerminalClient` (`sdk/js`): `waygate-client.js` is its bundle,
//! committed by `npm run build` and checked against the sources in CI.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("../../assets/terminal.html");
const XTERM_JS: &[u8] = include_bytes!("../../assets/xterm.js");
const XTERM_CSS: &[u8] = include_bytes!("../../assets/xterm.css");
const FIT_JS: &[u8] = include_bytes!("../../assets/addon-fit.js");
const SDK_JS: &[u8] = include_bytes!("../../assets/waygate-client.js");

pub async fn page(Path(_allocation_id): Path<String>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::HeaderName::from_static("content-security-policy"), "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'"),
        ],
        PAGE,
    )
        .into_response()
}

pub async fn asset(Path(name): Path<String>) -> Response {
    // The SDK bundle changes with the page that imports it: never serve a cached one from
    // an older binary next to a newer page.
    let (body, kind, cache): (&'static [u8], &str, &str) = match name.as_str() {
        "xterm.js" => (XTERM_JS, "text/javascript", "public, max-age=86400"),
        "xterm.css" => (XTERM_CSS, "text/css", "public, max-age=86400"),
        "addon-fit.js" => (FIT_JS, "text/javascript", "public, max-age=86400"),
        "waygate-client.js" => (SDK_JS, "text/javascript", "no-cache"),
        _ => return crate::http::error::ApiError::not_found("asset").into_response(),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, cache)], body).into_response()
}
