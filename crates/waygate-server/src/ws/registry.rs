//! Open connections: addressable by id (server push, device kicks) and counted per IP so the
//! limits are enforced before the upgrade.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

use super::outbox::ConnShared;

#[derive(Default)]
pub struct ConnRegistry {
    conns: DashMap<u128, Arc<ConnShared>>,
    per_ip: DashMap<IpAddr, usize>,
    total: AtomicUsize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Total,
    PerIp,
}

impl ConnRegistry {
    /// Reserves a connection slot for `ip`, or says which limit refuses it.
    pub fn try_reserve(&self, ip: IpAddr, max_total: usize, max_per_ip: usize) -> Result<(), Refusal> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Total);
        }
        let mut n = self.per_ip.entry(ip).or_insert(0);
        if *n >= max_per_ip {
            drop(n);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::PerIp);
        }
        *n += 1;
        Ok(())
    }

    pub fn release(&self, ip: IpAddr) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        self.per_ip.remove_if_mut(&ip, |_, n| {
            *n -= 1;
            *n == 0
        });
    }

    pub fn insert(&self, conn: Arc<ConnShared>) {
        self.conns.insert(conn.id, conn);
    }

    pub fn remove(&self, id: u128) {
        self.conns.remove(&id);
    }

    pub fn get(&self, id: u128) -> Option<Arc<ConnShared>> {
        self.conns.get(&id).map(|c| c.clone())
    }

    pub fn count(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_enforced_and_released() {
        let r = ConnRegistry::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(r.try_reserve(a, 3, 2), Ok(()));
        assert_eq!(r.try_reserve(a, 3, 2), Ok(()));
        assert_eq!(r.try_reserve(a, 3, 2), Err(Refusal::PerIp));
        assert_eq!(r.try_reserve(b, 3, 2), Ok(()));
        assert_eq!(r.try_reserve(b, 3, 2), Err(Refusal::Total));
        assert_eq!(r.count(), 3);
        r.release(a);
        r.release(a);
        assert!(r.per_ip.get(&a).is_none(), "no entry left for an IP without connections");
        assert_eq!(r.try_reserve(b, 3, 2), Ok(()));
    }
}
