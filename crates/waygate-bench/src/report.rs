//! Latency recording (HDR histograms, one per second for the timeline) and the JSON report.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms hold (60 s, in µs); larger values are clamped.
const MAX_US: u64 = 60_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("static bounds are valid")
}

/// Shared counters and histograms of one run. Cheap to record from many tasks.
pub struct Recorder {
    started: Instant,
    measuring: AtomicBool,
    /// Counted for the whole run (warm-up included): these are what the server saw.
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub error_frames: AtomicU64,
    pub timeouts: AtomicU64,
    pub connections_opened: AtomicU64,
    pub connections_failed: AtomicU64,
    /// Events (round trips, deliveries, handshakes, calls) completed while measuring.
    pub measured: AtomicU64,
    first_error: Mutex<Option<String>>,
    hist: Mutex<Hists>,
}

struct Hists {
    total: Histogram<u64>,
    second: Histogram<u64>,
    timeline: Vec<TimelinePoint>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            started: Instant::now(),
            measuring: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            error_frames: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            connections_opened: AtomicU64::new(0),
            connections_failed: AtomicU64::new(0),
            measured: AtomicU64::new(0),
            first_error: Mutex::new(None),
            hist: Mutex::new(Hists { total: histogram(), second: histogram(), timeline: Vec::new() }),
        }
    }

    /// Nanoseconds since the recorder was created: the clock used for timestamps on the wire.
    pub fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    pub fn is_measuring(&self) -> bool {
        self.measuring.load(Ordering::Relaxed)
    }

    pub fn set_measuring(&self, on: bool) {
        self.measuring.store(on, Ordering::Relaxed);
    }

    /// Records one completed event with its latency (ignored during warm-up).
    pub fn record(&self, latency: Duration) {
        if !self.is_measuring() {
            return;
        }
        self.measured.fetch_add(1, Ordering::Relaxed);
        let us = (latency.as_micros() as u64).clamp(1, MAX_US);
        let mut h = self.hist.lock().expect("recorder lock");
        let _ = h.total.record(us);
        let _ = h.second.record(us);
    }

    /// Records a latency given as a wire timestamp from [`Recorder::now_ns`].
    pub fn record_since_ns(&self, sent_ns: u64) {
        let now = self.now_ns();
        self.record(Duration::from_nanos(now.saturating_sub(sent_ns)));
    }

    /// Counts a completed event that has no latency (used by nothing that has one).
    pub fn count_event(&self) {
        if self.is_measuring() {
            self.measured.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn error(&self, what: impl Into<String>) {
        self.error_frames.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().expect("recorder lock");
        if first.is_none() {
            *first = Some(what.into());
        }
    }

    pub fn note_failure(&self, what: impl Into<String>) {
        let mut first = self.first_error.lock().expect("recorder lock");
        if first.is_none() {
            *first = Some(what.into());
        }
    }

    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().expect("recorder lock").clone()
    }

    /// Closes the current one-second bucket of the timeline.
    pub fn tick(&self, at: Duration) {
        let mut h = self.hist.lock().expect("recorder lock");
        let point = TimelinePoint::from_hist(at.as_secs_f64(), &h.second);
        h.second.reset();
        h.timeline.push(point);
    }

    pub fn latency(&self) -> Option<Latency> {
        let h = self.hist.lock().expect("recorder lock");
        Latency::from_hist(&h.total)
    }

    pub fn timeline(&self) -> Vec<TimelinePoint> {
        self.hist.lock().expect("recorder lock").timeline.clone()
    }

    /// (percentile, µs) pairs for a CDF plot, from p0 to p99.99.
    pub fn cdf(&self) -> Vec<(f64, f64)> {
        let h = self.hist.lock().expect("recorder lock");
        if h.total.is_empty() {
            return Vec::new();
        }
        let mut qs: Vec<f64> = (0..=90).map(|i| i as f64 / 100.0).collect();
        qs.extend((0..=90).map(|i| 0.9 + i as f64 / 1000.0));
        qs.extend((1..=9).map(|i| 0.99 + i as f64 / 1000.0));
        qs.extend((1..=9).map(|i| 0.999 + i as f64 / 10_000.0));
        qs.push(0.9999);
        qs.into_iter().map(|q| (q * 100.0, h.total.value_at_quantile(q) as f64)).collect()
    }
}

