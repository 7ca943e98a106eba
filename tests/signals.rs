//! End to end: ephemeral signals (SIGNAL -> SIGNAL_NOTIFY, PROTOCOL.md 26). Relayed to the
//! other members' online devices and to nobody else; never stored, counted or acknowledged;
//! written in place to parked sessions without waking them; not sent to background devices;
//! over the sender's rate dropped without
//! costing anyone the connection; refused with the documented codes.

mod common;
mod e2e;

use std::time::Duration;

use common::observe::{account, check_store};
use common::*;
use e2e::*;
use missive_client::{pb, Connection};
use missive_protocol::{ErrorCode, Packet};

fn signal(to: pb::Conversation, kind: pb::SignalKind, payload: &[u8]) -> Packet {
    Packet::Signal(pb::Signal {
        to: Some(to),
        kind: kind as i32,
        payload: payload.to_vec(),
    })
}

fn typing(to: &str) -> Packet {
    signal(dm(to), pb::SignalKind::Typing, b"")
}

/// The next frame must be a SIGNAL_NOTIFY (request id 0).
async fn expect_signal(conn: &mut Connection) -> pb::SignalNotify {
    let (frame, packet) = recv(conn).await;
    let Packet::SignalNotify(n) = packet else {
        panic!("expected SIGNAL_NOTIFY, got {packet:?}");
    };
    assert_eq!(frame.request_id, 0, "SIGNAL_NOTIFY carries request id 0");
    n
}

/// Sends a SIGNAL that must be accepted: it gets no reply, so the HEARTBEAT sent behind it is
/// the first thing answered.
async fn signal_accepted(conn: &mut Connection, packet: Packet) {
    conn.send_packet(packet).await.expect("SIGNAL written");
    heartbeat_ok(conn, 1).await;
}

async fn group_create(conn: &mut Connection, members: Vec<String>) -> String {
    let body = pb::GroupCreate {
        name: "signals".into(),
        members,
        history: 0,
        join_policy: 0,
    };
    match request(conn, Packet::GroupCreate(body)).await {
        Packet::GroupCreateAck(a) => a.group.expect("group").group_id,
        other => panic!("expected GROUP_CREATE_ACK, got {other:?}"),
    }
}

#[tokio::test]
async fn typing_reaches_the_other_side_only_and_nothing_is_stored() {
    // Never parked: this test is about who gets what, not about parking.
    let server = TestServer::start_with(|c| c.park_idle_ms = 0).await;
    let (mut alice, _) = server.login("alice", "phone").await;
    let (mut alice_tablet, _) = server.login("alice", "tablet").await;
    // Something stored before, so that "unchanged" is not trivially "empty".
    raw_send(&mut alice, "bob", "hello").await;
    let (mut bob, _) = server.login("bob", "phone").await;
    let (_, push) = recv_push(&mut alice_tablet).await;
    alice_tablet.push_ack(push.version).await.unwrap();
    let bob_before = account(&server, "bob").await;
    let alice_before = account(&server, "alice").await;

    signal_accepted(&mut alice, typing("bob")).await;
    let n = expect_signal(&mut bob).await;
    assert_eq!(n.from_user, "alice");
    assert_eq!(n.kind, pb::SignalKind::Typing as i32);
    assert_eq!(n.conversation, Some(dm("alice")), "as bob sees it");
    assert!(n.payload.is_empty());
    signal_accepted(&mut alice, typing("bob")).await;
    let n = expect_signal(&mut bob).await;
    assert_eq!(n.kind, pb::SignalKind::Typing as i32);
    let stopped = signal(dm("bob"), pb::SignalKind::TypingStopped, b"");
    signal_accepted(&mut alice, stopped).await;
    assert_eq!(
        expect_signal(&mut bob).await.kind,
        pb::SignalKind::TypingStopped as i32
    );
    let app = signal(dm("bob"), pb::SignalKind::App, b"recording-audio");
    signal_accepted(&mut alice, app).await;
    let n = expect_signal(&mut bob).await;
    assert_eq!(n.kind, pb::SignalKind::App as i32);
    assert_eq!(n.payload, b"recording-audio");

    // The sender's other device gets nothing, and no push follows for anyone.
    expect_silence(&mut alice_tablet, Duration::from_millis(200)).await;
    expect_silence(&mut bob, Duration::from_millis(100)).await;
    // Nothing stored: inbox versions, entries, unread counts and contacts are as before.
    assert_eq!(account(&server, "bob").await, bob_before);
    assert_eq!(account(&server, "alice").await, alice_before);
    check_store(&server, &["alice", "bob"]);
    server.stop().await;
}

