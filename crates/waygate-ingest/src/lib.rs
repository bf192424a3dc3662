//! Upstream ingest for waygate (SPEC 4.4): an ingestor that holds the Discord gateway and
//! publishes every dispatch event to RabbitMQ with publisher confirms, a worker that hands
//! messages to an HTTP handler with retries through delay queues and a dead-letter queue, the
//! DLQ tools, and a Discord gateway simulator to test all of it against.
//!
//! Every long-running part takes a `CancellationToken` and drains when it is cancelled.

pub mod amqp;
pub mod discord;
pub mod dlq;
mod error;
pub mod http;
pub mod ingest;
pub mod names;
mod queue_gauges;
pub mod sim;
pub mod tls;
pub mod worker;

use std::time::Duration;

pub use error::{Error, Result};

/// Exponential backoff with full jitter, for reconnect loops.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration) -> Backoff {
        Backoff { base, max, attempt: 0 }
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next wait: random in [cap/2, cap] where cap doubles per attempt up to `max`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let cap = self.base.saturating_mul(1u32 << self.attempt.min(16)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = cap / 2;
        half + cap.saturating_sub(half).mul_f64(rand::random::<f64>())
    }
}

/// Sleeps unless `stop` is cancelled first; returns false when cancelled.
pub(crate) async fn sleep_or_stop(d: Duration, stop: &tokio_util::sync::CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stop.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100), "{first:?}");
        for _ in 0..10 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
        assert!(b.next_delay() >= Duration::from_millis(500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
