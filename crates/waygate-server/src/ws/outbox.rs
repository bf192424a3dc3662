//! The per-connection outbound queue shared with producers (other connections' publishes,
//! the dispatcher, the push API). Bounded by `WAYGATE_SEND_QUEUE`: a producer that finds it
//! full closes the connection with 1013 `slow_consumer` instead of buffering without end.
//! An empty queue owns no allocation, which keeps idle connections small.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::Notify;

pub struct ConnShared {
    pub id: u128,
    /// From the connect JWT's `sub`; `None` for anonymous connections.
    pub user_id: Option<Box<str>>,
    pub connected_at: i64,
    /// Channels this connection is subscribed to (for cleanup and the push API's info).
    channels: Mutex<Vec<Box<str>>>,
    /// Routed messages waiting for their target.
    pub routed_in_flight: AtomicUsize,
    queue: Mutex<Queue>,
    /// Queue length, readable without the lock.
    len: AtomicUsize,
    notify: Notify,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Bytes>,
    /// Set once: the connection must close with this code and reason.
    kick: Option<(u16, &'static str)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// The queue was full; the connection is now closing as a slow consumer.
    Overflow,
    /// The connection is already closing.
    Closed,
}

impl ConnShared {
    pub fn new(id: u128, user_id: Option<Box<str>>) -> ConnShared {
        ConnShared {
            id,
            user_id,
            connected_at: waygate_telemetry::now_millis(),
            channels: Mutex::new(Vec::new()),
            routed_in_flight: AtomicUsize::new(0),
            queue: Mutex::new(Queue::default()),
            len: AtomicUsize::new(0),
            notify: Notify::new(),
        }
    }

    pub fn id_hex(&self) -> String {
        format!("{:032x}", self.id)
    }

    pub fn has_channel(&self, channel: &str) -> bool {
        self.channels.lock().expect("channels lock").iter().any(|c| &**c == channel)
    }

    pub fn channel_count(&self) -> usize {
        self.channels.lock().expect("channels lock").len()
    }

    pub fn add_channel(&self, channel: &str) {
        self.channels.lock().expect("channels lock").push(channel.into());
    }

    /// `true` if the connection was subscribed.
    pub fn remove_channel(&self, channel: &str) -> bool {
        let mut channels = self.channels.lock().expect("channels lock");
        let before = channels.len();
        channels.retain(|c| &**c != channel);
        channels.len() != before
    }

    /// Empties the subscription list, returning it.
    pub fn take_channels(&self) -> Vec<Box<str>> {
        std::mem::take(&mut *self.channels.lock().expect("channels lock"))
    }

    pub fn channels(&self) -> Vec<String> {
        self.channels.lock().expect("channels lock").iter().map(|c| c.to_string()).collect()
    }

    /// Queues a ready-to-write frame (shared `Bytes`: no copy per subscriber).
    pub fn push(&self, frame: Bytes, limit: usize) -> Push {
        let mut q = self.queue.lock().expect("outbox lock");
        if q.kick.is_some() {
            return Push::Closed;
        }
        if q.frames.len() >= limit {
            q.kick = Some((waygate_proto::close::TRY_AGAIN_LATER, "slow_consumer"));
            q.frames.clear();
            self.len.store(0, Ordering::Release);
            drop(q);
            self.notify.notify_one();
            return Push::Overflow;
        }
        q.frames.push_back(frame);
        let len = q.frames.len();
        self.len.store(len, Ordering::Release);
        drop(q);
        // Only the push that makes the queue non-empty wakes the connection: it drains
        // everything queued by then, so later pushes ride along (one write for many frames).
        if len == 1 {
            self.notify.notify_one();
        }
        Push::Queued
    }

    /// Asks the connection to close with `code` (first request wins).
    pub fn kick(&self, code: u16, reason: &'static str) {
        let mut q = self.queue.lock().expect("outbox lock");
        if q.kick.is_none() {
            q.kick = Some((code, reason));
        }
        drop(q);
        self.notify.notify_one();
    }

    pub fn kicked(&self) -> Option<(u16, &'static str)> {
        self.queue.lock().expect("outbox lock").kick
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves queued frames out for writing, oldest first.
    pub fn drain_into(&self, mut sink: impl FnMut(Bytes)) {
        let mut q = self.queue.lock().expect("outbox lock");
        for frame in q.frames.drain(..) {
            sink(frame);
        }
        if q.frames.capacity() > 64 {
            // A burst grew the queue; do not keep its memory on an idle connection.
            q.frames = VecDeque::new();
        }
        self.len.store(0, Ordering::Release);
    }

    pub async fn notified(&self) {
        self.notify.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_kicks_as_slow_consumer_and_drops_the_backlog() {
        let c = ConnShared::new(1, None);
        assert_eq!(c.push(Bytes::from_static(b"a"), 2), Push::Queued);
        assert_eq!(c.push(Bytes::from_static(b"b"), 2), Push::Queued);
        assert_eq!(c.len(), 2);
        assert_eq!(c.push(Bytes::from_static(b"c"), 2), Push::Overflow);
        assert_eq!(c.kicked(), Some((1013, "slow_consumer")));
        assert_eq!(c.push(Bytes::from_static(b"d"), 2), Push::Closed);
        assert!(c.is_empty());
    }

    #[test]
    fn first_kick_wins_and_drain_keeps_order() {
        let c = ConnShared::new(1, None);
        c.push(Bytes::from_static(b"1"), 10);
        c.push(Bytes::from_static(b"2"), 10);
        let mut out = vec![];
        c.drain_into(|f| out.push(f));
        assert_eq!(out, [Bytes::from_static(b"1"), Bytes::from_static(b"2")]);
        c.kick(4404, "device deleted");
        c.kick(1001, "later");
        assert_eq!(c.kicked(), Some((4404, "device deleted")));
    }
}
