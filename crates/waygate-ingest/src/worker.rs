//! `waygate worker`: consumes a queue with a prefetch window and POSTs each message to an HTTP
//! handler. 2xx acks. 5xx, 408, 429, timeouts and connection errors retry through delay queues
//! (`{queue}.retry.{ms}ms`, whose expiry dead-letters the message back), so a failing message
//! never sits unacknowledged in the worker while it waits; after `--max-attempts` it goes to the
//! DLQ with `x-death` and `x-first-death-reason`. A message past its deadline
//! (`x-waygate-expires-at`, set by ingest for interactions) goes to the DLQ as `expired`: retries
//! carry the original deadline, so a retry never extends it. Other 4xx answers are permanent and
//! dead-letter at once.
//!
//! Every message is handled in its own task (at most `--prefetch` at a time), so a slow or
//! failing message never holds up healthy ones.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Full;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use metrics::{Counter, Gauge, Histogram};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use waygate_config::Secret;
use waygate_telemetry::Registry;

use crate::amqp::{self, DeathReason, Topology, header};
use crate::error::{Error, Result};
use crate::{Backoff, names, sleep_or_stop, tls};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub amqp_url: Secret,
    pub namespace: String,
    pub queue: String,
    pub dlq: String,
    pub handler: String,
    pub prefetch: u16,
    pub max_attempts: u32,
    /// Delay before the first retry; doubles per attempt up to `max_retry_delay`.
    pub retry_delay: Duration,
    pub max_retry_delay: Duration,
    pub handler_timeout: Duration,
    pub metrics_addr: Option<SocketAddr>,
    pub drain_timeout: Duration,
    pub instance_id: String,
}

impl WorkerConfig {
    pub fn new(amqp_url: Secret, namespace: &str, handler: impl Into<String>) -> WorkerConfig {
        let topo = Topology::new(namespace);
        WorkerConfig {
            amqp_url,
            namespace: namespace.to_owned(),
            queue: topo.interactions(),
            dlq: topo.dlq(),
            handler: handler.into(),
            prefetch: 32,
            max_attempts: 5,
            retry_delay: Duration::from_millis(200),
            max_retry_delay: Duration::from_secs(30),
            handler_timeout: Duration::from_secs(10),
            metrics_addr: None,
            drain_timeout: Duration::from_secs(30),
            instance_id: "worker".to_owned(),
        }
    }

    /// The delay after failed attempt `attempt` (1-based).
    pub fn retry_delay_for(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(20);
        self.retry_delay.saturating_mul(factor).min(self.max_retry_delay)
    }

    fn retry_delays(&self) -> Vec<u64> {
        let mut v: Vec<u64> = (1..self.max_attempts).map(|a| self.retry_delay_for(a).as_millis() as u64).collect();
        v.dedup();
        v
    }
}

struct Metrics {
    acked: Counter,
    retried: Counter,
    dead_lettered: Counter,
    expired: Counter,
    requeued: Counter,
    handler: Histogram,
    end_to_end: Histogram,
    inflight: Gauge,
    backend_up: Gauge,
}

impl Metrics {
    fn new(r: &Registry) -> Metrics {
        use names::*;
        r.describe_counter(WORKER_MESSAGES_TOTAL, "Messages handled, by outcome");
        r.describe_histogram(WORKER_HANDLER_DURATION, "Handler HTTP call duration");
        r.describe_histogram(WORKER_END_TO_END, "From the ingestor receiving the event to the handler's 2xx");
        r.describe_gauge(WORKER_INFLIGHT, "Messages being handled now");
        r.describe_gauge(BACKEND_UP, "1 when the backend answers");
        let outcome = |o: &str| r.counter(WORKER_MESSAGES_TOTAL, &[("outcome", o.to_owned())]);
        Metrics {
            acked: outcome("acked"),
            retried: outcome("retried"),
            dead_lettered: outcome("dead_lettered"),
            expired: outcome("expired"),
            requeued: outcome("requeued"),
            handler: r.histogram(WORKER_HANDLER_DURATION, &[]),
            end_to_end: r.histogram(WORKER_END_TO_END, &[]),
            inflight: r.gauge(WORKER_INFLIGHT, &[]),
            backend_up: r.gauge(BACKEND_UP, &[("backend", "amqp".into())]),
        }
    }
}

