//! The `offline` workload: N messages are queued for a reader while it is offline, then it
//! comes back and catches up; every message must arrive exactly once. Here: the summary's rows
//! for the queue phase, the catch-up and the copies received, and their checks.

use std::time::Duration;

use crate::stats::Report;

/// The queue phase: `queued` messages acked (and `send_errors` failed) in `time`, `window` sends
/// in flight at once.
pub fn add_queue(r: &mut Report, queued: u64, send_errors: u64, time: Duration, window: u64) {
    r.add("messages queued (acked)", queued, "");
    r.add("send errors", send_errors, "");
    r.add_f("queue time", time.as_secs_f64(), 2, "s");
    r.add_f(
        &format!("queue rate ({window} sends in flight)"),
        queued as f64 / time.as_secs_f64().max(1e-9),
        1,
        "msg/s",
    );
}

/// The catch-up: from the login to the last message in `secs`, `entries` received meanwhile.
pub fn add_catch_up(r: &mut Report, secs: f64, entries: u64) {
    r.add_f("login to last message synced", secs * 1e3, 1, "ms");
    r.add_f(
        "catch-up rate",
        entries as f64 / secs.max(1e-9),
        0,
        "entries/s",
    );
}

/// How many of the run's messages never arrived, and how many more than once.
pub struct Copies {
    missing: u64,
    duplicated: u64,
}

impl Copies {
    /// From the copies received of each message.
    pub fn count(copies: impl Iterator<Item = u8>) -> Copies {
        let (mut missing, mut duplicated) = (0, 0);
        for n in copies {
            missing += u64::from(n == 0);
            duplicated += u64::from(n > 1);
        }
        Copies {
            missing,
            duplicated,
        }
    }

    /// The rows `missing` and `duplicated`.
    pub fn add_to(&self, r: &mut Report) {
        r.add("missing", self.missing, "");
        r.add("duplicated", self.duplicated, "");
    }

    /// Fails the run for messages missing or duplicated of the `n`, `what` happened to each
    /// ("synced").
    pub fn check(&self, r: &mut Report, n: u64, what: &str) {
        if self.missing > 0 {
            r.fail(format!("{} of {n} messages never {what}", self.missing));
        }
        if self.duplicated > 0 {
            r.fail(format!(
                "{} messages {what} more than once",
                self.duplicated
            ));
        }
    }
}
