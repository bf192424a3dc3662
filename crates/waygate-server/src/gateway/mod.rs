//! Device gateway and tool-call dispatch (SPEC 4.1): which devices this instance holds, how a
//! queued call reaches one of them, and how the waiting HTTP request learns the result.

pub mod api;
pub mod dispatch;
pub mod maintenance;
pub mod session;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

pub use dispatch::DispatchState;

use crate::ws::ConnShared;

/// A device whose socket is on this instance.
pub struct LocalDevice {
    pub user_id: String,
    pub capabilities: Vec<String>,
    pub conn: Arc<ConnShared>,
    /// Calls sent and not yet answered, to spread load across a user's devices.
    pub in_flight: AtomicUsize,
}

#[derive(Default)]
pub struct DeviceRegistry {
    devices: DashMap<String, Arc<LocalDevice>>,
}

impl DeviceRegistry {
    /// Adds a device; returns the connection it replaced, if the device was already here.
    pub fn insert(&self, device_id: String, device: Arc<LocalDevice>) -> Option<Arc<LocalDevice>> {
        self.devices.insert(device_id, device)
    }

    /// Removes the device only if it is still bound to `conn_id` (a newer socket may own it).
    pub fn remove(&self, device_id: &str, conn_id: u128) -> bool {
        self.devices.remove_if(device_id, |_, d| d.conn.id == conn_id).is_some()
    }

    pub fn get(&self, device_id: &str) -> Option<Arc<LocalDevice>> {
        self.devices.get(device_id).map(|d| d.clone())
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    pub fn has_capable(&self, user_id: &str, capability: &str) -> bool {
        self.devices.iter().any(|d| d.user_id == user_id && d.capabilities.iter().any(|c| c == capability))
    }

    /// The least busy local device that can run the call.
    pub fn pick(&self, user_id: &str, capability: &str, device_id: Option<&str>) -> Option<(String, Arc<LocalDevice>)> {
        if let Some(id) = device_id {
            return self
                .get(id)
                .filter(|d| d.user_id == user_id && d.capabilities.iter().any(|c| c == capability))
                .map(|d| (id.to_owned(), d));
        }
        self.devices
            .iter()
            .filter(|d| d.user_id == user_id && d.capabilities.iter().any(|c| c == capability))
            .min_by_key(|d| d.in_flight.load(Ordering::Relaxed))
            .map(|d| (d.key().clone(), d.value().clone()))
    }
}
