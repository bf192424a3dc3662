//! Fan-out: N subscribers on one channel and one publisher. Each publish carries its send time
//! (`data.t`, ns on the recorder's clock); one event is one delivery to one subscriber.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::Options;
use crate::drive::{self, ReportBase};
use crate::error::BenchError;
use crate::report::{Recorder, Report};
use crate::ws::{self, Ws};

struct Shared {
    rec: Arc<Recorder>,
    delivered: AtomicU64,
    subscribers: u64,
    /// Woken each time the delivered count reaches a multiple of `subscribers`.
    all_got_one: Notify,
}

pub async fn run(opts: Options, cancel: CancellationToken) -> Result<Report, BenchError> {
    let rec = Arc::new(Recorder::new());
    let subs = ws::open_many(&opts.url, opts.connections, opts.open_concurrency, &rec, opts.timeout, &cancel).await;
    if subs.len() < opts.connections {
        return Err(BenchError::TooFewConnections {
            opened: subs.len(),
            wanted: opts.connections,
            first: rec.first_error().unwrap_or_default(),
        });
    }
    let mut publisher = ws::connect(&opts.url, &rec, opts.timeout).await?;
    rec.connections_opened.fetch_add(1, Ordering::Relaxed);
    let shared = Arc::new(Shared {
        rec: rec.clone(),
        delivered: AtomicU64::new(0),
        subscribers: subs.len() as u64,
        all_got_one: Notify::new(),
    });

    // Subscribe everyone (bounded: at most `open_concurrency` waiting for their ack at once).
    let stop_readers = cancel.child_token();
    let mut readers = JoinSet::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<Result<(), String>>(opts.open_concurrency.max(1));
    for ws in subs {
        let (shared, stop, ready, opts) = (shared.clone(), stop_readers.clone(), ready_tx.clone(), opts.clone());
        readers.spawn(subscriber(ws, shared, opts, stop, ready));
    }
    drop(ready_tx);
    let mut subscribed = 0;
    while let Some(r) = ready_rx.recv().await {
        match r {
            Ok(()) => subscribed += 1,
            Err(e) => rec.note_failure(e),
        }
    }
    if subscribed < opts.connections {
        stop_readers.cancel();
        return Err(BenchError::TooFewConnections {
            opened: subscribed,
            wanted: opts.connections,
            first: rec.first_error().unwrap_or_default(),
        });
    }

    let stop = cancel.child_token();
    let published = AtomicU64::new(0);
    let publish_loop = async {
        let mut iv = opts.rate.map(|r| {
            let mut iv = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
            iv.set_missed_tick_behavior(MissedTickBehavior::Burst);
            iv
        });
        while !stop.is_cancelled() {
            if let Some(iv) = iv.as_mut() {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = iv.tick() => {}
                }
            }
            let t = rec.now_ns().max(1);
            let fields = format!(r#""action":"publish","channel":"{}","data":{{"t":{t}}}"#, opts.channel);
            let frame = ws::padded(&fields, opts.payload);
            if let Err(e) = publisher.send(Message::text(frame)).await {
                rec.note_failure(format!("publish: {e}"));
                break;
            }
            rec.sent.fetch_add(1, Ordering::Relaxed);
            let k = published.fetch_add(1, Ordering::Relaxed) + 1;
            if iv.is_none() && !wait_delivered(&shared, k * shared.subscribers, opts.timeout).await {
                rec.timeouts.fetch_add(1, Ordering::Relaxed);
                rec.note_failure(format!("publish {k} not delivered to every subscriber within {:?}", opts.timeout));
                break;
            }
        }
    };
    let measure = async {
        let phase = drive::measure(&rec, opts.warmup, opts.duration, opts.server_pid, opts.progress, "fanout", &cancel);
        let phase = phase.await;
        stop.cancel();
        phase
    };
    let (phase, ()) = tokio::join!(measure, publish_loop);
    let expected = published.load(Ordering::Relaxed) * shared.subscribers;
    wait_delivered(&shared, expected, opts.timeout).await;
    stop_readers.cancel();
    let drained = tokio::time::timeout(Duration::from_secs(5), async { while readers.join_next().await.is_some() {} });
    if drained.await.is_err() {
        readers.shutdown().await;
    }
    // Publisher errors (rate limit, forbidden) arrive on the publisher's socket.
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(50), publisher.next()).await {
        if let Message::Text(t) = m {
            rec.received.fetch_add(1, Ordering::Relaxed);
            if ws::frame_type(&t) == Some("error") {
                rec.error(t.as_str());
            }
        }
    }
    ws::close(publisher).await;
    let phase = phase?;
    let lost = expected.saturating_sub(shared.delivered.load(Ordering::Relaxed));
    let events = rec.measured.load(Ordering::Relaxed);
    let server = drive::server_stats(opts.server_pid, &phase, events);
    let notes = vec![
        format!(
            "one event = one delivery to one subscriber; {} publishes to {} subscribers on channel {:?}",
            published.load(Ordering::Relaxed),
            shared.subscribers,
            opts.channel
        ),
        if opts.rate.is_some() {
            "open loop: --rate is publishes per second".into()
        } else {
            "closed loop: the next publish leaves when every subscriber has the previous one".into()
        },
    ];
    let base = ReportBase {
        workload: "fanout",
        target: &opts.url,
        connections: opts.connections,
        rate: opts.rate,
        payload: opts.payload,
        warmup: opts.warmup,
        event: "deliveries",
    };
    Ok(drive::build_report(base, &rec, &phase, server, lost, notes))
}

/// Waits (bounded) until `target` deliveries were counted.
async fn wait_delivered(shared: &Shared, target: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let notified = shared.all_got_one.notified();
        if shared.delivered.load(Ordering::Acquire) >= target {
            return true;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return shared.delivered.load(Ordering::Acquire) >= target;
        }
    }
}

async fn subscriber(
    mut ws: Ws,
    shared: Arc<Shared>,
    opts: Options,
    stop: CancellationToken,
    ready: tokio::sync::mpsc::Sender<Result<(), String>>,
) {
    let rec = &shared.rec;
    let sub = format!(r#"{{"action":"subscribe","channel":"{}","id":1}}"#, opts.channel);
    let acked = async {
        ws.send(Message::text(sub)).await?;
        rec.sent.fetch_add(1, Ordering::Relaxed);
        loop {
            let text = ws::next_text(&mut ws, opts.timeout, "subscribed").await?;
            rec.received.fetch_add(1, Ordering::Relaxed);
            match ws::frame_type(&text) {
                Some("subscribed") => return Ok(()),
                Some("error") => return Err(BenchError::Protocol { expected: "subscribed", got: text }),
                _ => {}
            }
        }
    }
    .await;
    let ok = acked.is_ok();
    let _ = ready.send(acked.map_err(|e: BenchError| e.to_string())).await;
    drop(ready);
    if !ok {
        return;
    }
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            _ = stop.cancelled() => break,
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | None => return,
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                rec.note_failure(format!("subscriber read: {e}"));
                return;
            }
        };
        rec.received.fetch_add(1, Ordering::Relaxed);
        match ws::frame_type(&text) {
            Some("message") => {
                if let Some(t) = ws::find_u64(&text, "\"t\":") {
                    rec.record_since_ns(t);
                }
                let v = shared.delivered.fetch_add(1, Ordering::AcqRel) + 1;
                if v.is_multiple_of(shared.subscribers) {
                    shared.all_got_one.notify_one();
                }
            }
            Some("error") => rec.error(text.as_str()),
            _ => {}
        }
    }
    ws::close(ws).await;
}
