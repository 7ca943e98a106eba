//! End to end: idle sessions are parked (no task, timer or buffers; `park_idle_ms`) and served
//! again, as if they had never been, by whatever wakes them: a push or a kick through the
//! router, bytes or a close from the client, the heartbeat sweep, shutdown. Over plain TCP and
//! WebSocket here; TLS in tests/tls.rs.

mod common;
mod e2e;

use std::time::{Duration, Instant};

use common::*;
use e2e::*;
use missive_client::{pb, Connection};
use missive_protocol::{Frame, Packet};

const PARK_MS: u64 = 50;

async fn parking_server() -> TestServer {
    TestServer::start_with(|c| c.park_idle_ms = PARK_MS).await
}

/// Bob is parked; a message to him wakes him through the router; a parked sender's SEND and
/// heartbeat wake it through its socket. Every reply and push arrives once, in order.
async fn chat_with_parked_sessions(server: &TestServer, mut bob: Connection) {
    let (mut alice, _) = server.login("alice", "phone").await;
    server.wait_parked(2).await;

    // The router wakes Bob: the push arrives, and nothing else.
    let sent = raw_send(&mut alice, "bob", "are you there").await;
    let (frame, push) = recv_push(&mut bob).await;
    assert!(!frame.flags.retransmit());
    assert_eq!(push.version, 1);
    assert_eq!(message(pushed(&push)).msg_id, sent.msg_id);
    assert_eq!(message(pushed(&push)).content, b"are you there");
    bob.push_ack(push.version).await.unwrap();
    server.wait_parked(2).await;

    // Bob's bytes wake his session: a heartbeat, then a send to Alice (parked again meanwhile).
    heartbeat_ok(&mut bob, 7).await;
    server.wait_parked(2).await;
    let back = raw_send(&mut bob, "alice", "here").await;
    let (_, push) = recv_push(&mut alice).await;
    assert_eq!(message(pushed(&push)).msg_id, back.msg_id);
    alice.push_ack(push.version).await.unwrap();
    server.wait_parked(2).await;

    // Both inboxes hold exactly what was pushed.
    let entries = sync_all(&mut bob, 0).await;
    assert_eq!(entries.len(), 2, "{entries:?}");
    let metrics = server.handle().metrics();
    assert!(metrics.sessions_parked.get() >= 6);
    expect_silence(&mut bob, Duration::from_millis(3 * PARK_MS)).await;
}

#[tokio::test]
async fn parked_sessions_are_woken_by_pushes_and_by_their_clients() {
    let server = parking_server().await;
    let (bob, _) = server.login("bob", "phone").await;
    chat_with_parked_sessions(&server, bob).await;
    server.stop().await;
}

