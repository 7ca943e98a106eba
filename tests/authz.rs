//! End to end: a session acts only as the user of its token.
//!
//! Each case drives a real server over TCP. What it asserts is what a user would check: the
//! error code of the refused request, and, through an honest device of every other user, that
//! their inbox, unread counts, contacts and groups did not change (plus the store invariants).

mod common;
mod e2e;
mod groups_support;

use std::time::Duration;

use common::observe::{account, check_store};
use common::*;
use e2e::{
    expect_closed, expect_error, expect_silence, frame_of, heartbeat_ok, raw_send, recv, recv_push,
};
use groups_support::{dmc, grp, Member};
use missive_client::{pb, Connection};
use missive_protocol::pb::inbox_entry::Body;
use missive_protocol::token::mint;
use missive_protocol::{Command, ErrorCode, Frame, Packet};
use prost::Message as _;

const QUIET: Duration = Duration::from_millis(300);

fn now_s() -> u64 {
    (missive::now_ms() / 1000) as u64
}

/// Protobuf fields no message of the protocol defines (numbers 15 and up are unused by every
/// request this file forges), each a string naming `who`: a body that "claims" to be from, or
/// about, that user. A proto3 decoder skips them.
fn claims(who: &str) -> Vec<u8> {
    let mut b = Vec::new();
    for tag in [15u32, 16, 17, 31, 100, 2047] {
        prost::encoding::string::encode(tag, &who.to_owned(), &mut b);
    }
    b
}

/// Sends a frame with this body and returns the reply to it (frames in between are skipped).
async fn raw_request(conn: &mut Connection, command: Command, body: &[u8]) -> Packet {
    let rid = conn.next_request_id();
    conn.send_frame(&frame_of(command as u16, rid, body))
        .await
        .expect("frame written");
    loop {
        let (frame, packet) = recv(conn).await;
        if frame.request_id == rid {
            return packet;
        }
    }
}

fn message_of(entry: &pb::InboxEntry) -> &pb::Message {
    match &entry.body {
        Some(Body::Message(m)) => m,
        other => panic!("expected a message entry, got {other:?}"),
    }
}

fn recall_packet(conv: pb::Conversation, msg_id: u64) -> Packet {
    Packet::Recall(pb::RecallMessage {
        conversation: Some(conv),
        msg_id,
    })
}

fn delete_packet(conv: pb::Conversation, msg_id: u64) -> Packet {
    Packet::Delete(pb::DeleteMessage {
        conversation: Some(conv),
        msg_id,
    })
}

fn mark_read_packet(conv: pb::Conversation, up_to_seq: u64) -> Packet {
    Packet::MarkRead(pb::MarkRead {
        conversation: Some(conv),
        up_to_seq,
    })
}

fn login_body(token: String, device: &str) -> Packet {
    Packet::Login(pb::Login {
        token,
        device_id: device.to_owned(),
        platform: pb::Platform::Ios as i32,
        last_version: 0,
        client_version: "authz-test".into(),
        ..Default::default()
    })
}

