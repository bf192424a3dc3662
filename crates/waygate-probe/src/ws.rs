//! A WebSocket client connection with every step bounded in time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::{CheckError, within};

pub(crate) type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens `url` (`ws://` or `wss://`); the returned duration covers TCP, TLS and the upgrade.
pub(crate) async fn connect(
    url: &str,
    tls: &Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<(Stream, Duration), CheckError> {
    let started = Instant::now();
    let connector = Connector::Rustls(tls.clone());
    let (stream, _) = within(timeout, "WebSocket handshake", async {
        tokio_tungstenite::connect_async_tls_with_config(url, None, true, Some(connector)).await.map_err(upgrade_error)
    })
    .await?;
    Ok((stream, started.elapsed()))
}

fn upgrade_error(e: tungstenite::Error) -> CheckError {
    match e {
        tungstenite::Error::Http(res) => {
            let envelope = res
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                .filter(|v| v.get("error").is_some());
            CheckError::Upgrade { status: res.status().as_u16(), envelope }
        }
        tungstenite::Error::Url(e) => CheckError::Url { url: String::new(), reason: e.to_string() },
        other => CheckError::WebSocket(waygate_http::describe(&other)),
    }
}

/// The next text frame as JSON; control frames are skipped (tungstenite answers pings).
pub(crate) async fn next_json(ws: &mut Stream, timeout: Duration, what: &'static str) -> Result<Value, CheckError> {
    within(timeout, what, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str(&t).map_err(|e| CheckError::Protocol(format!("not JSON ({e}): {t}")));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(CheckError::WebSocket(match frame {
                        Some(f) => format!("closed by server: {} {}", u16::from(f.code), f.reason),
                        None => "closed by server".to_owned(),
                    }));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(CheckError::WebSocket(e.to_string())),
                None => return Err(CheckError::WebSocket("connection ended".to_owned())),
            }
        }
    })
    .await
}

pub(crate) async fn send_json(ws: &mut Stream, v: &Value, timeout: Duration) -> Result<(), CheckError> {
    within(timeout, "send", async {
        ws.send(Message::text(v.to_string())).await.map_err(|e| CheckError::WebSocket(e.to_string()))
    })
    .await
}

/// One round trip: `{"action":"ping","id"}` → `pong` when `application`, else a WebSocket ping.
pub(crate) async fn round_trip(
    ws: &mut Stream,
    application: bool,
    seq: u64,
    timeout: Duration,
) -> Result<Duration, CheckError> {
    let started = Instant::now();
    let id = format!("probe-{seq}");
    if application {
        send_json(ws, &serde_json::json!({"action": "ping", "id": id}), timeout).await?;
    } else {
        within(timeout, "send", async {
            ws.send(Message::Ping(id.clone().into_bytes().into()))
                .await
                .map_err(|e| CheckError::WebSocket(e.to_string()))
        })
        .await?;
    }
    within(timeout, "pong", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if application => {
                    let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                    if v["type"] == "pong" {
                        return Ok(started.elapsed());
                    }
                    if v["type"] == "error" {
                        return Err(CheckError::Protocol(format!("error frame for ping: {t}")));
                    }
                }
                Some(Ok(Message::Pong(p))) if !application && p.as_ref() == id.as_bytes() => {
                    return Ok(started.elapsed());
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(CheckError::WebSocket(match frame {
                        Some(f) => format!("closed by server: {} {}", u16::from(f.code), f.reason),
                        None => "closed by server".to_owned(),
                    }));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(CheckError::WebSocket(e.to_string())),
                None => return Err(CheckError::WebSocket("connection ended".to_owned())),
            }
        }
    })
    .await
}

/// Sends a close frame and waits (bounded) for the server's; errors are ignored.
pub(crate) async fn close(mut ws: Stream, timeout: Duration) {
    let _ = tokio::time::timeout(timeout, async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}
