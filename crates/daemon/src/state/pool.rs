//! The table of spare session hosts ([`crate::local::pool`] makes, lends and closes them).
//!
//! Only the table lives here, as a field of the shared [`Daemon`](super::Daemon): what a spare
//! is and when one may serve an invocation is the local role's business.

use std::collections::HashMap;
use std::time::{Duration, Instant};
use tether_proto::SessionInfo;

/// The spares of one daemon: free hosts by configuration key, each with when it became free.
#[derive(Default)]
pub struct Pool {
    free: std::sync::Mutex<HashMap<String, Vec<(SessionInfo, Instant)>>>,
}

/// Most spares kept per configuration (`TETHER_POOL_MAX`).
pub(crate) fn max() -> usize {
    tether_settings::get().pool_max
}

/// How long a spare is kept unused (`TETHER_POOL_IDLE`, seconds).
pub(crate) fn idle() -> Duration {
    tether_settings::get().pool_idle
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<(SessionInfo, Instant)>>> {
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A free spare made for `key`, the most recently used first (its pages are the warmest).
    pub(crate) fn take(&self, key: &str) -> Option<SessionInfo> {
        self.lock().get_mut(key)?.pop().map(|(info, _)| info)
    }

    /// Puts a host that became free back; false when the pool is full (close it instead).
    pub(crate) fn put(&self, key: &str, info: SessionInfo) -> bool {
        let mut free = self.lock();
        let list = free.entry(key.to_string()).or_default();
        if list.len() >= max() {
            return false;
        }
        list.retain(|(i, _)| i.instance_id != info.instance_id);
        list.push((info, Instant::now()));
        true
    }

    pub(crate) fn forget(&self, instance_id: &str) {
        for list in self.lock().values_mut() {
            list.retain(|(i, _)| i.instance_id != instance_id);
        }
    }

    /// Removes and returns the spares unused for longer than `older_than` (all with zero).
    pub(crate) fn drain(&self, older_than: Duration) -> Vec<SessionInfo> {
        let mut out = Vec::new();
        for list in self.lock().values_mut() {
            let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(list)
                .into_iter()
                .partition(|(_, at)| at.elapsed() >= older_than);
            *list = keep;
            out.extend(old.into_iter().map(|(info, _)| info));
        }
        out
    }
}