#[tokio::test]
async fn a_send_is_stored_as_the_token_user_whatever_its_body_claims() {
    let server = TestServer::start().await;
    let mut carol = Member::login(&server, "carol", "phone").await;
    let bob_before = account(&server, "bob").await;
    let (mut alice, _) = server.login("alice", "phone").await;

    // SEND {to: carol} with "bob" in every field the protocol does not define, inside `to` too.
    let mut to = dmc("carol").encode_to_vec();
    to.extend(claims("bob"));
    let mut body = pb::Send {
        client_msg_id: "forged-1".into(),
        to: None,
        content_type: 1,
        content: b"who sent this?".to_vec(),
        ..Default::default()
    }
    .encode_to_vec();
    prost::encoding::bytes::encode(2, &to, &mut body);
    body.extend(claims("bob"));
    let ack = match raw_request(&mut alice, Command::Send, &body).await {
        Packet::SendAck(a) => a,
        other => panic!("expected SEND_ACK, got {other:?}"),
    };
    assert!(!ack.duplicate);

    // Carol sees it from alice, in her conversation with alice, pushed and synced alike.
    let pushed = carol.next().await;
    let m = message_of(&pushed);
    assert_eq!(m.from_user, "alice");
    assert_eq!(m.msg_id, ack.msg_id);
    assert_eq!(pushed.conversation, Some(dmc("alice")));
    assert_eq!(m.conversation, Some(dmc("alice")));
    let carol_view = account(&server, "carol").await;
    assert_eq!(carol_view.entries.len(), 1);
    assert_eq!(message_of(&carol_view.entries[0]).from_user, "alice");
    assert_eq!(
        carol_view.contacts[0].conversation,
        Some(dmc("alice")),
        "carol's contact is alice"
    );
    assert_eq!(carol_view.unread.total, 1);
    // Alice's own copy is in her conversation with carol.
    let alice_view = account(&server, "alice").await;
    assert_eq!(alice_view.entries.len(), 1);
    assert_eq!(alice_view.entries[0].conversation, Some(dmc("carol")));
    assert_eq!(message_of(&alice_view.entries[0]).from_user, "alice");
    // Bob, whose name the body carried, has nothing.
    assert_eq!(account(&server, "bob").await, bob_before);

    // Dedup is per sender: mallory reusing alice's client_msg_id gets a message of her own,
    // not alice's ack.
    let (mut mallory, _) = server.login("mallory", "laptop").await;
    let reuse = e2e::send_body("forged-1", "carol", b"mine");
    let ack2 = match e2e::request(&mut mallory, Packet::Send(reuse)).await {
        Packet::SendAck(a) => a,
        other => panic!("expected SEND_ACK, got {other:?}"),
    };
    assert!(
        !ack2.duplicate,
        "another sender's client_msg_id is not a duplicate"
    );
    assert_ne!(ack2.msg_id, ack.msg_id);
    assert_eq!(message_of(&carol.next().await).from_user, "mallory");

    // A direct message to oneself is refused and stores nothing.
    let (code, fatal) = e2e::request_err(
        &mut alice,
        Packet::Send(e2e::send_body("self", "alice", b"x")),
    )
    .await;
    assert_eq!((code, fatal), (ErrorCode::InvalidArgument, false));
    assert_eq!(account(&server, "alice").await, alice_view);
    check_store(&server, &["alice", "bob", "carol", "mallory"]);
    server.stop().await;
}

#[tokio::test]
async fn a_direct_conversation_between_two_others_is_out_of_reach() {
    let server = TestServer::start().await;
    let mut alice = Member::login(&server, "alice", "phone").await;
    let mut bob = Member::login(&server, "bob", "phone").await;
    let a1 = alice.send_to(dmc("bob"), "a1").await;
    bob.next().await;
    alice.send_to(dmc("bob"), "a2").await;
    bob.next().await;
    let b1 = bob.send_to(dmc("alice"), "b1").await;
    alice.next().await;
    // Bob's reply read a1 and a2; a3 is unread.
    alice.send_to(dmc("bob"), "a3").await;
    bob.next().await;
    let alice_before = account(&server, "alice").await;
    let bob_before = account(&server, "bob").await;
    assert_eq!(bob_before.unread.total, 1);

    let mut mallory = Member::login(&server, "mallory", "laptop").await;
    // Mallory can only name her own conversations with alice or bob, which do not exist.
    for peer in ["alice", "bob"] {
        for msg_id in [a1.msg_id, b1.msg_id, 12345] {
            let code = mallory.refused(recall_packet(dmc(peer), msg_id)).await;
            assert_eq!(code, ErrorCode::NotFound, "RECALL {peer} {msg_id}");
            let code = mallory.refused(delete_packet(dmc(peer), msg_id)).await;
            assert_eq!(code, ErrorCode::NotFound, "DELETE {peer} {msg_id}");
        }
        for up_to in [1, u64::MAX] {
            let code = mallory.refused(mark_read_packet(dmc(peer), up_to)).await;
            assert_eq!(code, ErrorCode::NotFound, "MARK_READ {peer} {up_to}");
        }
        // Named as a group: no such group.
        let code = mallory.refused(recall_packet(grp(peer), a1.msg_id)).await;
        assert_eq!(code, ErrorCode::NotFound, "RECALL as group {peer}");
        let code = mallory.refused(delete_packet(grp(peer), a1.msg_id)).await;
        assert_eq!(code, ErrorCode::NotFound, "DELETE as group {peer}");
        let code = mallory.refused(Member::history_packet(peer, 0, 0, 0)).await;
        assert_eq!(code, ErrorCode::NotFound, "GROUP_HISTORY {peer}");
    }
    // Mallory's own view is empty.
    let m = account(&server, "mallory").await;
    assert_eq!(m.current_version, 0);
    assert!(m.entries.is_empty() && m.contacts.is_empty() && m.groups.is_empty());
    assert_eq!(m.unread.total, 0);

    // Inside the conversation, only the sender recalls.
    let code = bob.refused(recall_packet(dmc("alice"), a1.msg_id)).await;
    assert_eq!(
        code,
        ErrorCode::Forbidden,
        "the recipient recalls the sender's message"
    );
    let code = alice.refused(recall_packet(dmc("bob"), b1.msg_id)).await;
    assert_eq!(code, ErrorCode::Forbidden);

    alice.quiet(QUIET).await;
    bob.quiet(QUIET).await;
    assert_eq!(account(&server, "alice").await, alice_before);
    assert_eq!(account(&server, "bob").await, bob_before);
    check_store(&server, &["alice", "bob", "mallory"]);
    server.stop().await;
}

