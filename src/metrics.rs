//! Process-wide counters. Cheap relaxed atomics; read by tests and (later) the metrics endpoint.

use std::sync::atomic::{AtomicU64, Ordering};

static STORE_WRITES: AtomicU64 = AtomicU64::new(0);
static PUSHES_RETRANSMITTED: AtomicU64 = AtomicU64::new(0);

/// Counts keys written or deleted by committed store transactions.
pub fn add_store_writes(n: u64) {
    STORE_WRITES.fetch_add(n, Ordering::Relaxed);
}

/// Keys written or deleted by committed store transactions since the process started.
pub fn store_writes() -> u64 {
    STORE_WRITES.load(Ordering::Relaxed)
}

pub fn add_retransmit() {
    PUSHES_RETRANSMITTED.fetch_add(1, Ordering::Relaxed);
}

/// Pushes resent because they were not acknowledged in time.
pub fn retransmits() -> u64 {
    PUSHES_RETRANSMITTED.load(Ordering::Relaxed)
}
