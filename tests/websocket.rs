//! End to end: the WebSocket transport on the binary protocol's port. A TCP client and a
//! WebSocket client chat through one server (pushes, acks, retransmits, SYNC); a message may
//! hold several frames or part of one; the server sends one frame per message; WebSocket inside
//! TLS; refusals of bad upgrades.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use missive_client::{direct, pb, Client, ClientConfig, ClientError, ClientEvent, Connection};
use missive_protocol::{ErrorCode, Flags, Frame, FrameCodec, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::codec::Decoder;

fn ws_url(server: &TestServer) -> String {
    format!("ws://{}/ws", server.addr)
}

/// A reliable client over WebSocket (no automatic reconnect).
async fn ws_client(
    server: &TestServer,
    user: &str,
    device: &str,
) -> (Client, UnboundedReceiver<ClientEvent>) {
    let mut cfg = ClientConfig::new(ws_url(server), server.token(user, device), device);
    cfg.auto_reconnect = false;
    let mut client = Client::connect(cfg)
        .await
        .expect("WebSocket client connects");
    let events = client.events().expect("events");
    (client, events)
}

/// A raw connection over WebSocket, logged in.
async fn ws_login(server: &TestServer, user: &str, device: &str) -> (Connection, pb::LoginAck) {
    let mut conn = Connection::connect(&ws_url(server))
        .await
        .expect("connects");
    assert!(conn.is_websocket());
    let ack = conn
        .login(&server.token(user, device), device, 0)
        .await
        .expect("login over WebSocket");
    (conn, ack)
}

#[tokio::test]
async fn tcp_and_websocket_clients_chat_both_ways_with_acks_and_sync() {
    let server = TestServer::start_with(|c| c.ack_timeout_ms = 200).await;
    let (alice, mut a_ev) = server.client("alice", "phone").await; // TCP
    let (bob, mut b_ev) = ws_client(&server, "bob", "phone").await; // WebSocket
    let mut sent = Vec::new();
    for i in 0..6u64 {
        let (from, to, who) = if i % 2 == 0 {
            (&alice, "bob", "alice")
        } else {
            (&bob, "alice", "bob")
        };
        let text = format!("{who} says {i}");
        let ack = from.send(direct(to), 1, text.as_str(), None).await.unwrap();
        assert_eq!((ack.seq, ack.version), (i + 1, i + 1));
        for events in [&mut a_ev, &mut b_ev] {
            let e = next_entry(events).await;
            assert_eq!(e.version, i + 1);
            assert_eq!(message(&e).content, text.as_bytes());
        }
        sent.push(text.into_bytes());
    }
    // A large message crosses in one WebSocket message (and a SYNC page of it compressed).
    let big = vec![b'z'; 60_000];
    alice
        .send(direct("bob"), 2, big.clone(), None)
        .await
        .unwrap();
    assert_eq!(message(&next_entry(&mut b_ev).await).content, big);
    sent.push(big);

    // A second device of Bob over WebSocket: SYNC gives the whole conversation.
    let (mut tablet, ack) = ws_login(&server, "bob", "tablet").await;
    assert_eq!(ack.current_version, 7);
    let entries = sync_all(&mut tablet, 0).await;
    let versions: Vec<u64> = entries.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=7).collect::<Vec<_>>());
    let contents: Vec<Vec<u8>> = entries.iter().map(|e| message(e).content.clone()).collect();
    assert_eq!(contents, sent);

    // A push acked over WebSocket is not sent again; one not acked is retransmitted.
    alice.send(direct("bob"), 1, "acked", None).await.unwrap();
    let push = recv_push(&mut tablet).await;
    assert_eq!(push.0.version, 8);
    tablet.push_ack(8).await.unwrap();
    match tablet.recv_frame_timeout(Duration::from_millis(700)).await {
        Err(ClientError::Timeout) => {}
        other => panic!("nothing after the ack, got {other:?}"),
    }
    alice
        .send(direct("bob"), 1, "not acked", None)
        .await
        .unwrap();
    let (first, flags) = recv_push(&mut tablet).await;
    let (again, again_flags) = recv_push(&mut tablet).await;
    assert_eq!((first.version, again.version), (9, 9));
    assert_eq!(flags & Flags::RETRANSMIT, 0);
    assert_ne!(again_flags & Flags::RETRANSMIT, 0, "retransmitted");
    tablet.push_ack(9).await.unwrap();
    server.stop().await;
}

