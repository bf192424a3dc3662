//! Client sockets and the few frame fields the harness reads (by scanning, not parsing: the
//! client must stay cheaper than the servers it measures).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::error::BenchError;
use crate::report::Recorder;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Small client buffers, so 15,000 client sockets fit next to the server.
pub fn config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0)
}

/// Connects (TCP_NODELAY) and waits for the server's first text frame (the welcome).
pub async fn connect(url: &str, rec: &Recorder, timeout: Duration) -> Result<Ws, BenchError> {
    let fut = tokio_tungstenite::connect_async_with_config(url, Some(config()), true);
    let (mut ws, _) = match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(BenchError::Connect { url: url.to_owned(), source: Box::new(e) }),
        Err(_) => return Err(BenchError::Timeout { what: "handshake", after: timeout }),
    };
    let text = next_text(&mut ws, timeout, "welcome").await?;
    rec.received.fetch_add(1, Ordering::Relaxed);
    match frame_type(&text) {
        Some("welcome") => Ok(ws),
        _ => Err(BenchError::Protocol { expected: "welcome", got: text }),
    }
}

/// Opens `n` connections, at most `concurrency` handshakes at a time; records each handshake
/// (+ welcome) latency while the recorder is measuring. Failures are counted, not fatal.
pub async fn open_many(
    url: &str,
    n: usize,
    concurrency: usize,
    rec: &Arc<Recorder>,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Vec<Ws> {
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = sem.clone().acquire_owned() => p.expect("semaphore is never closed"),
        };
        let (url, rec) = (url.to_owned(), rec.clone());
        set.spawn(async move {
            let t0 = Instant::now();
            let r = connect(&url, &rec, timeout).await;
            drop(permit);
            match r {
                Ok(ws) => {
                    rec.connections_opened.fetch_add(1, Ordering::Relaxed);
                    rec.record(t0.elapsed());
                    Some(ws)
                }
                Err(e) => {
                    rec.connections_failed.fetch_add(1, Ordering::Relaxed);
                    rec.note_failure(e.to_string());
                    None
                }
            }
        });
        while let Some(done) = set.try_join_next() {
            out.extend(done.ok().flatten());
        }
    }
    while let Some(done) = set.join_next().await {
        out.extend(done.ok().flatten());
    }
    out
}

/// The next text frame (control frames are answered by tungstenite while reading).
pub async fn next_text(ws: &mut Ws, timeout: Duration, what: &'static str) -> Result<String, BenchError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Err(BenchError::Timeout { what, after: timeout }),
            Ok(None) | Ok(Some(Ok(Message::Close(_)))) => return Err(BenchError::Closed),
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(Some(Ok(Message::Text(t)))) => return Ok(t.as_str().to_owned()),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Closes politely and waits (bounded) for the server to finish the close handshake.
pub async fn close(mut ws: Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// The value of `"type"` in a server frame.
pub fn frame_type(text: &str) -> Option<&str> {
    let start = text.find("\"type\":\"")? + 8;
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

/// The unsigned integer after `key` (e.g. `"id":`), first occurrence.
pub fn find_u64(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits: &str = text[start..].trim_start();
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// A JSON object `{<fields>,"pad":"xxx"}` padded so the frame is about `payload` bytes.
pub fn padded(fields: &str, payload: usize) -> String {
    let base = fields.len() + 2;
    if payload <= base + 10 {
        return format!("{{{fields}}}");
    }
    let pad = payload - base - 9;
    format!("{{{fields},\"pad\":\"{}\"}}", "x".repeat(pad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_frames() {
        let pong = r#"{"type":"pong","ts":1732390000000,"id":12345}"#;
        assert_eq!(frame_type(pong), Some("pong"));
        assert_eq!(find_u64(pong, "\"id\":"), Some(12345));
        let msg = r#"{"type":"message","channel":"c","data":{"t":987,"pad":"xx"},"offset":3}"#;
        assert_eq!(frame_type(msg), Some("message"));
        assert_eq!(find_u64(msg, "\"t\":"), Some(987));
        assert_eq!(find_u64(msg, "\"nope\":"), None);
    }

    #[test]
    fn pads_to_the_payload_size() {
        let f = padded(r#""action":"ping","id":1"#, 200);
        assert_eq!(f.len(), 200);
        assert!(serde_json::from_str::<serde_json::Value>(&f).is_ok());
        assert_eq!(padded(r#""action":"ping""#, 0), r#"{"action":"ping"}"#);
    }
}
