use tokio::sync::broadcast;

/// Something happened in the tool-call queue that a dispatcher or a waiting request cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueEvent {
    /// A call was enqueued (or re-queued) for this user and capability.
    NewCall { user_id: String, capability: String },
    /// A call reached a terminal state.
    Finished { call_id: String },
}

/// Fan-out of queue events inside this process. Bounded: a lagging receiver loses events and
/// falls back to the poll interval, which is why polling remains as the safety net.
#[derive(Clone)]
pub(crate) struct Events {
    tx: broadcast::Sender<QueueEvent>,
}

impl Events {
    pub fn new() -> Events {
        Events { tx: broadcast::channel(4096).0 }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<QueueEvent> {
        self.tx.subscribe()
    }

    pub fn send(&self, event: QueueEvent) {
        let _ = self.tx.send(event);
    }
}
