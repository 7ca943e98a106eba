//! Read receipts of direct conversations, coalesced: when a user's read position moves, the
//! other user's online devices get a RECEIPT frame (PROTOCOL.md 25), at most one per (reader,
//! conversation) per window (`receipt_coalesce_ms`), carrying the latest position.
//!
//! The first read after a quiet window is sent at once (a chat's "seen" appears without
//! delay); reads within the window after it only raise the pending position, which
//! [`Receipts::flush`] sends when the window ends (the server's flush task sleeps until the
//! next window's end, [`Receipts::next_end`], or until one opens), and a new window starts
//! then. So a client that marks 500 messages read one by one causes one receipt at once and
//! one per window after it, not 500.
//!
//! Receipts are not stored: the durable truth is the read position, read back with CONTACTS
//! and HISTORY after a reconnect. So a receipt may be dropped: when its peer has no device
//! online, or when [`MAX_TRACKED`] conversations already have a window open (counted in
//! `missive_receipts_dropped_total`). Memory is one entry per conversation with an open
//! window (and its place in a deadline queue); an entry goes at the end of a window in which
//! nothing more was read.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use missive_protocol::pb::{self, ConversationKind, Receipt};
use missive_protocol::{Frame, Packet};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::metrics::{Counter, Text};
use crate::router::{Outbound, Router};

/// Conversations with an open window at most; a receipt for one more is dropped.
pub const MAX_TRACKED: usize = 100_000;

/// A reader and the other user of a direct conversation (to whom the receipt goes).
type Key = (Arc<str>, Arc<str>);

/// A read not sent yet.
#[derive(Debug, Clone, Copy)]
struct Read {
    up_to_seq: u64,
    read_ms: i64,
}

/// A conversation whose window is open.
#[derive(Debug)]
struct Window {
    /// The highest position sent or pending (older reads arriving late are not sent).
    highest: u64,
    /// The latest read of the window, sent when it ends.
    pending: Option<Read>,
}

#[derive(Debug, Default)]
struct State {
    windows: HashMap<Key, Window>,
    /// When each open window ends, in that order (every window is in it once; the window is
    /// the same length for all, so appending keeps the order).
    ends: VecDeque<(Instant, Key)>,
}

/// The coalescer of one server (`Shared::receipts`).
#[derive(Debug)]
pub struct Receipts {
    window: Duration,
    max_tracked: usize,
    state: Mutex<State>,
    /// Told when a window opens while none was open (the flush task then has an end to wait
    /// for).
    opened: tokio::sync::Notify,
    /// Receipts sent (each counted once, however many devices got it).
    pub sent: Counter,
    /// Reads folded into a later receipt of the same window.
    pub coalesced: Counter,
    /// Receipts not sent because [`MAX_TRACKED`] windows were open.
    pub dropped: Counter,
}

impl Receipts {
    /// A coalescer with a window of `coalesce_ms` (0: every read is sent at once).
    pub fn new(coalesce_ms: u64) -> Receipts {
        Receipts::with_cap(coalesce_ms, MAX_TRACKED)
    }

    /// [`Receipts::new`] with another bound on open windows (tests).
    pub fn with_cap(coalesce_ms: u64, max_tracked: usize) -> Receipts {
        Receipts {
            window: Duration::from_millis(coalesce_ms),
            max_tracked,
            state: Mutex::default(),
            opened: tokio::sync::Notify::new(),
            sent: Counter::default(),
            coalesced: Counter::default(),
            dropped: Counter::default(),
        }
    }

    /// When the next window ends ([`Receipts::flush`] is due then); `None` while none is open.
    pub fn next_end(&self) -> Option<Instant> {
        self.state.lock().ends.front().map(|(end, _)| *end)
    }

    /// Resolves once a window opens while none was open (at once if one opened since the last
    /// call): what the flush task waits for when [`Receipts::next_end`] is `None`.
    pub async fn opened(&self) {
        self.opened.notified().await
    }

