//! Per-connection token bucket: `rate` messages a second, bursts up to twice that.

use std::time::Instant;

pub struct RateLimiter {
    /// Thousandths of a message.
    milli_tokens: u64,
    last: Instant,
    /// Messages refused since the last accepted one.
    strikes: u32,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Over the limit: answer with `rate_limited`, keep the connection.
    Refuse,
    /// A full second's worth of refused messages in a row: close with 1008.
    Abuse,
}

impl RateLimiter {
    pub fn new(rate: u32, now: Instant) -> RateLimiter {
        RateLimiter { milli_tokens: 2 * rate as u64 * 1000, last: now, strikes: 0 }
    }

    pub fn check(&mut self, rate: u32, now: Instant) -> Verdict {
        let rate = rate.max(1) as u64;
        let elapsed_ms = now.saturating_duration_since(self.last).as_millis() as u64;
        if elapsed_ms > 0 {
            self.milli_tokens = (self.milli_tokens + elapsed_ms * rate).min(2 * rate * 1000);
            self.last = now;
        }
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            self.strikes = 0;
            Verdict::Allow
        } else {
            self.strikes += 1;
            if self.strikes as u64 >= rate { Verdict::Abuse } else { Verdict::Refuse }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refuse_then_abuse_then_recover() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10, t0);
        for _ in 0..20 {
            assert_eq!(r.check(10, t0), Verdict::Allow);
        }
        for _ in 0..9 {
            assert_eq!(r.check(10, t0), Verdict::Refuse);
        }
        assert_eq!(r.check(10, t0), Verdict::Abuse);
        let later = t0 + Duration::from_millis(100);
        assert_eq!(r.check(10, later), Verdict::Allow, "one token refilled after 100 ms");
        assert_eq!(r.check(10, later), Verdict::Refuse, "strikes reset by the accepted message");
    }
}