/// The next PUSH on a raw connection, with its frame's flags.
async fn recv_push(conn: &mut Connection) -> (pb::Push, u8) {
    loop {
        let (frame, packet) = conn
            .recv_packet_timeout(Duration::from_secs(5))
            .await
            .expect("a frame")
            .expect("open");
        if let Packet::Push(p) = packet {
            return (p, frame.flags.0);
        }
    }
}

fn decode_one(bytes: &[u8]) -> Frame {
    let mut buf = BytesMut::from(bytes);
    let frame = FrameCodec::default()
        .decode(&mut buf)
        .unwrap()
        .expect("a whole frame");
    assert!(buf.is_empty(), "exactly one frame per message");
    frame
}

#[tokio::test]
async fn a_message_may_hold_several_frames_or_part_of_one() {
    let server = TestServer::start().await;
    let addr = server.addr.clone();
    let url = ws_url(&server);
    let token = server.token("dave", "d1");
    // A plain (blocking) tungstenite client, so that message boundaries are ours to choose.
    tokio::task::spawn_blocking(move || {
        let tcp = std::net::TcpStream::connect(&addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (mut ws, response) = tungstenite::client::client(url.as_str(), tcp)
            .unwrap_or_else(|e| panic!("handshake: {e}"));
        assert_eq!(response.status(), 101);
        let login = Packet::Login(pb::Login {
            token,
            device_id: "d1".into(),
            ..Default::default()
        });
        let beat = |rid| {
            Frame::new(
                &Packet::Heartbeat(pb::Heartbeat {
                    client_time_ms: 5,
                    ..Default::default()
                }),
                rid,
            )
        };
        let mut both = Frame::new(&login, 1).to_bytes().to_vec();
        both.extend_from_slice(&beat(2).to_bytes());
        ws.send(Message::Binary(both.into())).unwrap();
        let mut read_frame = || match ws.read().unwrap() {
            Message::Binary(m) => decode_one(&m),
            other => panic!("expected a binary message, got {other:?}"),
        };
        assert_eq!(
            read_frame().request_id,
            1,
            "LOGIN_ACK in a message of its own"
        );
        assert_eq!(
            read_frame().request_id,
            2,
            "HEARTBEAT_ACK in a message of its own"
        );
        let third = beat(3).to_bytes();
        for part in [&third[..3], &third[3..10], &third[10..]] {
            ws.send(Message::Binary(part.to_vec().into())).unwrap();
        }
        match ws.read().unwrap() {
            Message::Binary(m) => {
                let f = decode_one(&m);
                assert_eq!(f.request_id, 3);
                assert!(matches!(
                    f.packet(1 << 20).unwrap(),
                    Packet::HeartbeatAck(_)
                ));
            }
            other => panic!("{other:?}"),
        }
        // A text message is not part of the protocol: the server closes the connection.
        ws.send(Message::Text("hello".into())).unwrap();
        match ws.read() {
            Ok(Message::Close(_)) | Err(_) => {}
            Ok(other) => panic!("expected the connection to close, got {other:?}"),
        }
    })
    .await
    .unwrap();
    server.stop().await;
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Sends a raw HTTP request head and returns the server's whole answer (it closes after it).
async fn http_raw(addr: &str, request: &str) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
            Err(_) => panic!(
                "the server did not close: {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    out
}

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

#[tokio::test]
async fn bad_upgrades_get_http_errors_other_requests_are_read_as_frames() {
    let server = TestServer::start().await;
    let a = server.addr.as_str();
    let no_upgrade = text(http_raw(a, "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").await);
    assert!(no_upgrade.starts_with("HTTP/1.1 426 "), "{no_upgrade}");
    let elsewhere = http_raw(
        a,
        &format!("GET /chat HTTP/1.1\r\nHost: x\r\n{UPGRADE}\r\n"),
    )
    .await;
    // Other requests are not HTTP here: read as frames, the first bytes are a huge length.
    let mut answer = BytesMut::from(elsewhere.as_slice());
    let frame = FrameCodec::default()
        .decode(&mut answer)
        .unwrap()
        .expect("an ERROR frame");
    match frame.packet(1 << 20).unwrap() {
        Packet::Error(e) => assert_eq!(e.code, ErrorCode::FrameTooLarge as u32, "{e:?}"),
        other => panic!("{other:?}"),
    }
    let old = text(
        http_raw(
            a,
            "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
        )
        .await,
    );
    assert!(
        old.starts_with("HTTP/1.1 426 ") && old.contains("Sec-WebSocket-Version: 13"),
        "{old}"
    );
    let garbage = text(http_raw(a, "GET /ws HTTP/1.1\r\nno colon\r\n\r\n").await);
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
    let huge = format!("GET /ws HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
    assert!(text(http_raw(a, &huge).await).starts_with("HTTP/1.1 431 "));
    // The subprotocol is confirmed when offered, with the RFC's accept key.
    let mut tcp = TcpStream::connect(a).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\n{UPGRADE}Sec-WebSocket-Protocol: missive.v1\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 512];
    let n = tcp.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{head}"
    );
    assert!(
        head.contains("Sec-WebSocket-Protocol: missive.v1"),
        "{head}"
    );
    // And a TCP client on the same port still speaks frames.
    let (mut conn, _) = server.login("erin", "phone").await;
    conn.heartbeat().await.unwrap();
    server.stop().await;
}

mod tls {
    use super::*;
    use missive::net::ws::WsIo;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{self, RootCertStore};
    use tokio_rustls::TlsConnector;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

    async fn tls_connect(addr: &str, root: CertificateDer<'static>) -> impl missive::net::ws::Io {
        let mut roots = RootCertStore::empty();
        roots.add(root).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(addr).await.unwrap();
        TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("TLS handshake")
    }

    #[tokio::test]
    async fn websocket_inside_tls_and_plain_websocket_refused_without_allow_plain() {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let certs = tempfile::tempdir().unwrap();
        let (cert, key) = (certs.path().join("c.pem"), certs.path().join("k.pem"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let server = TestServer::start_with(|c| {
            c.tls_cert = Some(cert);
            c.tls_key = Some(key);
            c.allow_plain = false;
        })
        .await;
        // wss: the upgrade inside TLS, then frames in binary messages.
        let mut tls = tls_connect(&server.addr, ck.cert.der().clone()).await;
        let req = format!("GET /ws HTTP/1.1\r\nHost: localhost\r\n{UPGRADE}\r\n");
        tls.write_all(req.as_bytes()).await.unwrap();
        let mut buf = BytesMut::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                tls.read_buf(&mut buf).await.unwrap() > 0,
                "answer to the upgrade"
            );
        };
        assert!(
            buf.starts_with(b"HTTP/1.1 101 "),
            "{:?}",
            String::from_utf8_lossy(&buf)
        );
        let part = buf.split_off(end).to_vec();
        let mut ws = WsIo::new(
            Box::new(tls),
            part,
            Role::Client,
            WebSocketConfig::default(),
        );
        let login = Packet::Login(pb::Login {
            token: server.token("frank", "f1"),
            device_id: "f1".into(),
            ..Default::default()
        });
        ws.write_all(&Frame::new(&login, 1).to_bytes())
            .await
            .unwrap();
        ws.flush().await.unwrap();
        let mut rbuf = BytesMut::new();
        let frame = loop {
            if let Some(f) = FrameCodec::default().decode(&mut rbuf).unwrap() {
                break f;
            }
            assert!(ws.read_buf(&mut rbuf).await.unwrap() > 0, "LOGIN_ACK");
        };
        match frame.packet(1 << 20).unwrap() {
            Packet::LoginAck(a) => assert_eq!(a.user_id, "frank"),
            other => panic!("{other:?}"),
        }
        // Plain WebSocket is plain text: refused like the plain binary protocol.
        let plain = text(
            http_raw(
                &server.addr,
                &format!("GET /ws HTTP/1.1\r\nHost: x\r\n{UPGRADE}\r\n"),
            )
            .await,
        );
        assert!(plain.starts_with("HTTP/1.1 403 "), "{plain}");
        server.stop().await;
    }
}
