//! End to end: one-to-one messaging over real TCP and a real RocksDB. Chat, offline delivery
//! and SYNC paging, multiple devices, read sync, dedup, retransmits, gaps, contacts, recall,
//! delete and request validation.

mod common;
mod e2e;

use std::time::Duration;

use common::*;
use e2e::*;
use missive_client::{direct, pb};
use missive_protocol::{ErrorCode, Packet};

fn check_users(server: &TestServer, users: &[&str]) {
    for u in users {
        server
            .handle()
            .store()
            .core()
            .check_user(u)
            .unwrap_or_else(|e| panic!("store invariants of {u}: {e}"));
    }
}

#[tokio::test]
async fn chat_both_ways_versions_and_seqs_in_order() {
    let server = TestServer::start().await;
    let (alice, mut a_ev) = server.client("alice", "phone").await;
    let (bob, mut b_ev) = server.client("bob", "phone").await;
    // A raw second device of Bob sees every entry of Bob's inbox as a push.
    let (mut watcher, _) = server.login("bob", "tablet").await;

    let plan = [
        ("alice", "a1"),
        ("alice", "a2"),
        ("bob", "b1"),
        ("alice", "a3"),
        ("bob", "b2"),
        ("bob", "b3"),
        ("alice", "a4"),
    ];
    let mut last_msg_id = 0;
    for (i, (from, text)) in plan.iter().enumerate() {
        let n = i as u64 + 1;
        let (sender, to) = if *from == "alice" {
            (&alice, "bob")
        } else {
            (&bob, "alice")
        };
        let ack = sender.send(direct(to), 1, *text, None).await.unwrap();
        assert_eq!(ack.seq, n, "seq of message {n} (shared by both directions)");
        assert_eq!(ack.version, n, "sender's inbox version of message {n}");
        assert!(!ack.duplicate);
        assert!(ack.msg_id > last_msg_id, "msg ids increase");
        last_msg_id = ack.msg_id;

        for (who, events) in [("alice", &mut a_ev), ("bob", &mut b_ev)] {
            let e = next_entry(events).await;
            assert_eq!(e.version, n, "{who}'s entry {n}");
            let m = message(&e);
            assert_eq!(m.seq, n);
            assert_eq!(m.msg_id, ack.msg_id);
            assert_eq!(m.from_user, *from);
            assert_eq!(m.content, text.as_bytes());
            let peer = if who == "alice" { "bob" } else { "alice" };
            assert_eq!(conv_id(&e), peer, "{who} sees the conversation as {peer}");
        }

        let (frame, push) = recv_push(&mut watcher).await;
        assert!(!frame.flags.retransmit(), "a first push is not flagged");
        assert_eq!(push.version, n);
        assert_eq!(push.prev_version, n - 1);
        let m = message(pushed(&push));
        assert_eq!((m.seq, m.msg_id), (n, ack.msg_id));
        assert_eq!(m.content, text.as_bytes());
        watcher.push_ack(n).await.unwrap();
    }
    expect_silence(&mut watcher, Duration::from_millis(300)).await;
    check_users(&server, &["alice", "bob"]);
    server.stop().await;
}

#[tokio::test]
async fn offline_recipient_logs_in_and_syncs_every_message_in_pages() {
    const N: u64 = 30;
    let server = TestServer::start().await;
    let (alice, _a_ev) = server.client("alice", "phone").await;
    for i in 1..=N {
        let ack = alice
            .send(direct("bob"), 1, format!("m{i}"), None)
            .await
            .unwrap();
        assert_eq!(ack.seq, i);
    }

    let (mut bob, login) = server.login("bob", "phone").await;
    assert_eq!(login.user_id, "bob");
    assert_eq!(login.current_version, N);
    assert_eq!(login.unread_total, N);

    let mut since = 0;
    let mut all = Vec::new();
    let mut pages = 0;
    loop {
        let page = sync_page(&mut bob, since, 7).await;
        pages += 1;
        assert!(page.entries.len() <= 7, "page over the limit");
        assert_eq!(page.current_version, N);
        match page.entries.last() {
            Some(last) => assert_eq!(page.new_version, last.version),
            None => assert_eq!(page.new_version, since),
        }
        if page.has_more {
            assert!(!page.entries.is_empty(), "has_more with an empty page");
        }
        since = page.new_version;
        all.extend(page.entries);
        if !page.has_more {
            break;
        }
        assert!(pages < 50, "SYNC paging does not end");
    }
    assert!(
        pages >= 5,
        "30 entries with limit 7 take at least 5 pages, took {pages}"
    );
    assert_eq!(all.len() as u64, N, "every message exactly once");
    for (i, e) in all.iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(e.version, n, "versions 1..N without gaps");
        let m = message(e);
        assert_eq!(m.seq, n);
        assert_eq!(m.from_user, "alice");
        assert_eq!(m.content, format!("m{n}").as_bytes(), "content of {n}");
        assert!(!m.recalled);
    }
    // Past the end: nothing, new_version stays.
    let tail = sync_page(&mut bob, N, 7).await;
    assert!(tail.entries.is_empty());
    assert!(!tail.has_more);
    assert_eq!(tail.new_version, N);
    // Entries that existed before LOGIN_ACK are not pushed.
    expect_silence(&mut bob, Duration::from_millis(300)).await;
    server.stop().await;
}