/// A parked device (idle on the server) gets the signal written straight to its socket by
/// the relaying thread: it arrives, and the session is not woken (no task revived for it) and
/// stays parked; a message afterwards still reaches it. Over plain TCP (the parker's socket) and
/// over a WebSocket (a stream parked with tokio).
#[tokio::test]
async fn a_parked_device_gets_the_signal_in_place_without_being_woken() {
    let server = TestServer::start_with(|c| c.park_idle_ms = 50).await;
    let (bob, _) = server.login("bob", "phone").await;
    let mut bob_ws = Connection::connect(&format!("ws://{}/ws", server.addr))
        .await
        .expect("WebSocket connects");
    bob_ws
        .login(&server.token("bob", "tablet"), "tablet", 0)
        .await
        .expect("login");
    let mut bob = bob;
    let (mut alice, _) = server.login("alice", "phone").await;
    server.wait_parked(3).await;
    let metrics = server.handle().metrics();
    let revived = metrics.sessions_revived.get();

    // Alice's own bytes wake her session (one revival); Bob's two stay parked.
    signal_accepted(&mut alice, typing("bob")).await;
    for conn in [&mut bob, &mut bob_ws] {
        let got = expect_signal(conn).await;
        assert_eq!(got.from_user, "alice");
        assert_eq!(got.kind, pb::SignalKind::Typing as i32);
    }
    assert_eq!(metrics.signals_relayed.get(), 2);
    assert_eq!(metrics.signals_dropped.get(), 0);
    server.wait_parked(3).await;
    assert_eq!(
        metrics.sessions_revived.get(),
        revived + 1,
        "only alice's session was served again"
    );
    expect_silence(&mut bob, Duration::from_millis(200)).await;
    assert_eq!(metrics.sessions_revived.get(), revived + 1);

    // A message still wakes bob, and the push is the first thing he gets next.
    let sent = raw_send(&mut alice, "bob", "are you there").await;
    let (_, push) = recv_push(&mut bob).await;
    assert_eq!(message(pushed(&push)).msg_id, sent.msg_id);
    server.stop().await;
}

