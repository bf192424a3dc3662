//! The phases every workload shares: warm-up, measured phase with a one-second timeline and a
//! progress bar, CPU/RSS samples of the server at the phase edges.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::error::BenchError;
use crate::procstat::{self, ProcSample};
use crate::report::{Counts, Recorder, Report, ServerStats};

pub struct Phase {
    pub measured: Duration,
    pub start: Option<ProcSample>,
    pub end: Option<ProcSample>,
}

pub fn progress_bar(enabled: bool, len: u64, what: &str) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len}s {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_owned());
    pb
}

/// Sleeps through the warm-up, then measures for `duration`, ticking the timeline every second.
/// Returns early (with what was measured) when `cancel` fires.
pub async fn measure(
    rec: &Arc<Recorder>,
    warmup: Duration,
    duration: Duration,
    pid: Option<u32>,
    progress: bool,
    what: &str,
    cancel: &CancellationToken,
) -> Result<Phase, BenchError> {
    tokio::select! {
        _ = cancel.cancelled() => return Err(BenchError::Cancelled),
        _ = tokio::time::sleep(warmup) => {}
    }
    let pb = progress_bar(progress, duration.as_secs().max(1), what);
    let start_sample = pid.map(procstat::sample).transpose()?;
    let begin = Instant::now();
    rec.set_measuring(true);
    let mut next = begin + Duration::from_secs(1);
    let end = begin + duration;
    loop {
        let wake = next.min(end);
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        let now = Instant::now();
        if now >= next {
            rec.tick(next - begin);
            next += Duration::from_secs(1);
            pb.set_position((now - begin).as_secs());
            pb.set_message(format!("{} events", rec.measured.load(Ordering::Relaxed)));
        }
        if now >= end {
            break;
        }
    }
    rec.set_measuring(false);
    let measured = begin.elapsed();
    let end_sample = pid.map(procstat::sample).transpose()?;
    pb.finish_and_clear();
    Ok(Phase { measured, start: start_sample, end: end_sample })
}

pub fn server_stats(pid: Option<u32>, phase: &Phase, events: u64) -> Option<ServerStats> {
    let (pid, start, end) = (pid?, phase.start?, phase.end?);
    let ticks = end.cpu_ticks.saturating_sub(start.cpu_ticks);
    let cpu_us = ticks as f64 * 1e6 / procstat::ticks_per_second() as f64;
    Some(ServerStats {
        pid,
        cpu_ms: cpu_us / 1000.0,
        cpu_us_per_event: (events > 0).then(|| round2(cpu_us / events as f64)),
        cpu_percent: round2(cpu_us / phase.measured.as_secs_f64().max(1e-9) / 1e4),
        rss_kib_start: start.rss_kib,
        rss_kib_end: end.rss_kib,
        rss_kib_per_connection: None,
    })
}

pub fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Fills the parts of a report every workload shares.
pub struct ReportBase<'a> {
    pub workload: &'a str,
    pub target: &'a str,
    pub connections: usize,
    pub rate: Option<f64>,
    pub payload: usize,
    pub warmup: Duration,
    pub event: &'a str,
}

pub fn build_report(
    base: ReportBase<'_>,
    rec: &Recorder,
    phase: &Phase,
    server: Option<ServerStats>,
    lost: u64,
    notes: Vec<String>,
) -> Report {
    let events = rec.measured.load(Ordering::Relaxed);
    let secs = phase.measured.as_secs_f64();
    Report {
        workload: base.workload.to_owned(),
        target: base.target.to_owned(),
        connections: base.connections,
        mode: if base.rate.is_some() { "open" } else { "closed" }.to_owned(),
        rate: base.rate,
        payload_bytes: base.payload,
        warmup_secs: base.warmup.as_secs_f64(),
        duration_secs: round2(secs),
        counts: Counts {
            connections_opened: rec.connections_opened.load(Ordering::Relaxed),
            connections_failed: rec.connections_failed.load(Ordering::Relaxed),
            sent: rec.sent.load(Ordering::Relaxed),
            received: rec.received.load(Ordering::Relaxed),
            error_frames: rec.error_frames.load(Ordering::Relaxed),
            timeouts: rec.timeouts.load(Ordering::Relaxed),
            lost,
        },
        events,
        events_per_sec: if secs > 0.0 { round2(events as f64 / secs) } else { 0.0 },
        event: base.event.to_owned(),
        latency_us: rec.latency(),
        server,
        first_error: rec.first_error(),
        notes,
        timeline: rec.timeline(),
        cdf: rec.cdf(),
    }
}