    /// Windows open now.
    pub fn tracked(&self) -> usize {
        self.state.lock().windows.len()
    }

    /// `reader` read its direct conversation with `peer` up to `up_to_seq` (committed) at
    /// `read_ms`: sends `peer`'s online devices a RECEIPT now, or when the conversation's
    /// window ends.
    pub fn offer(
        &self,
        router: &Router,
        reader: &str,
        peer: &str,
        up_to_seq: u64,
        read_ms: i64,
        now: Instant,
    ) {
        if router.sessions_of(peer).is_empty() {
            // Nobody to tell; the peer reads the position when it comes back.
            return;
        }
        let read = Read { up_to_seq, read_ms };
        if self.window.is_zero() {
            self.send(router, reader, peer, read);
            return;
        }
        {
            let mut state = self.state.lock();
            let key: Key = (Arc::from(reader), Arc::from(peer));
            if let Some(w) = state.windows.get_mut(&key) {
                self.coalesced.inc();
                if up_to_seq > w.highest {
                    w.highest = up_to_seq;
                    w.pending = Some(read);
                }
                return;
            }
            if state.windows.len() >= self.max_tracked {
                self.dropped.inc();
                return;
            }
            let window = Window {
                highest: up_to_seq,
                pending: None,
            };
            state.windows.insert(key.clone(), window);
            state.ends.push_back((now + self.window, key));
            if state.ends.len() == 1 {
                self.opened.notify_one();
            }
        }
        self.send(router, reader, peer, read);
    }

    /// Ends the windows due at `now`: sends each one's pending receipt (and opens a new
    /// window for it), and forgets those in which nothing more was read.
    pub fn flush(&self, router: &Router, now: Instant) {
        let mut due = Vec::new();
        {
            let mut state = self.state.lock();
            while let Some((end, _)) = state.ends.front() {
                if *end > now {
                    break;
                }
                let Some((_, key)) = state.ends.pop_front() else {
                    break;
                };
                let pending = state.windows.get_mut(&key).and_then(|w| w.pending.take());
                match pending {
                    Some(read) => {
                        due.push((key.clone(), read));
                        state.ends.push_back((now + self.window, key));
                    }
                    None => {
                        state.windows.remove(&key);
                    }
                }
            }
        }
        for ((reader, peer), read) in due {
            self.send(router, &reader, &peer, read);
        }
    }

    /// Queues a RECEIPT on every online session of `peer`.
    fn send(&self, router: &Router, reader: &str, peer: &str, read: Read) {
        let sessions = router.sessions_of(peer);
        if sessions.is_empty() {
            return;
        }
        let frame = Frame::new(
            &Packet::Receipt(Receipt {
                conversation: Some(pb::Conversation {
                    kind: ConversationKind::Direct as i32,
                    id: reader.to_owned(),
                }),
                reader: reader.to_owned(),
                up_to_seq: read.up_to_seq,
                read_ms: read.read_ms,
            }),
            0,
        );
        for s in sessions {
            s.enqueue(Outbound::Frame(frame.clone()), router.queue_limit());
        }
        self.sent.inc();
    }

