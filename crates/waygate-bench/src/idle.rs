//! Idle: open N connections (each waits for its welcome), hold them, and report the server's
//! RSS growth per connection. Events are the handshakes made while opening.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::Options;
use crate::drive::{self, Phase, ReportBase};
use crate::error::BenchError;
use crate::procstat;
use crate::report::{Recorder, Report};
use crate::ws;

/// Time given to the server after the last connection opened before RSS is read.
const SETTLE: Duration = Duration::from_secs(2);

pub async fn run(opts: Options, cancel: CancellationToken) -> Result<Report, BenchError> {
    let rec = Arc::new(Recorder::new());
    let before = opts.server_pid.map(procstat::sample).transpose()?;
    let open_started = Instant::now();
    rec.set_measuring(true);
    let conns = ws::open_many(&opts.url, opts.connections, opts.open_concurrency, &rec, opts.timeout, &cancel).await;
    rec.set_measuring(false);
    let open_secs = open_started.elapsed().as_secs_f64();
    let opened = conns.len();
    let stop = cancel.child_token();
    let mut holders = JoinSet::new();
    for mut socket in conns {
        let (rec, stop) = (rec.clone(), stop.clone());
        holders.spawn(async move {
            // Keep reading so the server's heartbeat pings are answered.
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    m = socket.next() => match m {
                        Some(Ok(Message::Text(_))) => { rec.received.fetch_add(1, Ordering::Relaxed); }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                            rec.note_failure("server closed an idle connection");
                            return;
                        }
                        Some(Ok(_)) => {}
                    },
                }
            }
            ws::close(socket).await;
        });
    }
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(SETTLE) => {}
    }
    let hold =
        drive::measure(&rec, Duration::ZERO, opts.duration, opts.server_pid, opts.progress, "idle", &cancel).await;
    let end = opts.server_pid.map(procstat::sample).transpose();
    stop.cancel();
    let drained = tokio::time::timeout(Duration::from_secs(30), async { while holders.join_next().await.is_some() {} });
    if drained.await.is_err() {
        holders.shutdown().await;
    }
    let hold = hold?;
    let end = end?;
    let mut server = drive::server_stats(opts.server_pid, &hold, 0);
    if let (Some(s), Some(b), Some(e)) = (server.as_mut(), before, end) {
        s.rss_kib_start = b.rss_kib;
        s.rss_kib_end = e.rss_kib;
        s.cpu_us_per_event = None;
        s.rss_kib_per_connection =
            (opened > 0).then(|| drive::round2((e.rss_kib as f64 - b.rss_kib as f64) / opened as f64));
    }
    let mut notes = vec![
        format!(
            "{opened} of {} connections opened in {open_secs:.1}s, {} handshakes at a time, then held {:.0}s; server CPU is for the hold",
            opts.connections,
            opts.open_concurrency,
            hold.measured.as_secs_f64()
        ),
        "RSS per connection = (server RSS at the end of the hold − RSS before the first connect) / connections opened"
            .into(),
    ];
    if opened < opts.connections {
        notes.push(format!("only {opened} connections could be opened (see first error)"));
    }
    // The latency histogram holds the handshakes; the events are the connections opened.
    let phase = Phase { measured: Duration::from_secs_f64(open_secs), start: None, end: None };
    let base = ReportBase {
        workload: "idle",
        target: &opts.url,
        connections: opts.connections,
        rate: None,
        payload: 0,
        warmup: Duration::ZERO,
        event: "connections opened",
    };
    let mut report = drive::build_report(base, &rec, &phase, server, 0, notes);
    report.duration_secs = drive::round2(hold.measured.as_secs_f64());
    Ok(report)
}
