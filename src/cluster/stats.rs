//! What this node's snapshots were (`cluster::snapshot`), for `GET /v1/cluster` and the
//! metrics: counters the node holds and the snapshot task updates.

use std::sync::atomic::{AtomicU64, Ordering};

/// The snapshots this node took, and the newest one's figures.
#[derive(Debug, Default)]
pub struct SnapshotStats {
    taken: AtomicU64,
    last_seq: AtomicU64,
    last_bytes: AtomicU64,
    log_first: AtomicU64,
}

impl SnapshotStats {
    /// Snapshots this node uploaded and trimmed behind.
    pub fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    /// One more snapshot uploaded and trimmed behind.
    pub(super) fn took(&self) {
        self.taken.fetch_add(1, Ordering::Relaxed);
    }

    /// The newest snapshot seen (its log position and size in bytes), and the log's first
    /// record.
    pub(super) fn saw(&self, newest: Option<(u64, u64)>, log_first: u64) {
        if let Some((seq, bytes)) = newest {
            self.last_seq.store(seq, Ordering::Relaxed);
            self.last_bytes.store(bytes, Ordering::Relaxed);
        }
        self.log_first.store(log_first, Ordering::Relaxed);
    }

    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "taken_here": self.taken(),
            "last_seq": self.last_seq.load(Ordering::Relaxed),
            "last_bytes": self.last_bytes.load(Ordering::Relaxed),
            "log_first_seq": self.log_first.load(Ordering::Relaxed),
        })
    }
}
