//! What an open-loop messaging run counts, on either side: acks, send errors, deliveries (each
//! message's first copy, with its latency from its scheduled time), duplicates, lost
//! connections, and samples of what went wrong; and the grace period that waits for what is
//! still in flight.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::stats::{Latency, Samples};

#[derive(Default)]
pub struct Tally {
    pub acked: AtomicU64,
    pub send_errors: AtomicU64,
    pub delivered: AtomicU64,
    pub duplicated: AtomicU64,
    /// Messages this run did not send (or could not read).
    pub foreign: AtomicU64,
    pub disconnects: AtomicU64,
    pub last_delivery_us: AtomicU64,
    pub errors: Samples,
    /// From each message's scheduled send time to its first copy's arrival.
    pub delivery: Latency,
}

impl Tally {
    pub fn error(&self, what: String) {
        self.errors.push(what);
    }

    /// A send that failed.
    pub fn send_failed(&self, what: String) {
        self.error(what);
        self.send_errors.fetch_add(1, Relaxed);
    }

    /// A copy of a message due at `due` arrived `now` (both after the start), `copies` counting
    /// that message's copies at that recipient: the first is a delivery, with its latency;
    /// another is a duplicate (`false`).
    pub fn deliver(&self, copies: &AtomicU8, due: Duration, now: Duration) -> bool {
        if copies.fetch_add(1, Relaxed) == 0 {
            self.delivery.record(now.saturating_sub(due));
            self.delivered.fetch_add(1, Relaxed);
            self.last_delivery_us
                .fetch_max(now.as_micros() as u64, Relaxed);
            true
        } else {
            self.duplicated.fetch_add(1, Relaxed);
            false
        }
    }

    /// The grace period after the sending window: waits up to `grace` until each of the
    /// `total` sends is acked or failed and every acked one delivered `copies` times; then
    /// half a second more, for a duplicate that would arrive right behind the original.
    pub async fn settle(&self, total: u64, copies: u64, grace: Duration) {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            let acked = self.acked.load(Relaxed);
            let settled = acked + self.send_errors.load(Relaxed) == total;
            if settled && self.delivered.load(Relaxed) >= acked * copies {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
