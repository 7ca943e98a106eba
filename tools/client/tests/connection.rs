//! The raw `Connection` against a fake server on 127.0.0.1.

mod common;

use std::time::Duration;

use common::{FakeServer, WAIT};
use missive_client::{ClientError, Connection};
use missive_protocol::{pb, Command, ErrorCode, Frame, Packet};

async fn logged_in(server: &FakeServer) -> (Connection, common::Peer) {
    let mut conn = Connection::connect(&server.addr()).await.unwrap();
    let mut peer = server.accept().await;
    let (ack, login) = tokio::join!(conn.login("tok", "phone", 3), peer.accept_login(9, 30));
    let ack = ack.unwrap();
    assert_eq!(ack.user_id, "alice");
    assert_eq!(ack.current_version, 9);
    assert_eq!(login.token, "tok");
    assert_eq!(login.device_id, "phone");
    assert_eq!(login.last_version, 3);
    (conn, peer)
}

#[tokio::test]
async fn login_then_request_ids_increase_from_one() {
    let server = FakeServer::bind().await;
    let (mut conn, mut peer) = logged_in(&server).await;
    let a = conn
        .send_packet(Packet::Unread(pb::Unread::default()))
        .await
        .unwrap();
    let b = conn
        .send_packet(Packet::Unread(pb::Unread::default()))
        .await
        .unwrap();
    // LOGIN took id 1.
    assert_eq!((a, b), (2, 3));
    assert_eq!(peer.expect(Command::Unread).await.0, 2);
    assert_eq!(peer.expect(Command::Unread).await.0, 3);
}

#[tokio::test]
async fn frames_arriving_during_a_request_are_kept_and_nothing_is_acked() {
    let server = FakeServer::bind().await;
    let (mut conn, mut peer) = logged_in(&server).await;
    let fake = async {
        let (id, _) = peer.expect(Command::Unread).await;
        peer.push(10).await;
        let notify = pb::GroupNotify {
            group_id: "g".into(),
            last_seq: 4,
            unread: 0,
            message: None,
            event: None,
        };
        peer.send(Packet::GroupNotify(notify), 0).await;
        let ack = pb::UnreadAck {
            total: 2,
            conversations: vec![],
            next_cursor: vec![],
        };
        peer.send(Packet::UnreadAck(ack), id).await;
        peer
    };
    let (reply, mut peer) = tokio::join!(conn.request(Packet::Unread(pb::Unread::default())), fake);
    match reply.unwrap() {
        Packet::UnreadAck(ack) => assert_eq!(ack.total, 2),
        other => panic!("{other:?}"),
    }
    let (frame, packet) = conn.recv_packet().await.unwrap().unwrap();
    assert_eq!(frame.request_id, 0);
    assert!(matches!(packet, Packet::Push(p) if p.version == 10));
    let (_, packet) = conn.recv_packet().await.unwrap().unwrap();
    assert!(matches!(packet, Packet::GroupNotify(_)));
    // The raw connection never acks on its own.
    assert!(peer.recv_within(Duration::from_millis(200)).await.is_err());
    // And there is nothing more to read.
    assert!(matches!(
        conn.recv_frame_timeout(Duration::from_millis(50)).await,
        Err(ClientError::Timeout)
    ));
}

#[tokio::test]
async fn error_reply_becomes_server_error() {
    let server = FakeServer::bind().await;
    let (mut conn, mut peer) = logged_in(&server).await;
    let send = Packet::Send(pb::Send {
        client_msg_id: String::new(),
        to: Some(common::bob()),
        content_type: 1,
        content: b"x".to_vec(),
        ..Default::default()
    });
    let fake = async {
        let (id, _) = peer.expect(Command::Send).await;
        let err = pb::Error {
            code: ErrorCode::InvalidArgument as u32,
            message: "client_msg_id is empty".into(),
            fatal: false,
            retry_after_ms: 0,
            reason: String::new(),
        };
        peer.send(Packet::Error(err), id).await;
    };
    let (reply, ()) = tokio::join!(conn.request(send), fake);
    match reply {
        Err(ClientError::Server {
            code,
            name,
            message,
            fatal,
            reason,
        }) => {
            assert_eq!(code, 11);
            assert!(reason.is_empty());
            assert_eq!(name, "INVALID_ARGUMENT");
            assert_eq!(message, "client_msg_id is empty");
            assert!(!fatal);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn fatal_error_with_request_id_zero_ends_the_wait_and_close_is_closed() {
    let server = FakeServer::bind().await;
    let (mut conn, mut peer) = logged_in(&server).await;
    let fake = async {
        peer.expect(Command::Contacts).await;
        let err = pb::Error {
            code: ErrorCode::BadCrc as u32,
            message: "bad crc".into(),
            fatal: true,
            retry_after_ms: 0,
            reason: String::new(),
        };
        peer.send(Packet::Error(err), 0).await;
        peer
    };
    let contacts = Packet::Contacts(pb::Contacts::default());
    let (reply, peer) = tokio::join!(conn.request(contacts), fake);
    let err = reply.unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::BadCrc));
    drop(peer);
    assert!(conn.recv_frame_timeout(WAIT).await.unwrap().is_none());
    let again = conn.request(Packet::Unread(pb::Unread::default())).await;
    assert!(matches!(
        again,
        Err(ClientError::Closed) | Err(ClientError::Io(_))
    ));
}

#[tokio::test]
async fn compressed_replies_are_inflated() {
    let server = FakeServer::bind().await;
    let (mut conn, mut peer) = logged_in(&server).await;
    let fake = async {
        let (id, _) = peer.expect(Command::Sync).await;
        let ack = pb::SyncAck {
            entries: (1..=50).map(common::entry).collect(),
            new_version: 50,
            has_more: false,
            current_version: 50,
        };
        let frame = Frame::compressed_above(&Packet::SyncAck(ack), id, 1024);
        assert!(frame.flags.compressed());
        peer.send_frame(frame).await;
    };
    let sync = Packet::Sync(pb::Sync {
        since_version: 0,
        limit: 0,
    });
    let (reply, ()) = tokio::join!(conn.request(sync), fake);
    match reply.unwrap() {
        Packet::SyncAck(ack) => assert_eq!(ack.entries.len(), 50),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn raw_bytes_both_ways() {
    let server = FakeServer::bind().await;
    let mut conn = Connection::connect(&server.addr()).await.unwrap();
    let mut peer = server.accept().await;
    conn.write_raw(b"\x00\x00\x00\x0eXX").await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut got = [0u8; 6];
    peer.framed.get_mut().read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"\x00\x00\x00\x0eXX");
    peer.framed.get_mut().write_all(b"hello").await.unwrap();
    peer.framed.get_mut().shutdown().await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64];
    loop {
        let n = tokio::time::timeout(WAIT, conn.read_raw(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(buf, b"hello");
}

#[tokio::test]
async fn truncated_frame_at_eof_is_a_protocol_error() {
    let server = FakeServer::bind().await;
    let mut conn = Connection::connect(&server.addr()).await.unwrap();
    let mut peer = server.accept().await;
    let bytes = Frame::new(&common::push(1), 0).to_bytes();
    use tokio::io::AsyncWriteExt;
    peer.framed.get_mut().write_all(&bytes[..10]).await.unwrap();
    drop(peer);
    let err = conn.recv_frame_timeout(WAIT).await.unwrap_err();
    assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
}
