//! TLS and the plain protocol on one port, told apart by the first byte.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_like::{read_frame, write_packet};
use missive_client::{direct, pb};
use missive_protocol::{ErrorCode, Packet};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// Writes a generated certificate and key for "localhost" into the test's data dir.
fn generate_cert(
    dir: &std::path::Path,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    CertificateDer<'static>,
) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, ck.cert.pem()).unwrap();
    std::fs::write(&key_path, ck.signing_key.serialize_pem()).unwrap();
    (cert_path, key_path, ck.cert.der().clone())
}

async fn tls_connect(
    addr: &str,
    root: CertificateDer<'static>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = RootCertStore::empty();
    roots.add(root).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
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

/// A TLS connection logged in as `user` on "phone", and its read buffer.
async fn tls_login(
    server: &TestServer,
    user: &str,
    root: CertificateDer<'static>,
) -> (tokio_rustls::client::TlsStream<TcpStream>, bytes::BytesMut) {
    let mut tls = tls_connect(&server.addr, root).await;
    let mut buf = bytes::BytesMut::new();
    let login = pb::Login {
        token: server.token(user, "phone"),
        device_id: "phone".into(),
        ..Default::default()
    };
    write_packet(&mut tls, Packet::Login(login), 1).await;
    let (_, ack) = read_frame(&mut tls, &mut buf).await.unwrap();
    assert!(matches!(ack, Packet::LoginAck(_)), "{ack:?}");
    (tls, buf)
}

/// The next frame on a TLS connection, which must be a PUSH (request id 0), within 5 s.
async fn tls_push(
    tls: &mut tokio_rustls::client::TlsStream<TcpStream>,
    buf: &mut bytes::BytesMut,
) -> pb::Push {
    let (frame, push) = tokio::time::timeout(Duration::from_secs(5), read_frame(tls, buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(frame.request_id, 0);
    let Packet::Push(push) = push else {
        panic!("expected PUSH, got {push:?}")
    };
    push
}

/// Minimal framing over any stream, for the TLS side of the test.
mod futures_like {
    use bytes::BytesMut;
    use missive_protocol::{Frame, FrameCodec, Packet};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio_util::codec::Decoder;

    pub async fn write_packet<S: AsyncWrite + Unpin>(s: &mut S, p: Packet, rid: u32) {
        s.write_all(&Frame::new(&p, rid).to_bytes()).await.unwrap();
        s.flush().await.unwrap();
    }

    /// The next frame's packet, or None at end of stream.
    pub async fn read_frame<S: AsyncRead + Unpin>(
        s: &mut S,
        buf: &mut BytesMut,
    ) -> Option<(Frame, Packet)> {
        let mut codec = FrameCodec::default();
        loop {
            if let Some(f) = codec.decode(buf).unwrap() {
                let p = f.packet(1 << 20).unwrap();
                return Some((f, p));
            }
            if s.read_buf(buf).await.unwrap() == 0 {
                return None;
            }
        }
    }
}

#[tokio::test]
async fn a_tls_client_and_a_plain_client_chat_through_one_port() {
    let cert_dir = tempfile::tempdir().unwrap();
    let (cert, key, root) = generate_cert(cert_dir.path());
    let server = TestServer::start_with(|c| {
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
    })
    .await;
    // Alice over TLS.
    let (mut tls, mut buf) = tls_login(&server, "alice", root).await;
    // Bob in plain text on the same port.
    let (bob, mut bob_events) = server.client("bob", "phone").await;
    let send = pb::Send {
        client_msg_id: "tls-1".into(),
        to: Some(direct("bob")),
        content_type: 1,
        content: b"over TLS".to_vec(),
        ..Default::default()
    };
    write_packet(&mut tls, Packet::Send(send), 2).await;
    let (f, reply) = read_frame(&mut tls, &mut buf).await.unwrap();
    assert_eq!(f.request_id, 2);
    assert!(matches!(reply, Packet::SendAck(_)), "{reply:?}");
    assert_eq!(
        message(&next_entry(&mut bob_events).await).content,
        b"over TLS"
    );
    // And back: Bob's plain message reaches Alice's TLS connection as a PUSH.
    bob.send(direct("alice"), 1, "in plain text", None)
        .await
        .unwrap();
    let push = tls_push(&mut tls, &mut buf).await;
    assert_eq!(
        message(push.entry.as_ref().unwrap()).content,
        b"in plain text"
    );
    server.stop().await;
}

#[tokio::test]
async fn tls_only_refuses_plain_connections_with_a_documented_code() {
    let cert_dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = generate_cert(cert_dir.path());
    let server = TestServer::start_with(|c| {
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
        c.allow_plain = false;
    })
    .await;
    let mut conn = server.connect().await;
    let err = conn
        .login(&server.token("alice", "d"), "d", 0)
        .await
        .expect_err("plain login refused");
    match err {
        missive_client::ClientError::Server { code, .. } => {
            assert_eq!(code, ErrorCode::TlsRequired as u32)
        }
        other => panic!("expected TLS_REQUIRED, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn a_bad_certificate_setting_is_named_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pem");
    let config = missive::config::Config {
        tls_cert: Some(missing.clone()),
        tls_key: Some(missing),
        ..test_config(&dir)
    };
    let err = match missive::Server::start(config).await {
        Ok(_) => panic!("started without a certificate"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("tls_cert"), "{err}");
}

/// An idle TLS session is parked (`park_idle_ms`) like a plain one, and woken by a push and by
/// its client's bytes: rustls's state waits with the socket.
#[tokio::test]
async fn a_parked_tls_session_is_woken_by_a_push_and_by_its_client() {
    let cert_dir = tempfile::tempdir().unwrap();
    let (cert, key, root) = generate_cert(cert_dir.path());
    let server = TestServer::start_with(|c| {
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
        c.park_idle_ms = 50;
    })
    .await;
    let (mut tls, mut buf) = tls_login(&server, "alice", root).await;
    server.wait_parked(1).await;

    let (bob, _bob_events) = server.client("bob", "phone").await;
    bob.send(direct("alice"), 1, "wake up", None).await.unwrap();
    let push = tls_push(&mut tls, &mut buf).await;
    assert_eq!(message(push.entry.as_ref().unwrap()).content, b"wake up");
    let push_ack = pb::PushAck {
        version: push.version,
    };
    write_packet(&mut tls, Packet::PushAck(push_ack), 0).await;
    server.wait_parked(2).await;

    let hb = pb::Heartbeat {
        client_time_ms: 99,
        ..Default::default()
    };
    write_packet(&mut tls, Packet::Heartbeat(hb), 5).await;
    let (f, reply) = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut tls, &mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.request_id, 5);
    let Packet::HeartbeatAck(hb) = reply else {
        panic!("expected HEARTBEAT_ACK, got {reply:?}")
    };
    assert_eq!(hb.client_time_ms, 99);
    server.wait_parked(2).await;
    server.stop().await;
}
