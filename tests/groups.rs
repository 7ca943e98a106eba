//! End to end: group conversations over real TCP and a real RocksDB. Write fan-out chat, offline
//! catch-up, joining (by the owner and by oneself) with FULL and FROM_JOIN history, leaving and
//! rejoining, permissions, read fan-out (GROUP_NOTIFY + GROUP_HISTORY), unread and recall in
//! groups, the login summary, GROUP_LIST and GROUP_MEMBERS.
//!
//! Semantics: /tmp/missive-decisions.md, section "Groups (as implemented now ...)".

mod common;
mod groups_support;

use std::time::Duration;

use common::*;
use groups_support::*;
use missive_client::pb;
use missive_client::pb::{FanoutMode, GroupEventKind, GroupRole, HistoryVisibility};
use missive_protocol::{ErrorCode, Packet};

const SHORT: Duration = Duration::from_millis(300);

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

/// Every receiver gets the group message `ack` as a PUSH, as its next new entry.
async fn delivered(
    receivers: &mut [&mut Member],
    gid: &str,
    ack: &pb::SendAck,
    from: &str,
    text: &str,
) {
    for r in receivers.iter_mut() {
        let e = r.next().await;
        assert_group_msg(&e, gid, ack, from, text);
        assert!(
            r.pushed.contains(&e.version),
            "{}: seq {} arrived as a PUSH",
            r.who(),
            ack.seq
        );
    }
}

/// Every receiver gets the group event as its next new entry.
async fn got_event(
    receivers: &mut [&mut Member],
    gid: &str,
    kind: GroupEventKind,
    user: &str,
    by: &str,
) {
    for r in receivers.iter_mut() {
        let e = r.next().await;
        assert_event(&e, gid, kind, user, by);
    }
}

/// The acting device holds exactly one new entry, the event (pushed to it or not).
async fn own_event(m: &mut Member, gid: &str, kind: GroupEventKind, user: &str, by: &str) {
    m.catch_up().await;
    let fresh = m.take_fresh();
    assert_eq!(fresh.len(), 1, "{}: one new entry: {fresh:?}", m.who());
    assert_event(&fresh[0], gid, kind, user, by);
}

/// The message seqs/from/content of a list of messages.
fn summary(msgs: &[pb::Message]) -> Vec<(u64, String, String)> {
    msgs.iter()
        .map(|m| {
            (
                m.seq,
                m.from_user.clone(),
                String::from_utf8_lossy(&m.content).into_owned(),
            )
        })
        .collect()
}

fn expect(list: &[(u64, &str, &str)]) -> Vec<(u64, String, String)> {
    list.iter()
        .map(|(s, f, c)| (*s, f.to_string(), c.to_string()))
        .collect()
}