#[tokio::test]
async fn a_non_member_can_neither_read_nor_change_a_group() {
    // Recall window 0: every message is past it at once, so a refusal for lack of membership
    // (NOT_FOUND: to a non-member the group does not exist) is told apart from one for time
    // (RECALL_WINDOW_EXPIRED).
    let server = TestServer::start_with(|c| c.recall_window_secs = 0).await;
    let mut alice = Member::login(&server, "alice", "phone").await;
    let mut bob = Member::login(&server, "bob", "phone").await;
    let g = alice
        .create("team", &["bob"], pb::HistoryVisibility::Full)
        .await
        .group_id;
    bob.next().await;
    let m1 = alice.send(&g, "secret 1").await;
    bob.next().await;
    bob.send(&g, "secret 2").await;
    for m in [&mut alice, &mut bob] {
        m.drain(QUIET).await;
    }
    let alice_before = account(&server, "alice").await;
    let bob_before = account(&server, "bob").await;
    let members_before = alice.members(&g).await;
    tokio::time::sleep(Duration::from_millis(5)).await;

    let mut mallory = Member::login(&server, "mallory", "laptop").await;
    let refused = [
        ("GROUP_HISTORY newest", Member::history_packet(&g, 0, 0, 0)),
        ("GROUP_HISTORY after", Member::history_packet(&g, 0, 1, 0)),
        ("GROUP_MEMBERS", Member::members_packet(&g)),
        ("SEND", Member::send_packet(&g, "let me in")),
        ("MARK_READ", mark_read_packet(grp(&g), 100)),
        ("RECALL a message", recall_packet(grp(&g), m1.msg_id)),
        ("RECALL no message", recall_packet(grp(&g), 12345)),
        ("DELETE a message", delete_packet(grp(&g), m1.msg_id)),
        ("DELETE no message", delete_packet(grp(&g), 12345)),
        ("remove a member", Member::leave_packet(&g, "bob")),
        ("add a member", Member::join_packet(&g, &["carol"])),
        ("join by itself", Member::join_packet(&g, &[])),
        ("leave", Member::leave_packet(&g, "")),
    ];
    // Exactly what an unknown group id gets, request by request.
    for (what, packet) in refused {
        let unknown = match &packet {
            Packet::GroupHistory(h) => Packet::GroupHistory(pb::GroupHistory {
                group_id: "gffffffffffffffffffffffffffffffff".into(),
                ..h.clone()
            }),
            other => {
                let mut body = other.clone().encode_body();
                let bytes = body.windows(g.len()).position(|w| w == g.as_bytes());
                let at = bytes.expect("the group id is in the body");
                body[at..at + g.len()].copy_from_slice(b"gffffffffffffffffffffffffffffffff");
                Packet::decode_body(other.command(), &body).expect("same body, other id")
            }
        };
        let (code, other) = (
            mallory.refused(packet).await,
            mallory.refused(unknown).await,
        );
        assert_eq!(
            (code, other),
            (ErrorCode::NotFound, ErrorCode::NotFound),
            "{what}"
        );
    }

    // A plain member cannot recall another member's message: FORBIDDEN, whatever its age.
    let code = bob.refused(recall_packet(grp(&g), m1.msg_id)).await;
    assert_eq!(code, ErrorCode::Forbidden);

    mallory.quiet(QUIET).await;
    let m = account(&server, "mallory").await;
    assert!(m.entries.is_empty() && m.groups.is_empty() && m.contacts.is_empty());
    assert_eq!(m.unread.total, 0);
    alice.quiet(QUIET).await;
    bob.quiet(QUIET).await;
    assert_eq!(account(&server, "alice").await, alice_before);
    assert_eq!(account(&server, "bob").await, bob_before);
    assert_eq!(alice.members(&g).await, members_before);
    check_store(&server, &["alice", "bob", "mallory"]);
    server.stop().await;
}

