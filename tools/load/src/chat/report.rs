//! The `chat` summary: counts, throughput, latency and what makes the run fail.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::args::Args;
use super::shared::{pair, Shared, ACKED};
use crate::stats::Report;

pub(super) fn report(
    s: &Shared,
    args: &Args,
    total: u64,
    window: Duration,
    login_secs: f64,
    stored: Option<&[u8]>,
) -> Report {
    let c = &s.c;
    let (mut lost, mut unacked_delivered, mut pending) = (0u64, 0u64, 0u64);
    let (mut late, mut stored_twice) = (0u64, 0u64);
    let mut lost_samples = Vec::new();
    for k in 0..total as usize {
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
                let (from, to) = pair(k as u64, args.users);
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
    let mut r = Report::new("chat");
    r.add("users", args.users as u64, "");
    r.add_f("login of all users", login_secs, 2, "s");
    r.add_f("offered rate", args.rate, 1, "msg/s");
    r.add("duration", args.duration, "s");
    r.add("content size", args.size.max(20) as u64, "bytes");
    r.add("sent", c.sent.load(Relaxed), "");
    r.add("acked", c.acked.load(Relaxed), "");
    r.add("send errors", c.send_errors.load(Relaxed), "");
    r.add("unanswered at end", pending, "");
    r.add(
        "acked as duplicate (resent)",
        c.ack_duplicate.load(Relaxed),
        "",
    );
    r.add("delivered", c.delivered.load(Relaxed), "");
    r.add("inboxes checked", stored.is_some(), "");
    r.add("lost (acked, never delivered)", lost, "");
    r.add("late (stored, undelivered at end)", late, "");
    r.add("stored twice in an inbox", stored_twice, "");
    r.add("duplicated deliveries", c.duplicated.load(Relaxed), "");
    r.add("delivered but not acked", unacked_delivered, "");
    r.add("misrouted", c.misrouted.load(Relaxed), "");
    r.add("unrecognised messages", c.foreign.load(Relaxed), "");
    r.add("client reconnects", c.disconnects.load(Relaxed), "");
    let secs = window.as_secs_f64().max(1e-9);
    // Over the sending window, or up to the last ack when acks trailed behind it.
    let last_ack = (c.last_ack_us.load(Relaxed) as f64 / 1e6).max(secs);
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
    r.latency("delivery latency", &s.delivery.snapshot());
    for e in c.errors.lock().expect("errors lock").iter() {
        r.add("sample error", e.clone(), "");
    }
    let f = |n: u64, what: &str, r: &mut Report| {
        if n > 0 {
            r.fail(format!("{n} {what}"));
        }
    };
    if stored.is_some() {
        f(
            lost,
            "messages acked but not in the recipient's inbox (LOST)",
            &mut r,
        );
    } else {
        f(lost, "messages acked but never delivered", &mut r);
    }
    f(
        late,
        "messages stored but not delivered before the end of the grace period (late, not lost)",
        &mut r,
    );
    f(stored_twice, "messages stored twice in an inbox", &mut r);
    if !lost_samples.is_empty() {
        r.add("lost samples", lost_samples.join(", "), "");
    }
    f(c.duplicated.load(Relaxed), "duplicate deliveries", &mut r);
    f(c.misrouted.load(Relaxed), "misrouted messages", &mut r);
    f(c.send_errors.load(Relaxed), "send errors", &mut r);
    f(pending, "sends unanswered at the end", &mut r);
    f(unacked_delivered, "deliveries of unacked sends", &mut r);
    r
}