#[tokio::test]
async fn write_fanout_chat_catch_up_join_leave_and_permissions() {
    let server = TestServer::start().await;
    let mut ap = Member::login(&server, "alice", "phone").await;
    let mut at = Member::login(&server, "alice", "tablet").await;
    let mut bob = Member::login(&server, "bob", "phone").await;
    let mut mallory = Member::login(&server, "mallory", "phone").await;

    // Create an open group: the creator listed again and duplicates are ignored.
    let info = ap
        .create_open(
            "trip",
            &["bob", "carol", "alice", "bob"],
            HistoryVisibility::Full,
        )
        .await;
    let gid = info.group_id.clone();
    assert!(!gid.is_empty(), "the server generates the group id");
    assert_eq!(info.name, "trip");
    assert_eq!(info.owner, "alice");
    assert_eq!(info.member_count, 3, "{info:?}");
    assert_eq!(info.history(), HistoryVisibility::Full);
    assert_eq!(info.fanout(), FanoutMode::Write, "3 <= threshold 100");
    assert_eq!(info.last_seq, 0);

    got_event(
        &mut [&mut at, &mut bob],
        &gid,
        GroupEventKind::Created,
        "alice",
        "alice",
    )
    .await;
    own_event(&mut ap, &gid, GroupEventKind::Created, "alice", "alice").await;

    // Chat: every online member gets each message as a PUSH, in seq order; the sender's other
    // device too; the sending device only its SEND_ACK.
    let a1 = ap.send(&gid, "a1").await;
    assert_eq!(a1.seq, 1);
    delivered(&mut [&mut at, &mut bob], &gid, &a1, "alice", "a1").await;
    let b1 = bob.send(&gid, "b1").await;
    assert_eq!(b1.seq, 2);
    delivered(&mut [&mut ap, &mut at], &gid, &b1, "bob", "b1").await;
    let a2 = ap.send(&gid, "a2").await;
    assert_eq!(a2.seq, 3);
    delivered(&mut [&mut at, &mut bob], &gid, &a2, "alice", "a2").await;
    let a3 = at.send(&gid, "a3").await;
    assert_eq!(a3.seq, 4);
    assert!(
        a3.msg_id > a2.msg_id && a2.msg_id > b1.msg_id && b1.msg_id > a1.msg_id,
        "msg ids increase"
    );
    delivered(&mut [&mut ap, &mut bob], &gid, &a3, "alice", "a3").await;
    for m in [&mut ap, &mut at, &mut bob, &mut mallory] {
        m.quiet(SHORT).await;
    }
    // Each sending device holds its own entries (by SYNC) with the acked versions.
    ap.catch_up().await;
    for ack in [&a1, &a2] {
        let e = ap
            .entries
            .iter()
            .find(|e| e.version == ack.version)
            .expect("own entry");
        assert_group_msg(
            e,
            &gid,
            ack,
            "alice",
            if ack.seq == 1 { "a1" } else { "a2" },
        );
    }

    // Carol was offline: SYNC brings the CREATED event and the four messages in order.
    let mut carol = Member::login(&server, "carol", "phone").await;
    assert_eq!(carol.entries.len(), 5, "{:?}", carol.entries);
    assert_event(
        &carol.entries[0],
        &gid,
        GroupEventKind::Created,
        "alice",
        "alice",
    );
    for (e, (ack, from, text)) in carol.entries[1..].iter().zip([
        (&a1, "alice", "a1"),
        (&b1, "bob", "b1"),
        (&a2, "alice", "a2"),
        (&a3, "alice", "a3"),
    ]) {
        assert_group_msg(e, &gid, ack, from, text);
        assert_eq!(conv_of(e).kind(), pb::ConversationKind::Group, "kind GROUP");
    }

    // The owner adds Dave (online): JOINED to every member, Dave included.
    let mut dave = Member::login(&server, "dave", "phone").await;
    let info = ap.join(&gid, &["dave"]).await;
    assert_eq!(info.member_count, 4, "{info:?}");
    got_event(
        &mut [&mut at, &mut bob, &mut carol, &mut dave],
        &gid,
        GroupEventKind::Joined,
        "dave",
        "alice",
    )
    .await;
    own_event(&mut ap, &gid, GroupEventKind::Joined, "dave", "alice").await;
    // FULL history: Dave reads everything sent before he joined.
    let page = dave.history(&gid, 0, 0, 0).await;
    assert!(!page.has_more);
    assert_eq!(
        summary(&page.messages),
        expect(&[
            (4, "alice", "a3"),
            (3, "alice", "a2"),
            (2, "bob", "b1"),
            (1, "alice", "a1")
        ]),
        "before_seq 0: newest first"
    );
    for m in &page.messages {
        assert_eq!(m.conversation.as_ref(), Some(&grp(&gid)));
        assert!(!m.recalled);
    }
    let page = dave.history(&gid, 0, 0, 2).await;
    assert_eq!(seqs(&page.messages), [4, 3]);
    assert!(page.has_more, "older messages remain");
    let page = dave.history(&gid, 3, 0, 2).await;
    assert_eq!(seqs(&page.messages), [2, 1]);
    assert!(!page.has_more);
    let page = dave.history(&gid, 0, 1, 0).await;
    assert_eq!(seqs(&page.messages), [2, 3, 4], "after_seq: oldest first");
    assert!(!page.has_more);
    // Joining did not copy history into Dave's inbox.
    dave.catch_up().await;
    assert!(dave.take_fresh().is_empty());

    // Erin joins by herself (any user may join an open group by id).
    let mut erin = Member::login(&server, "erin", "phone").await;
    let info = erin.join(&gid, &[]).await;
    assert_eq!(info.member_count, 5, "{info:?}");
    got_event(
        &mut [&mut ap, &mut at, &mut bob, &mut carol, &mut dave],
        &gid,
        GroupEventKind::Joined,
        "erin",
        "erin",
    )
    .await;
    own_event(&mut erin, &gid, GroupEventKind::Joined, "erin", "erin").await;
    assert_eq!(
        seqs(&erin.history(&gid, 0, 0, 0).await.messages),
        [4, 3, 2, 1],
        "FULL history for a self-joined member too"
    );
    // Joining again is a no-op.
    let info = ap.join(&gid, &["erin"]).await;
    assert_eq!(info.member_count, 5);

    // The new members chat along.
    let d1 = dave.send(&gid, "d1").await;
    assert_eq!(d1.seq, 5);
    delivered(
        &mut [&mut ap, &mut at, &mut bob, &mut carol, &mut erin],
        &gid,
        &d1,
        "dave",
        "d1",
    )
    .await;

    // A non-owner cannot add others.
    assert_eq!(
        carol.refused(Member::join_packet(&gid, &["mallory"])).await,
        ErrorCode::Forbidden
    );
    assert_eq!(ap.members(&gid).await.members.len(), 5, "nobody was added");

    // Bob leaves: LEFT to the remaining members and to Bob, then nothing more for him.
    let info = bob.leave(&gid, "").await;
    assert_eq!(info.member_count, 4, "{info:?}");
    own_event(&mut bob, &gid, GroupEventKind::Left, "bob", "bob").await;
    got_event(
        &mut [&mut ap, &mut at, &mut carol, &mut dave, &mut erin],
        &gid,
        GroupEventKind::Left,
        "bob",
        "bob",
    )
    .await;
    let a5 = ap.send(&gid, "a5").await;
    assert_eq!(a5.seq, 6);
    delivered(
        &mut [&mut at, &mut carol, &mut dave, &mut erin],
        &gid,
        &a5,
        "alice",
        "a5",
    )
    .await;
    let e1 = erin.send(&gid, "e1").await;
    assert_eq!(e1.seq, 7);
    delivered(
        &mut [&mut ap, &mut at, &mut carol, &mut dave],
        &gid,
        &e1,
        "erin",
        "e1",
    )
    .await;
    bob.quiet(Duration::from_millis(500)).await;
    bob.catch_up().await;
    assert!(
        bob.take_fresh().is_empty(),
        "no inbox entry for Bob after his LEFT event"
    );
    assert!(
        !ap.members(&gid)
            .await
            .members
            .iter()
            .any(|m| m.user_id == "bob"),
        "Bob is no longer listed"
    );

    // Bob, no longer a member, and Mallory, never one: to them the group does not exist
    // (NOT_FOUND, as for an unknown group id), whatever they ask.
    for m in [&mut bob, &mut mallory] {
        assert_eq!(
            m.refused(Member::send_packet(&gid, "let me in")).await,
            ErrorCode::NotFound,
            "{} sends",
            m.who()
        );
        assert_eq!(
            m.refused(Member::history_packet(&gid, 0, 0, 0)).await,
            ErrorCode::NotFound,
            "{} reads history",
            m.who()
        );
        assert_eq!(
            m.refused(Member::history_packet(&gid, 0, 3, 0)).await,
            ErrorCode::NotFound,
            "{} catches up",
            m.who()
        );
        assert_eq!(
            m.refused(Member::members_packet(&gid)).await,
            ErrorCode::NotFound,
            "{} lists members",
            m.who()
        );
        // Leaving a group one is not in.
        assert_eq!(
            m.refused(Member::leave_packet(&gid, "")).await,
            ErrorCode::NotFound,
            "{} leaves",
            m.who()
        );
    }
    // Unknown group: NOT_FOUND for everything, members and outsiders alike.
    for m in [&mut ap, &mut mallory] {
        let nope = "no-such-group";
        assert_eq!(
            m.refused(Member::send_packet(nope, "x")).await,
            ErrorCode::NotFound
        );
        assert_eq!(
            m.refused(Member::history_packet(nope, 0, 0, 0)).await,
            ErrorCode::NotFound
        );
        assert_eq!(
            m.refused(Member::members_packet(nope)).await,
            ErrorCode::NotFound
        );
        assert_eq!(
            m.refused(Member::join_packet(nope, &[])).await,
            ErrorCode::NotFound
        );
        assert_eq!(
            m.refused(Member::join_packet(nope, &["carol"])).await,
            ErrorCode::NotFound
        );
        assert_eq!(
            m.refused(Member::leave_packet(nope, "")).await,
            ErrorCode::NotFound
        );
        assert_eq!(
            m.refused(Member::leave_packet(nope, "carol")).await,
            ErrorCode::NotFound
        );
    }
    // In an unknown group, RECALL, MARK_READ and DELETE are NOT_FOUND too (checked one by one,
    // so that one failure names its request).
    let nope = grp("no-such-group");
    assert_eq!(
        ap.refused(Member::recall_packet(nope.clone(), a1.msg_id))
            .await,
        ErrorCode::NotFound,
        "RECALL in an unknown group"
    );
    assert_eq!(
        ap.refused(packet_mark_read(nope.clone(), 1)).await,
        ErrorCode::NotFound,
        "MARK_READ in an unknown group"
    );
    assert_eq!(
        ap.refused(Packet::Delete(pb::DeleteMessage {
            conversation: Some(nope.clone()),
            msg_id: a1.msg_id,
        }))
        .await,
        ErrorCode::NotFound,
        "DELETE in an unknown group"
    );

    // Removing: a member cannot remove another, the owner cannot leave, the owner removes Erin.
    assert_eq!(
        carol.refused(Member::leave_packet(&gid, "dave")).await,
        ErrorCode::Forbidden
    );
    assert_eq!(
        ap.refused(Member::leave_packet(&gid, "")).await,
        ErrorCode::Forbidden,
        "the owner cannot leave"
    );
    assert_eq!(
        carol.refused(Member::leave_packet(&gid, "alice")).await,
        ErrorCode::Forbidden,
        "nobody removes the owner"
    );
    let info = ap.leave(&gid, "erin").await;
    assert_eq!(info.member_count, 3, "{info:?}");
    own_event(&mut ap, &gid, GroupEventKind::Removed, "erin", "alice").await;
    got_event(
        &mut [&mut at, &mut carol, &mut dave, &mut erin],
        &gid,
        GroupEventKind::Removed,
        "erin",
        "alice",
    )
    .await;
    let a6 = ap.send(&gid, "a6").await;
    assert_eq!(a6.seq, 8);
    delivered(
        &mut [&mut at, &mut carol, &mut dave],
        &gid,
        &a6,
        "alice",
        "a6",
    )
    .await;
    for m in [
        &mut ap,
        &mut at,
        &mut bob,
        &mut carol,
        &mut dave,
        &mut erin,
        &mut mallory,
    ] {
        m.quiet(SHORT).await;
    }
    assert!(mallory.entries.is_empty(), "{:?}", mallory.entries);
    check_users(
        &server,
        &["alice", "bob", "carol", "dave", "erin", "mallory"],
    );
    server.stop().await;
}