    /// Writes the counters and the gauge in the text format.
    pub fn render(&self, out: &mut Text) {
        out.counter(
            "missive_receipts_sent_total",
            "RECEIPT frames sent (each receipt once, however many devices of its receiver got it).",
            self.sent.get(),
        );
        out.counter(
            "missive_receipts_coalesced_total",
            "Read-position moves folded into a later RECEIPT of the same window (receipt_coalesce_ms).",
            self.coalesced.get(),
        );
        out.counter(
            "missive_receipts_dropped_total",
            "RECEIPTs not sent because too many conversations had a coalescing window open.",
            self.dropped.get(),
        );
        out.gauge(
            "missive_receipts_windows",
            "Direct conversations with a receipt coalescing window open now.",
            self.tracked() as u64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipts_of(s: &crate::router::SessionHandle) -> Vec<Receipt> {
        s.take()
            .frames
            .into_iter()
            .map(|o| match o {
                Outbound::Frame(f) => match f.packet(1 << 20).unwrap() {
                    Packet::Receipt(r) => r,
                    other => panic!("not a receipt: {other:?}"),
                },
                other => panic!("not a frame: {other:?}"),
            })
            .collect()
    }

    fn router_with(user: &str) -> (Router, Arc<crate::router::SessionHandle>) {
        let router = Router::default();
        let s = router.register(user, "phone", 1024, 5, 0);
        (router, s)
    }

    #[test]
    fn reads_within_a_window_become_one_receipt_with_the_latest_position() {
        let (router, alice) = router_with("alice");
        let r = Receipts::new(1000);
        let t0 = Instant::now();
        for seq in 1..=500 {
            r.offer(
                &router,
                "bob",
                "alice",
                seq,
                7,
                t0 + Duration::from_millis(seq),
            );
        }
        let first = receipts_of(&alice);
        assert_eq!(first.len(), 1, "the first read goes out at once");
        assert_eq!(first[0].up_to_seq, 1);
        assert_eq!(first[0].reader, "bob");
        assert_eq!(first[0].conversation.as_ref().unwrap().id, "bob");
        // The window opened with the first read, at t0 + 1 ms.
        r.flush(&router, t0 + Duration::from_millis(1000));
        assert!(receipts_of(&alice).is_empty(), "the window is still open");
        r.flush(&router, t0 + Duration::from_millis(1001));
        let second = receipts_of(&alice);
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].up_to_seq, 500, "the latest position");
        assert_eq!((r.sent.get(), r.coalesced.get()), (2, 499));
        // A new window opened with that send; nothing more read: it closes and is forgotten.
        r.flush(&router, t0 + Duration::from_millis(2000));
        assert_eq!(r.tracked(), 1);
        r.flush(&router, t0 + Duration::from_millis(2001));
        assert!(receipts_of(&alice).is_empty());
        assert_eq!(r.tracked(), 0);
        // The next read is sent at once again.
        r.offer(
            &router,
            "bob",
            "alice",
            501,
            8,
            t0 + Duration::from_millis(2002),
        );
        assert_eq!(receipts_of(&alice)[0].up_to_seq, 501);
    }

    #[test]
    fn a_late_older_read_is_not_sent_and_zero_means_at_once() {
        let (router, alice) = router_with("alice");
        let r = Receipts::new(1000);
        let t0 = Instant::now();
        r.offer(&router, "bob", "alice", 10, 1, t0);
        r.offer(&router, "bob", "alice", 4, 1, t0);
        r.flush(&router, t0 + Duration::from_secs(1));
        let got: Vec<u64> = receipts_of(&alice).iter().map(|x| x.up_to_seq).collect();
        assert_eq!(got, [10]);
        let at_once = Receipts::new(0);
        for seq in 1..=3 {
            at_once.offer(&router, "bob", "alice", seq, 1, t0);
        }
        assert_eq!(receipts_of(&alice).len(), 3);
        assert_eq!(at_once.tracked(), 0);
    }

    #[test]
    fn memory_is_bounded_and_offline_peers_cost_nothing() {
        let (router, alice) = router_with("alice");
        let r = Receipts::with_cap(1000, 2);
        let t0 = Instant::now();
        r.offer(&router, "carol", "nobody-online", 1, 1, t0);
        assert_eq!(r.tracked(), 0);
        for reader in ["bob", "carol", "dave"] {
            r.offer(&router, reader, "alice", 1, 1, t0);
        }
        assert_eq!(r.tracked(), 2);
        assert_eq!(r.dropped.get(), 1);
        assert_eq!(receipts_of(&alice).len(), 2);
        let mut text = Text::default();
        r.render(&mut text);
        assert!(
            text.0.contains("missive_receipts_dropped_total 1\n"),
            "{}",
            text.0
        );
    }
}
