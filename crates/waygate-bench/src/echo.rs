//! Echo: `{"action":"ping","id":T}` → `{"type":"pong","id":T}` on every connection, where `T` is
//! the send time in ns on the recorder's clock, so a reply carries its own latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::Options;
use crate::drive::{self, ReportBase};
use crate::error::BenchError;
use crate::report::{Recorder, Report};
use crate::ws::{self, Ws};

pub async fn run(opts: Options, cancel: CancellationToken) -> Result<Report, BenchError> {
    let rec = Arc::new(Recorder::new());
    let conns = ws::open_many(&opts.url, opts.connections, opts.open_concurrency, &rec, opts.timeout, &cancel).await;
    if conns.len() < opts.connections {
        return Err(BenchError::TooFewConnections {
            opened: conns.len(),
            wanted: opts.connections,
            first: rec.first_error().unwrap_or_default(),
        });
    }
    let stop = cancel.child_token();
    let per_conn = opts.rate.map(|r| r / conns.len() as f64);
    let n = conns.len();
    let mut tasks = JoinSet::new();
    for (i, ws) in conns.into_iter().enumerate() {
        let (rec, opts, stop) = (rec.clone(), opts.clone(), stop.clone());
        tasks.spawn(async move {
            match per_conn {
                None => closed_loop(ws, &rec, &opts, &stop).await,
                Some(rate) => {
                    let period = Duration::from_secs_f64(1.0 / rate);
                    let offset = period.mul_f64(i as f64 / n as f64);
                    open_loop(ws, &rec, &opts, &stop, period, offset).await
                }
            }
        });
    }
    let phase = drive::measure(&rec, opts.warmup, opts.duration, opts.server_pid, opts.progress, "echo", &cancel).await;
    stop.cancel();
    let mut lost = 0;
    let drained = tokio::time::timeout(opts.timeout + Duration::from_secs(3), async {
        while let Some(r) = tasks.join_next().await {
            lost += r.unwrap_or(0);
        }
    })
    .await;
    if drained.is_err() {
        tasks.shutdown().await;
    }
    let phase = phase?;
    let events = rec.measured.load(Ordering::Relaxed);
    let server = drive::server_stats(opts.server_pid, &phase, events);
    let mut notes = vec![format!(
        "one event = one ping→pong round trip; request frames are {} bytes",
        ws::padded(r#""action":"ping","id":1000000000000"#, opts.payload).len()
    )];
    if opts.rate.is_some() {
        notes.push("open loop: sends are paced by the tokio timer (1 ms granularity) and latency is measured from the actual send".into());
    }
    let base = ReportBase {
        workload: "echo",
        target: &opts.url,
        connections: opts.connections,
        rate: opts.rate,
        payload: opts.payload,
        warmup: opts.warmup,
        event: "round trips",
    };
    Ok(drive::build_report(base, &rec, &phase, server, lost, notes))
}

fn ping(rec: &Recorder, payload: usize) -> (u64, String) {
    let t = rec.now_ns().max(1);
    (t, ws::padded(&format!(r#""action":"ping","id":{t}"#), payload))
}

/// Send, wait for the matching pong, repeat. Returns the number of pongs never received.
async fn closed_loop(mut ws: Ws, rec: &Recorder, opts: &Options, stop: &CancellationToken) -> u64 {
    while !stop.is_cancelled() {
        let (t, frame) = ping(rec, opts.payload);
        if let Err(e) = ws.send(Message::text(frame)).await {
            rec.note_failure(format!("send: {e}"));
            return 0;
        }
        rec.sent.fetch_add(1, Ordering::Relaxed);
        loop {
            let text = match ws::next_text(&mut ws, opts.timeout, "pong").await {
                Ok(t) => t,
                Err(e) => {
                    if matches!(e, BenchError::Timeout { .. }) {
                        rec.timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                    rec.note_failure(e.to_string());
                    return 1;
                }
            };
            rec.received.fetch_add(1, Ordering::Relaxed);
            match ws::frame_type(&text) {
                Some("pong") if ws::find_u64(&text, "\"id\":") == Some(t) => {
                    rec.record_since_ns(t);
                    break;
                }
                Some("error") => {
                    rec.error(text.clone());
                    if ws::find_u64(&text, "\"id\":") == Some(t) {
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    ws::close(ws).await;
    0
}

/// Sends on a fixed schedule while a reader takes the pongs; returns the pongs never received.
async fn open_loop(
    ws: Ws,
    rec: &Recorder,
    opts: &Options,
    stop: &CancellationToken,
    period: Duration,
    offset: Duration,
) -> u64 {
    let (mut sink, mut stream) = ws.split();
    let sent = AtomicU64::new(0);
    let writer_done = AtomicBool::new(false);
    let writer = async {
        let mut iv = tokio::time::interval_at(Instant::now() + offset, period);
        iv.set_missed_tick_behavior(MissedTickBehavior::Burst);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = iv.tick() => {}
            }
            let (_, frame) = ping(rec, opts.payload);
            if let Err(e) = sink.send(Message::text(frame)).await {
                rec.note_failure(format!("send: {e}"));
                break;
            }
            sent.fetch_add(1, Ordering::Relaxed);
            rec.sent.fetch_add(1, Ordering::Relaxed);
        }
        writer_done.store(true, Ordering::Release);
    };
    let reader = async {
        let mut got = 0u64;
        let mut drain_until: Option<Instant> = None;
        loop {
            if drain_until.is_some() && writer_done.load(Ordering::Acquire) && got >= sent.load(Ordering::Relaxed) {
                break;
            }
            let msg = tokio::select! {
                m = stream.next() => m,
                _ = stop.cancelled(), if drain_until.is_none() => {
                    drain_until = Some(Instant::now() + opts.timeout);
                    continue;
                }
                _ = tokio::time::sleep(Duration::from_millis(10)), if drain_until.is_some() => {
                    if drain_until.is_some_and(|d| Instant::now() >= d) {
                        rec.timeouts.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    continue;
                }
            };
            let text = match msg {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    rec.note_failure(format!("read: {e}"));
                    break;
                }
            };
            rec.received.fetch_add(1, Ordering::Relaxed);
            match ws::frame_type(&text) {
                Some("pong") => {
                    got += 1;
                    if let Some(t) = ws::find_u64(&text, "\"id\":") {
                        rec.record_since_ns(t);
                    }
                }
                Some("error") => {
                    got += 1;
                    rec.error(text.as_str());
                }
                _ => {}
            }
        }
        got
    };
    let ((), got) = tokio::join!(writer, reader);
    let lost = sent.load(Ordering::Relaxed).saturating_sub(got);
    if let Ok(ws) = sink.reunite(stream) {
        ws::close(ws).await;
    }
    lost
}
