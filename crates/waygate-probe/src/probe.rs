//! The WebSocket probe and monitor of seed 003: per path, connect and time the handshake,
//! measure a round trip (application `ping` when the server sent a welcome, else a WebSocket
//! ping), optionally hold the connection and report liveness every 5 s; `monitor` repeats the
//! round every interval for a duration. Thresholds turn the summary into pass/fail.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{CheckError, ms, ws};

/// Seed 003's liveness reporting interval while holding a connection.
pub const LIVENESS_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize)]
pub struct Thresholds {
    /// Minimum share of successful attempts, in percent.
    #[serde(rename = "minSuccessPercent")]
    pub min_success_percent: f64,
    /// Maximum handshake p95, in milliseconds.
    #[serde(rename = "maxHandshakeMs")]
    pub max_handshake_ms: f64,
    /// Maximum round-trip p99, in milliseconds.
    #[serde(rename = "maxRttMs")]
    pub max_rtt_ms: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { min_success_percent: 98.0, max_handshake_ms: 2000.0, max_rtt_ms: 100.0 }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Monitor {
    pub interval: Duration,
    pub duration: Duration,
}

#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// `ws://host[:port]` or `wss://host[:port]`; a path in it is replaced by each of `paths`.
    pub url: String,
    pub paths: Vec<String>,
    pub hold: Option<Duration>,
    pub monitor: Option<Monitor>,
    /// Connections per path per round, opened at once.
    pub concurrency: usize,
    /// Bound for the handshake and for each round trip.
    pub timeout: Duration,
    /// How long to wait for a welcome frame before falling back to WebSocket pings.
    pub welcome_wait: Duration,
    pub insecure: bool,
    pub thresholds: Thresholds,
}

/// One connection attempt.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub round: u32,
    pub path: String,
    pub url: String,
    pub ok: bool,
    #[serde(rename = "handshakeMs")]
    pub handshake_ms: Option<f64>,
    #[serde(rename = "rttMs")]
    pub rtt_ms: Option<f64>,
    /// `application` (ping/pong action) or `websocket` (ping/pong frames).
    #[serde(rename = "rttKind")]
    pub rtt_kind: Option<&'static str>,
    /// Round trips of the liveness checks while held.
    #[serde(rename = "holdRttsMs", skip_serializing_if = "Vec::is_empty")]
    pub hold_rtts_ms: Vec<f64>,
    #[serde(rename = "heldSeconds", skip_serializing_if = "Option::is_none")]
    pub held_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The server's error envelope when the upgrade was refused with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envelope: Option<serde_json::Value>,
}

/// Something worth a line while the probe runs.
#[derive(Debug, Clone)]
pub enum Event {
    /// A connection held with `hold` answered its liveness check.
    Alive {
        round: u32,
        path: String,
        elapsed: Duration,
        rtt: Duration,
    },
    Attempt(Attempt),
    RoundDone {
        round: u32,
        ok: usize,
        total: usize,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub attempts: usize,
    pub successes: usize,
    #[serde(rename = "successPercent")]
    pub success_percent: f64,
    #[serde(rename = "handshakeMs")]
    pub handshake_ms: Percentiles,
    #[serde(rename = "rttMs")]
    pub rtt_ms: Percentiles,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub samples: u64,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub ok: bool,
    pub url: String,
    pub rounds: u32,
    pub summary: Summary,
    pub thresholds: Thresholds,
    /// Each threshold missed, in words.
    pub violations: Vec<String>,
    pub attempts: Vec<Attempt>,
}

/// `url` with its path replaced by `path`.
pub fn path_url(url: &str, path: &str) -> Result<String, CheckError> {
    let bad = |reason: &str| CheckError::Url { url: url.to_owned(), reason: reason.to_owned() };
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))
        .ok_or_else(|| bad("the scheme must be ws:// or wss://"))?;
    let scheme = &url[..url.len() - rest.len()];
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
    Ok(format!("{scheme}{authority}{path}"))
}