#[tokio::test]
async fn read_on_one_device_clears_the_badge_on_the_other() {
    let server = TestServer::start().await;
    let (alice, _a_ev) = server.client("alice", "phone").await;
    let (mut phone, _) = server.login("bob", "phone").await;
    let (tablet, mut t_ev) = server.client("bob", "tablet").await;

    let a1 = alice.send(direct("bob"), 1, "one", None).await.unwrap();
    let a2 = alice.send(direct("bob"), 1, "two", None).await.unwrap();
    for (n, ack) in [(1, &a1), (2, &a2)] {
        let (_, push) = recv_push(&mut phone).await;
        assert_eq!(push.version, n);
        assert_eq!(message(pushed(&push)).msg_id, ack.msg_id);
        let e = next_entry(&mut t_ev).await;
        assert_eq!(e.version, n);
        assert_eq!(message(&e).msg_id, ack.msg_id);
    }
    phone.push_ack(2).await.unwrap();
    assert_eq!(tablet.unread().await.unwrap().total, 2);

    let read = raw_mark_read(&mut phone, "alice", a2.seq).await;
    assert_eq!((read.unread, read.total), (0, 0));
    assert_eq!(read.version, 3, "READ_SYNC is Bob's 3rd entry");
    // The reading device gets its READ_SYNC pushed too.
    let (_, push) = recv_push(&mut phone).await;
    assert_eq!(push.version, 3);
    let rs = read_sync(pushed(&push));
    assert_eq!((rs.up_to_seq, rs.unread), (2, 0));
    assert_eq!(conv_id(pushed(&push)), "alice");
    phone.push_ack(3).await.unwrap();
    // The other device clears its badge.
    let e = next_entry(&mut t_ev).await;
    assert_eq!(e.version, 3);
    let rs = read_sync(&e);
    assert_eq!((rs.up_to_seq, rs.unread), (2, 0));
    let unread = tablet.unread().await.unwrap();
    assert_eq!(unread.total, 0);
    assert!(unread.conversations.is_empty(), "{unread:?}");

    // Idempotent: the same read again, or an older one, changes nothing.
    let again = raw_mark_read(&mut phone, "alice", a2.seq).await;
    assert_eq!((again.unread, again.total, again.version), (0, 0, 0));
    let older = raw_mark_read(&mut phone, "alice", 1).await;
    assert_eq!((older.unread, older.total, older.version), (0, 0, 0));
    expect_silence(&mut phone, Duration::from_millis(300)).await;
    expect_no_entry(&mut t_ev, Duration::from_millis(100)).await;

    // A partial read, then a read past the end (clamped to the last seq).
    for text in ["three", "four", "five"] {
        alice.send(direct("bob"), 1, text, None).await.unwrap();
    }
    for v in 4..=6 {
        assert_eq!(recv_push(&mut phone).await.1.version, v);
        assert_eq!(next_entry(&mut t_ev).await.version, v);
    }
    phone.push_ack(6).await.unwrap();
    let part = raw_mark_read(&mut phone, "alice", 4).await;
    assert_eq!((part.unread, part.total, part.version), (1, 1, 7));
    assert_eq!(read_sync(pushed(&recv_push(&mut phone).await.1)).unread, 1);
    assert_eq!(read_sync(&next_entry(&mut t_ev).await).up_to_seq, 4);
    let all = raw_mark_read(&mut phone, "alice", 1000).await;
    assert_eq!((all.unread, all.total, all.version), (0, 0, 8));
    let (_, push) = recv_push(&mut phone).await;
    assert_eq!(
        read_sync(pushed(&push)).up_to_seq,
        5,
        "clamped to the last seq"
    );
    phone.push_ack(8).await.unwrap();
    check_users(&server, &["alice", "bob"]);
    server.stop().await;
}

#[tokio::test]
async fn sender_other_device_gets_the_entry_the_sending_device_the_ack() {
    let server = TestServer::start().await;
    let (mut phone, _) = server.login("alice", "phone").await;
    let (mut laptop, _) = server.login("alice", "laptop").await;
    let (mut bob, _) = server.login("bob", "phone").await;

    let ack = raw_send(&mut phone, "bob", "hello").await;
    assert_eq!((ack.version, ack.seq), (1, 1));

    let (_, push) = recv_push(&mut laptop).await;
    assert_eq!(push.version, 1);
    let e = pushed(&push);
    assert_eq!(conv_id(e), "bob");
    let m = message(e);
    assert_eq!((m.msg_id, m.from_user.as_str()), (ack.msg_id, "alice"));
    assert_eq!(m.content, b"hello");
    laptop.push_ack(1).await.unwrap();

    let (_, push) = recv_push(&mut bob).await;
    assert_eq!(push.version, 1);
    assert_eq!(conv_id(pushed(&push)), "alice");
    assert_eq!(message(pushed(&push)).msg_id, ack.msg_id);
    bob.push_ack(1).await.unwrap();

    // The sending device learned its version from SEND_ACK; no push of its own message.
    expect_silence(&mut phone, Duration::from_millis(500)).await;

    // And from the laptop the other way round.
    let ack2 = raw_send(&mut laptop, "bob", "again").await;
    assert_eq!((ack2.version, ack2.seq), (2, 2));
    let (_, push) = recv_push(&mut phone).await;
    assert_eq!(push.version, 2);
    assert_eq!(message(pushed(&push)).msg_id, ack2.msg_id);
    phone.push_ack(2).await.unwrap();
    expect_silence(&mut laptop, Duration::from_millis(300)).await;
    server.stop().await;
}