/// Carol leaves a three-member group; afterwards she gets nothing from it and may do nothing
/// in it, and her attempts change nothing for the others.
async fn a_member_who_left_is_cut_off(fanout_threshold: usize) {
    let server = TestServer::start_with(|c| c.fanout_threshold = fanout_threshold).await;
    let mut alice = Member::login(&server, "alice", "phone").await;
    let mut bob = Member::login(&server, "bob", "phone").await;
    let mut carol = Member::login(&server, "carol", "phone").await;
    let info = alice
        .create("team", &["bob", "carol"], pb::HistoryVisibility::Full)
        .await;
    let g = info.group_id;
    let c1 = carol.send(&g, "carol was here").await;
    alice.send(&g, "before carol left").await;
    let unread = match carol.request(Packet::Unread(pb::Unread::default())).await {
        Packet::UnreadAck(a) => a.total,
        other => panic!("expected UNREAD_ACK, got {other:?}"),
    };
    assert_eq!(unread, 1, "while a member, carol counts alice's message");
    let left = carol.leave(&g, "").await;
    assert_eq!(left.member_count, 2);
    carol.catch_up().await;
    for m in [&mut alice, &mut bob, &mut carol] {
        m.drain(QUIET).await;
        m.clear_notifies();
    }
    let carol_held = carol.held;

    alice.send(&g, "after carol left").await;
    let seen = bob.drain(QUIET).await.len() + bob.clear_notifies().len();
    assert!(seen > 0, "bob hears of the new message");
    carol.quiet(QUIET).await;

    let alice_before = account(&server, "alice").await;
    let bob_before = account(&server, "bob").await;
    // A former member is a non-member: the group does not exist for her.
    let refused = [
        ("GROUP_HISTORY newest", Member::history_packet(&g, 0, 0, 0)),
        (
            "GROUP_HISTORY after",
            Member::history_packet(&g, 0, c1.seq, 0),
        ),
        ("GROUP_MEMBERS", Member::members_packet(&g)),
        ("SEND", Member::send_packet(&g, "still here?")),
        ("MARK_READ", mark_read_packet(grp(&g), u64::MAX)),
        ("RECALL her own message", recall_packet(grp(&g), c1.msg_id)),
        ("DELETE her own message", delete_packet(grp(&g), c1.msg_id)),
        ("remove a member", Member::leave_packet(&g, "bob")),
        ("join again by herself", Member::join_packet(&g, &[])),
    ];
    for (what, packet) in refused {
        assert_eq!(carol.refused(packet).await, ErrorCode::NotFound, "{what}");
    }
    let code = carol.refused(Member::leave_packet(&g, "")).await;
    assert_eq!(code, ErrorCode::NotFound, "leaving twice");

    carol.quiet(QUIET).await;
    let c = account(&server, "carol").await;
    assert_eq!(
        c.current_version, carol_held,
        "no entry after her LEFT event"
    );
    assert!(c.groups.is_empty(), "{:?}", c.groups);
    assert_eq!(c.unread.total, 0, "{:?}", c.unread);
    alice.quiet(QUIET).await;
    bob.quiet(QUIET).await;
    assert_eq!(account(&server, "alice").await, alice_before);
    assert_eq!(account(&server, "bob").await, bob_before);
    let history = bob.history(&g, 0, 0, 0).await;
    let kept = history
        .messages
        .iter()
        .find(|m| m.msg_id == c1.msg_id)
        .expect("carol's message stays in the history");
    assert!(!kept.recalled);
    assert_eq!(kept.content, b"carol was here");
    check_store(&server, &["alice", "bob", "carol"]);
    server.stop().await;
}