struct Status {
    consuming: AtomicBool,
    draining: AtomicBool,
}

pub struct Worker {
    cfg: Arc<WorkerConfig>,
    handler: http::Uri,
    client: tls::HttpClient,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    status: Arc<Status>,
    probe_addr: Option<SocketAddr>,
    tracker: TaskTracker,
    probe_stop: CancellationToken,
}

/// What the handler's answer means for the message.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Done,
    Retry(String),
    Permanent(String),
}

fn verdict(result: std::result::Result<http::StatusCode, String>) -> Verdict {
    match result {
        Ok(s) if s.is_success() => Verdict::Done,
        Ok(s)
            if s.is_server_error()
                || s == http::StatusCode::REQUEST_TIMEOUT
                || s == http::StatusCode::TOO_MANY_REQUESTS =>
        {
            Verdict::Retry(format!("handler answered {}", s.as_u16()))
        }
        Ok(s) => Verdict::Permanent(format!("handler answered {} (not retried)", s.as_u16())),
        Err(e) => Verdict::Retry(e),
    }
}

impl Worker {
    pub async fn build(cfg: WorkerConfig) -> Result<Worker> {
        let handler: http::Uri =
            cfg.handler.parse().map_err(|e| Error::invalid("--handler", format!("{:?}: {e}", cfg.handler)))?;
        if !matches!(handler.scheme_str(), Some("http" | "https")) {
            return Err(Error::invalid("--handler", format!("{:?} must be an http:// or https:// URL", cfg.handler)));
        }
        if cfg.prefetch == 0 || cfg.max_attempts == 0 {
            return Err(Error::invalid("worker settings", "--prefetch and --max-attempts must be at least 1"));
        }
        let client = tls::http_client(tls::client_config()?, usize::from(cfg.prefetch));
        let registry = Arc::new(Registry::new());
        let metrics = Arc::new(Metrics::new(&registry));
        let status = Arc::new(Status { consuming: AtomicBool::new(false), draining: AtomicBool::new(false) });
        let tracker = TaskTracker::new();
        let probe_stop = CancellationToken::new();
        let probe_addr = match cfg.metrics_addr {
            Some(addr) => {
                let s = status.clone();
                let readiness: crate::http::ReadinessFn = Arc::new(move || {
                    let mut reasons = Vec::new();
                    if s.draining.load(Ordering::Relaxed) {
                        reasons.push("draining".to_owned());
                    } else if !s.consuming.load(Ordering::Relaxed) {
                        reasons.push("not consuming (broker unreachable)".to_owned());
                    }
                    reasons
                });
                Some(crate::http::serve_probes(addr, registry.clone(), readiness, &tracker, probe_stop.clone()).await?)
            }
            None => None,
        };
        Ok(Worker { cfg: Arc::new(cfg), handler, client, registry, metrics, status, probe_addr, tracker, probe_stop })
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.probe_addr
    }

    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// Consumes until `shutdown`, then drains: stops consuming, lets in-flight messages finish
    /// (up to the drain timeout) and closes; unstarted prefetched messages return to the queue.
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> Result<()> {
        let stop = CancellationToken::new();
        let gauges_stop = CancellationToken::new();
        self.tracker.spawn(crate::queue_gauges::poll(
            self.cfg.amqp_url.clone(),
            format!("waygate-worker-gauges {}", self.cfg.instance_id),
            vec![self.cfg.queue.clone()],
            self.cfg.dlq.clone(),
            self.registry.clone(),
            gauges_stop.clone(),
        ));
        let signal = stop.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = shutdown => signal.cancel(),
                _ = signal.cancelled() => {}
            }
        });
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut result = Ok(());
        while !stop.is_cancelled() {
            match self.consume(&stop, &mut backoff).await {
                Ok(()) => {}
                Err(e @ Error::Invalid { .. }) => {
                    result = Err(e);
                    break;
                }
                Err(e) => {
                    self.status.consuming.store(false, Ordering::Relaxed);
                    self.metrics.backend_up.set(0.0);
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in = ?delay, "worker lost RabbitMQ");
                    if !sleep_or_stop(delay, &stop).await {
                        break;
                    }
                }
            }
        }
        self.status.draining.store(true, Ordering::Relaxed);
        gauges_stop.cancel();
        self.probe_stop.cancel();
        stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        result
    }

    async fn setup(&self) -> Result<(Connection, Channel, Channel)> {
        let conn = amqp::connect(&self.cfg.amqp_url, &format!("waygate-worker {}", self.cfg.instance_id)).await?;
        let consume = amqp::timed(conn.create_channel()).await?;
        let publish = amqp::timed(conn.create_channel()).await?;
        let topo = Topology::new(self.cfg.namespace.clone());
        topo.declare(&publish).await?;
        if self.cfg.queue != topo.interactions() {
            // Not ours to declare (its arguments are the operator's): it must exist.
            let declared = amqp::timed(publish.queue_declare(
                self.cfg.queue.as_str().into(),
                QueueDeclareOptions::default().passive(),
                FieldTable::default(),
            ))
            .await;
            if let Err(e) = declared {
                return Err(Error::invalid("--queue", format!("queue {} cannot be used: {e}", self.cfg.queue)));
            }
        }
        for delay in self.cfg.retry_delays() {
            Topology::declare_retry_queue(&publish, &self.cfg.queue, delay).await?;
        }
        amqp::timed(publish.confirm_select(ConfirmSelectOptions::default())).await?;
        amqp::timed(consume.basic_qos(self.cfg.prefetch, BasicQosOptions::default())).await?;
        Ok((conn, consume, publish))
    }

    async fn consume(&self, stop: &CancellationToken, backoff: &mut Backoff) -> Result<()> {
        let (conn, consume, publish) = match self.setup().await {
            Err(Error::Amqp(e)) if is_access_refused(&e) => {
                return Err(Error::invalid("AMQP_URL", format!("RabbitMQ refused access: {e}")));
            }
            other => other?,
        };
        let tag = format!("waygate-worker-{}-{}", self.cfg.instance_id, uuid::Uuid::new_v4().simple());
        let mut consumer = amqp::timed(consume.basic_consume(
            self.cfg.queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ))
        .await?;
        self.status.consuming.store(true, Ordering::Relaxed);
        self.metrics.backend_up.set(1.0);
        backoff.reset();
        tracing::info!(queue = %self.cfg.queue, prefetch = self.cfg.prefetch, handler = %self.cfg.handler, "consuming");
        let inflight = TaskTracker::new();
        let ctx = Arc::new(Ctx {
            cfg: self.cfg.clone(),
            handler: self.handler.clone(),
            client: self.client.clone(),
            metrics: self.metrics.clone(),
            publish: publish.clone(),
        });
        let mut failure = None;
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                delivery = consumer.next() => match delivery {
                    Some(Ok(d)) => {
                        let ctx = ctx.clone();
                        inflight.spawn(async move { ctx.handle(d).await });
                    }
                    Some(Err(e)) => {
                        failure = Some(Error::from(e));
                        break;
                    }
                    None => {
                        failure = Some(Error::invalid("--queue", format!("the broker cancelled the consumer of {}", self.cfg.queue)));
                        break;
                    }
                },
            }
        }
        self.status.consuming.store(false, Ordering::Relaxed);
        if failure.is_none() {
            tracing::info!(inflight = inflight.len(), "draining: consumer cancelled, finishing in-flight messages");
            let _ = amqp::timed(consume.basic_cancel(tag.as_str().into(), BasicCancelOptions::default())).await;
        }
        inflight.close();
        if tokio::time::timeout(self.cfg.drain_timeout, inflight.wait()).await.is_err() {
            tracing::warn!("drain timeout: unfinished messages return to the queue");
        }
        // Closing the channel returns every unacknowledged (unstarted) delivery to the queue.
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(200, "bye".into())).await;
        match failure {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

fn is_access_refused(e: &lapin::Error) -> bool {
    e.to_string().contains("ACCESS_REFUSED")
}

struct Ctx {
    cfg: Arc<WorkerConfig>,
    handler: http::Uri,
    client: tls::HttpClient,
    metrics: Arc<Metrics>,
    publish: Channel,
}

impl Ctx {
    async fn handle(&self, d: Delivery) {
        self.metrics.inflight.increment(1.0);
        let props = d.properties.clone();
        let mut headers: BTreeMap<ShortString, AMQPValue> =
            props.headers().as_ref().map(|t| t.inner().clone()).unwrap_or_default();
        amqp::strip_retry_deaths(&mut headers);
        let attempt = amqp::header_i64(props.headers(), header::ATTEMPT).unwrap_or(1).max(1) as u32;
        let expires_at = amqp::header_i64(props.headers(), header::EXPIRES_AT);
        let received_at = amqp::header_i64(props.headers(), header::RECEIVED_AT);
        let body = Bytes::from(d.data);
        let now = waygate_telemetry::now_millis();

        let action = if expires_at.is_some_and(|e| now >= e) {
            Action::DeadLetter(DeathReason::Expired, format!("deadline passed before attempt {attempt}"))
        } else {
            let mut timeout = self.cfg.handler_timeout;
            if let Some(e) = expires_at {
                timeout = timeout.min(Duration::from_millis((e - now).max(1) as u64));
            }
            let started = Instant::now();
            let answer = self.call(&props, &body, attempt, d.redelivered, expires_at, timeout).await;
            self.metrics.handler.record(started.elapsed().as_secs_f64());
            match verdict(answer) {
                Verdict::Done => {
                    if let Some(r) = received_at {
                        self.metrics.end_to_end.record((waygate_telemetry::now_millis() - r).max(0) as f64 / 1000.0);
                    }
                    Action::Ack
                }
                Verdict::Permanent(why) => Action::DeadLetter(DeathReason::Rejected, why),
                Verdict::Retry(why) if attempt >= self.cfg.max_attempts => Action::DeadLetter(
                    DeathReason::Rejected,
                    format!("{why} on attempt {attempt} of {}", self.cfg.max_attempts),
                ),
                Verdict::Retry(why) => {
                    let delay = self.cfg.retry_delay_for(attempt);
                    let due = waygate_telemetry::now_millis() + delay.as_millis() as i64;
                    if expires_at.is_some_and(|e| due >= e) {
                        // It would come back after its deadline: it expires now.
                        Action::DeadLetter(DeathReason::Expired, format!("{why}; deadline passes before a retry"))
                    } else {
                        Action::Retry(delay, why)
                    }
                }
            }
        };
        let message_id = props.message_id().as_ref().map(|m| m.to_string()).unwrap_or_default();
        let outcome = match &action {
            Action::Ack => Ok(()),
            Action::Retry(delay, why) => {
                headers.insert(header::ATTEMPT.into(), AMQPValue::LongLongInt(i64::from(attempt) + 1));
                headers.insert(header::ERROR.into(), amqp::long_str(why));
                let queue = Topology::retry_queue(&self.cfg.queue, delay.as_millis() as u64);
                self.republish(&queue, &props, headers, &body).await
            }
            Action::DeadLetter(reason, why) => {
                amqp::record_death(
                    &mut headers,
                    &self.cfg.queue,
                    d.exchange.as_str(),
                    d.routing_key.as_str(),
                    *reason,
                    (waygate_telemetry::now_millis() / 1000) as u64,
                );
                headers.insert(header::ATTEMPT.into(), AMQPValue::LongLongInt(i64::from(attempt)));
                headers.insert(header::ERROR.into(), amqp::long_str(why));
                self.republish(&self.cfg.dlq, &props, headers, &body).await
            }
        };
        match outcome {
            Ok(()) => {
                let acked = amqp::timed(d.acker.ack(BasicAckOptions::default())).await;
                match (&action, acked) {
                    (_, Err(e)) => {
                        tracing::warn!(message_id, error = %e, "ack failed: the message will be redelivered")
                    }
                    (Action::Ack, Ok(_)) => self.metrics.acked.increment(1),
                    (Action::Retry(delay, why), Ok(_)) => {
                        self.metrics.retried.increment(1);
                        tracing::info!(message_id, attempt, retry_in = ?delay, reason = %why, "retrying");
                    }
                    (Action::DeadLetter(reason, why), Ok(_)) => {
                        match reason {
                            DeathReason::Expired => self.metrics.expired.increment(1),
                            DeathReason::Rejected => self.metrics.dead_lettered.increment(1),
                        }
                        tracing::warn!(message_id, attempt, reason = reason.as_str(), error = %why, dlq = %self.cfg.dlq, "dead-lettered");
                    }
                }
            }
            Err(e) => {
                // Not safely stored elsewhere: give it back to the queue.
                self.metrics.requeued.increment(1);
                tracing::warn!(message_id, error = %e, "cannot move the message: returning it to the queue");
                let _ = amqp::timed(d.acker.reject(BasicRejectOptions { requeue: true })).await;
            }
        }
        self.metrics.inflight.decrement(1.0);
    }

    async fn call(
        &self,
        props: &BasicProperties,
        body: &Bytes,
        attempt: u32,
        redelivered: bool,
        expires_at: Option<i64>,
        timeout: Duration,
    ) -> std::result::Result<http::StatusCode, String> {
        let content_type =
            props.content_type().as_ref().map(|c| c.to_string()).unwrap_or_else(|| "application/json".into());
        let mut req = http::Request::post(self.handler.clone())
            .header(http::header::CONTENT_TYPE, content_type)
            .header("x-waygate-attempt", attempt.to_string())
            .header("x-waygate-redelivered", redelivered.to_string());
        if let Some(id) = props.message_id() {
            req = req.header("x-waygate-message-id", id.as_str());
        }
        if let Some(kind) = props.kind() {
            req = req.header("x-waygate-event", kind.as_str());
        }
        if let Some(r) = amqp::header_i64(props.headers(), header::RECEIVED_AT) {
            req = req.header("x-waygate-received-at", r.to_string());
        }
        if let Some(e) = expires_at {
            req = req.header("x-waygate-deadline", waygate_telemetry::millis_to_rfc3339(e));
        }
        let req = req.body(Full::new(body.clone())).map_err(|e| e.to_string())?;
        match tokio::time::timeout(timeout, tls::send(&self.client, req, 1 << 20)).await {
            Ok(Ok((status, _))) => Ok(status),
            Ok(Err(e)) => Err(format!("handler unreachable: {e}")),
            Err(_) => Err(format!("handler timed out after {timeout:?}")),
        }
    }

    async fn republish(
        &self,
        queue: &str,
        props: &BasicProperties,
        headers: BTreeMap<ShortString, AMQPValue>,
        body: &[u8],
    ) -> Result<()> {
        amqp::publish_confirmed(&self.publish, queue, amqp::copy_properties(props, headers), body).await
    }
}

enum Action {
    Ack,
    Retry(Duration, String),
    DeadLetter(DeathReason, String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_and_delays() {
        assert_eq!(verdict(Ok(http::StatusCode::NO_CONTENT)), Verdict::Done);
        assert!(matches!(verdict(Ok(http::StatusCode::INTERNAL_SERVER_ERROR)), Verdict::Retry(_)));
        assert!(matches!(verdict(Ok(http::StatusCode::TOO_MANY_REQUESTS)), Verdict::Retry(_)));
        assert!(matches!(verdict(Ok(http::StatusCode::BAD_REQUEST)), Verdict::Permanent(_)));
        assert!(matches!(verdict(Err("timeout".into())), Verdict::Retry(_)));
        let mut cfg = WorkerConfig::new(Secret::new("amqp://x".into()), "ns", "http://127.0.0.1:1/");
        cfg.retry_delay = Duration::from_millis(100);
        cfg.max_retry_delay = Duration::from_millis(300);
        cfg.max_attempts = 5;
        assert_eq!(cfg.retry_delay_for(1), Duration::from_millis(100));
        assert_eq!(cfg.retry_delay_for(2), Duration::from_millis(200));
        assert_eq!(cfg.retry_delay_for(3), Duration::from_millis(300));
        assert_eq!(cfg.retry_delays(), vec![100, 200, 300]);
    }
}
