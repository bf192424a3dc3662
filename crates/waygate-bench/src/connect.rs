//! Connect storm: `connections` workers each connect, wait for the welcome and close, in a loop.
//! One event is one handshake (TCP + upgrade + welcome); its latency is measured to the welcome.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::Options;
use crate::drive::{self, ReportBase};
use crate::error::BenchError;
use crate::report::{Recorder, Report};
use crate::ws;

pub async fn run(opts: Options, cancel: CancellationToken) -> Result<Report, BenchError> {
    let rec = Arc::new(Recorder::new());
    let stop = cancel.child_token();
    let mut workers = JoinSet::new();
    for _ in 0..opts.connections {
        let (rec, opts, stop) = (rec.clone(), opts.clone(), stop.clone());
        workers.spawn(async move {
            while !stop.is_cancelled() {
                let t0 = Instant::now();
                match ws::connect(&opts.url, &rec, opts.timeout).await {
                    Ok(socket) => {
                        rec.record(t0.elapsed());
                        rec.connections_opened.fetch_add(1, Ordering::Relaxed);
                        ws::close(socket).await;
                    }
                    Err(e) => {
                        rec.connections_failed.fetch_add(1, Ordering::Relaxed);
                        rec.note_failure(e.to_string());
                        // Back off a little so a refusing server is not spun against.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
        });
    }
    let phase =
        drive::measure(&rec, opts.warmup, opts.duration, opts.server_pid, opts.progress, "connect", &cancel).await;
    stop.cancel();
    let drained = tokio::time::timeout(opts.timeout + Duration::from_secs(3), async {
        while workers.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        workers.shutdown().await;
    }
    let phase = phase?;
    let events = rec.measured.load(Ordering::Relaxed);
    let server = drive::server_stats(opts.server_pid, &phase, events);
    let notes = vec![format!(
        "one event = one handshake (TCP connect + HTTP upgrade + welcome frame), {} at a time; each connection is then closed with a close handshake",
        opts.connections
    )];
    let base = ReportBase {
        workload: "connect",
        target: &opts.url,
        connections: opts.connections,
        rate: None,
        payload: 0,
        warmup: opts.warmup,
        event: "handshakes",
    };
    Ok(drive::build_report(base, &rec, &phase, server, 0, notes))
}