/// If the parker's thread ever stopped (its epoll_wait failed: only a bug can cause it), the
/// sessions parked there are served again, and from then on plain sessions park with tokio,
/// as TLS ones do: pushes, requests and heartbeats still reach them.
#[tokio::test]
async fn if_the_parker_thread_fails_its_sessions_are_served_and_park_with_tokio() {
    let server = parking_server().await;
    let (bob, _) = server.login("bob", "phone").await;
    server.wait_parked(1).await;
    let metrics = server.handle().metrics();
    let revived = metrics.sessions_revived.get();
    server.handle().break_parker();
    let deadline = Instant::now() + Duration::from_secs(5);
    while metrics.sessions_revived.get() == revived {
        assert!(
            Instant::now() < deadline,
            "bob's session was not served again"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Parked again, without the parker's thread (it has ended).
    server.wait_parked(1).await;
    chat_with_parked_sessions(&server, bob).await;
    server.stop().await;
}

#[tokio::test]
async fn parked_websocket_sessions_are_woken_the_same_way() {
    let server = parking_server().await;
    let mut bob = Connection::connect(&format!("ws://{}/ws", server.addr))
        .await
        .expect("WebSocket connects");
    bob.login(&server.token("bob", "phone"), "phone", 0)
        .await
        .expect("login");
    assert!(bob.is_websocket());
    chat_with_parked_sessions(&server, bob).await;
    server.stop().await;
}

#[tokio::test]
async fn a_session_is_not_parked_while_a_push_awaits_its_ack() {
    let server = TestServer::start_with(|c| {
        c.park_idle_ms = PARK_MS;
        c.ack_timeout_ms = 300;
        c.max_retransmits = 2;
    })
    .await;
    let (mut alice, _) = server.login("alice", "phone").await;
    let (mut bob, _) = server.login("bob", "phone").await;
    server.wait_parked(2).await;
    raw_send(&mut alice, "bob", "ack me").await;
    let (first, p1) = recv_push(&mut bob).await;
    assert!(!first.flags.retransmit());
    // Unacknowledged, the push is retransmitted on time although the session was idle before.
    let (again, p2) = recv_push(&mut bob).await;
    assert!(again.flags.retransmit());
    assert_eq!(p1, p2);
    assert_eq!(server.parked_now(), 1, "only Alice is parked");
    bob.push_ack(p1.version).await.unwrap();
    server.wait_parked(2).await;
    expect_silence(&mut bob, Duration::from_millis(900)).await;
    server.stop().await;
}

#[tokio::test]
async fn a_parked_connection_closed_by_its_client_leaves_the_router() {
    let server = parking_server().await;
    let (bob, _) = server.login("bob", "phone").await;
    let (_alice, _) = server.login("alice", "phone").await;
    server.wait_parked(2).await;
    assert_eq!(server.handle().online_sessions(), 2);
    drop(bob);
    server.wait_parked(1).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.handle().online_sessions() != 1 {
        assert!(Instant::now() < deadline, "bob is still online");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn parked_sessions_are_kicked_by_a_new_device_and_at_shutdown() {
    let server = TestServer::start_with(|c| {
        c.park_idle_ms = PARK_MS;
        c.max_devices_per_user = 1;
    })
    .await;
    // A second device over the limit kicks the parked first one.
    let (mut phone, _) = server.login("bob", "phone").await;
    server.wait_parked(1).await;
    let (mut tablet, _) = server.login("bob", "tablet").await;
    let kick = expect_kick(&mut phone).await;
    assert_eq!(
        kick.reason,
        pb::KickReason::TooManyDevices as i32,
        "{kick:?}"
    );

    // Shutdown kicks the parked tablet, and does not wait for anything to time out.
    server.wait_parked(1).await;
    let start = Instant::now();
    let stop = tokio::spawn(server.stop());
    let (_, packet) = recv(&mut tablet).await;
    let Packet::Kick(k) = packet else {
        panic!("expected KICK, got {packet:?}")
    };
    assert_eq!(k.reason, pb::KickReason::Shutdown as i32);
    stop.await.unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_silent_parked_connection_is_closed_by_the_heartbeat_sweep() {
    let server = TestServer::start_with(|c| {
        c.park_idle_ms = PARK_MS;
        c.heartbeat_secs = 1;
    })
    .await;
    let (mut silent, _) = server.login("carol", "phone").await;
    let start = Instant::now();
    server.wait_parked(1).await;
    expect_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(start.elapsed() >= Duration::from_millis(1500));
    server.wait_parked(0).await;
    assert_eq!(server.handle().online_sessions(), 0);
    server.stop().await;
}

/// A parked plain connection's heartbeats are answered without waking the session (no task),
/// also several in one write; half a frame, or a heartbeat with another request, wakes it and
/// is answered in order as by any session.
#[tokio::test]
async fn heartbeats_of_a_parked_connection_are_answered_without_waking_it() {
    let server = parking_server().await;
    let (mut bob, _) = server.login("bob", "phone").await;
    server.wait_parked(1).await;
    let metrics = server.handle().metrics();
    let revived = metrics.sessions_revived.get();
    for stamp in 1..=3 {
        heartbeat_ok(&mut bob, stamp).await;
    }
    let heartbeat = |rid: u32, stamp: i64| {
        Frame::new(
            &Packet::Heartbeat(pb::Heartbeat {
                client_time_ms: stamp,
                ..Default::default()
            }),
            rid,
        )
        .to_bytes()
    };
    let mut two = heartbeat(100, 10).to_vec();
    two.extend_from_slice(&heartbeat(101, 11));
    bob.write_raw(&two).await.unwrap();
    for (rid, stamp) in [(100, 10), (101, 11)] {
        let (frame, packet) = recv(&mut bob).await;
        assert_eq!(frame.request_id, rid);
        let Packet::HeartbeatAck(ack) = packet else {
            panic!("expected HEARTBEAT_ACK, got {packet:?}")
        };
        assert_eq!(ack.client_time_ms, stamp);
    }
    assert_eq!(
        metrics.sessions_revived.get(),
        revived,
        "heartbeats woke the session"
    );
    assert_eq!(server.parked_now(), 1);

    // Half a heartbeat: the session is woken and waits for the rest like any session.
    let split = heartbeat(200, 20);
    bob.write_raw(&split[..5]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(3 * PARK_MS)).await;
    bob.write_raw(&split[5..]).await.unwrap();
    let (frame, packet) = recv(&mut bob).await;
    assert_eq!(frame.request_id, 200);
    assert!(matches!(packet, Packet::HeartbeatAck(_)), "{packet:?}");
    assert!(metrics.sessions_revived.get() > revived);

    // A heartbeat and an UNREAD in one write: both answered, in order.
    server.wait_parked(1).await;
    let mut mixed = heartbeat(300, 30).to_vec();
    mixed.extend_from_slice(&Frame::new(&Packet::Unread(pb::Unread::default()), 301).to_bytes());
    bob.write_raw(&mixed).await.unwrap();
    let (frame, packet) = recv(&mut bob).await;
    assert_eq!(frame.request_id, 300);
    assert!(matches!(packet, Packet::HeartbeatAck(_)), "{packet:?}");
    let (frame, packet) = recv(&mut bob).await;
    assert_eq!(frame.request_id, 301);
    assert!(matches!(packet, Packet::UnreadAck(_)), "{packet:?}");
    server.stop().await;
}

/// What a parked connection sends counts as hearing from it: the heartbeat sweep leaves a
/// client alone whose only traffic, heartbeats or requests, is read while it is parked.
#[tokio::test]
async fn a_parked_connection_that_talks_is_not_closed_by_the_heartbeat_sweep() {
    let server = TestServer::start_with(|c| {
        c.park_idle_ms = PARK_MS;
        c.heartbeat_secs = 1;
    })
    .await;
    let (mut beats, _) = server.login("alice", "phone").await;
    let (mut asks, _) = server.login("bob", "phone").await;
    let start = Instant::now();
    // Four heartbeat intervals, twice what the sweep allows a silent connection.
    while start.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(600)).await;
        heartbeat_ok(&mut beats, 1).await;
        let reply = request(&mut asks, Packet::Unread(pb::Unread::default())).await;
        assert!(matches!(reply, Packet::UnreadAck(_)), "{reply:?}");
    }
    assert!(server.handle().metrics().sessions_parked.get() >= 6);
    assert_eq!(server.handle().online_sessions(), 2);
    server.stop().await;
}

/// A server dropped without being shut down still closes its parked connections (they have no
/// task for the runtime to drop).
#[tokio::test]
async fn dropping_a_server_closes_its_parked_connections() {
    let server = parking_server().await;
    let (mut bob, _) = server.login("bob", "phone").await;
    server.wait_parked(1).await;
    drop(server);
    let (_, packet) = recv(&mut bob).await;
    let Packet::Kick(k) = packet else {
        panic!("expected KICK, got {packet:?}")
    };
    assert_eq!(k.reason, pb::KickReason::Shutdown as i32);
    expect_closed(&mut bob, Duration::from_secs(5)).await;
}