#[tokio::test]
async fn resend_with_the_same_client_msg_id_is_stored_once() {
    let server = TestServer::start().await;
    let (alice, _a_ev) = server.client("alice", "phone").await;
    let first = alice
        .send(direct("bob"), 1, "once", Some("cmid-1".into()))
        .await
        .unwrap();
    let second = alice
        .send(direct("bob"), 1, "once", Some("cmid-1".into()))
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert!(second.duplicate, "the resend is flagged duplicate");
    assert_eq!(
        (
            second.msg_id,
            second.seq,
            second.version,
            second.timestamp_ms
        ),
        (first.msg_id, first.seq, first.version, first.timestamp_ms)
    );
    assert_eq!(second.client_msg_id, "cmid-1");

    let (mut bob, login) = server.login("bob", "phone").await;
    assert_eq!(login.current_version, 1);
    assert_eq!(login.unread_total, 1);
    let entries = sync_all(&mut bob, 0).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(message(&entries[0]).content, b"once");
    assert_eq!(raw_unread(&mut bob).await.total, 1);

    // The next message continues the sequences.
    let next = alice.send(direct("bob"), 1, "next", None).await.unwrap();
    assert_eq!((next.seq, next.version), (2, 2));
    check_users(&server, &["alice", "bob"]);
    server.stop().await;
}

#[tokio::test]
async fn concurrent_resends_from_two_devices_store_one_message() {
    let server = TestServer::start().await;
    let (mut phone, _) = server.login("alice", "phone").await;
    let (mut laptop, _) = server.login("alice", "laptop").await;
    let body = send_body("same-id", "bob", b"race");
    let (a, b) = tokio::join!(
        request(&mut phone, Packet::Send(body.clone())),
        request(&mut laptop, Packet::Send(body.clone()))
    );
    let (Packet::SendAck(a), Packet::SendAck(b)) = (a, b) else {
        panic!("expected two SEND_ACKs");
    };
    assert_eq!(
        [a.duplicate, b.duplicate].iter().filter(|d| **d).count(),
        1,
        "exactly one of the two is the duplicate: {a:?} {b:?}"
    );
    assert_eq!((a.msg_id, a.seq, a.version), (b.msg_id, b.seq, b.version));
    let store = server.handle().store();
    assert_eq!(store.core().current_version("bob").unwrap(), 1);
    assert_eq!(store.core().current_version("alice").unwrap(), 1);
    assert_eq!(store.core().unread_total("bob").unwrap(), 1);
    check_users(&server, &["alice", "bob"]);
    server.stop().await;
}

#[tokio::test]
async fn unacked_push_is_retransmitted_then_the_connection_is_kicked() {
    let server = TestServer::start_with(|c| {
        c.ack_timeout_ms = 200;
        c.max_retransmits = 2;
    })
    .await;
    let (alice, _a_ev) = server.client("alice", "phone").await;
    let (mut bob, _) = server.login("bob", "phone").await;
    let ack = alice
        .send(direct("bob"), 1, "are you there", None)
        .await
        .unwrap();

    let (first, p1) = recv_push(&mut bob).await;
    assert!(!first.flags.retransmit());
    assert_eq!(p1.version, 1);
    for attempt in 1..=2 {
        let (frame, p) = recv_push(&mut bob).await;
        assert!(
            frame.flags.retransmit(),
            "retransmit {attempt} carries the RETRANSMIT flag"
        );
        assert_eq!(p.version, 1, "retransmit {attempt} is the same version");
        assert_eq!(p.prev_version, 0);
        assert_eq!(p, p1, "retransmit {attempt} is the same push");
    }
    let kick = expect_kick(&mut bob).await;
    assert_eq!(kick.reason, pb::KickReason::AckTimeout as i32, "{kick:?}");

    // Nothing is lost: the entry is stored and a reconnect finds it.
    let (mut bob, login) = server.login("bob", "phone").await;
    assert_eq!(login.current_version, 1);
    let entries = sync_all(&mut bob, 0).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(message(&entries[0]).msg_id, ack.msg_id);
    server.stop().await;
}

