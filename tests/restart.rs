//! End to end: everything survives a server restart on the same data directory: history,
//! contacts, unread counts, inbox versions and conversation seqs, in both durability modes.

mod common;
mod e2e;

use common::*;
use e2e::*;
use missive::store::Durability;
use missive_client::{direct, pb};

const USERS: [&str; 3] = ["alice", "bob", "carol"];

/// What a user can observe of their own state.
#[derive(Debug, PartialEq)]
struct View {
    current_version: u64,
    unread_total: u64,
    entries: Vec<pb::InboxEntry>,
    contacts: Vec<pb::Contact>,
    unread: pb::UnreadAck,
}

async fn view(server: &TestServer, user: &str) -> View {
    let (mut conn, login) = server.login(user, "observer").await;
    let entries = sync_all(&mut conn, 0).await;
    let view = View {
        current_version: login.current_version,
        unread_total: login.unread_total,
        entries,
        contacts: raw_contacts_all(&mut conn, 2).await,
        unread: raw_unread(&mut conn).await,
    };
    assert_eq!(
        view.entries.last().map(|e| e.version).unwrap_or(0),
        view.current_version,
        "{user}: SYNC reaches current_version"
    );
    view
}

fn check_all(server: &TestServer) {
    for u in USERS {
        server
            .handle()
            .store()
            .core()
            .check_user(u)
            .unwrap_or_else(|e| panic!("store invariants of {u}: {e}"));
    }
}

async fn survives_restart(durability: Durability) {
    let mut server = TestServer::start_with(|c| c.durability = durability).await;
    let (alice, _a) = server.client("alice", "phone").await;
    let (bob, _b) = server.client("bob", "phone").await;
    let (carol, _c) = server.client("carol", "phone").await;

    let mut last_ab = None;
    let mut to_recall = None;
    for i in 1..=5 {
        let a = alice
            .send(direct("bob"), 1, format!("a->b {i}"), None)
            .await
            .unwrap();
        to_recall.get_or_insert(a);
        last_ab = Some(
            bob.send(direct("alice"), 1, format!("b->a {i}"), None)
                .await
                .unwrap(),
        );
    }
    let to_recall = to_recall.unwrap();
    let last = alice.send(direct("bob"), 1, "last", None).await.unwrap();
    let to_delete = carol.send(direct("alice"), 2, "spam", None).await.unwrap();
    carol
        .send(direct("alice"), 1, "hello alice", None)
        .await
        .unwrap();
    alice
        .send(direct("carol"), 1, "hi carol", None)
        .await
        .unwrap();
    // Bob reads part of the conversation; alice recalls a message bob has read (the recall of
    // unread messages is covered in messaging.rs) and deletes another.
    bob.mark_read(direct("alice"), 4).await.unwrap();
    alice.recall(direct("bob"), to_recall.msg_id).await.unwrap();
    alice
        .delete(direct("carol"), to_delete.msg_id)
        .await
        .unwrap();
    let ab_seq = last.seq;
    assert_eq!(ab_seq, last_ab.unwrap().seq + 1);

    check_all(&server);
    let mut before = Vec::new();
    for u in USERS {
        before.push(view(&server, u).await);
    }
    // The recall is visible before the restart.
    let recalled = before[1]
        .entries
        .iter()
        .filter_map(|e| match e.body.as_ref() {
            Some(pb::inbox_entry::Body::Message(m)) if m.msg_id == to_recall.msg_id => Some(m),
            _ => None,
        })
        .next()
        .expect("bob holds the recalled message");
    assert!(recalled.recalled && recalled.content.is_empty());

    for c in [&alice, &bob, &carol] {
        c.close().await;
    }
    drop((alice, bob, carol));
    server.restart().await;

    check_all(&server);
    for (u, old) in USERS.iter().zip(&before) {
        let now = view(&server, u).await;
        assert_eq!(now.current_version, old.current_version, "{u}: version");
        assert_eq!(now.unread_total, old.unread_total, "{u}: unread total");
        assert_eq!(now.entries, old.entries, "{u}: history");
        assert_eq!(now.contacts, old.contacts, "{u}: contacts");
        assert_eq!(now.unread, old.unread, "{u}: unread");
    }

    // New activity continues every sequence where it stopped.
    let (alice, _a) = server.client("alice", "phone").await;
    let (bob, _b) = server.client("bob", "phone").await;
    let old_alice = before[0].current_version;
    let old_bob = before[1].current_version;
    let max_msg_id = before
        .iter()
        .flat_map(|v| v.entries.iter())
        .filter_map(|e| match e.body.as_ref() {
            Some(pb::inbox_entry::Body::Message(m)) => Some(m.msg_id),
            _ => None,
        })
        .max()
        .unwrap();
    let ack = alice
        .send(direct("bob"), 1, "after restart", None)
        .await
        .unwrap();
    assert_eq!(ack.version, old_alice + 1, "alice's version continues");
    assert_eq!(ack.seq, ab_seq + 1, "the conversation's seq continues");
    assert!(ack.msg_id > max_msg_id, "msg ids keep increasing");
    let back = bob
        .send(direct("alice"), 1, "welcome back", None)
        .await
        .unwrap();
    assert_eq!(back.version, old_bob + 2, "bob's version continues");
    assert_eq!(back.seq, ab_seq + 2);
    // The dedup record survived too.
    let dup = alice
        .send(
            direct("bob"),
            1,
            "a->b 1",
            Some(to_recall.client_msg_id.clone()),
        )
        .await
        .unwrap();
    assert!(dup.duplicate);
    assert_eq!(dup.msg_id, to_recall.msg_id);
    // Bob's reply read "after restart"; alice's next one he reads with MARK_READ.
    let more = alice
        .send(direct("bob"), 1, "one more", None)
        .await
        .unwrap();
    let read = bob.mark_read(direct("alice"), more.seq).await.unwrap();
    assert_eq!(read.unread, 0);
    assert_eq!(read.version, old_bob + 4);
    let unread = bob.unread().await.unwrap();
    assert_eq!(unread.total, 0);
    check_all(&server);
    server.stop().await;
}

#[tokio::test]
async fn state_survives_a_restart_async() {
    survives_restart(Durability::Async).await;
}

#[tokio::test]
async fn state_survives_a_restart_sync() {
    survives_restart(Durability::Sync).await;
}

#[tokio::test]
async fn a_second_restart_with_nothing_in_between_changes_nothing() {
    let mut server = TestServer::start().await;
    let (mut alice, _) = server.login("alice", "phone").await;
    for i in 0..3 {
        raw_send(&mut alice, "bob", &format!("m{i}")).await;
    }
    drop(alice);
    server.restart().await;
    let first = view(&server, "bob").await;
    server.restart().await;
    let second = view(&server, "bob").await;
    assert_eq!(first, second);
    assert_eq!(second.current_version, 3);
    assert_eq!(second.unread_total, 3);
    check_all(&server);
    server.stop().await;
}
