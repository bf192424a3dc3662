//! Queue events. In process they go through a broadcast channel. On PostgreSQL they also go
//! to the other instances with NOTIFY: batched (one `pg_notify` round trip per burst, with
//! duplicates dropped) because NOTIFY takes a global lock at commit, and on one channel per
//! schema so separate deployments (and parallel tests) sharing a database do not hear each other.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// Something happened in the tool-call queue that a dispatcher or a waiting request cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueEvent {
    /// A call was enqueued (or re-queued) for this user and capability.
    NewCall { user_id: String, capability: String },
    /// A call reached a terminal state.
    Finished { call_id: String },
    /// Events may have been missed (the listener reconnected): recheck everything.
    Resync,
}

impl QueueEvent {
    fn encode(&self, origin: &str) -> Option<String> {
        match self {
            QueueEvent::NewCall { user_id, capability } => Some(format!("n|{origin}|{user_id}|{capability}")),
            QueueEvent::Finished { call_id } => Some(format!("f|{origin}|{call_id}")),
            QueueEvent::Resync => None,
        }
    }

    /// `(origin, event)`.
    fn decode(payload: &str) -> Option<(&str, QueueEvent)> {
        let mut parts = payload.splitn(4, '|');
        let (kind, origin) = (parts.next()?, parts.next()?);
        let event = match kind {
            "n" => QueueEvent::NewCall { user_id: parts.next()?.to_owned(), capability: parts.next()?.to_owned() },
            "f" => QueueEvent::Finished { call_id: parts.next()?.to_owned() },
            _ => return None,
        };
        Some((origin, event))
    }
}

/// Most NOTIFY payloads waiting for the sender; past this, events are dropped and the poll
/// interval catches up.
const NOTIFY_QUEUE: usize = 4096;
const NOTIFY_BATCH: usize = 256;

#[derive(Clone)]
pub(crate) struct Events {
    tx: broadcast::Sender<QueueEvent>,
    pg: Option<Arc<PgEvents>>,
}

pub(crate) struct PgEvents {
    channel: String,
    origin: Mutex<String>,
    notify_tx: mpsc::Sender<String>,
    notify_rx: Mutex<Option<mpsc::Receiver<String>>>,
}

impl Events {
    pub fn new() -> Events {
        Events { tx: broadcast::channel(4096).0, pg: None }
    }

    pub fn postgres(schema: &str) -> Events {
        let channel: String = format!("waygate_q_{schema}")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
            .take(63)
            .collect();
        let (notify_tx, notify_rx) = mpsc::channel(NOTIFY_QUEUE);
        Events {
            tx: broadcast::channel(4096).0,
            pg: Some(Arc::new(PgEvents {
                channel,
                origin: Mutex::new(String::new()),
                notify_tx,
                notify_rx: Mutex::new(Some(notify_rx)),
            })),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<QueueEvent> {
        self.tx.subscribe()
    }

    /// Delivers locally at once and, on PostgreSQL, queues the NOTIFY for other instances.
    pub fn send(&self, event: QueueEvent) {
        if let Some(pg) = &self.pg {
            let origin = pg.origin.lock().expect("origin lock").clone();
            if let Some(payload) = event.encode(&origin)
                && pg.notify_tx.try_send(payload).is_err()
            {
                tracing::debug!("notify queue full; other instances fall back to polling");
            }
        }
        let _ = self.tx.send(event);
    }

    /// Runs the NOTIFY sender and the LISTEN loop until `stop`. No-op on SQLite.
    pub async fn run_postgres(&self, pool: PgPool, origin: &str, stop: CancellationToken) {
        let Some(pg) = self.pg.clone() else { return };
        *pg.origin.lock().expect("origin lock") = origin.to_owned();
        let Some(rx) = pg.notify_rx.lock().expect("notify lock").take() else { return };
        tokio::join!(
            notify_loop(pool.clone(), pg.channel.clone(), rx, stop.clone()),
            self.listen_loop(pool, &pg, origin, stop)
        );
    }

    async fn listen_loop(&self, pool: PgPool, pg: &PgEvents, origin: &str, stop: CancellationToken) {
        let mut backoff = std::time::Duration::from_millis(100);
        'connect: loop {
            let listener = async {
                let mut l = PgListener::connect_with(&pool).await?;
                l.listen(&pg.channel).await?;
                Ok::<_, sqlx::Error>(l)
            };
            let mut listener = tokio::select! {
                _ = stop.cancelled() => return,
                l = listener => match l {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection failed; retrying");
                        tokio::select! { _ = stop.cancelled() => return, _ = tokio::time::sleep(backoff) => {} }
                        backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                        continue 'connect;
                    }
                },
            };
            backoff = std::time::Duration::from_millis(100);
            // Anything sent while we were not listening is unknown: recheck.
            let _ = self.tx.send(QueueEvent::Resync);
            loop {
                let n = tokio::select! {
                    _ = stop.cancelled() => return,
                    n = listener.try_recv() => n,
                };
                match n {
                    Ok(Some(n)) => {
                        if let Some((from, event)) = QueueEvent::decode(n.payload())
                            && from != origin
                        {
                            let _ = self.tx.send(event);
                        }
                    }
                    // The connection dropped and sqlx reconnected: notifications in between are lost.
                    Ok(None) => {
                        let _ = self.tx.send(QueueEvent::Resync);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                        continue 'connect;
                    }
                }
            }
        }
    }
}

async fn notify_loop(pool: PgPool, channel: String, mut rx: mpsc::Receiver<String>, stop: CancellationToken) {
    let mut batch = Vec::with_capacity(NOTIFY_BATCH);
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            p = rx.recv() => match p { Some(p) => p, None => return },
        };
        batch.clear();
        batch.push(first);
        while batch.len() < NOTIFY_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let mut seen = HashSet::with_capacity(batch.len());
        batch.retain(|p| seen.insert(p.clone()));
        let sent = sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
            .bind(&channel)
            .bind(&batch)
            .execute(&pool)
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, dropped = batch.len(), "NOTIFY failed; other instances fall back to polling");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        for ev in [
            QueueEvent::NewCall { user_id: "u-1".into(), capability: "fs.read_v2".into() },
            QueueEvent::Finished { call_id: "c-9".into() },
        ] {
            let p = ev.encode("inst-a").unwrap();
            assert_eq!(QueueEvent::decode(&p), Some(("inst-a", ev)));
        }
        assert_eq!(QueueEvent::decode("x|y"), None);
    }

    #[test]
    fn channel_names_are_safe_identifiers() {
        let e = Events::postgres("Tenant-A.prod");
        assert_eq!(e.pg.unwrap().channel, "waygate_q_tenant_a_prod");
    }
}