#[tokio::test]
async fn from_join_history_shows_only_messages_after_joining() {
    let server = TestServer::start().await;
    let mut ap = Member::login(&server, "alice", "phone").await;
    let mut bob = Member::login(&server, "bob", "phone").await;
    let info = ap
        .create_open("quiet room", &["bob"], HistoryVisibility::FromJoin)
        .await;
    let gid = info.group_id.clone();
    assert_eq!(info.history(), HistoryVisibility::FromJoin);
    ap.send(&gid, "p1").await;
    ap.send(&gid, "p2").await;
    bob.send(&gid, "p3").await;

    let mut dave = Member::login(&server, "dave", "phone").await;
    ap.join(&gid, &["dave"]).await;
    let page = dave.history(&gid, 0, 0, 0).await;
    assert!(
        page.messages.is_empty(),
        "FROM_JOIN: nothing from before the join: {page:?}"
    );
    assert!(!page.has_more);
    let page = dave.history(&gid, 0, 1, 0).await;
    assert!(
        page.messages.is_empty(),
        "FROM_JOIN also for after_seq: {page:?}"
    );

    bob.send(&gid, "p4").await;
    let mut erin = Member::login(&server, "erin", "phone").await;
    erin.join(&gid, &[]).await;
    ap.send(&gid, "p5").await;

    let members = ap.members(&gid).await;
    let joined = |u: &str| {
        members
            .members
            .iter()
            .find(|m| m.user_id == u)
            .unwrap_or_else(|| panic!("{u} listed"))
            .joined_seq
    };
    assert_eq!(
        (
            joined("alice"),
            joined("bob"),
            joined("dave"),
            joined("erin")
        ),
        (0, 0, 3, 4)
    );

    assert_eq!(
        summary(&dave.history(&gid, 0, 0, 0).await.messages),
        expect(&[(5, "alice", "p5"), (4, "bob", "p4")])
    );
    assert_eq!(
        summary(&dave.history_after_all(&gid, 1, 1).await),
        expect(&[(4, "bob", "p4"), (5, "alice", "p5")]),
        "after_seq below the join seq still starts after the join"
    );
    assert_eq!(seqs(&erin.history(&gid, 0, 0, 0).await.messages), [5]);
    assert!(erin.history(&gid, 5, 0, 0).await.messages.is_empty());
    assert_eq!(
        seqs(&bob.history(&gid, 0, 0, 0).await.messages),
        [5, 4, 3, 2, 1],
        "initial members see everything"
    );
    // Dave's write fan-out inbox holds JOINED and then exactly p4 and p5.
    dave.catch_up().await;
    let msgs: Vec<u64> = group_msgs(&dave.entries, &gid)
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(msgs, [4, 5]);
    check_users(&server, &["alice", "bob", "dave", "erin"]);
    server.stop().await;
}

#[tokio::test]
async fn rejoining_member_pulls_exactly_the_missed_messages() {
    let server = TestServer::start().await;
    let mut ap = Member::login(&server, "alice", "phone").await;
    let mut bob = Member::login(&server, "bob", "phone").await;
    let gid = ap
        .create_open("room", &["carol"], HistoryVisibility::FromJoin)
        .await
        .group_id;
    ap.send(&gid, "m1").await;
    ap.send(&gid, "m2").await;
    ap.join(&gid, &["bob"]).await;
    bob.next().await; // JOINED
    let m3 = ap.send(&gid, "m3").await;
    let m4 = ap.send(&gid, "m4").await;
    delivered(&mut [&mut bob], &gid, &m3, "alice", "m3").await;
    delivered(&mut [&mut bob], &gid, &m4, "alice", "m4").await;
    let last_held = 4;

    bob.leave(&gid, "").await;
    own_event(&mut bob, &gid, GroupEventKind::Left, "bob", "bob").await;
    ap.send(&gid, "m5").await;
    ap.send(&gid, "m6").await;
    let mut carol = Member::login(&server, "carol", "phone").await;
    carol.send(&gid, "m7").await;
    bob.quiet(Duration::from_millis(500)).await;

    let info = bob.join(&gid, &[]).await;
    assert_eq!(info.last_seq, 7, "{info:?}");
    // Only the JOINED event: write mode does not copy the missed messages into the inbox.
    own_event(&mut bob, &gid, GroupEventKind::Joined, "bob", "bob").await;
    let members = bob.members(&gid).await;
    let me = members
        .members
        .iter()
        .find(|m| m.user_id == "bob")
        .expect("bob listed again");
    assert_eq!(me.joined_seq, 2, "joined_seq is kept from the first join");

    let missed = bob.history_after_all(&gid, last_held, 0).await;
    assert_eq!(
        summary(&missed),
        expect(&[(5, "alice", "m5"), (6, "alice", "m6"), (7, "carol", "m7")]),
        "each missed message exactly once, oldest first"
    );
    let p1 = bob.history(&gid, 0, last_held, 2).await;
    assert_eq!(seqs(&p1.messages), [5, 6]);
    assert!(p1.has_more);
    let p2 = bob.history(&gid, 0, 6, 2).await;
    assert_eq!(seqs(&p2.messages), [7]);
    assert!(!p2.has_more);
    let p3 = bob.history(&gid, 0, 7, 2).await;
    assert!(p3.messages.is_empty() && !p3.has_more, "{p3:?}");
    assert_eq!(
        seqs(&bob.history(&gid, 0, 0, 0).await.messages),
        [7, 6, 5, 4, 3],
        "FROM_JOIN after a rejoin: everything after the first join"
    );
    // Joining set the read position to the group's last seq.
    assert_eq!(bob.unread_of(&grp(&gid)).await, 0);

    let m8 = ap.send(&gid, "m8").await;
    assert_eq!(m8.seq, 8);
    delivered(&mut [&mut bob], &gid, &m8, "alice", "m8").await;
    assert_eq!(bob.unread_of(&grp(&gid)).await, 1);
    bob.catch_up().await;
    let inbox: Vec<u64> = group_msgs(&bob.entries, &gid)
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(
        inbox,
        [3, 4, 8],
        "Bob's inbox: nothing from while he was away"
    );
    bob.quiet(SHORT).await;
    check_users(&server, &["alice", "bob", "carol"]);
    server.stop().await;
}

