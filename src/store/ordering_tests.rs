//! The committer's half of the ordering rule (`session::order`), tested against a real store in
//! a temp dir: `commit.rs` completes a group's results before it hands out the group's pushes.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use missive_protocol::pb::{inbox_entry::Body, Conversation, ConversationKind};
use parking_lot::Mutex;

use super::conversation::{SendOutcome, SendRequest};
use super::core::Durability;
use super::outbox::{Delivery, GroupNotice, Outbox};
use super::pending::Pending;
use super::writer::Store;

/// The results of the sends, and what the outbox saw when each delivery came.
#[derive(Default)]
struct Watch {
    pending: Mutex<Vec<Option<Pending<SendOutcome>>>>,
    acked: Mutex<HashSet<u64>>,
    /// Deliveries of a message whose result was not complete yet.
    early: Mutex<Vec<u64>>,
    delivered: Mutex<usize>,
}

impl Watch {
    /// Takes every result that is complete now (without waiting).
    fn collect(&self) {
        let mut cx = Context::from_waker(Waker::noop());
        let mut acked = self.acked.lock();
        for slot in self.pending.lock().iter_mut() {
            let Some(p) = slot else { continue };
            if let Poll::Ready(r) = Pin::new(p).poll(&mut cx) {
                acked.insert(r.expect("stored").ack.msg_id);
                *slot = None;
            }
        }
    }
}

impl Outbox for Watch {
    fn deliver(&self, deliveries: Vec<Delivery>, _exclude: Option<crate::ids::SessionId>) {
        self.collect();
        let acked = self.acked.lock();
        for d in deliveries {
            if let Some(Body::Message(m)) = d.entry.body {
                *self.delivered.lock() += 1;
                if !acked.contains(&m.msg_id) {
                    self.early.lock().push(m.msg_id);
                }
            }
        }
    }

    fn notify_group(&self, _notify: GroupNotice<'_>) {}
}

/// The committer's half of the ordering rule (`session::order`): a change's result is
/// complete before any of its pushes reaches the outbox, for every change of every commit
/// group, in both durabilities.
#[test]
fn results_are_complete_before_their_pushes_are_handed_out() {
    for durability in [Durability::Async, Durability::Sync] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), durability).unwrap();
        let watch = Arc::new(Watch::default());
        store.set_outbox(watch.clone());
        let sends = 300;
        for i in 0..sends {
            let req = SendRequest {
                from: format!("user{}", i % 7),
                client_msg_id: format!("m{i}"),
                to: Conversation {
                    kind: ConversationKind::Direct as i32,
                    id: "bob".into(),
                },
                content_type: 1,
                content: b"hi".to_vec(),
                mentions: Vec::new(),
                now_ms: 1,
                ..Default::default()
            };
            // Queued without waiting, so that many land in one commit group.
            let pending = store.send_direct(req, None);
            watch.pending.lock().push(Some(pending));
        }
        store.core().flush().unwrap();
        // Every send was delivered (to bob and to its sender), none before its result.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while *watch.delivered.lock() < 2 * sends {
            assert!(std::time::Instant::now() < deadline, "deliveries missing");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(*watch.early.lock(), Vec::<u64>::new(), "{durability:?}");
    }
}
