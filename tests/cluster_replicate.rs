//! The store replicated through a partition's log (docs/CLUSTER.md section 4) on three real
//! `nats-server`s, replicas = 3: every acknowledged change is in the log before it is
//! acknowledged, so a data directory rebuilt from the log alone (the first one deleted, as a
//! dead disk) holds exactly what was acknowledged; and a store whose writer was fenced by a
//! new owner acknowledges nothing more.

mod common;

use common::nats::{nats_cluster, open_log, replicated_store};
use missive::check;
use missive::cluster::log::{Log, Writer};
use missive::ids::Version;
use missive::store::{Durability, SendRequest, Store};
use missive_protocol::pb::{Conversation, ConversationKind, InboxEntry};

/// A store in `dir` whose groups go to `partition` of `log` (taken at epoch 1).
async fn replicated(dir: &std::path::Path, log: &Log, partition: u32) -> Store {
    replicated_store(dir, log, partition, 1).await
}

fn send(from: &str, to: &str, n: usize) -> SendRequest {
    SendRequest {
        from: from.into(),
        client_msg_id: format!("{from}-{n}"),
        to: Conversation {
            kind: ConversationKind::Direct as i32,
            id: to.into(),
        },
        content_type: 1,
        content: format!("message {n} from {from}").into_bytes(),
        now_ms: missive::now_ms(),
        ..Default::default()
    }
}

/// Every entry of `user`'s inbox: (version, msg_id, seq, the entry as stored).
fn inbox(store: &Store, user: &str) -> Vec<(u64, u64, u64, InboxEntry)> {
    let page = store
        .core()
        .inbox_after(user, Version(0), 100_000, usize::MAX)
        .unwrap();
    assert!(!page.has_more);
    page.entries
        .iter()
        .map(|e| {
            let m = common::message(e);
            (e.version, m.msg_id, m.seq, e.clone())
        })
        .collect()
}