#[tokio::test]
async fn acking_stops_retransmits() {
    let server = TestServer::start_with(|c| {
        // Long enough that an ack sent on receipt lands before the first retransmit is due.
        c.ack_timeout_ms = 400;
        c.max_retransmits = 2;
    })
    .await;
    let quiet = Duration::from_millis(3 * 400);
    let (alice, _a_ev) = server.client("alice", "phone").await;
    let (mut bob, _) = server.login("bob", "phone").await;

    alice.send(direct("bob"), 1, "one", None).await.unwrap();
    assert_eq!(recv_push(&mut bob).await.1.version, 1);
    bob.push_ack(1).await.unwrap();
    expect_silence(&mut bob, quiet).await;

    // A cumulative ack covers every push up to it.
    alice.send(direct("bob"), 1, "two", None).await.unwrap();
    alice.send(direct("bob"), 1, "three", None).await.unwrap();
    assert_eq!(recv_push(&mut bob).await.1.version, 2);
    assert_eq!(recv_push(&mut bob).await.1.version, 3);
    bob.push_ack(3).await.unwrap();
    expect_silence(&mut bob, quiet).await;

    // A partial ack: only the unacked push comes again.
    alice.send(direct("bob"), 1, "four", None).await.unwrap();
    alice.send(direct("bob"), 1, "five", None).await.unwrap();
    assert_eq!(recv_push(&mut bob).await.1.version, 4);
    assert_eq!(recv_push(&mut bob).await.1.version, 5);
    bob.push_ack(4).await.unwrap();
    let (frame, p) = recv_push(&mut bob).await;
    assert!(frame.flags.retransmit());
    assert_eq!(p.version, 5, "only the unacked push is resent");
    bob.push_ack(5).await.unwrap();
    expect_silence(&mut bob, quiet).await;
    heartbeat_ok(&mut bob, 7).await;
    server.stop().await;
}

#[tokio::test]
async fn push_after_a_gap_is_filled_by_sync() {
    let server = TestServer::start().await;
    let (alice, _a_ev) = server.client("alice", "phone").await;
    for i in 1..=3 {
        alice
            .send(direct("bob"), 1, format!("m{i}"), None)
            .await
            .unwrap();
    }
    let (mut bob, login) = server.login("bob", "phone").await;
    assert_eq!(login.current_version, 3);
    let held = 0u64;

    alice.send(direct("bob"), 1, "m4", None).await.unwrap();
    let (_, push) = recv_push(&mut bob).await;
    assert_eq!(
        push.version, 4,
        "entries up to current_version are not pushed"
    );
    assert_eq!(push.prev_version, 3);
    assert!(
        push.prev_version > held,
        "a gap for a device holding {held}"
    );

    let entries = sync_all(&mut bob, held).await;
    let versions: Vec<u64> = entries.iter().map(|e| e.version).collect();
    assert_eq!(versions, vec![1, 2, 3, 4]);
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(message(e).content, format!("m{}", i + 1).as_bytes());
    }
    assert_eq!(
        entries[3],
        *pushed(&push),
        "the pushed entry is in the SYNC"
    );
    bob.push_ack(4).await.unwrap();
    expect_silence(&mut bob, Duration::from_millis(300)).await;
    server.stop().await;
}

#[tokio::test]
async fn reliable_client_delivers_each_entry_once_in_order_during_catch_up() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.login("alice", "phone").await;
    for i in 1..=5 {
        raw_send(&mut alice, "bob", &format!("m{i}")).await;
    }
    // More messages arrive while Bob's client logs in and catches up.
    let sender = tokio::spawn(async move {
        for i in 6..=20 {
            raw_send(&mut alice, "bob", &format!("m{i}")).await;
            tokio::task::yield_now().await;
        }
        alice
    });
    let (bob, mut b_ev) = server.client("bob", "phone").await;
    let _alice = sender.await.unwrap();
    for n in 1..=20u64 {
        let e = next_entry(&mut b_ev).await;
        assert_eq!(e.version, n, "entry {n} in order, exactly once");
        assert_eq!(message(&e).content, format!("m{n}").as_bytes());
        assert_eq!(message(&e).seq, n);
    }
    expect_no_entry(&mut b_ev, Duration::from_millis(500)).await;
    assert_eq!(bob.held_version(), 20);
    server.stop().await;
}

