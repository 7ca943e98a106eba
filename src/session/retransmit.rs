//! Pushes sent but not yet acknowledged, and when to resend them.

use std::collections::BTreeMap;
use std::time::Duration;

use missive_protocol::Frame;
use tokio::time::Instant;

struct Pending {
    frame: Frame,
    attempts: u32,
    due: Instant,
}

/// Unacknowledged pushes of one connection, by version.
pub struct Retransmits {
    pending: BTreeMap<u64, Pending>,
    ack_timeout: Duration,
    max_retransmits: u32,
}

/// A push went unacknowledged through every retransmit.
pub struct Exhausted;

impl Retransmits {
    pub fn new(ack_timeout: Duration, max_retransmits: u32) -> Self {
        Retransmits {
            pending: BTreeMap::new(),
            ack_timeout,
            max_retransmits,
        }
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Records a push just written.
    pub fn sent(&mut self, version: u64, frame: Frame, now: Instant) {
        self.pending.insert(
            version,
            Pending {
                frame,
                attempts: 0,
                due: now + self.ack_timeout,
            },
        );
    }

    /// A PUSH_ACK: everything up to `version` is acknowledged.
    pub fn ack(&mut self, version: u64) {
        self.pending = self.pending.split_off(&version.saturating_add(1));
    }

    /// When the earliest retransmit is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.due).min()
    }

    /// The pushes to resend now (flagged RETRANSMIT), each with its next deadline doubled.
    pub fn due(&mut self, now: Instant) -> Result<Vec<Frame>, Exhausted> {
        let mut out = Vec::new();
        for p in self.pending.values_mut().filter(|p| p.due <= now) {
            if p.attempts >= self.max_retransmits {
                return Err(Exhausted);
            }
            p.attempts += 1;
            p.due = now + self.ack_timeout * 2u32.saturating_pow(p.attempts);
            out.push(p.frame.clone().retransmitted());
        }
        Ok(out)
    }
}
