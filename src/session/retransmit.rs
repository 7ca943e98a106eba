//! Pushes sent but not yet acknowledged, and when to resend them.

use std::collections::BTreeMap;
use std::time::Duration;

use missive_protocol::Frame;
use tokio::time::Instant;

struct Unacked {
    frame: Frame,
    attempts: u32,
    due: Instant,
}

/// Unacknowledged pushes of one connection, by version.
pub struct Retransmits {
    pending: BTreeMap<u64, Unacked>,
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
            Unacked {
                frame,
                attempts: 0,
                due: now + self.ack_timeout,
            },
        );
    }

    /// A PUSH_ACK: everything up to `version` is acknowledged.
    pub fn ack(&mut self, version: u64) {
        // Removed from the front one by one: `split_off` would build a new tree for the rest
        // on every ack.
        while let Some(first) = self.pending.first_entry() {
            if *first.key() > version {
                break;
            }
            first.remove();
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use missive_protocol::{pb, Packet, DEFAULT_MAX_FRAME_LEN};

    fn push(version: u64) -> Frame {
        Frame::new(
            &Packet::Push(pb::Push {
                version,
                prev_version: version - 1,
                entry: None,
            }),
            0,
        )
    }

    #[test]
    fn an_ack_covers_every_push_up_to_its_version_and_no_further() {
        let mut r = Retransmits::new(Duration::from_secs(5), 3);
        let t0 = Instant::now();
        for v in 1..=5 {
            r.sent(v, push(v), t0);
        }
        r.ack(3);
        assert_eq!(r.len(), 2);
        r.ack(2); // an older ack changes nothing
        assert_eq!(r.len(), 2);
        let resent = r
            .due(t0 + Duration::from_secs(5))
            .ok()
            .expect("not exhausted");
        let versions: Vec<u64> = resent
            .iter()
            .map(|f| match f.packet(DEFAULT_MAX_FRAME_LEN) {
                Ok(Packet::Push(p)) => p.version,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(versions, [4, 5]);
        r.ack(u64::MAX);
        assert_eq!(r.len(), 0);
        assert!(r.next_due().is_none());
    }
}