/// A device in the background (PROTOCOL.md 11.2) gets no signals: its user is not looking.
#[tokio::test]
async fn a_background_device_gets_no_signal() {
    let server = TestServer::start_with(|c| c.park_idle_ms = 0).await;
    let mut bob = server.connect().await;
    bob.login_with(pb::Login {
        token: server.token("bob", "phone"),
        device_id: "phone".into(),
        background: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let (mut alice, _) = server.login("alice", "phone").await;
    signal_accepted(&mut alice, typing("bob")).await;
    expect_silence(&mut bob, Duration::from_millis(300)).await;
    assert_eq!(server.handle().metrics().signals_dropped.get(), 1);
    server.stop().await;
}

#[tokio::test]
async fn over_the_rate_signals_are_dropped_and_the_connection_stays() {
    let server = TestServer::start_with(|c| c.park_idle_ms = 0).await;
    let (mut alice, _) = server.login("alice", "phone").await;
    let (mut bob, _) = server.login("bob", "phone").await;
    let (mut carol, _) = server.login("carol", "phone").await;
    let (mut dave, _) = server.login("dave", "phone").await;

    // 50 at once: the burst (10) passes, the rest (but what refills meanwhile) is dropped.
    for _ in 0..50 {
        alice.feed_packet(typing("bob")).await.unwrap();
    }
    alice.flush().await.unwrap();
    // The honest pair next to the flood is not affected.
    signal_accepted(&mut carol, typing("dave")).await;
    assert_eq!(expect_signal(&mut dave).await.from_user, "carol");
    // Alice is still connected and answered, with no ERROR for the dropped signals.
    heartbeat_ok(&mut alice, 2).await;
    let mut got = 0;
    while let Ok(Ok(Some(frame))) =
        tokio::time::timeout(Duration::from_millis(300), bob.recv_frame()).await
    {
        assert_eq!(command_name(&frame), "SIGNAL_NOTIFY");
        got += 1;
    }
    let metrics = server.handle().metrics();
    let dropped = metrics.signals_rate_limited.get();
    assert!((10..=15).contains(&got), "bob got {got} of 50");
    assert_eq!(got + dropped, 50, "relayed {got}, rate-limited {dropped}");
    // Messages are not limited by the signal rate.
    let sent = raw_send(&mut alice, "bob", "still here").await;
    let (_, push) = recv_push(&mut bob).await;
    assert_eq!(message(pushed(&push)).msg_id, sent.msg_id);
    server.stop().await;
}

#[tokio::test]
async fn group_members_get_a_group_signal_and_others_are_refused() {
    let server = TestServer::start_with(|c| c.park_idle_ms = 0).await;
    let (mut alice, _) = server.login("alice", "phone").await;
    let (mut bob, _) = server.login("bob", "phone").await;
    let (mut carol, _) = server.login("carol", "phone").await;
    let (mut eve, _) = server.login("eve", "phone").await;
    let group_id = group_create(&mut alice, vec!["bob".into(), "carol".into()]).await;
    // The group's creation event reaches the members (and the creator) first.
    recv_push(&mut alice).await;
    recv_push(&mut bob).await;
    recv_push(&mut carol).await;

    let to = missive_client::group(&group_id);
    signal_accepted(&mut alice, signal(to.clone(), pb::SignalKind::Typing, b"")).await;
    for member in [&mut bob, &mut carol] {
        let n = expect_signal(member).await;
        assert_eq!(n.from_user, "alice");
        assert_eq!(n.conversation, Some(to.clone()));
    }
    expect_silence(&mut alice, Duration::from_millis(100)).await;

    // Not a member: the same answer as for a group that does not exist.
    let (code, fatal) =
        request_err(&mut eve, signal(to.clone(), pb::SignalKind::Typing, b"")).await;
    assert_eq!((code, fatal), (ErrorCode::NotFound, false));
    let nowhere = missive_client::group("g00000000000000000000000000000000");
    let (code, _) = request_err(&mut eve, signal(nowhere, pb::SignalKind::Typing, b"")).await;
    assert_eq!(code, ErrorCode::NotFound);
    expect_silence(&mut bob, Duration::from_millis(100)).await;

    // A group past the relay limit: refused, nothing relayed.
    let many = (0..100).map(|i| format!("m{i}")).collect();
    let big = group_create(&mut alice, many).await;
    let (code, _) = request_err(
        &mut alice,
        signal(missive_client::group(&big), pb::SignalKind::Typing, b""),
    )
    .await;
    assert_eq!(code, ErrorCode::LimitExceeded);
    server.stop().await;
}

#[tokio::test]
async fn bad_signals_get_the_documented_errors_and_the_connection_stays() {
    let server = TestServer::start_with(|c| c.park_idle_ms = 0).await;
    let (mut alice, _) = server.login("alice", "phone").await;
    let (mut bob, _) = server.login("bob", "phone").await;
    let cases = [
        (
            "payload on TYPING",
            signal(dm("bob"), pb::SignalKind::Typing, b"x"),
            ErrorCode::InvalidArgument,
        ),
        (
            "APP payload over 256 bytes",
            signal(dm("bob"), pb::SignalKind::App, &[7; 257]),
            ErrorCode::ContentTooLarge,
        ),
        (
            "APP without payload",
            signal(dm("bob"), pb::SignalKind::App, b""),
            ErrorCode::InvalidArgument,
        ),
        (
            "kind UNSPECIFIED",
            signal(dm("bob"), pb::SignalKind::Unspecified, b""),
            ErrorCode::InvalidArgument,
        ),
        (
            "unknown kind",
            Packet::Signal(pb::Signal {
                to: Some(dm("bob")),
                kind: 9,
                payload: Vec::new(),
            }),
            ErrorCode::InvalidArgument,
        ),
        (
            "direct to oneself",
            typing("alice"),
            ErrorCode::InvalidArgument,
        ),
        (
            "no conversation",
            Packet::Signal(pb::Signal {
                to: None,
                kind: pb::SignalKind::Typing as i32,
                payload: Vec::new(),
            }),
            ErrorCode::InvalidArgument,
        ),
        ("empty recipient", typing(""), ErrorCode::InvalidArgument),
    ];
    for (what, packet, want) in cases {
        let (code, fatal) = request_err(&mut alice, packet).await;
        assert_eq!(code, want, "{what}");
        assert!(!fatal, "{what}: not fatal");
    }
    // At most 256 bytes passes.
    let app = signal(dm("bob"), pb::SignalKind::App, &[7; 256]);
    signal_accepted(&mut alice, app).await;
    assert_eq!(expect_signal(&mut bob).await.payload.len(), 256);
    expect_silence(&mut bob, Duration::from_millis(100)).await;
    server.stop().await;
}
