//! The `chat` workload: U users, one connection each, send one-to-one messages at an open-loop
//! aggregate rate; message k goes between the pair [`pair`] picks, is due at `start + k / rate`
//! and its latencies (ack, delivery) run from that scheduled time. Every message must be acked
//! and delivered exactly once, to the right user. Here: the options, the per-message state the
//! senders, the receivers and the report share, the progress line and the summary.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::Duration;

use super::pace::{CpuUse, Schedule};
use super::tally::Tally;
use crate::stats::{Latency, Report};

/// The offered load, the same options on both sides.
#[derive(clap::Args, Debug)]
pub struct Load {
    /// Online users (one connection each); every message goes from one to another at random.
    #[arg(short = 'u', long, default_value_t = 200)]
    pub users: usize,
    /// Aggregate messages per second (open loop).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Seconds to wait after the last scheduled send for acks and deliveries in flight.
    #[arg(long, default_value_t = 15)]
    pub grace: u64,
}

impl Load {
    /// Messages in the run.
    pub fn total(&self) -> u64 {
        (self.rate * self.duration as f64).round() as u64
    }
}

/// Per-message flags.
const ACKED: u8 = 1;
const FAILED: u8 = 2;

pub struct Shared {
    pub schedule: Schedule,
    pub users: usize,
    /// Per message: ACKED / FAILED.
    state: Vec<AtomicU8>,
    /// Per message: how many times its recipient received it.
    seen: Vec<AtomicU8>,
    pub c: Tally,
    pub sent: AtomicU64,
    /// Acks that said the message was stored already (a resend).
    pub ack_duplicate: AtomicU64,
    pub misrouted: AtomicU64,
    pub last_ack_us: AtomicU64,
    /// From each message's scheduled send time to its ack.
    ack: Latency,
}

impl Shared {
    /// The messages of `load`, from now on.
    pub fn new(load: &Load) -> Shared {
        let total = load.total();
        Shared {
            schedule: Schedule::new(load.rate),
            users: load.users,
            state: (0..total).map(|_| AtomicU8::new(0)).collect(),
            seen: (0..total).map(|_| AtomicU8::new(0)).collect(),
            c: Tally::default(),
            sent: AtomicU64::new(0),
            ack_duplicate: AtomicU64::new(0),
            misrouted: AtomicU64::new(0),
            last_ack_us: AtomicU64::new(0),
            ack: Latency::default(),
        }
    }

    /// Message `k` was acked (latency from its scheduled time).
    pub fn acked(&self, k: u64) {
        let Some(state) = self.state.get(k as usize) else {
            return;
        };
        let now = self.schedule.elapsed();
        self.ack.record(now.saturating_sub(self.schedule.due(k)));
        state.store(ACKED, Relaxed);
        self.c.acked.fetch_add(1, Relaxed);
        self.last_ack_us.fetch_max(now.as_micros() as u64, Relaxed);
    }

    /// Sending message `k` failed.
    pub fn failed(&self, k: u64, what: String) {
        if let Some(state) = self.state.get(k as usize) {
            state.store(FAILED, Relaxed);
        }
        self.c.send_errors.fetch_add(1, Relaxed);
        self.c.error(what);
    }

    /// The copies received of message `k`; `None` (counted as unrecognised) if the run sent no
    /// message `k`.
    pub fn copies(&self, k: u64) -> Option<&AtomicU8> {
        let copies = self.seen.get(k as usize);
        if copies.is_none() {
            self.c.foreign.fetch_add(1, Relaxed);
        }
        copies
    }

    /// A message for another user arrived.
    pub fn misrouted(&self, what: String) {
        self.misrouted.fetch_add(1, Relaxed);
        self.c.error(what);
    }

    /// The progress line; `lost_conns` names the lost connections' count (`reconnects` where
    /// clients reconnect by themselves).
    pub fn progress(&self, lost_conns: &str) -> String {
        let c = &self.c;
        let (sent, acked, errs) = (
            self.sent.load(Relaxed),
            c.acked.load(Relaxed),
            c.send_errors.load(Relaxed),
        );
        format!(
            "sent {sent} acked {acked} delivered {} in flight {} errors {errs} dup {} {lost_conns} {}",
            c.delivered.load(Relaxed),
            sent.saturating_sub(acked + errs),
            c.duplicated.load(Relaxed),
            c.disconnects.load(Relaxed),
        )
    }
}

/// A well-mixed 64-bit hash (splitmix64), to pick senders and recipients.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Sender and recipient of message `k` (distinct users), the same on both sides.
pub fn pair(k: u64, users: usize) -> (usize, usize) {
    let u = users as u64;
    let s = mix(k) % u;
    let r = (s + 1 + mix(k ^ 0x5555) % (u - 1)) % u;
    (s as usize, r as usize)
}

/// The recipients' inboxes as read back at the end of the run.
pub enum Inboxes<'a> {
    /// Nothing to read back: a broker keeps no inbox (no rows about it).
    Absent,
    /// Reading them failed.
    Unread,
    /// Per message: how many times it is stored in its recipient's inbox.
    Read(&'a [u8]),
}

/// What the summary says that only one side has.
pub struct Side<'a> {
    /// Whether an ack tells a resend (the row `acked as duplicate (resent)`).
    pub resend_acks: bool,
    pub inboxes: Inboxes<'a>,
    /// Whether clients reconnect by themselves (counted as `client reconnects`) or a lost
    /// connection fails the run (`client disconnects`).
    pub reconnects: bool,
}

