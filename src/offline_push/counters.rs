//! What the push worker did since the server started (for `/metrics` and tests).

use std::sync::atomic::{AtomicU64, Ordering};

/// What the push worker did since the server started.
#[derive(Debug, Default)]
pub struct Counters {
    /// Notifications answered with a 2xx.
    pub sent: AtomicU64,
    /// Requests that failed (each is retried, or dropped below).
    pub failed: AtomicU64,
    /// Dropped after `push_max_attempts` tries or `push_max_age_secs`.
    pub dropped: AtomicU64,
    /// Not sent: the message was recalled, deleted or read before its notification was due.
    pub obsolete: AtomicU64,
    /// Queued for a user found online: no foreground device acknowledged the push in time, or
    /// the last foreground connection closed first (`crate::unacked`).
    pub unacked: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub sent: u64,
    pub failed: u64,
    pub dropped: u64,
    pub obsolete: u64,
    pub unacked: u64,
}

impl Counters {
    pub fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            sent: get(&self.sent),
            failed: get(&self.failed),
            dropped: get(&self.dropped),
            obsolete: get(&self.obsolete),
            unacked: get(&self.unacked),
        }
    }

    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}
