//! The `fanout` workload: one sender posts to a group of M online members at an open-loop
//! rate; latency runs from a message's scheduled send time to its arrival at a member, and
//! every (message, member) pair must arrive exactly once. Here: what the sender, the members
//! and the report share, the progress line and the summary.

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::time::Duration;

use super::pace::Schedule;
use super::tally::Tally;
use crate::stats::Report;

pub struct Shared {
    pub schedule: Schedule,
    members: usize,
    /// seen[k * members + m]: deliveries of message k to member m.
    seen: Vec<AtomicU8>,
    pub c: Tally,
}

impl Shared {
    /// `total` messages at `rate` a second from now on, to `members` members.
    pub fn new(rate: f64, total: u64, members: usize) -> Shared {
        Shared {
            schedule: Schedule::new(rate),
            members,
            seen: (0..total as usize * members)
                .map(|_| AtomicU8::new(0))
                .collect(),
            c: Tally::default(),
        }
    }

    /// Member `m` received message `k`, due at `due` after the start; `false` (nothing
    /// counted) when the run sent no message `k` or has no member `m`.
    pub fn arrived(&self, m: usize, k: u64, due: Duration) -> bool {
        let slot = (m < self.members)
            .then(|| (k as usize).checked_mul(self.members)?.checked_add(m))
            .flatten()
            .and_then(|i| self.seen.get(i));
        let Some(slot) = slot else {
            return false;
        };
        if !self.c.deliver(slot, due, self.schedule.elapsed()) {
            self.c
                .error(format!("message #{k} delivered again to member {m}"));
        }
        true
    }

    /// The progress line, `extra` ("notifies 12 ") after the deliveries.
    pub fn progress(&self, extra: &str) -> String {
        let c = &self.c;
        format!(
            "acked {} delivered {} {extra}dup {} errors {}",
            c.acked.load(Relaxed),
            c.delivered.load(Relaxed),
            c.duplicated.load(Relaxed),
            c.send_errors.load(Relaxed),
        )
    }
}

/// What the summary says that only one side has.
pub struct Side {
    /// The group's fan-out mode (a row after the members).
    pub mode: Option<String>,
    /// The content size (a row after the offered rate).
    pub size: Option<u64>,
    /// A count of the side's own after the duplicates (GROUP_NOTIFY received, unrecognised
    /// messages).
    pub counted: (&'static str, u64),
    /// Whether members reconnect by themselves (counted as `member reconnects`) or a lost
    /// connection fails the run (`member disconnects`).
    pub reconnects: bool,
}

/// The summary into `r`: `total` messages offered at `rate` over `window`.
pub fn report(r: &mut Report, s: &Shared, rate: f64, total: u64, window: Duration, side: Side) {
    let (c, m) = (&s.c, s.members);
    let acked = c.acked.load(Relaxed);
    let expected = acked * m as u64;
    let delivered = c.delivered.load(Relaxed);
    r.add("members (besides the sender)", m as u64, "");
    if let Some(mode) = side.mode {
        r.add("fanout mode", mode, "");
    }
    r.add_f("offered rate", rate, 1, "msg/s");
    if let Some(size) = side.size {
        r.add("content size", size, "bytes");
    }
    r.add("messages sent", total, "");
    r.add("acked", acked, "");
    r.add("send errors", c.send_errors.load(Relaxed), "");
    r.add("deliveries expected", expected, "");
    r.add("delivered", delivered, "");
    r.add("lost deliveries", expected.saturating_sub(delivered), "");
    r.add("duplicated deliveries", c.duplicated.load(Relaxed), "");
    r.add(side.counted.0, side.counted.1, "");
    let lost_conns = if side.reconnects {
        "member reconnects"
    } else {
        "member disconnects"
    };
    r.add(lost_conns, c.disconnects.load(Relaxed), "");
    let last = (c.last_delivery_us.load(Relaxed) as f64 / 1e6).max(window.as_secs_f64());
    r.add_f("deliveries/s", delivered as f64 / last.max(1e-9), 1, "");
    r.latency("delivery latency", &c.delivery.snapshot());
    r.samples(&c.errors);
    if delivered < expected {
        r.fail(format!("{} deliveries lost", expected - delivered));
    }
    if c.duplicated.load(Relaxed) > 0 {
        r.fail(format!(
            "{} duplicate deliveries",
            c.duplicated.load(Relaxed)
        ));
    }
    if acked < total {
        r.fail(format!("{} of {total} sends not acked", total - acked));
    }
    if !side.reconnects && c.disconnects.load(Relaxed) > 0 {
        r.fail(format!("{} connections lost", c.disconnects.load(Relaxed)));
    }
}
