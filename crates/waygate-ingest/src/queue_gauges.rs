//! Queue depth and consumer count gauges, polled with passive declares on a connection of
//! their own so they keep working whatever the publisher or consumer is doing.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use metrics::Gauge;
use tokio_util::sync::CancellationToken;
use waygate_config::Secret;
use waygate_telemetry::Registry;

use crate::{amqp, names};

const POLL: Duration = Duration::from_secs(5);

struct QueueGauge {
    name: String,
    depth: Gauge,
    consumers: Gauge,
    dlq: Option<Gauge>,
}

/// Polls `queues` (and `dlq`, also exported as `waygate_dlq_depth`) until `stop`.
pub(crate) async fn poll(
    url: Secret,
    conn_name: String,
    queues: Vec<String>,
    dlq: String,
    registry: Arc<Registry>,
    stop: CancellationToken,
) {
    registry.describe_gauge(names::QUEUE_DEPTH, "Messages ready in the queue (passive declare, every 5 s)");
    registry.describe_gauge(names::QUEUE_CONSUMERS, "Consumers attached to the queue");
    registry.describe_gauge(names::DLQ_DEPTH, "Messages in the dead-letter queue");
    let mut all = queues;
    if !all.contains(&dlq) {
        all.push(dlq.clone());
    }
    let gauges: Vec<QueueGauge> = all
        .into_iter()
        .map(|name| QueueGauge {
            depth: registry.gauge(names::QUEUE_DEPTH, &[("queue", name.clone())]),
            consumers: registry.gauge(names::QUEUE_CONSUMERS, &[("queue", name.clone())]),
            dlq: (name == dlq).then(|| registry.gauge(names::DLQ_DEPTH, &[("queue", name.clone())])),
            name,
        })
        .collect();
    while !stop.is_cancelled() {
        if let Ok(conn) = amqp::connect(&url, &conn_name).await {
            'channel: while !stop.is_cancelled() {
                let Ok(channel) = amqp::timed(conn.create_channel()).await else { break };
                loop {
                    for g in &gauges {
                        let declared = amqp::timed(channel.queue_declare(
                            g.name.as_str().into(),
                            QueueDeclareOptions::default().passive(),
                            FieldTable::default(),
                        ))
                        .await;
                        match declared {
                            Ok(q) => {
                                g.depth.set(f64::from(q.message_count()));
                                g.consumers.set(f64::from(q.consumer_count()));
                                if let Some(d) = &g.dlq {
                                    d.set(f64::from(q.message_count()));
                                }
                            }
                            // A missing queue closes the channel; open another one later.
                            Err(_) => {
                                if !crate::sleep_or_stop(POLL, &stop).await {
                                    break 'channel;
                                }
                                continue 'channel;
                            }
                        }
                    }
                    if !crate::sleep_or_stop(POLL, &stop).await {
                        break 'channel;
                    }
                    if !conn.status().connected() {
                        break 'channel;
                    }
                }
            }
            let _ = conn.close(200, "bye".into()).await;
        }
        if !crate::sleep_or_stop(POLL, &stop).await {
            break;
        }
    }
}