#[tokio::test]
async fn a_member_who_left_a_write_fanout_group_is_cut_off() {
    a_member_who_left_is_cut_off(100).await;
}

#[tokio::test]
async fn a_member_who_left_a_read_fanout_group_is_cut_off() {
    a_member_who_left_is_cut_off(1).await;
}

#[tokio::test]
async fn inbox_unread_and_contacts_are_only_the_token_users_own() {
    let server = TestServer::start().await;
    let mut alice = Member::login(&server, "alice", "phone").await;
    let mut dave = Member::login(&server, "dave", "phone").await;
    alice.send_to(dmc("bob"), "to bob").await;
    dave.send_to(dmc("bob"), "to bob too").await;
    let bob_before = account(&server, "bob").await;
    assert_eq!(bob_before.unread.total, 2);
    assert_eq!(bob_before.contacts.len(), 2);
    let bob_cursor = {
        let (mut bob, _) = server.login("bob", "tablet").await;
        match e2e::request(
            &mut bob,
            Packet::Contacts(pb::Contacts {
                cursor: Vec::new(),
                limit: 1,
            }),
        )
        .await
        {
            Packet::ContactsAck(a) => a.next_cursor,
            other => panic!("expected CONTACTS_ACK, got {other:?}"),
        }
    };
    assert!(!bob_cursor.is_empty());

    let (mut mallory, login) = server.login("mallory", "laptop").await;
    assert_eq!(
        (login.user_id.as_str(), login.current_version),
        ("mallory", 0)
    );
    assert_eq!(login.unread_total, 0);
    // Each read, with bodies that name bob in fields the protocol does not define.
    let mut sync = pb::Sync {
        since_version: 0,
        limit: 0,
    }
    .encode_to_vec();
    sync.extend(claims("bob"));
    match raw_request(&mut mallory, Command::Sync, &sync).await {
        Packet::SyncAck(a) => {
            assert!(a.entries.is_empty(), "{a:?}");
            assert_eq!(a.current_version, 0);
        }
        other => panic!("expected SYNC_ACK, got {other:?}"),
    }
    match raw_request(&mut mallory, Command::Unread, &claims("bob")).await {
        Packet::UnreadAck(a) => assert_eq!(a, pb::UnreadAck::default()),
        other => panic!("expected UNREAD_ACK, got {other:?}"),
    }
    match raw_request(&mut mallory, Command::GroupList, &claims("bob")).await {
        Packet::GroupListAck(a) => assert!(a.groups.is_empty()),
        other => panic!("expected GROUP_LIST_ACK, got {other:?}"),
    }
    // CONTACTS, first page and with the cursor bob's own paging returned.
    for cursor in [Vec::new(), bob_cursor] {
        let mut body = pb::Contacts { cursor, limit: 0 }.encode_to_vec();
        body.extend(claims("bob"));
        match raw_request(&mut mallory, Command::Contacts, &body).await {
            Packet::ContactsAck(a) => assert_eq!(a, pb::ContactsAck::default()),
            other => panic!("expected CONTACTS_ACK, got {other:?}"),
        }
    }
    assert_eq!(account(&server, "bob").await, bob_before);
    check_store(&server, &["alice", "bob", "dave", "mallory"]);
    server.stop().await;
}

#[tokio::test]
async fn acking_pushes_never_sent_to_it_changes_nothing_for_others() {
    let server = TestServer::start_with(|c| c.ack_timeout_ms = 300).await;
    let (mut alice, _) = server.login("alice", "phone").await;
    let (mut bob, _) = server.login("bob", "phone").await;
    let (mut mallory, _) = server.login("mallory", "laptop").await;
    raw_send(&mut alice, "bob", "for bob").await;
    let (_, first) = recv_push(&mut bob).await;
    assert_eq!(first.version, 1);
    let bob_before = account(&server, "bob").await;

    // Mallory acknowledges bob's version, everything, and nothing. PUSH_ACK has no reply.
    for v in [1, u64::MAX, 0] {
        mallory.push_ack(v).await.unwrap();
    }
    // Bob's push is still unacknowledged: it comes again, flagged as a retransmit.
    let (frame, again) = recv_push(&mut bob).await;
    assert!(frame.flags.retransmit(), "{:?}", frame.flags);
    assert_eq!(again.version, 1);
    bob.push_ack(1).await.unwrap();
    // Mallory got no reply and her session goes on; bob's ack ended his retransmits.
    expect_silence(&mut mallory, QUIET).await;
    heartbeat_ok(&mut mallory, 1).await;
    expect_silence(&mut bob, Duration::from_millis(800)).await;
    assert_eq!(account(&server, "bob").await, bob_before);

    // Mallory's ack of "everything" covered nothing to come: her own push is retransmitted.
    raw_send(&mut alice, "mallory", "for mallory").await;
    let (frame, p) = recv_push(&mut mallory).await;
    assert!(!frame.flags.retransmit());
    let (frame, p2) = recv_push(&mut mallory).await;
    assert!(frame.flags.retransmit(), "unacked push comes again");
    assert_eq!(p2.version, p.version);
    mallory.push_ack(p.version).await.unwrap();
    check_store(&server, &["alice", "bob", "mallory"]);
    server.stop().await;
}