#[tokio::test]
async fn contacts_newest_first_with_last_message_and_unread_and_paging() {
    let server = TestServer::start().await;
    let (alice, _a_ev) = server.client("alice", "phone").await;
    let (bob, _b_ev) = server.client("bob", "phone").await;
    let (carol, _c_ev) = server.client("carol", "phone").await;
    let (dave, _d_ev) = server.client("dave", "phone").await;
    // Distinct milliseconds between activities, so "newest first" is well defined.
    let step = || tokio::time::sleep(Duration::from_millis(5));

    alice.send(direct("carol"), 1, "c1", None).await.unwrap();
    step().await;
    alice.send(direct("bob"), 1, "b1", None).await.unwrap();
    step().await;
    alice.send(direct("dave"), 1, "d1", None).await.unwrap();
    step().await;
    carol.send(direct("alice"), 1, "c2", None).await.unwrap();
    step().await;
    dave.send(direct("alice"), 1, "d2", None).await.unwrap();
    step().await;
    let d3 = dave.send(direct("alice"), 1, "d3", None).await.unwrap();
    step().await;
    let b2 = bob.send(direct("alice"), 1, "b2", None).await.unwrap();

    let all = alice.contacts(Vec::new(), 0).await.unwrap();
    assert!(all.next_cursor.is_empty(), "one page holds all");
    let order: Vec<&str> = all
        .contacts
        .iter()
        .map(|c| c.conversation.as_ref().unwrap().id.as_str())
        .collect();
    assert_eq!(order, ["bob", "dave", "carol"], "newest activity first");
    let last: Vec<&[u8]> = all
        .contacts
        .iter()
        .map(|c| c.last_message.as_ref().unwrap().content.as_slice())
        .collect();
    assert_eq!(last, [b"b2".as_slice(), b"d3", b"c2"], "last messages");
    let unread: Vec<u64> = all.contacts.iter().map(|c| c.unread).collect();
    assert_eq!(unread, [1, 2, 1], "alice's unread per contact");
    let b2_msg = all.contacts[0].last_message.as_ref().unwrap();
    assert_eq!(
        (b2_msg.msg_id, b2_msg.from_user.as_str()),
        (b2.msg_id, "bob")
    );
    assert_eq!(
        all.contacts[1].last_message.as_ref().unwrap().msg_id,
        d3.msg_id
    );

    // Pages of 2 visit every contact exactly once, in the same order.
    let p1 = alice.contacts(Vec::new(), 2).await.unwrap();
    assert_eq!(p1.contacts.len(), 2);
    assert!(!p1.next_cursor.is_empty());
    let p2 = alice.contacts(p1.next_cursor.clone(), 2).await.unwrap();
    assert!(p2.next_cursor.is_empty(), "last page has no cursor");
    let paged: Vec<pb::Contact> = p1.contacts.into_iter().chain(p2.contacts).collect();
    assert_eq!(paged, all.contacts);

    // Bob's view: only alice, with nothing unread (his reply b2 read b1).
    let bob_view = bob.contacts(Vec::new(), 0).await.unwrap();
    assert_eq!(bob_view.contacts.len(), 1);
    let c = &bob_view.contacts[0];
    assert_eq!(c.conversation.as_ref().unwrap().id, "alice");
    assert_eq!(c.unread, 0, "replying with b2 read b1");
    assert_eq!(c.last_message.as_ref().unwrap().content, b"b2");

    // A read moves no contact but clears its count.
    alice.mark_read(direct("dave"), d3.seq).await.unwrap();
    let after = alice.contacts(Vec::new(), 0).await.unwrap();
    let unread: Vec<u64> = after.contacts.iter().map(|c| c.unread).collect();
    assert_eq!(unread, [1, 0, 1]);
    check_users(&server, &["alice", "bob", "carol", "dave"]);
    server.stop().await;
}

#[tokio::test]
async fn contacts_paging_visits_many_conversations_exactly_once() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.login("alice", "phone").await;
    let peers: Vec<String> = (0..9).map(|i| format!("peer{i}")).collect();
    for p in &peers {
        raw_send(&mut alice, p, "hi").await;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    for limit in [1, 2, 4, 9, 10] {
        let all = raw_contacts_all(&mut alice, limit).await;
        let ids: Vec<&str> = all
            .iter()
            .map(|c| c.conversation.as_ref().unwrap().id.as_str())
            .collect();
        let expected: Vec<&str> = peers.iter().rev().map(String::as_str).collect();
        assert_eq!(ids, expected, "pages of {limit}");
    }
    server.stop().await;
}