/// The run as measured: `total` messages sent over `window`, after logging in for
/// `login_secs`; `size` is the content size reported.
pub struct Run<'a> {
    pub load: &'a Load,
    pub total: u64,
    pub window: Duration,
    pub login_secs: f64,
    pub size: u64,
    pub cpu: CpuUse,
}

/// The summary into `r`: counts, throughput, latency, CPU and what makes the run fail.
pub fn report(r: &mut Report, s: &Shared, run: &Run<'_>, side: &Side<'_>) {
    let c = &s.c;
    let stored = match side.inboxes {
        Inboxes::Read(counts) => Some(counts),
        Inboxes::Absent | Inboxes::Unread => None,
    };
    let (mut lost, mut unacked_delivered, mut pending) = (0u64, 0u64, 0u64);
    let (mut late, mut stored_twice) = (0u64, 0u64);
    let mut lost_samples = Vec::new();
    for k in 0..run.total as usize {
        let state = s.state[k].load(Relaxed);
        let seen = s.seen[k].load(Relaxed);
        let in_inbox = stored.map(|counts| counts[k]);
        if in_inbox.is_some_and(|n| n > 1) {
            stored_twice += 1;
        }
        if state == ACKED && seen == 0 && in_inbox.is_some_and(|n| n > 0) {
            late += 1;
        } else if state == ACKED && seen == 0 {
            lost += 1;
            if lost_samples.len() < 5 {
                let (from, to) = pair(k as u64, s.users);
                lost_samples.push(format!("#{k} (u-{from} -> u-{to})"));
            }
        }
        if state != ACKED && seen > 0 {
            unacked_delivered += 1;
        }
        if state == 0 {
            pending += 1;
        }
    }
    let load = run.load;
    r.add("users", load.users as u64, "");
    r.add_f("login of all users", run.login_secs, 2, "s");
    r.add_f("offered rate", load.rate, 1, "msg/s");
    r.add("duration", load.duration, "s");
    r.add("content size", run.size, "bytes");
    r.add("sent", s.sent.load(Relaxed), "");
    r.add("acked", c.acked.load(Relaxed), "");
    r.add("send errors", c.send_errors.load(Relaxed), "");
    r.add("unanswered at end", pending, "");
    if side.resend_acks {
        r.add(
            "acked as duplicate (resent)",
            s.ack_duplicate.load(Relaxed),
            "",
        );
    }
    r.add("delivered", c.delivered.load(Relaxed), "");
    if !matches!(side.inboxes, Inboxes::Absent) {
        r.add("inboxes checked", stored.is_some(), "");
    }
    r.add("lost (acked, never delivered)", lost, "");
    if !matches!(side.inboxes, Inboxes::Absent) {
        r.add("late (stored, undelivered at end)", late, "");
        r.add("stored twice in an inbox", stored_twice, "");
    }
    r.add("duplicated deliveries", c.duplicated.load(Relaxed), "");
    r.add("delivered but not acked", unacked_delivered, "");
    r.add("misrouted", s.misrouted.load(Relaxed), "");
    r.add("unrecognised messages", c.foreign.load(Relaxed), "");
    let lost_conns = if side.reconnects {
        "client reconnects"
    } else {
        "client disconnects"
    };
    r.add(lost_conns, c.disconnects.load(Relaxed), "");
    let secs = run.window.as_secs_f64().max(1e-9);
    // Over the sending window, or up to the last ack when acks trailed behind it.
    let last_ack = (s.last_ack_us.load(Relaxed) as f64 / 1e6).max(secs);
    r.add_f(
        "ack throughput",
        c.acked.load(Relaxed) as f64 / last_ack,
        1,
        "msg/s",
    );
    r.add_f("last ack after start", last_ack, 2, "s");
    let last = c.last_delivery_us.load(Relaxed) as f64 / 1e6;
    r.add_f("last delivery after start", last, 2, "s");
    r.add_f(
        "delivery throughput",
        c.delivered.load(Relaxed) as f64 / last.max(secs),
        1,
        "msg/s",
    );
    r.latency("ack latency", &s.ack.snapshot());
    r.latency("delivery latency", &c.delivery.snapshot());
    r.samples(&c.errors);
    if !lost_samples.is_empty() {
        r.add("lost samples", lost_samples.join(", "), "");
    }
    run.cpu.add_to(r);
    let f = |n: u64, what: &str, r: &mut Report| {
        if n > 0 {
            r.fail(format!("{n} {what}"));
        }
    };
    let lost_is = match side.inboxes {
        Inboxes::Read(_) => "messages acked but not in the recipient's inbox (LOST)",
        Inboxes::Unread => "messages acked but never delivered",
        Inboxes::Absent => "messages acked but never delivered (LOST)",
    };
    f(lost, lost_is, r);
    f(
        late,
        "messages stored but not delivered before the end of the grace period (late, not lost)",
        r,
    );
    f(stored_twice, "messages stored twice in an inbox", r);
    f(c.duplicated.load(Relaxed), "duplicate deliveries", r);
    f(s.misrouted.load(Relaxed), "misrouted messages", r);
    f(c.send_errors.load(Relaxed), "send errors", r);
    f(pending, "sends unanswered at the end", r);
    f(unacked_delivered, "deliveries of unacked sends", r);
    if !side.reconnects {
        f(c.disconnects.load(Relaxed), "connections lost", r);
    }
}
