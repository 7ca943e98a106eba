//! What the senders, the receivers and the report share: per-message state, counters, and who
//! sends message `k` to whom.

use std::sync::atomic::{AtomicU64, AtomicU8};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::stats::Latency;

/// Per-message flags.
pub(super) const ACKED: u8 = 1;
pub(super) const FAILED: u8 = 2;

#[derive(Default)]
pub(super) struct Counters {
    pub(super) sent: AtomicU64,
    pub(super) acked: AtomicU64,
    pub(super) ack_duplicate: AtomicU64,
    pub(super) send_errors: AtomicU64,
    pub(super) delivered: AtomicU64,
    pub(super) duplicated: AtomicU64,
    pub(super) misrouted: AtomicU64,
    pub(super) foreign: AtomicU64,
    pub(super) disconnects: AtomicU64,
    pub(super) last_delivery_us: AtomicU64,
    pub(super) last_ack_us: AtomicU64,
    pub(super) errors: Mutex<Vec<String>>,
}

impl Counters {
    pub(super) fn error(&self, what: String) {
        let mut errors = self.errors.lock().expect("errors lock");
        if errors.len() < 5 {
            errors.push(what);
        }
    }
}

pub(super) struct Shared {
    pub(super) start: Instant,
    pub(super) rate: f64,
    /// Per message: ACKED / FAILED.
    pub(super) state: Vec<AtomicU8>,
    /// Per message: how many times its recipient received it.
    pub(super) seen: Vec<AtomicU8>,
    pub(super) c: Counters,
    pub(super) delivery: Latency,
    pub(super) ack: Latency,
}

impl Shared {
    pub(super) fn due(&self, k: u64) -> Duration {
        Duration::from_secs_f64(k as f64 / self.rate)
    }
}

/// A well-mixed 64-bit hash (splitmix64), to pick senders and recipients.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Sender and recipient of message `k` (distinct users); `mqtt chat` picks the same.
pub(crate) fn pair(k: u64, users: usize) -> (usize, usize) {
    let u = users as u64;
    let s = mix(k) % u;
    let r = (s + 1 + mix(k ^ 0x5555) % (u - 1)) % u;
    (s as usize, r as usize)
}
