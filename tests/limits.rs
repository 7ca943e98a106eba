//! Abuse limits: each answered with its documented code while honest clients carry on.

mod common;

use std::time::Duration;

use common::*;
use missive_client::{direct, pb, ClientError, Connection};
use missive_protocol::{ErrorCode, Frame, Packet};

/// The next frame must be an ERROR with `code`; returns it.
async fn expect_error(conn: &mut Connection, code: ErrorCode) -> pb::Error {
    let frame = tokio::time::timeout(Duration::from_secs(5), conn.recv_frame())
        .await
        .expect("a frame within 5 s")
        .expect("readable")
        .expect("a frame before close");
    match frame.packet(1 << 20).unwrap() {
        Packet::Error(e) => {
            assert_eq!(e.code, code as u32, "{e:?}");
            e
        }
        other => panic!("expected ERROR {code:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn connections_beyond_the_per_address_limit_get_server_busy() {
    let server = TestServer::start_with(|c| c.max_connections_per_ip = 2).await;
    let (_a, _) = server.login("alice", "a").await;
    let (_b, _) = server.login("bob", "b").await;
    let mut third = server.connect().await;
    let e = expect_error(&mut third, ErrorCode::ServerBusy).await;
    assert!(e.fatal && e.retry_after_ms >= 1000, "{e:?}");
    drop(_a);
    // The place is released when a connection closes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_c, _) = server.login("carol", "c").await;
    server.stop().await;
}

#[tokio::test]
async fn logins_beyond_the_rate_get_server_busy_with_a_retry_delay() {
    let server = TestServer::start_with(|c| c.logins_per_sec = 2).await;
    let mut busy = 0;
    for i in 0..6 {
        let mut conn = server.connect().await;
        let user = format!("u{i}");
        match conn.login(&server.token(&user, "d"), "d", 0).await {
            Ok(_) => {}
            Err(ClientError::Server { code, .. }) if code == ErrorCode::ServerBusy as u32 => {
                busy += 1
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert!(busy >= 3, "{busy} of 6 quick logins refused at 2/s");
    server.stop().await;
}

#[tokio::test]
async fn sends_beyond_the_rate_get_rate_limited_and_the_connection_stays() {
    let server = TestServer::start_with(|c| c.sends_per_sec = 5).await;
    let (mut alice, _) = server.login("alice", "d").await;
    let mut limited = None;
    for i in 0..30 {
        let send = Packet::Send(pb::Send {
            client_msg_id: format!("m{i}"),
            to: Some(direct("bob")),
            content_type: 1,
            content: b"x".to_vec(),
            ..Default::default()
        });
        match alice.request(send).await {
            Ok(Packet::SendAck(_)) => {}
            Err(ClientError::Server { code, .. }) if code == ErrorCode::RateLimited as u32 => {
                limited = Some(i);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let first_refused = limited.expect("a burst of 30 sends at 5/s is limited");
    assert!(
        first_refused >= 10,
        "the burst allowance (2 s worth) was honoured"
    );
    // The connection is still usable, and nothing refused was stored.
    alice.heartbeat().await.unwrap();
    let stored = server
        .handle()
        .store()
        .core()
        .current_version("bob")
        .unwrap();
    assert_eq!(stored, first_refused as u64);
    server.stop().await;
}

#[tokio::test]
async fn a_frame_that_never_completes_is_timed_out() {
    let server = TestServer::start_with(|c| c.frame_timeout_ms = 300).await;
    let (mut conn, _) = server.login("alice", "d").await;
    let frame = Frame::new(
        &Packet::Heartbeat(pb::Heartbeat {
            client_time_ms: 1,
            ..Default::default()
        }),
        9,
    );
    let bytes = frame.to_bytes();
    conn.write_raw(&bytes[..6]).await.unwrap();
    let e = expect_error(&mut conn, ErrorCode::BadFrame).await;
    assert!(e.message.contains("frame_timeout"), "{e:?}");
    // Honest users are unaffected.
    let (alice2, _e) = server.client("carol", "d").await;
    alice2.send(direct("dave"), 1, "hi", None).await.unwrap();
    server.stop().await;
}