/// Runs rounds until done; `on_event` is called from the probing tasks as things happen.
pub async fn run(opts: &ProbeOptions, on_event: Arc<dyn Fn(&Event) + Send + Sync>) -> Result<ProbeReport, CheckError> {
    let urls =
        opts.paths.iter().map(|p| Ok((p.clone(), path_url(&opts.url, p)?))).collect::<Result<Vec<_>, CheckError>>()?;
    let tls = crate::tls_config(opts.insecure)?;
    let attempts = Arc::new(Mutex::new(Vec::<Attempt>::new()));
    let started = Instant::now();
    let mut round = 0u32;
    loop {
        round += 1;
        let round_started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (path, url) in &urls {
            for _ in 0..opts.concurrency.max(1) {
                let (path, url, tls, opts, on_event) =
                    (path.clone(), url.clone(), tls.clone(), opts.clone(), on_event.clone());
                tasks.spawn(async move {
                    let attempt = attempt(round, path, url, &tls, &opts, &*on_event).await;
                    on_event(&Event::Attempt(attempt.clone()));
                    attempt
                });
            }
        }
        let mut ok = 0;
        let mut total = 0;
        while let Some(done) = tasks.join_next().await {
            let a = done.map_err(|e| CheckError::WebSocket(format!("probe task failed: {e}")))?;
            total += 1;
            ok += usize::from(a.ok);
            attempts.lock().unwrap().push(a);
        }
        on_event(&Event::RoundDone { round, ok, total });
        let Some(monitor) = opts.monitor else { break };
        let next = round_started + monitor.interval;
        if next.duration_since(started) >= monitor.duration {
            break;
        }
        tokio::time::sleep_until(next.into()).await;
    }
    let attempts = std::mem::take(&mut *attempts.lock().unwrap());
    Ok(report(opts, round, attempts))
}

async fn attempt(
    round: u32,
    path: String,
    url: String,
    tls: &Arc<rustls::ClientConfig>,
    opts: &ProbeOptions,
    on_event: &(dyn Fn(&Event) + Send + Sync),
) -> Attempt {
    let mut a = Attempt {
        round,
        path,
        url,
        ok: false,
        handshake_ms: None,
        rtt_ms: None,
        rtt_kind: None,
        hold_rtts_ms: Vec::new(),
        held_seconds: None,
        error: None,
        envelope: None,
    };
    let mut rtts = Vec::new();
    match exchange(&mut a, &mut rtts, tls, opts, on_event).await {
        Ok(()) => a.ok = true,
        Err(e) => {
            a.envelope = e.envelope().cloned();
            a.error = Some(e.to_string());
        }
    }
    a.rtt_ms = rtts.first().copied();
    a.hold_rtts_ms = rtts.into_iter().skip(1).collect();
    a
}

/// Connect, round trip, hold; fills `a` as it goes so a late failure keeps the early figures.
async fn exchange(
    a: &mut Attempt,
    rtts: &mut Vec<f64>,
    tls: &Arc<rustls::ClientConfig>,
    opts: &ProbeOptions,
    on_event: &(dyn Fn(&Event) + Send + Sync),
) -> Result<(), CheckError> {
    let (mut stream, handshake) = ws::connect(&a.url, tls, opts.timeout).await?;
    a.handshake_ms = Some(ms(handshake));
    let welcomed =
        match tokio::time::timeout(opts.welcome_wait, ws::next_json(&mut stream, opts.timeout, "welcome")).await {
            Ok(Ok(v)) => v["type"] == "welcome",
            Ok(Err(e)) => return Err(e),
            Err(_) => false,
        };
    a.rtt_kind = Some(if welcomed { "application" } else { "websocket" });
    let mut seq = 0;
    rtts.push(ms(ws::round_trip(&mut stream, welcomed, seq, opts.timeout).await?));
    if let Some(hold) = opts.hold {
        let held_from = Instant::now();
        let result: Result<(), CheckError> = async {
            loop {
                let left = hold.saturating_sub(held_from.elapsed());
                if left.is_zero() {
                    return Ok(());
                }
                tokio::time::sleep(left.min(LIVENESS_EVERY)).await;
                seq += 1;
                let rtt = ws::round_trip(&mut stream, welcomed, seq, opts.timeout).await.map_err(|e| {
                    CheckError::WebSocket(format!("lost after {:.1} s held: {e}", held_from.elapsed().as_secs_f64()))
                })?;
                rtts.push(ms(rtt));
                on_event(&Event::Alive { round: a.round, path: a.path.clone(), elapsed: held_from.elapsed(), rtt });
            }
        }
        .await;
        a.held_seconds = Some((held_from.elapsed().as_secs_f64() * 10.0).round() / 10.0);
        result?;
    }
    ws::close(stream, Duration::from_secs(2).min(opts.timeout)).await;
    Ok(())
}