#[tokio::test]
async fn recall_of_an_unread_message() {
    let server = TestServer::start().await;
    let (alice, mut a_ev) = server.client("alice", "phone").await;
    let (bob, mut b_ev) = server.client("bob", "phone").await;
    let m1 = alice.send(direct("bob"), 1, "secret", None).await.unwrap();
    let m2 = alice.send(direct("bob"), 1, "keep", None).await.unwrap();
    for v in 1..=2 {
        assert_eq!(next_entry(&mut b_ev).await.version, v);
        assert_eq!(next_entry(&mut a_ev).await.version, v);
    }
    assert_eq!(bob.unread().await.unwrap().total, 2);

    let r = alice.recall(direct("bob"), m1.msg_id).await.unwrap();
    assert_eq!(r.version, 3, "alice's own RECALL entry");
    let e = next_entry(&mut b_ev).await;
    assert_eq!(e.version, 3);
    assert_eq!(conv_id(&e), "alice");
    let rc = recall(&e);
    assert_eq!(
        (rc.msg_id, rc.seq, rc.by_user.as_str()),
        (m1.msg_id, 1, "alice")
    );
    let e = next_entry(&mut a_ev).await;
    assert_eq!(e.version, 3);
    assert_eq!(recall(&e).msg_id, m1.msg_id);

    let unread = bob.unread().await.unwrap();
    assert_eq!(unread.total, 1, "the recalled message no longer counts");
    assert_eq!(unread.conversations.len(), 1);
    assert_eq!(unread.conversations[0].unread, 1);
    assert_eq!(unread.conversations[0].last_seq, 2);

    let page = bob.sync_page(0, 0).await.unwrap();
    assert_eq!(page.entries.len(), 3);
    let first = message(&page.entries[0]);
    assert!(first.recalled, "SYNC shows the message recalled");
    assert!(first.content.is_empty(), "recalled content is emptied");
    assert_eq!(first.msg_id, m1.msg_id);
    let second = message(&page.entries[1]);
    assert!(!second.recalled);
    assert_eq!(second.content, b"keep");
    assert_eq!(recall(&page.entries[2]).msg_id, m1.msg_id);
    let alice_page = alice.sync_page(0, 0).await.unwrap();
    assert!(message(&alice_page.entries[0]).recalled);
    assert!(message(&alice_page.entries[0]).content.is_empty());

    // Again: nothing changes.
    let again = alice.recall(direct("bob"), m1.msg_id).await.unwrap();
    assert_eq!(again.version, 0);
    // Only the sender may recall.
    assert_eq!(
        refused(bob.recall(direct("alice"), m2.msg_id).await),
        ErrorCode::Forbidden
    );
    // Unknown message, or a message of another conversation.
    assert_eq!(
        refused(alice.recall(direct("bob"), 12345).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        refused(alice.recall(direct("carol"), m2.msg_id).await),
        ErrorCode::NotFound
    );
    expect_no_entry(&mut b_ev, Duration::from_millis(300)).await;
    assert_eq!(bob.unread().await.unwrap().total, 1);
    let store = server.handle().store();
    assert_eq!(store.core().current_version("bob").unwrap(), 3);
    assert_eq!(store.core().current_version("alice").unwrap(), 3);
    check_users(&server, &["alice", "bob"]);
    server.stop().await;
}

#[tokio::test]
async fn recall_of_a_read_message_leaves_unread_alone() {
    let server = TestServer::start().await;
    let (alice, _a_ev) = server.client("alice", "phone").await;
    let (bob, _b_ev) = server.client("bob", "phone").await;
    let m1 = alice.send(direct("bob"), 1, "one", None).await.unwrap();
    let _m2 = alice.send(direct("bob"), 1, "two", None).await.unwrap();
    let read = bob.mark_read(direct("alice"), m1.seq).await.unwrap();
    assert_eq!((read.unread, read.total), (1, 1));
    alice.recall(direct("bob"), m1.msg_id).await.unwrap();
    let unread = bob.unread().await.unwrap();
    assert_eq!(unread.total, 1, "m1 was read already; m2 still unread");
    check_users(&server, &["alice", "bob"]);
    server.stop().await;
}

#[tokio::test]
async fn recall_after_the_window_is_refused() {
    let server = TestServer::start_with(|c| c.recall_window_secs = 1).await;
    let (alice, _a_ev) = server.client("alice", "phone").await;
    let fresh = alice.send(direct("bob"), 1, "fresh", None).await.unwrap();
    let old = alice.send(direct("bob"), 1, "old", None).await.unwrap();
    assert!(
        alice
            .recall(direct("bob"), fresh.msg_id)
            .await
            .unwrap()
            .version
            > 0
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        refused(alice.recall(direct("bob"), old.msg_id).await),
        ErrorCode::RecallWindowExpired
    );
    let (mut bob, _) = server.login("bob", "phone").await;
    let entries = sync_all(&mut bob, 0).await;
    let m = message(&entries[1]);
    assert_eq!(m.msg_id, old.msg_id);
    assert!(!m.recalled);
    assert_eq!(m.content, b"old");
    assert_eq!(raw_unread(&mut bob).await.total, 1);
    check_users(&server, &["alice", "bob"]);
    server.stop().await;
}

/// Replying in a direct chat reads it, as in groups: the sender's read position moves to its
/// own message (on every device: the others see the message, the server counts nothing), and
/// a later MARK_READ at or below it changes nothing.
#[tokio::test]
async fn replying_in_a_direct_chat_reads_it() {
    let server = TestServer::start().await;
    let (alice, _a_ev) = server.client("alice", "phone").await;
    let (bob, mut b_ev) = server.client("bob", "phone").await;
    let m1 = alice.send(direct("bob"), 1, "one", None).await.unwrap();
    alice.send(direct("bob"), 1, "two", None).await.unwrap();
    next_entry(&mut b_ev).await;
    next_entry(&mut b_ev).await;
    assert_eq!(bob.unread().await.unwrap().total, 2);
    let reply = bob.send(direct("alice"), 1, "yes", None).await.unwrap();
    let unread = bob.unread().await.unwrap();
    assert_eq!(unread.total, 0, "{unread:?}");
    assert!(unread.conversations.is_empty());
    let contacts = bob.contacts(Vec::new(), 0).await.unwrap();
    assert_eq!(contacts.contacts[0].unread, 0);
    // Nothing left to read up to the reply: MARK_READ there is a no-op.
    let read = bob.mark_read(direct("alice"), reply.seq).await.unwrap();
    assert_eq!((read.unread, read.total, read.version), (0, 0, 0));
    let read = bob.mark_read(direct("alice"), m1.seq).await.unwrap();
    assert_eq!(read.version, 0);
    // Alice's side: bob's reply is unread for her, and a message after it for bob.
    assert_eq!(alice.unread().await.unwrap().total, 1);
    alice.send(direct("bob"), 1, "three", None).await.unwrap();
    assert_eq!(bob.unread().await.unwrap().total, 1);
    check_users(&server, &["alice", "bob"]);
    server.stop().await;
}

#[tokio::test]
async fn delete_touches_only_the_deleting_users_view() {
    let server = TestServer::start().await;
    let (alice, mut a_ev) = server.client("alice", "phone").await;
    let (bob, mut b_ev) = server.client("bob", "phone").await;
    let (mut bob_tablet, _) = server.login("bob", "tablet").await;
    // Bob writes first: a reply would read what came before it.
    let b1 = bob.send(direct("alice"), 1, "mine", None).await.unwrap();
    let m1 = alice.send(direct("bob"), 1, "one", None).await.unwrap();
    let m2 = alice.send(direct("bob"), 1, "two", None).await.unwrap();
    let alice_unread = alice.unread().await.unwrap().total;
    assert_eq!(alice_unread, 0, "alice's m1 replied to b1");
    for v in 1..=3 {
        assert_eq!(next_entry(&mut a_ev).await.version, v);
        assert_eq!(next_entry(&mut b_ev).await.version, v);
        assert_eq!(recv_push(&mut bob_tablet).await.1.version, v);
    }
    bob_tablet.push_ack(3).await.unwrap();
    assert_eq!(bob.unread().await.unwrap().total, 2);

    let d = bob.delete(direct("alice"), m1.msg_id).await.unwrap();
    assert_eq!(d.version, 4);
    let e = next_entry(&mut b_ev).await;
    assert_eq!(e.version, 4);
    assert_eq!(delete(&e).msg_id, m1.msg_id);
    assert_eq!(conv_id(&e), "alice");
    let (_, push) = recv_push(&mut bob_tablet).await;
    assert_eq!(push.version, 4, "bob's other device hides it too");
    assert_eq!(delete(pushed(&push)).msg_id, m1.msg_id);
    bob_tablet.push_ack(4).await.unwrap();
    let unread = bob.unread().await.unwrap();
    assert_eq!(
        unread.total, 1,
        "the deleted unread message no longer counts"
    );

    // Alice sees no change.
    expect_no_entry(&mut a_ev, Duration::from_millis(300)).await;
    let store = server.handle().store();
    assert_eq!(store.core().current_version("alice").unwrap(), 3);
    let alice_view = alice.sync_page(0, 0).await.unwrap();
    assert_eq!(alice_view.entries.len(), 3);
    let am1 = message(&alice_view.entries[1]);
    assert_eq!(
        (am1.msg_id, am1.content.as_slice()),
        (m1.msg_id, b"one".as_slice())
    );
    assert!(!am1.recalled);

    // Twice: nothing new.
    let again = bob.delete(direct("alice"), m1.msg_id).await.unwrap();
    assert_eq!(again.version, 0);
    // One's own message can be deleted; it never counted as unread.
    let own = bob.delete(direct("alice"), b1.msg_id).await.unwrap();
    assert_eq!(own.version, 5);
    assert_eq!(bob.unread().await.unwrap().total, 1);
    // Unknown message, or another conversation.
    assert_eq!(
        refused(bob.delete(direct("alice"), 999).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        refused(bob.delete(direct("carol"), m2.msg_id).await),
        ErrorCode::NotFound
    );
    // Reading past the deleted message leaves nothing unread.
    let read = bob.mark_read(direct("alice"), m2.seq).await.unwrap();
    assert_eq!((read.unread, read.total), (0, 0));
    assert_eq!(store.core().current_version("alice").unwrap(), 3);
    assert_eq!(
        store.core().unread_total("alice").unwrap(),
        alice_unread,
        "bob's deletes and reads change nothing for alice"
    );
    check_users(&server, &["alice", "bob"]);
    server.stop().await;
}

#[tokio::test]
async fn invalid_sends_are_refused_and_the_connection_stays_usable() {
    let server = TestServer::start_with(|c| c.max_content_len = 1000).await;
    let (mut alice, _) = server.login("alice", "phone").await;
    let long_id = "x".repeat(65);
    let cases: Vec<(&str, pb::Send, ErrorCode)> = vec![
        (
            "empty client_msg_id",
            send_body("", "bob", b"x"),
            ErrorCode::InvalidArgument,
        ),
        (
            "client_msg_id over 64 bytes",
            send_body(&long_id, "bob", b"x"),
            ErrorCode::InvalidArgument,
        ),
        (
            "send to oneself",
            send_body("c-self", "alice", b"x"),
            ErrorCode::InvalidArgument,
        ),
        (
            "content_type 0",
            pb::Send {
                content_type: 0,
                ..send_body("c-type", "bob", b"x")
            },
            ErrorCode::InvalidArgument,
        ),
        (
            "recipient missing",
            pb::Send {
                to: None,
                ..send_body("c-to", "bob", b"x")
            },
            ErrorCode::InvalidArgument,
        ),
        (
            "kind unspecified",
            pb::Send {
                to: Some(pb::Conversation {
                    kind: pb::ConversationKind::Unspecified as i32,
                    id: "bob".into(),
                }),
                ..send_body("c-kind", "bob", b"x")
            },
            ErrorCode::InvalidArgument,
        ),
        (
            "recipient id empty",
            send_body("c-empty-to", "", b"x"),
            ErrorCode::InvalidArgument,
        ),
        (
            "recipient id over 64 bytes",
            send_body("c-long-to", &long_id, b"x"),
            ErrorCode::InvalidArgument,
        ),
        (
            "content over max_content_len",
            send_body("c-big", "bob", &[b'z'; 1001]),
            ErrorCode::ContentTooLarge,
        ),
    ];
    for (i, (what, body, code)) in cases.into_iter().enumerate() {
        let (got, fatal) = request_err(&mut alice, Packet::Send(body)).await;
        assert_eq!(got, code, "{what}");
        assert!(!fatal, "{what}: refusal must not be fatal");
        heartbeat_ok(&mut alice, i as i64).await;
    }
    let store = server.handle().store();
    assert_eq!(
        store.core().current_version("alice").unwrap(),
        0,
        "nothing stored"
    );
    assert_eq!(
        store.core().current_version("bob").unwrap(),
        0,
        "nothing stored"
    );

    // Exactly at the limit is fine, and the connection still sends.
    let body = send_body("c-max", "bob", &[b'z'; 1000]);
    let Packet::SendAck(ack) = request(&mut alice, Packet::Send(body)).await else {
        panic!("expected SEND_ACK");
    };
    assert_eq!((ack.seq, ack.version), (1, 1));
    // A refused client_msg_id was not recorded for dedup.
    let body = send_body("c-type", "bob", b"now valid");
    let Packet::SendAck(ack) = request(&mut alice, Packet::Send(body)).await else {
        panic!("expected SEND_ACK");
    };
    assert!(!ack.duplicate);
    assert_eq!(ack.seq, 2);
    check_users(&server, &["alice", "bob"]);
    server.stop().await;
}

/// Two users send to each other at once, many SENDs pipelined each way, so the writer's groups
/// mix both directions: in each of them a user's own SEND and a message to that user both add
/// to that user's inbox. On each connection a SEND_ACK must come before any PUSH of a later
/// version (PROTOCOL.md 12.3): the client then sees no gap for its own versions and need not
/// SYNC.
#[tokio::test]
async fn a_send_ack_comes_before_the_pushes_of_later_versions() {
    const N: usize = 300;
    let server = TestServer::start_with(|c| c.sends_per_sec = 100_000).await;
    let (mut alice, _) = server.login("alice", "phone").await;
    let (mut bob, _) = server.login("bob", "phone").await;

    async fn pipeline(conn: &mut missive_client::Connection, to: &str) {
        for i in 0..N {
            let send = pb::Send {
                client_msg_id: format!("{to}-{i}"),
                to: Some(direct(to)),
                content_type: 1,
                content: format!("m{i}").into_bytes(),
                ..Default::default()
            };
            let id = conn.next_request_id();
            let frame = missive_protocol::Frame::new(&Packet::Send(send), id);
            conn.feed_frame(&frame).await.unwrap();
        }
        conn.flush().await.unwrap();
    }
    /// Reads until N SEND_ACKs and N PUSHes came; returns the (SEND_ACK version, highest PUSH
    /// version before it) pairs where a later version was pushed first.
    async fn out_of_order(conn: &mut missive_client::Connection) -> Vec<(u64, u64)> {
        let (mut acks, mut pushes, mut pushed_max) = (0, 0, 0u64);
        let mut bad = Vec::new();
        while acks < N || pushes < N {
            let frame = conn
                .recv_frame_timeout(Duration::from_secs(10))
                .await
                .expect("frames keep coming")
                .expect("connection open");
            if frame.flags.retransmit() {
                continue;
            }
            match frame.packet(1 << 20).expect("decodes") {
                Packet::SendAck(ack) => {
                    acks += 1;
                    if pushed_max > ack.version {
                        bad.push((ack.version, pushed_max));
                    }
                }
                Packet::Push(push) => {
                    pushes += 1;
                    pushed_max = pushed_max.max(push.version);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        bad
    }

    tokio::join!(pipeline(&mut alice, "bob"), pipeline(&mut bob, "alice"));
    let (a_bad, b_bad) = tokio::join!(out_of_order(&mut alice), out_of_order(&mut bob));
    assert_eq!(
        a_bad,
        vec![],
        "alice: SEND_ACK versions after pushes of later ones"
    );
    assert_eq!(
        b_bad,
        vec![],
        "bob: SEND_ACK versions after pushes of later ones"
    );
    check_users(&server, &["alice", "bob"]);
    server.stop().await;
}