const USERS: [&str; 4] = ["ann", "ben", "cat", "dan"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_rebuilt_from_the_log_alone_holds_every_acknowledged_change() {
    let dir = tempfile::tempdir().unwrap();
    let nats = nats_cluster(dir.path());
    let log = open_log(&nats.urls).await;
    let first = dir.path().join("first");
    let store = replicated(&first, &log, 0).await;

    // 400 direct messages among four users, several in flight at once (group commit), and a
    // resend of each of the first 20 (answered from dedup, stored once).
    let mut acks = Vec::new();
    for round in 0..100 {
        let pending: Vec<_> = (0..4)
            .map(|i| {
                let (from, to) = (USERS[i], USERS[(i + 1 + round) % 4]);
                let to = if to == from { USERS[(i + 2) % 4] } else { to };
                store.send_direct(send(from, to, round), None)
            })
            .collect();
        for p in pending {
            acks.push(p.await.expect("acknowledged").ack);
        }
    }
    for (i, user) in USERS.iter().enumerate().take(4) {
        for round in 0..5 {
            let to = USERS[(i + 1 + round) % 4];
            let to = if to == *user { USERS[(i + 2) % 4] } else { to };
            let again = store
                .send_direct(send(user, to, round), None)
                .await
                .unwrap();
            assert!(again.ack.duplicate);
        }
    }
    let before: Vec<_> = USERS.iter().map(|u| inbox(&store, u)).collect();
    assert_eq!(
        before.iter().map(Vec::len).sum::<usize>(),
        800,
        "two entries per message"
    );
    let log_seq = store.core().log_seq().unwrap();
    assert!(log_seq > 0);
    drop(store);

    // A new directory from the log alone (the replay reads nothing of the first):
    let second = dir.path().join("second");
    let records = log.read(0, 0).await.unwrap();
    let at = Store::replay(&second, records.iter().map(|(s, r)| (*s, r.as_ref()))).unwrap();
    assert_eq!(at, log_seq);
    let rebuilt = Store::open(&second, Durability::Async).unwrap();
    // The cluster's consistency check: the rebuilt state is the first one, key by key in every
    // family, and each user's store invariants hold (gapless versions, unread counts against
    // a recount from the conversation logs and from the inbox).
    let original = Store::open(&first, Durability::Async).unwrap();
    check::check_replica(original.core(), rebuilt.core()).unwrap_or_else(|e| panic!("{e}"));
    for user in USERS {
        check::check_store_user(rebuilt.core(), user).unwrap_or_else(|e| panic!("{e}"));
    }
    // Then the first machine's disk is gone.
    drop(original);
    std::fs::remove_dir_all(&first).unwrap();
    let after: Vec<_> = USERS.iter().map(|u| inbox(&rebuilt, u)).collect();
    assert_eq!(
        after, before,
        "the same inboxes, versions, ids, seqs and contents"
    );
    for (user, entries) in USERS.iter().zip(&after) {
        let versions: Vec<u64> = entries.iter().map(|e| e.0).collect();
        assert_eq!(
            versions,
            (1..=entries.len() as u64).collect::<Vec<_>>(),
            "{user}"
        );
    }
    // Every acknowledged message, its content as sent, once.
    for ack in &acks {
        let m = rebuilt.core().message(ack.msg_id).unwrap().expect("stored");
        assert_eq!(m.seq, ack.seq);
        let text = String::from_utf8(m.content).unwrap();
        assert!(text.starts_with("message ") && text.ends_with(&format!("from {}", m.from_user)));
    }
    let ids: std::collections::BTreeSet<u64> = acks.iter().map(|a| a.msg_id).collect();
    assert_eq!(ids.len(), 400);
    // It goes on from there: the next message gets the next versions, and a resend of an old
    // one is still a duplicate.
    let next = rebuilt
        .send_direct(send("ann", "ben", 1000), None)
        .await
        .unwrap();
    assert_eq!(next.ack.version, after[0].len() as u64 + 1);
    let old = rebuilt
        .send_direct(send("ann", "ben", 0), None)
        .await
        .unwrap();
    assert!(old.ack.duplicate);
    assert_eq!(old.ack.msg_id, acks[0].msg_id);
    // The check sees a divergence: the rebuilt store changed without the log (it has no
    // replicator), and the log rebuilt elsewhere does not have those changes.
    let third = dir.path().join("third");
    Store::replay(&third, records.iter().map(|(s, r)| (*s, r.as_ref()))).unwrap();
    let from_log = Store::open(&third, Durability::Async).unwrap();
    let diverged = check::check_replica(from_log.core(), rebuilt.core());
    assert!(diverged.is_err(), "a change outside the log went unnoticed");
    // Replaying again is a no-op: every record is at or before the directory's position.
    drop(rebuilt);
    let again = Store::replay(&second, records.iter().map(|(s, r)| (*s, r.as_ref()))).unwrap();
    assert_eq!(again, log_seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_store_acknowledges_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let nats = nats_cluster(dir.path());
    let log = open_log(&nats.urls).await;
    let store = replicated(&dir.path().join("old"), &log, 5).await;
    store
        .send_direct(send("ann", "ben", 1), None)
        .await
        .expect("acknowledged while it owns the partition");
    // A new owner takes the partition (its lease, then its epoch record).
    let end = log.last(5).await.unwrap();
    let _new = Writer::take(log.clone(), 5, 2, end).await.unwrap();
    let refused = store.send_direct(send("ann", "ben", 2), None).await;
    assert!(refused.is_err(), "a fenced store acknowledged a send");
    let later = store.send_direct(send("ben", "ann", 3), None).await;
    assert!(later.is_err(), "and refuses every later change");
    // The log holds the first send's group and the two epochs, nothing of the refused ones.
    let records = log.read(5, 0).await.unwrap();
    assert_eq!(records.len(), 3, "epoch 1, the acknowledged group, epoch 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_larger_than_a_log_record_is_split_into_records_that_fit() {
    let dir = tempfile::tempdir().unwrap();
    let nats = nats_cluster(dir.path());
    let log = open_log(&nats.urls).await;
    let store = replicated(&dir.path().join("s"), &log, 2).await;
    // 64 messages of 60 KiB queued at once: one group would be about 3.8 MB, and NATS takes
    // at most 1 MiB a message.
    let pending: Vec<_> = (0..64)
        .map(|n| {
            let mut req = send(USERS[n % 4], USERS[(n + 1) % 4], n);
            req.content = vec![b'x'; 60 * 1024];
            store.send_direct(req, None)
        })
        .collect();
    for p in pending {
        p.await.expect("acknowledged");
    }
    let records = log.read(2, 0).await.unwrap();
    assert!(
        records.len() > 4,
        "{} records: the epoch record and 4 or more groups",
        records.len()
    );
    assert!(records.iter().all(|(_, r)| r.len() < 1 << 20));
}