fn percentiles(samples: impl Iterator<Item = f64>) -> Percentiles {
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid");
    for ms in samples {
        h.saturating_record((ms * 1000.0).round().max(1.0) as u64);
    }
    if h.is_empty() {
        return Percentiles::default();
    }
    let at = |q: f64| Some(h.value_at_quantile(q) as f64 / 1000.0);
    Percentiles { samples: h.len(), p50: at(0.50), p95: at(0.95), p99: at(0.99), max: Some(h.max() as f64 / 1000.0) }
}

fn report(opts: &ProbeOptions, rounds: u32, mut attempts: Vec<Attempt>) -> ProbeReport {
    attempts.sort_by(|a, b| (a.round, &a.path).cmp(&(b.round, &b.path)));
    let successes = attempts.iter().filter(|a| a.ok).count();
    let success_percent =
        if attempts.is_empty() { 0.0 } else { (successes as f64 * 10_000.0 / attempts.len() as f64).round() / 100.0 };
    let handshake_ms = percentiles(attempts.iter().filter_map(|a| a.handshake_ms));
    let rtt_ms = percentiles(attempts.iter().flat_map(|a| a.rtt_ms.into_iter().chain(a.hold_rtts_ms.iter().copied())));
    let t = &opts.thresholds;
    let mut violations = Vec::new();
    if success_percent < t.min_success_percent {
        violations.push(format!("success {success_percent}% < {}%", t.min_success_percent));
    }
    if let Some(p95) = handshake_ms.p95.filter(|v| *v > t.max_handshake_ms) {
        violations.push(format!("handshake p95 {p95} ms > {} ms", t.max_handshake_ms));
    }
    if let Some(p99) = rtt_ms.p99.filter(|v| *v > t.max_rtt_ms) {
        violations.push(format!("rtt p99 {p99} ms > {} ms", t.max_rtt_ms));
    }
    ProbeReport {
        ok: violations.is_empty(),
        url: opts.url.clone(),
        rounds,
        summary: Summary { attempts: attempts.len(), successes, success_percent, handshake_ms, rtt_ms },
        thresholds: t.clone(),
        violations,
        attempts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_url_replaces_the_path() {
        assert_eq!(path_url("ws://h:1", "/ws").unwrap(), "ws://h:1/ws");
        assert_eq!(path_url("wss://h/x?y", "ws/test").unwrap(), "wss://h/ws/test");
        assert!(path_url("http://h", "/ws").is_err());
        assert!(path_url("ws:///ws", "/ws").is_err());
    }

    #[test]
    fn percentiles_in_milliseconds() {
        let p = percentiles([1.0, 2.0, 3.0, 100.0].into_iter());
        assert_eq!(p.samples, 4);
        assert_eq!(p.p50, Some(2.0));
        assert!((p.max.unwrap() - 100.0).abs() < 0.2, "{p:?}");
        assert!(percentiles(std::iter::empty()).p50.is_none());
    }
}