#[tokio::test]
async fn expired_and_badly_signed_tokens_are_refused_at_login() {
    let server = TestServer::start().await;
    let secret = SECRET.as_bytes();
    let later = now_s() + 3600;
    let good = mint(secret, "alice", "phone", later);
    let parts: Vec<&str> = good.split('.').collect();
    // The base64url of an id, as the token's first two parts carry it.
    let b64 = |s: &str| mint(b"k", s, "d", 1).split('.').next().unwrap().to_owned();
    let with = |i: usize, part: &str| {
        let mut p: Vec<String> = parts.iter().map(|s| s.to_string()).collect();
        p[i] = part.to_owned();
        p.join(".")
    };
    let mut flipped = parts[3].as_bytes().to_vec();
    flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
    let flipped = with(3, std::str::from_utf8(&flipped).unwrap());
    let bobs_sig = mint(secret, "bob", "phone", later);
    let bobs_sig = with(3, bobs_sig.rsplit('.').next().unwrap());
    let expired = mint(secret, "alice", "phone", now_s() - 10);
    let extended = {
        let p: Vec<&str> = expired.split('.').collect();
        format!("{}.{}.{}.{}", p[0], p[1], later, p[3])
    };
    let parts_of_device = |d: &str| mint(b"k", "u", d, 1).split('.').nth(1).unwrap().to_owned();
    use ErrorCode::{AuthFailed, TokenExpired};
    let cases: Vec<(&str, String, &str, ErrorCode)> = vec![
        ("expired", expired.clone(), "phone", TokenExpired),
        (
            "expires now",
            mint(secret, "alice", "phone", now_s()),
            "phone",
            TokenExpired,
        ),
        (
            "expires 0",
            mint(secret, "alice", "phone", 0),
            "phone",
            TokenExpired,
        ),
        (
            "wrong secret",
            mint(b"another-secret", "alice", "phone", later),
            "phone",
            AuthFailed,
        ),
        (
            "expired, wrong secret",
            mint(b"another-secret", "alice", "phone", now_s() - 10),
            "phone",
            AuthFailed,
        ),
        ("user swapped", with(0, &b64("bob")), "phone", AuthFailed),
        (
            "device swapped",
            with(1, &parts_of_device("tablet")),
            "tablet",
            AuthFailed,
        ),
        ("expiry extended", extended, "phone", AuthFailed),
        ("signature bit flipped", flipped, "phone", AuthFailed),
        ("another token's signature", bobs_sig, "phone", AuthFailed),
        (
            "last character cut",
            good[..good.len() - 1].to_owned(),
            "phone",
            AuthFailed,
        ),
        (
            "cut in half",
            good[..good.len() / 2].to_owned(),
            "phone",
            AuthFailed,
        ),
        ("no signature", parts[..3].join("."), "phone", AuthFailed),
        ("empty", String::new(), "phone", AuthFailed),
        ("dots", "....".into(), "phone", AuthFailed),
        ("garbage", "not-a-token".into(), "phone", AuthFailed),
        // Within the login cap (a longer LOGIN is refused from its length: FRAME_TOO_LARGE).
        ("long garbage", "A.".repeat(1900), "phone", AuthFailed),
        ("valid token, no device", good.clone(), "", AuthFailed),
    ];
    for (what, token, device, code) in cases {
        let mut conn = server.connect().await;
        let rid = conn.send_packet(login_body(token, device)).await.unwrap();
        let (got_rid, e) = expect_error(&mut conn).await;
        assert_eq!(ErrorCode::from_u32(e.code), Some(code), "{what}: {e:?}");
        assert!(e.fatal, "{what}: fatal");
        assert_eq!(got_rid, rid, "{what}: request id");
        expect_closed(&mut conn, e2e::WAIT).await;
    }

    // A SEND pipelined behind a refused LOGIN fails with it: one ERROR, then the close.
    let mut conn = server.connect().await;
    let mut bytes = Frame::new(&login_body(with(0, &b64("bob")), "phone"), 1)
        .to_bytes()
        .to_vec();
    let send = Packet::Send(e2e::send_body("pipelined", "carol", b"x"));
    bytes.extend_from_slice(&Frame::new(&send, 2).to_bytes());
    conn.write_raw(&bytes).await.unwrap();
    let (rid, e) = expect_error(&mut conn).await;
    assert_eq!((rid, ErrorCode::from_u32(e.code)), (1, Some(AuthFailed)));
    expect_closed(&mut conn, e2e::WAIT).await;

    assert_eq!(server.handle().online_sessions(), 0);
    let store = server.handle().store();
    for u in ["alice", "bob", "carol"] {
        assert_eq!(
            store.core().current_version(u).unwrap(),
            0,
            "{u} has nothing stored"
        );
    }
    // The genuine token still works.
    let mut conn = server.connect().await;
    let ack = conn.login(&good, "phone", 0).await.unwrap();
    assert_eq!(ack.user_id, "alice");
    server.stop().await;
}