#[tokio::test]
async fn read_fanout_notifies_and_members_pull_history() {
    let server = TestServer::start_with(|c| c.fanout_threshold = 3).await;
    let mut ap = Member::login(&server, "alice", "phone").await;
    let mut bob = Member::login(&server, "bob", "phone").await;
    let mut carol = Member::login(&server, "carol", "phone").await;
    let info = ap
        .create(
            "big",
            &["bob", "carol", "dave", "erin", "frank"],
            HistoryVisibility::Full,
        )
        .await;
    let gid = info.group_id.clone();
    assert_eq!(info.member_count, 6);
    assert_eq!(info.fanout(), FanoutMode::Read, "6 > threshold 3");
    // Created above the threshold: only the owner gets CREATED.
    own_event(&mut ap, &gid, GroupEventKind::Created, "alice", "alice").await;
    bob.quiet(SHORT).await;
    carol.quiet(SHORT).await;

    let mut acks = Vec::new();
    for (n, text) in [(1u64, "a1"), (2, "a2"), (3, "a3")] {
        let ack = ap.send(&gid, text).await;
        assert_eq!(ack.seq, n);
        for m in [&mut bob, &mut carol] {
            let notify = m.next_notify().await;
            assert_eq!(
                (notify.group_id.as_str(), notify.last_seq),
                (gid.as_str(), n),
                "{}: GROUP_NOTIFY for seq {n}",
                m.who()
            );
            // A small message travels in the notification itself.
            let carried = notify.message.as_ref().expect("message in GROUP_NOTIFY");
            assert_eq!(
                (carried.seq, carried.msg_id, carried.content.as_slice()),
                (n, ack.msg_id, text.as_bytes()),
                "{}",
                m.who()
            );
            assert_eq!(carried.from_user, "alice");
        }
        acks.push(ack);
    }
    let b1 = bob.send(&gid, "b1").await;
    assert_eq!(b1.seq, 4);
    for m in [&mut carol, &mut ap] {
        let notify = m.next_notify().await;
        // The sender's own earlier messages may or may not have notified the sending device.
        let mut notify = notify;
        while notify.last_seq < 4 {
            assert_eq!(
                m.who(),
                "alice/phone",
                "only the sender may see extra notifies"
            );
            notify = m.next_notify().await;
        }
        assert_eq!(
            (notify.group_id.as_str(), notify.last_seq),
            (gid.as_str(), 4),
            "{}",
            m.who()
        );
    }
    // Bob may or may not be told about his own message; nothing else.
    bob.drain(SHORT).await;
    for n in bob.clear_notifies() {
        assert_eq!((n.group_id.as_str(), n.last_seq), (gid.as_str(), 4));
    }
    // No PUSH entries for read fan-out messages.
    for m in [&mut ap, &mut bob, &mut carol] {
        m.quiet(SHORT).await;
        m.catch_up().await;
        assert!(
            m.take_fresh().is_empty(),
            "{}: no inbox entries from other members' messages",
            m.who()
        );
    }
    // The sender's own inbox entry is written (content + group log + own inbox).
    assert_eq!(
        group_msgs(&ap.entries, &gid)
            .iter()
            .map(|m| m.seq)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(
        group_msgs(&bob.entries, &gid)
            .iter()
            .map(|m| m.seq)
            .collect::<Vec<_>>(),
        [4]
    );
    assert!(carol.entries.is_empty(), "{:?}", carol.entries);

    let listed = bob.list().await;
    let g = listed
        .iter()
        .find(|g| g.group_id == gid)
        .expect("listed group");
    assert_eq!(
        (g.fanout(), g.last_seq, g.member_count),
        (FanoutMode::Read, 4, 6)
    );

    // Unread: own messages never count; the sender's read position moves to their message.
    assert_eq!(ap.unread_of(&grp(&gid)).await, 1, "alice: b1");
    assert_eq!(bob.unread_of(&grp(&gid)).await, 0, "bob sent the last one");
    assert_eq!(carol.unread_of(&grp(&gid)).await, 4);

    // Dave was offline: LOGIN_ACK and UNREAD show the group's unread count.
    let mut dave = Member::login(&server, "dave", "phone").await;
    assert_eq!(dave.login.unread_total, 4);
    assert!(dave.entries.is_empty(), "{:?}", dave.entries);
    let u = dave.unread().await;
    check_unread_sum(&u);
    assert_eq!(u.total, 4);
    assert_eq!(u.conversations.len(), 1, "{u:?}");
    assert_eq!(u.conversations[0].conversation.as_ref(), Some(&grp(&gid)));
    assert_eq!(
        (u.conversations[0].unread, u.conversations[0].last_seq),
        (4, 4)
    );
    // He pulls them: newest first from the top, or oldest first after a seq.
    let newest = dave.history(&gid, 0, 0, 0).await;
    assert_eq!(seqs(&newest.messages), [4, 3, 2, 1]);
    let pulled = dave.history_after_all(&gid, 1, 2).await;
    assert_eq!(
        summary(&pulled),
        expect(&[(2, "alice", "a2"), (3, "alice", "a3"), (4, "bob", "b1")])
    );
    // MARK_READ clears it, with READ_SYNC entries to his own inbox.
    let r = dave.mark_read(grp(&gid), 2).await;
    assert_eq!((r.unread, r.total), (2, 2));
    assert!(r.version > 0);
    let e = dave.next().await;
    assert_eq!(e.version, r.version);
    assert_eq!(conv_of(&e), &grp(&gid));
    let rs = read_sync_of(&e);
    assert_eq!((rs.up_to_seq, rs.unread), (2, 2));
    assert_eq!(dave.unread_of(&grp(&gid)).await, 2);
    let r = dave.mark_read(grp(&gid), 100).await;
    assert_eq!((r.unread, r.total), (0, 0));
    let rs = *read_sync_of(&dave.next().await);
    assert_eq!((rs.up_to_seq, rs.unread), (4, 0), "clamped to the last seq");
    let u = dave.unread().await;
    assert_eq!(u.total, 0);
    assert!(u.conversations.is_empty(), "{u:?}");
    let again = dave.mark_read(grp(&gid), 4).await;
    assert_eq!((again.unread, again.total, again.version), (0, 0, 0));

    // Erin, also offline, is unaffected by Dave's reading.
    let erin = Member::login(&server, "erin", "phone").await;
    assert_eq!(erin.login.unread_total, 4);

    // A member joining a read-mode group: the JOINED entry only in their inbox, nothing
    // unread from before; the online members are told with a GROUP_NOTIFY carrying the event
    // (and the unchanged last seq).
    let mut george = Member::login(&server, "george", "phone").await;
    let info = ap.join(&gid, &["george"]).await;
    assert_eq!(info.member_count, 7);
    assert_eq!(info.fanout(), FanoutMode::Read);
    let e = george.next().await;
    assert_event(&e, &gid, GroupEventKind::Joined, "george", "alice");
    for m in [&mut ap, &mut bob, &mut carol, &mut dave, &mut george] {
        let n = m.next_notify().await;
        let event = n.event.as_ref().expect("the membership event");
        assert_eq!(
            (n.group_id.as_str(), n.last_seq, n.message.is_none()),
            (gid.as_str(), 4, true),
            "{}",
            m.who()
        );
        assert_eq!(
            (event.kind(), event.user_id.as_str(), event.by_user.as_str()),
            (GroupEventKind::Joined, "george", "alice"),
            "{}",
            m.who()
        );
    }
    for m in [&mut bob, &mut carol, &mut dave] {
        m.quiet(SHORT).await;
    }
    ap.catch_up().await;
    let fresh = ap.take_fresh();
    assert!(
        fresh.is_empty(),
        "read mode: JOINED goes only to the new member: {fresh:?}"
    );
    assert_eq!(george.unread_of(&grp(&gid)).await, 0);
    bob.send(&gid, "b2").await;
    let n = george.next_notify().await;
    assert_eq!((n.group_id.as_str(), n.last_seq), (gid.as_str(), 5));
    assert_eq!(george.unread_of(&grp(&gid)).await, 1);
    // A message above 4096 bytes of content is only announced: members pull it.
    let big = "x".repeat(4097);
    assert_eq!(bob.send(&gid, &big).await.seq, 6);
    let n = george.next_notify().await;
    assert_eq!((n.last_seq, n.message.is_none()), (6, true));
    let pulled = george.history(&gid, 0, 5, 0).await;
    assert_eq!(seqs(&pulled.messages), [6]);
    assert_eq!(pulled.messages[0].content, big.as_bytes());
    check_users(
        &server,
        &["alice", "bob", "carol", "dave", "erin", "george"],
    );
    server.stop().await;
}

#[tokio::test]
async fn fanout_mode_follows_the_current_size() {
    let server = TestServer::start_with(|c| c.fanout_threshold = 3).await;
    let mut ap = Member::login(&server, "alice", "phone").await;
    let mut bob = Member::login(&server, "bob", "phone").await;
    let info = ap
        .create("edge", &["bob", "carol"], HistoryVisibility::Full)
        .await;
    let gid = info.group_id.clone();
    assert_eq!(
        (info.member_count, info.fanout()),
        (3, FanoutMode::Write),
        "3 <= 3"
    );
    bob.next().await; // CREATED
    let m1 = ap.send(&gid, "w1").await;
    delivered(&mut [&mut bob], &gid, &m1, "alice", "w1").await;

    let info = ap.join(&gid, &["dave"]).await;
    assert_eq!(
        (info.member_count, info.fanout()),
        (4, FanoutMode::Read),
        "4 > 3"
    );
    // Bob hears of Dave's join as the group now is: read fan-out, a GROUP_NOTIFY with the event.
    assert!(
        bob.drain(SHORT).await.is_empty(),
        "no inbox entry in read mode"
    );
    let n = bob.next_notify().await;
    let event = n.event.as_ref().expect("the membership event");
    assert_eq!(
        (event.kind(), event.user_id.as_str(), n.last_seq),
        (GroupEventKind::Joined, "dave", 1)
    );
    ap.send(&gid, "r2").await;
    let n = bob.next_notify().await;
    assert_eq!((n.group_id.as_str(), n.last_seq), (gid.as_str(), 2));
    assert!(n.event.is_none());
    bob.quiet(SHORT).await;

    let info = ap.leave(&gid, "dave").await;
    assert_eq!((info.member_count, info.fanout()), (3, FanoutMode::Write));
    for e in bob.drain(SHORT).await {
        assert_event(&e, &gid, GroupEventKind::Removed, "dave", "alice");
    }
    bob.clear_notifies();
    let m3 = ap.send(&gid, "w3").await;
    delivered(&mut [&mut bob], &gid, &m3, "alice", "w3").await;
    bob.quiet(SHORT).await;
    // Every message, whichever mode, is in the history.
    assert_eq!(
        summary(&bob.history(&gid, 0, 0, 0).await.messages),
        expect(&[(3, "alice", "w3"), (2, "alice", "r2"), (1, "alice", "w1")])
    );
    // Bob's count went through both switches intact (stored, computed, stored again): every
    // message counts once; so does a read.
    assert_eq!(bob.unread_of(&grp(&gid)).await, 3);
    assert_eq!(bob.unread().await.total, 3);
    bob.mark_read(grp(&gid), 2).await;
    assert_eq!(bob.unread_of(&grp(&gid)).await, 1);
    // And a switch with a recall in between: recall w3 in write mode, switch to read mode.
    ap.recall(grp(&gid), m3.msg_id).await;
    ap.join(&gid, &["erin"]).await;
    assert_eq!(bob.unread().await.total, 0, "w3 recalled, the rest read");
    check_users(&server, &["alice", "bob", "carol", "dave", "erin"]);
    server.stop().await;
}

#[tokio::test]
async fn group_size_limit() {
    let server = TestServer::start_with(|c| c.max_group_size = 4).await;
    let mut ap = Member::login(&server, "alice", "phone").await;
    assert_eq!(
        ap.refused(Packet::GroupCreate(pb::GroupCreate {
            name: "too big".into(),
            members: ["b", "c", "d", "e"].iter().map(|s| s.to_string()).collect(),
            history: 0,
            join_policy: 0,
        }))
        .await,
        ErrorCode::GroupFull
    );
    let info = ap
        .create_open("just fits", &["b", "c", "d"], HistoryVisibility::Full)
        .await;
    assert_eq!(info.member_count, 4);
    let gid = info.group_id;
    assert_eq!(
        ap.refused(Member::join_packet(&gid, &["e"])).await,
        ErrorCode::GroupFull
    );
    let mut e = Member::login(&server, "e", "phone").await;
    assert_eq!(
        e.refused(Member::join_packet(&gid, &[])).await,
        ErrorCode::GroupFull
    );
    assert_eq!(ap.members(&gid).await.group.unwrap().member_count, 4);
    server.stop().await;
}

#[tokio::test]
async fn unread_and_recall_in_a_write_mode_group() {
    let server = TestServer::start().await;
    let mut ap = Member::login(&server, "alice", "phone").await;
    let mut bob = Member::login(&server, "bob", "phone").await;
    let mut carol = Member::login(&server, "carol", "phone").await;
    let mut dave = Member::login(&server, "dave", "phone").await;
    let gid = ap
        .create("unread", &["bob", "carol"], HistoryVisibility::Full)
        .await
        .group_id;
    let g = grp(&gid);
    got_event(
        &mut [&mut bob, &mut carol],
        &gid,
        GroupEventKind::Created,
        "alice",
        "alice",
    )
    .await;
    own_event(&mut ap, &gid, GroupEventKind::Created, "alice", "alice").await;

    let a1 = ap.send(&gid, "a1").await;
    delivered(&mut [&mut bob, &mut carol], &gid, &a1, "alice", "a1").await;
    let a2 = ap.send(&gid, "a2").await;
    delivered(&mut [&mut bob, &mut carol], &gid, &a2, "alice", "a2").await;
    let b1 = bob.send(&gid, "b1").await;
    delivered(&mut [&mut ap, &mut carol], &gid, &b1, "bob", "b1").await;

    assert_eq!(ap.unread_of(&g).await, 1, "alice: only b1");
    assert_eq!(
        bob.unread_of(&g).await,
        0,
        "bob: sending moved his read position past a1, a2"
    );
    assert_eq!(carol.unread_of(&g).await, 3);

    // Direct + group: the total is the sum.
    dave.send_to(dmc("carol"), "d1").await;
    dave.send_to(dmc("carol"), "d2").await;
    carol.next().await;
    carol.next().await;
    let u = carol.unread().await;
    check_unread_sum(&u);
    assert_eq!(u.total, 5);
    assert_eq!(u.conversations.len(), 2, "{u:?}");
    let cg = u
        .conversations
        .iter()
        .find(|c| c.conversation.as_ref() == Some(&g))
        .expect("group listed");
    assert_eq!((cg.unread, cg.last_seq), (3, 3));
    let cd = u
        .conversations
        .iter()
        .find(|c| c.conversation.as_ref() == Some(&dmc("dave")))
        .expect("direct listed");
    assert_eq!((cd.unread, cd.last_seq), (2, 2));

    // Recall by the sender: RECALL entry to every member, unread drops where unread.
    let r = ap.recall(g.clone(), a2.msg_id).await;
    assert!(r.version > 0);
    for m in [&mut bob, &mut carol] {
        let e = m.next().await;
        assert_eq!(conv_of(&e), &g);
        let rc = recall_of(&e);
        assert_eq!(
            (rc.msg_id, rc.seq, rc.by_user.as_str()),
            (a2.msg_id, 2, "alice"),
            "{}",
            m.who()
        );
    }
    ap.catch_up().await;
    let fresh = ap.take_fresh();
    assert_eq!(fresh.len(), 1, "{fresh:?}");
    assert_eq!(recall_of(&fresh[0]).msg_id, a2.msg_id);
    assert_eq!(fresh[0].version, r.version);
    assert_eq!(carol.unread_of(&g).await, 2);
    assert_eq!(carol.unread().await.total, 4);
    assert_eq!(bob.unread_of(&g).await, 0);
    assert_eq!(ap.unread_of(&g).await, 1);
    let page = carol.history(&gid, 0, 0, 0).await;
    let recalled: Vec<_> = page
        .messages
        .iter()
        .map(|m| (m.seq, m.recalled, m.content.is_empty()))
        .collect();
    assert_eq!(
        recalled,
        [(3, false, false), (2, true, true), (1, false, false)]
    );

    // Neither another member nor a non-member may recall; an unknown message is NOT_FOUND.
    assert_eq!(
        carol
            .refused(Member::recall_packet(g.clone(), b1.msg_id))
            .await,
        ErrorCode::Forbidden
    );
    assert_eq!(
        bob.refused(Member::recall_packet(g.clone(), a1.msg_id))
            .await,
        ErrorCode::Forbidden
    );
    assert_eq!(
        dave.refused(Member::recall_packet(g.clone(), a1.msg_id))
            .await,
        ErrorCode::NotFound,
        "to a non-member the group does not exist"
    );
    assert_eq!(
        ap.refused(Member::recall_packet(g.clone(), 12345)).await,
        ErrorCode::NotFound
    );
    assert_eq!(carol.unread_of(&g).await, 2, "refusals changed nothing");

    // The owner recalls Bob's message.
    let r = ap.recall(g.clone(), b1.msg_id).await;
    assert!(r.version > 0);
    for m in [&mut bob, &mut carol] {
        let rc = recall_of(&m.next().await).clone();
        assert_eq!(
            (rc.msg_id, rc.seq, rc.by_user.as_str()),
            (b1.msg_id, 3, "alice")
        );
    }
    ap.catch_up().await;
    let fresh = ap.take_fresh();
    assert_eq!(fresh.len(), 1, "{fresh:?}");
    assert_eq!(fresh[0].version, r.version);
    assert_eq!(recall_of(&fresh[0]).msg_id, b1.msg_id);
    assert_eq!(carol.unread_of(&g).await, 1);
    assert_eq!(carol.unread().await.total, 3);
    assert_eq!(ap.unread_of(&g).await, 0, "b1 was alice's only unread");
    assert_eq!(bob.unread_of(&g).await, 0);
    let again = ap.recall(g.clone(), b1.msg_id).await;
    assert_eq!(again.version, 0, "recalling twice changes nothing");

    // MARK_READ in a group, and a non-member may not.
    let mr = carol.mark_read(g.clone(), 3).await;
    assert_eq!((mr.unread, mr.total), (0, 2));
    let rs = *read_sync_of(&carol.next().await);
    assert_eq!((rs.up_to_seq, rs.unread), (3, 0));
    assert_eq!(
        dave.refused(packet_mark_read(g.clone(), 3)).await,
        ErrorCode::NotFound
    );
    for m in [&mut ap, &mut bob, &mut carol, &mut dave] {
        m.quiet(SHORT).await;
    }
    check_users(&server, &["alice", "bob", "carol", "dave"]);
    server.stop().await;
}

fn packet_mark_read(conv: pb::Conversation, up_to_seq: u64) -> Packet {
    Packet::MarkRead(pb::MarkRead {
        conversation: Some(conv),
        up_to_seq,
    })
}

#[tokio::test]
async fn unread_and_recall_in_a_read_mode_group() {
    let server = TestServer::start_with(|c| c.fanout_threshold = 3).await;
    let mut ap = Member::login(&server, "alice", "phone").await;
    let mut bob = Member::login(&server, "bob", "phone").await;
    let mut carol = Member::login(&server, "carol", "phone").await;
    let info = ap
        .create(
            "read",
            &["bob", "carol", "dave", "erin"],
            HistoryVisibility::Full,
        )
        .await;
    assert_eq!(info.fanout(), FanoutMode::Read);
    let gid = info.group_id;
    let g = grp(&gid);
    own_event(&mut ap, &gid, GroupEventKind::Created, "alice", "alice").await;

    let a1 = ap.send(&gid, "a1").await;
    let _a2 = ap.send(&gid, "a2").await;
    let b1 = bob.send(&gid, "b1").await;
    assert_eq!(b1.seq, 3);
    for m in [&mut bob, &mut carol] {
        m.drain(SHORT).await;
        m.clear_notifies();
    }
    ap.drain(SHORT).await;
    ap.clear_notifies();

    assert_eq!(carol.unread_of(&g).await, 3);
    assert_eq!(bob.unread_of(&g).await, 0);
    assert_eq!(ap.unread_of(&g).await, 1);

    // The sender recalls a1: every member's count drops (computed); RECALL entry to the
    // recaller's inbox; online members are notified.
    let r = ap.recall(g.clone(), a1.msg_id).await;
    assert!(r.version > 0);
    ap.catch_up().await;
    let fresh = ap.take_fresh();
    assert_eq!(fresh.len(), 1, "{fresh:?}");
    assert_eq!(fresh[0].version, r.version);
    let rc = recall_of(&fresh[0]);
    assert_eq!(
        (rc.msg_id, rc.seq, rc.by_user.as_str()),
        (a1.msg_id, 1, "alice")
    );
    for m in [&mut bob, &mut carol] {
        let n = m.next_notify().await;
        assert_eq!(n.group_id, gid, "{}", m.who());
        m.catch_up().await;
        assert!(
            m.take_fresh().is_empty(),
            "{}: read mode: no RECALL entry for other members",
            m.who()
        );
    }
    assert_eq!(carol.unread_of(&g).await, 2);
    assert_eq!(bob.unread_of(&g).await, 0);
    assert_eq!(ap.unread_of(&g).await, 1);
    let page = carol.history(&gid, 0, 0, 0).await;
    let first = page.messages.iter().find(|m| m.seq == 1).expect("seq 1");
    assert!(first.recalled && first.content.is_empty(), "{first:?}");

    assert_eq!(
        carol
            .refused(Member::recall_packet(g.clone(), b1.msg_id))
            .await,
        ErrorCode::Forbidden
    );
    let r = ap.recall(g.clone(), b1.msg_id).await;
    assert!(r.version > 0, "the owner recalls another member's message");
    assert_eq!(carol.unread_of(&g).await, 1);
    assert_eq!(ap.unread_of(&g).await, 0);
    assert_eq!(bob.unread_of(&g).await, 0);

    let dave = Member::login(&server, "dave", "phone").await;
    assert_eq!(dave.login.unread_total, 1, "only a2 is left unread");
    for m in [&mut bob, &mut carol] {
        m.drain(SHORT).await;
        m.clear_notifies();
    }
    check_users(&server, &["alice", "bob", "carol", "dave"]);
    server.stop().await;
}

#[tokio::test]
async fn login_summary_counts_and_lists_direct_and_group_conversations() {
    let server = TestServer::start().await;
    let mut ap = Member::login(&server, "alice", "phone").await;
    let mut bob = Member::login(&server, "bob", "phone").await;
    let mut carol = Member::login(&server, "carol", "phone").await;
    let mut dave = Member::login(&server, "dave", "phone").await;
    let g1 = ap
        .create("g1", &["bob", "carol"], HistoryVisibility::Full)
        .await
        .group_id;
    let g2 = bob
        .create("g2", &["alice", "dave"], HistoryVisibility::Full)
        .await
        .group_id;
    let g3 = ap
        .create("g3", &["bob"], HistoryVisibility::Full)
        .await
        .group_id;

    // (conversation as alice sees it, sender, text, ack)
    let mut log: Vec<(pb::Conversation, &str, &str, pb::SendAck)> = Vec::new();
    let steps: [(&str, pb::Conversation, &str); 12] = [
        ("bob", dmc("alice"), "hi alice"),
        ("bob", grp(&g1), "g1 b1"),
        ("alice", grp(&g1), "g1 a1"),
        ("alice", grp(&g3), "g3 a1"),
        ("dave", grp(&g2), "g2 d1"),
        ("carol", dmc("alice"), "hey"),
        ("carol", grp(&g1), "g1 c1"),
        ("alice", dmc("dave"), "to dave"),
        ("dave", grp(&g2), "g2 d2"),
        ("bob", grp(&g2), "g2 b1"),
        ("bob", dmc("alice"), "hi again"),
        ("carol", grp(&g1), "g1 c2"),
    ];
    for (from, to, text) in steps {
        let sender = match from {
            "alice" => &mut ap,
            "bob" => &mut bob,
            "carol" => &mut carol,
            _ => &mut dave,
        };
        let seen_as = if to.kind() == pb::ConversationKind::Direct && from != "alice" {
            dmc(from)
        } else {
            to.clone()
        };
        let ack = sender.send_to(to, text).await;
        log.push((seen_as, from, text, ack));
    }
    for m in [&mut ap, &mut bob, &mut carol, &mut dave] {
        m.drain(SHORT).await;
    }

    let (mut laptop, login) = server.login("alice", "laptop").await;
    let unread = match laptop
        .request_timeout(Packet::Unread(pb::Unread::default()), WAIT)
        .await
        .expect("UNREAD")
    {
        Packet::UnreadAck(u) => u,
        other => panic!("expected UNREAD_ACK, got {other:?}"),
    };
    check_unread_sum(&unread);
    assert_eq!(unread.total, 8, "{unread:?}");
    assert_eq!(login.unread_total, unread.total, "LOGIN_ACK.unread_total");
    let mut listed: Vec<(pb::Conversation, u64, u64)> = unread
        .conversations
        .iter()
        .map(|c| (c.conversation.clone().unwrap(), c.unread, c.last_seq))
        .collect();
    listed.sort_by(|a, b| (a.0.kind, &a.0.id).cmp(&(b.0.kind, &b.0.id)));
    let mut want = vec![
        (dmc("bob"), 2, 2),
        (dmc("carol"), 1, 1),
        (grp(&g1), 2, 4),
        (grp(&g2), 3, 3),
    ];
    want.sort_by(|a, b| (a.0.kind, &a.0.id).cmp(&(b.0.kind, &b.0.id)));
    assert_eq!(listed, want);

    // CONTACTS: each conversation once, newest activity first, with its last message.
    let mut lap = Member::attach(laptop, login, "alice", "laptop");
    let contacts = lap.contacts_all().await;
    let order: Vec<pb::Conversation> = contacts
        .iter()
        .map(|c| c.conversation.clone().unwrap())
        .collect();
    assert_eq!(
        order,
        [
            grp(&g1),
            dmc("bob"),
            grp(&g2),
            dmc("dave"),
            dmc("carol"),
            grp(&g3)
        ],
        "newest first: {contacts:?}"
    );
    let expected_unread = [2u64, 2, 3, 0, 1, 0];
    for (c, unread) in contacts.iter().zip(expected_unread) {
        let conv = c.conversation.clone().unwrap();
        let (_, from, text, ack) = log
            .iter()
            .rev()
            .find(|(seen, ..)| *seen == conv)
            .expect("a message in the conversation");
        let m = c
            .last_message
            .as_ref()
            .expect("contact has its last message");
        assert_eq!(
            (m.msg_id, m.seq, m.from_user.as_str()),
            (ack.msg_id, ack.seq, *from),
            "{conv:?}"
        );
        assert_eq!(m.content, text.as_bytes(), "{conv:?}: body included");
        assert_eq!(m.conversation.as_ref(), Some(&conv), "as alice sees it");
        assert_eq!(c.unread, unread, "{conv:?}");
    }
    check_users(&server, &["alice", "bob", "carol", "dave"]);
    server.stop().await;
}

#[tokio::test]
async fn group_list_and_members_with_roles_and_join_positions() {
    let server = TestServer::start().await;
    let mut ap = Member::login(&server, "alice", "phone").await;
    let mut bob = Member::login(&server, "bob", "phone").await;
    let mut carol = Member::login(&server, "carol", "phone").await;
    let mut dave = Member::login(&server, "dave", "phone").await;
    let t0 = missive::now_ms();
    let g1 = ap.create("one", &["bob"], HistoryVisibility::Full).await;
    let t1 = missive::now_ms();
    let g2 = bob
        .create("two", &["alice", "carol"], HistoryVisibility::FromJoin)
        .await;
    let g3 = carol.create("three", &[], HistoryVisibility::Full).await;
    assert_eq!(g3.member_count, 1);
    ap.send(&g1.group_id, "x").await;
    ap.send(&g1.group_id, "y").await;

    let brief = |g: &pb::GroupInfo| {
        (
            g.group_id.clone(),
            g.name.clone(),
            g.owner.clone(),
            g.member_count,
            g.history(),
            g.fanout(),
            g.last_seq,
        )
    };
    let sorted = |mut v: Vec<pb::GroupInfo>| {
        v.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        v.iter().map(brief).collect::<Vec<_>>()
    };
    let one = (
        g1.group_id.clone(),
        "one".to_string(),
        "alice".to_string(),
        2,
        HistoryVisibility::Full,
        FanoutMode::Write,
        2,
    );
    let two = (
        g2.group_id.clone(),
        "two".to_string(),
        "bob".to_string(),
        3,
        HistoryVisibility::FromJoin,
        FanoutMode::Write,
        0,
    );
    let three = (
        g3.group_id.clone(),
        "three".to_string(),
        "carol".to_string(),
        1,
        HistoryVisibility::Full,
        FanoutMode::Write,
        0,
    );
    let mut want = vec![one.clone(), two.clone()];
    want.sort();
    assert_eq!(sorted(ap.list().await), want);
    let mut want = vec![two.clone(), three.clone()];
    want.sort();
    assert_eq!(sorted(carol.list().await), want);
    assert!(dave.list().await.is_empty());

    let members = ap.members(&g1.group_id).await;
    assert_eq!(brief(members.group.as_ref().unwrap()), one);
    let mut roles: Vec<_> = members
        .members
        .iter()
        .map(|m| (m.user_id.clone(), m.role(), m.joined_seq))
        .collect();
    roles.sort();
    assert_eq!(
        roles,
        [
            ("alice".to_string(), GroupRole::Owner, 0),
            ("bob".to_string(), GroupRole::Member, 0)
        ]
    );
    for m in &members.members {
        assert!(
            (t0..=t1).contains(&m.joined_ms),
            "joined_ms {} within the create call [{t0}, {t1}]",
            m.joined_ms
        );
    }

    let t2 = missive::now_ms();
    ap.join(&g1.group_id, &["dave"]).await;
    let t3 = missive::now_ms();
    let members = dave.members(&g1.group_id).await;
    assert_eq!(members.group.as_ref().unwrap().member_count, 3);
    let d = members
        .members
        .iter()
        .find(|m| m.user_id == "dave")
        .expect("dave listed");
    assert_eq!((d.role(), d.joined_seq), (GroupRole::Member, 2));
    assert!((t2..=t3).contains(&d.joined_ms));

    let members = ap.members(&g2.group_id).await;
    let mut roles: Vec<_> = members
        .members
        .iter()
        .map(|m| (m.user_id.clone(), m.role()))
        .collect();
    roles.sort();
    assert_eq!(
        roles,
        [
            ("alice".to_string(), GroupRole::Member),
            ("bob".to_string(), GroupRole::Owner),
            ("carol".to_string(), GroupRole::Member)
        ]
    );

    bob.leave(&g1.group_id, "").await;
    assert_eq!(sorted(bob.list().await), std::slice::from_ref(&two));
    let mut dlist = dave.list().await;
    assert_eq!(dlist.len(), 1);
    let dg = dlist.pop().unwrap();
    assert_eq!(
        (dg.group_id.as_str(), dg.member_count, dg.last_seq),
        (g1.group_id.as_str(), 2, 2)
    );
    let names: Vec<_> = ap
        .members(&g1.group_id)
        .await
        .members
        .iter()
        .map(|m| m.user_id.clone())
        .collect();
    assert!(!names.contains(&"bob".to_string()), "{names:?}");
    for m in [&mut ap, &mut bob, &mut carol, &mut dave] {
        m.drain(SHORT).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn read_fanout_store_writes_per_message_do_not_depend_on_member_count() {
    let server = TestServer::start_with(|c| c.fanout_threshold = 3).await;
    let store = server.handle().store().clone();
    let mut ap = Member::login(&server, "alice", "phone").await;
    // Two members online in both groups: notifications are not writes.
    let mut bob = Member::login(&server, "bob", "phone").await;
    let mut carol = Member::login(&server, "carol", "phone").await;
    let others = |n: usize| -> Vec<String> {
        let mut v = vec!["bob".to_string(), "carol".to_string()];
        v.extend((v.len()..n).map(|i| format!("user{i:02}")));
        v
    };
    let small: Vec<String> = others(5);
    let large: Vec<String> = others(29);
    let g6 = ap
        .create(
            "six",
            &small.iter().map(String::as_str).collect::<Vec<_>>(),
            HistoryVisibility::Full,
        )
        .await;
    let g30 = ap
        .create(
            "thirty",
            &large.iter().map(String::as_str).collect::<Vec<_>>(),
            HistoryVisibility::Full,
        )
        .await;
    assert_eq!((g6.member_count, g6.fanout()), (6, FanoutMode::Read));
    assert_eq!((g30.member_count, g30.fanout()), (30, FanoutMode::Read));

    // One send, measured alone: the delta of this store's committed keys around it.
    async fn writes_of_one_send(
        store: &missive::store::Store,
        ap: &mut Member,
        gid: &str,
        text: &str,
    ) -> u64 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let before = store.core().keys_written();
        ap.send(gid, text).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        store.core().keys_written() - before
    }
    // Warm up: the first message of a conversation may create per-conversation keys.
    writes_of_one_send(&store, &mut ap, &g6.group_id, "warm 6").await;
    writes_of_one_send(&store, &mut ap, &g30.group_id, "warm 30").await;
    let mut seen = Vec::new();
    for round in 0..3 {
        let d6 = writes_of_one_send(&store, &mut ap, &g6.group_id, "m").await;
        let d30 = writes_of_one_send(&store, &mut ap, &g30.group_id, "m").await;
        println!("round {round}: keys written per send: 6 members {d6}, 30 members {d30}");
        assert!(d6 > 0, "a send writes something");
        assert_eq!(
            d6, d30,
            "read fan-out: keys written per message must not depend on the member count"
        );
        seen.push(d6);
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "steady per-send write count: {seen:?}"
    );
    for m in [&mut bob, &mut carol] {
        m.drain(SHORT).await;
        m.clear_notifies();
    }
    drop(store);
    server.stop().await;
}

/// A member holding nothing of a read fan-out group (everyone added at its creation) catches
/// up from the first message with `OLDEST_FIRST, after_seq: 0` and gets every message once, in
/// order: the order is on the wire even though `after_seq = 0` is not (issue #18: a client that
/// followed the spec ended with seq 60 of 60 and believed it was caught up). The group is in
/// every member's CONTACTS with its last message and the member's count, though read fan-out
/// writes no contact entry per member.
#[tokio::test]
async fn read_fanout_catch_up_from_nothing_and_contacts() {
    let server = TestServer::start_with(|c| c.fanout_threshold = 2).await;
    let mut ap = Member::login(&server, "alice", "phone").await;
    let info = ap
        .create("forum", &["bob", "carol"], HistoryVisibility::Full)
        .await;
    let gid = info.group_id.clone();
    assert_eq!(info.fanout(), FanoutMode::Read);
    for i in 1..=60 {
        ap.send(&gid, &format!("post {i}")).await;
    }
    let mut bob = Member::login(&server, "bob", "phone").await;
    // What the spec tells a client holding nothing to send.
    let pulled = bob.history_after_all(&gid, 0, 50).await;
    assert_eq!(seqs(&pulled), (1..=60).collect::<Vec<u64>>());
    assert_eq!(pulled[0].content, b"post 1");
    let first = Member::history_packet_ordered(&gid, pb::HistoryOrder::OldestFirst, 0, 0, 50);
    let Packet::GroupHistoryAck(page) = bob.request(first).await else {
        panic!("expected GROUP_HISTORY_ACK")
    };
    assert_eq!((page.messages.len(), page.has_more), (50, true));
    assert_eq!(page.messages[0].seq, 1, "oldest first, from the first");
    // The same request without the order is read as an old client meant it: newest first.
    let legacy = Member::history_packet_ordered(&gid, pb::HistoryOrder::Unspecified, 0, 0, 50);
    let Packet::GroupHistoryAck(page) = bob.request(legacy).await else {
        panic!("expected GROUP_HISTORY_ACK")
    };
    assert_eq!(page.messages[0].seq, 60);

    // CONTACTS: the group, its last message, each member's own count.
    let contacts = |ack: Packet| match ack {
        Packet::ContactsAck(a) => a.contacts,
        other => panic!("expected CONTACTS_ACK, got {other:?}"),
    };
    let ask = || {
        Packet::Contacts(pb::Contacts {
            cursor: vec![],
            limit: 0,
        })
    };
    let mut carol = Member::login(&server, "carol", "phone").await;
    carol.mark_read(grp(&gid), 30).await;
    for (m, unread) in [(&mut ap, 0), (&mut bob, 60), (&mut carol, 30)] {
        let list = contacts(m.request(ask()).await);
        assert_eq!(list.len(), 1, "{}: {list:?}", m.who());
        let c = &list[0];
        assert_eq!(c.conversation.as_ref(), Some(&grp(&gid)), "{}", m.who());
        let last = c.last_message.as_ref().expect("last message");
        assert_eq!(
            (last.seq, last.content.as_slice()),
            (60, b"post 60".as_slice())
        );
        assert_eq!(c.unread, unread, "{}", m.who());
    }
    check_users(&server, &["alice", "bob", "carol"]);
    server.stop().await;
}

/// A FROM_JOIN group shows a late member nothing from before its join in CONTACTS either,
/// whichever the fan-out: read fan-out makes the contact from the group's last message, and a
/// switch back to write fan-out gives each member a contact entry (found by the session fuzz
/// target: the entry showed the last message from before the join).
#[tokio::test]
async fn contacts_of_a_from_join_group_show_nothing_from_before_the_join() {
    let server = TestServer::start_with(|c| c.fanout_threshold = 2).await;
    let mut ap = Member::login(&server, "alice", "phone").await;
    let gid = ap
        .create("minutes", &["bob", "carol"], HistoryVisibility::FromJoin)
        .await
        .group_id;
    ap.send(&gid, "secret before dave").await;
    ap.join(&gid, &["dave"]).await;
    let mut dave = Member::login(&server, "dave", "phone").await;
    let contacts = dave.contacts_all().await;
    assert!(contacts.is_empty(), "read fan-out: {contacts:?}");
    // Back to write fan-out (3 members): the switch writes contact entries.
    ap.leave(&gid, "carol").await;
    ap.leave(&gid, "bob").await;
    let contacts = dave.contacts_all().await;
    assert!(contacts.is_empty(), "after the switch: {contacts:?}");
    let alice_view = ap.contacts_all().await;
    assert_eq!(alice_view.len(), 1, "alice saw it: {alice_view:?}");
    // A message after the join shows.
    ap.send(&gid, "welcome dave").await;
    let contacts = dave.contacts_all().await;
    assert_eq!(contacts.len(), 1);
    let last = contacts[0].last_message.as_ref().expect("last message");
    assert_eq!(last.content, b"welcome dave");
    check_users(&server, &["alice", "bob", "carol", "dave"]);
    server.stop().await;
}