/// Latency summary in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    fn from_hist(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        Some(Latency {
            count: h.len(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        })
    }
}

/// One second of the measured phase.
#[derive(Debug, Clone, Serialize)]
pub struct TimelinePoint {
    /// Seconds since the measured phase began (end of the bucket).
    pub t: f64,
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

impl TimelinePoint {
    fn from_hist(t: f64, h: &Histogram<u64>) -> TimelinePoint {
        let q = |x| if h.is_empty() { 0 } else { h.value_at_quantile(x) };
        TimelinePoint { t, count: h.len(), p50: q(0.5), p99: q(0.99), max: h.max() }
    }
}

/// Counts over the whole run, warm-up included: what the server should have seen.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub connections_opened: u64,
    pub connections_failed: u64,
    /// Messages (or requests) the client sent.
    pub sent: u64,
    /// Messages (or responses) the client received, welcomes included.
    pub received: u64,
    pub error_frames: u64,
    pub timeouts: u64,
    /// Expected but never received (fan-out deliveries, pongs, tool results).
    pub lost: u64,
}

/// The server process under test, sampled at the start and end of the measured phase.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerStats {
    pub pid: u32,
    pub cpu_ms: f64,
    /// Server CPU divided by the measured events (µs per round trip / delivery / handshake).
    pub cpu_us_per_event: Option<f64>,
    /// Average CPU use during the measured phase, in % of one core.
    pub cpu_percent: f64,
    pub rss_kib_start: u64,
    pub rss_kib_end: u64,
    /// (RSS at end − RSS before the connections opened) / open connections (idle only).
    pub rss_kib_per_connection: Option<f64>,
}

/// What `waygate bench … --json` prints.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub workload: String,
    pub target: String,
    pub connections: usize,
    /// `closed` (next message after the reply) or `open` (fixed rate).
    pub mode: String,
    pub rate: Option<f64>,
    pub payload_bytes: usize,
    pub warmup_secs: f64,
    /// Length of the measured phase.
    pub duration_secs: f64,
    pub counts: Counts,
    /// Events completed in the measured phase (round trips, deliveries, handshakes, calls).
    pub events: u64,
    pub events_per_sec: f64,
    /// What one event is, for readers of the report.
    pub event: String,
    pub latency_us: Option<Latency>,
    pub server: Option<ServerStats>,
    pub first_error: Option<String>,
    pub notes: Vec<String>,
    pub timeline: Vec<TimelinePoint>,
    /// (percentile, µs) pairs.
    pub cdf: Vec<(f64, f64)>,
}

impl Report {
    /// A short human summary (what `bench` prints without `--json`).
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} {} ({} conns, {}{}): {} {} in {:.1}s = {:.0}/s",
            self.workload,
            self.target,
            self.connections,
            self.mode,
            self.rate.map(|r| format!(" {r}/s")).unwrap_or_default(),
            self.events,
            self.event,
            self.duration_secs,
            self.events_per_sec
        );
        if let Some(l) = &self.latency_us {
            s += &format!(
                "\n  latency µs: p50 {} p90 {} p99 {} p99.9 {} max {} (mean {})",
                l.p50, l.p90, l.p99, l.p999, l.max, l.mean
            );
        }
        if let Some(srv) = &self.server {
            s += &format!(
                "\n  server pid {}: cpu {:.0} ms ({:.0}% of a core){}, rss {} → {} KiB{}",
                srv.pid,
                srv.cpu_ms,
                srv.cpu_percent,
                srv.cpu_us_per_event.map(|v| format!(", {v:.2} µs/event")).unwrap_or_default(),
                srv.rss_kib_start,
                srv.rss_kib_end,
                srv.rss_kib_per_connection.map(|v| format!(", {v:.2} KiB/conn")).unwrap_or_default()
            );
        }
        let c = &self.counts;
        s += &format!(
            "\n  counts: opened {} failed {} sent {} received {} errors {} timeouts {} lost {}",
            c.connections_opened, c.connections_failed, c.sent, c.received, c.error_frames, c.timeouts, c.lost
        );
        if let Some(e) = &self.first_error {
            s += &format!("\n  first error: {e}");
        }
        for n in &self.notes {
            s += &format!("\n  note: {n}");
        }
        s
    }
}