#[tokio::test]
async fn a_token_for_one_user_cannot_log_in_as_a_device_of_another() {
    let server = TestServer::start().await;
    let (mut carol, _) = server.login("carol", "phone").await;
    let (mut bob_phone, _) = server.login("bob", "phone").await;
    let (mut bob_tablet, _) = server.login("bob", "b-tablet").await;
    raw_send(&mut carol, "bob", "for bob").await;
    for d in [&mut bob_phone, &mut bob_tablet] {
        let (_, p) = recv_push(d).await;
        d.push_ack(p.version).await.unwrap();
    }
    let bob_before = account(&server, "bob").await;

    // Alice's token names her device; claiming bob's device id is refused.
    let mut conn = server.connect().await;
    let rid = conn
        .send_packet(login_body(server.token("alice", "a-phone"), "b-tablet"))
        .await
        .unwrap();
    e2e::expect_fatal(&mut conn, rid, ErrorCode::AuthFailed).await;

    // Alice on a device with the same name as bob's is alice, and bob's device stays.
    let (mut alice_phone, ack) = server.login("alice", "phone").await;
    assert_eq!(ack.user_id, "alice");
    assert_eq!((ack.current_version, ack.unread_total), (0, 0));
    // A LOGIN body that names bob in undefined fields logs in alice all the same.
    let mut body = pb::Login {
        token: server.token("alice", "tablet"),
        device_id: "tablet".into(),
        platform: 0,
        last_version: 0,
        client_version: String::new(),
        ..Default::default()
    }
    .encode_to_vec();
    body.extend(claims("bob"));
    let mut alice_tablet = server.connect().await;
    match raw_request(&mut alice_tablet, Command::Login, &body).await {
        Packet::LoginAck(a) => assert_eq!((a.user_id.as_str(), a.current_version), ("alice", 0)),
        other => panic!("expected LOGIN_ACK, got {other:?}"),
    }

    for d in [&mut bob_phone, &mut bob_tablet] {
        expect_silence(d, QUIET).await;
        heartbeat_ok(d, 7).await;
    }
    // New messages for bob reach bob's two devices and none of alice's.
    raw_send(&mut carol, "bob", "again").await;
    for d in [&mut bob_phone, &mut bob_tablet] {
        let (_, p) = recv_push(d).await;
        assert_eq!(p.version, bob_before.current_version + 1);
        d.push_ack(p.version).await.unwrap();
    }
    for d in [&mut alice_phone, &mut alice_tablet] {
        expect_silence(d, QUIET).await;
    }
    assert_eq!(account(&server, "alice").await.current_version, 0);
    check_store(&server, &["alice", "bob", "carol"]);
    server.stop().await;
}
