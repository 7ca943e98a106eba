//! End to end: a user sends a message over HTTP with its own login token (`POST /v1/send` on
//! the public port, PROTOCOL.md 27): the same validation, dedup and answer as a socket's SEND,
//! the same token checks and failed-login budget as LOGIN, over plain HTTP and inside TLS.

mod common;
mod e2e;

use std::sync::Arc;
use std::time::Duration;

use common::http::{Answer, Api};
use common::*;
use e2e::*;
use missive_client::pb;
use missive_protocol::{ErrorCode, Packet};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A client of the public port sending `token` as its bearer token.
fn public(server: &TestServer, token: &str) -> Api {
    Api::new(server.addr.parse().unwrap(), Some(token))
}

async fn http_send(server: &TestServer, user: &str, body: Value) -> Answer {
    public(server, &server.token(user, "phone"))
        .post("/v1/send", body)
        .await
}

fn text_to(user: &str, client_msg_id: &str, text: &str) -> Value {
    json!({"client_msg_id": client_msg_id, "to": {"user": user}, "content": text})
}

fn error_name(a: &Answer) -> String {
    a.json()["error"]["name"].as_str().unwrap_or("").to_owned()
}

#[tokio::test]
async fn a_message_sent_over_http_is_stored_and_pushed_to_both_sides() {
    let server = TestServer::start_with(|c| c.park_idle_ms = 0).await;
    let (mut alice, _) = server.login("alice", "tablet").await;
    let (mut bob, _) = server.login("bob", "phone").await;

    // Sent with the token of alice's phone, which has no connection: base64 content.
    let body = json!({
        "client_msg_id": "h-1",
        "to": {"user": "bob"},
        "content_type": 7,
        "content_base64": "AAEC/w==",
    });
    let a = http_send(&server, "alice", body).await;
    assert_eq!(a.status, 201, "{}", a.text());
    let ack = a.json();
    assert_eq!(ack["from"], "alice");
    assert_eq!(ack["client_msg_id"], "h-1");
    assert_eq!(ack["duplicate"], false);
    assert_eq!(ack["seq"], 1);
    assert_eq!(ack["version"], 1, "alice's inbox version of the message");
    let msg_id: u64 = ack["msg_id"].as_str().unwrap().parse().unwrap();

    // Bob and alice's online device both get the PUSH.
    for conn in [&mut bob, &mut alice] {
        let (_, push) = recv_push(conn).await;
        let m = message(pushed(&push));
        assert_eq!(m.msg_id, msg_id);
        assert_eq!(m.from_user, "alice");
        assert_eq!(
            (m.content_type, m.content.as_slice()),
            (7, &[0, 1, 2, 255][..])
        );
        conn.push_ack(push.version).await.unwrap();
    }
    let entries = sync_all(&mut bob, 0).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(message(&entries[0]).client_msg_id, "h-1");
    assert_eq!(server.handle().metrics().messages_in_http.get(), 1);
    server.stop().await;
}

#[tokio::test]
async fn http_and_socket_sends_dedup_with_each_other() {
    let server = TestServer::start_with(|c| c.park_idle_ms = 0).await;
    let (mut alice, _) = server.login("alice", "phone").await;

    // Over HTTP first, then the same id over the socket.
    let first = http_send(&server, "alice", text_to("bob", "dup-1", "one")).await;
    assert_eq!(first.status, 201);
    let first_id = first.json()["msg_id"].as_str().unwrap().to_owned();
    let resend = send_body("dup-1", "bob", b"one");
    let Packet::SendAck(ack) = request(&mut alice, Packet::Send(resend)).await else {
        panic!("expected SEND_ACK");
    };
    assert!(ack.duplicate);
    assert_eq!(ack.msg_id.to_string(), first_id);

    // Over the socket first, then the same id over HTTP.
    let sent = send_body("dup-2", "bob", b"two");
    let Packet::SendAck(socket_ack) = request(&mut alice, Packet::Send(sent)).await else {
        panic!("expected SEND_ACK");
    };
    let again = http_send(&server, "alice", text_to("bob", "dup-2", "two")).await;
    assert_eq!(again.status, 200, "a duplicate is 200: {}", again.text());
    let j = again.json();
    assert_eq!(j["duplicate"], true);
    assert_eq!(j["msg_id"], socket_ack.msg_id.to_string());
    assert_eq!(j["seq"], socket_ack.seq);
    assert_eq!(j["version"], socket_ack.version);

    // Two messages stored for bob, not four.
    let (mut bob, login) = server.login("bob", "phone").await;
    assert_eq!(login.current_version, 2);
    let entries = sync_all(&mut bob, 0).await;
    let ids: Vec<_> = entries
        .iter()
        .map(|e| message(e).client_msg_id.clone())
        .collect();
    assert_eq!(ids, ["dup-1", "dup-2"]);
    server.stop().await;
}

#[tokio::test]
async fn bad_expired_and_revoked_tokens_get_401_and_cost_the_login_failure_budget() {
    let server = TestServer::start_api(|c| {
        c.login_failures_burst = 5;
        c.login_failures_per_sec = 1;
    })
    .await;
    let body = text_to("bob", "t-1", "hi");

    let no_token = Api::new(server.addr.parse().unwrap(), None)
        .post("/v1/send", body.clone())
        .await;
    assert_eq!((no_token.status, no_token.error_code()), (401, 9));

    let garbage = public(&server, "not-a-token")
        .post("/v1/send", body.clone())
        .await;
    assert_eq!(
        (garbage.status, error_name(&garbage).as_str()),
        (401, "AUTH_FAILED")
    );

    let past = (missive::now_ms() / 1000) as u64 - 10;
    let expired = missive_protocol::token::mint(SECRET.as_bytes(), "alice", "phone", past);
    let a = public(&server, &expired)
        .post("/v1/send", body.clone())
        .await;
    assert_eq!((a.status, error_name(&a).as_str()), (401, "TOKEN_EXPIRED"));

    // A token that worked stops working once the user's tokens are revoked.
    let token = server.token("alice", "phone");
    let ok = public(&server, &token).post("/v1/send", body.clone()).await;
    assert_eq!(ok.status, 201);
    let r = server.api().post("/v1/users/alice/revoke", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let revoked = public(&server, &token).post("/v1/send", body.clone()).await;
    assert_eq!(revoked.status, 401);
    assert_eq!(error_name(&revoked), "AUTH_FAILED");
    assert!(revoked.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("revoked"));

    // Four failures so far; one more spends the budget of 5, as five bad LOGINs would: the
    // address's next connection is refused at accept, whatever it speaks.
    let fifth = public(&server, "x").post("/v1/send", body.clone()).await;
    assert_eq!(fifth.status, 401);
    let mut conn = server.connect().await;
    let refused = conn
        .login(&server.token("carol", "phone"), "phone", 0)
        .await;
    assert_eq!(
        refused.unwrap_err().server_code(),
        Some(ErrorCode::ServerBusy)
    );
    assert!(server.handle().metrics().login_failure_refusals.get() >= 1);
    server.stop().await;
}

#[tokio::test]
async fn invalid_bodies_get_the_same_codes_as_a_socket_send() {
    let server = TestServer::start_with(|c| {
        c.park_idle_ms = 0;
        c.max_content_len = 1000;
    })
    .await;
    let (mut alice, _) = server.login("alice", "phone").await;
    let send = |id: &str, to: Option<pb::Conversation>, content_type: u32, len: usize| pb::Send {
        client_msg_id: id.into(),
        to,
        content_type,
        content: vec![b'a'; len],
        ..Default::default()
    };
    let a = "a".repeat(1001);
    let cases = [
        (
            json!({"client_msg_id": "b1", "to": {"user": "bob"}, "content_type": 0, "content": "x"}),
            send("b1", Some(dm("bob")), 0, 1),
            400,
        ),
        (
            json!({"client_msg_id": "b2", "to": {"user": "alice"}, "content": "x"}),
            send("b2", Some(dm("alice")), 1, 1),
            400,
        ),
        (
            json!({"to": {"user": "bob"}, "content": "x"}),
            send("", Some(dm("bob")), 1, 1),
            400,
        ),
        (
            json!({"client_msg_id": "b3", "content": "x"}),
            send("b3", None, 1, 1),
            400,
        ),
        (
            json!({"client_msg_id": "b4", "to": {"user": "bob"}, "content": a}),
            send("b4", Some(dm("bob")), 1, 1001),
            413,
        ),
        (
            json!({"client_msg_id": "b5", "to": {"group": "g00000000000000000000000000000000"}, "content": "x"}),
            send(
                "b5",
                Some(missive_client::group("g00000000000000000000000000000000")),
                1,
                1,
            ),
            404,
        ),
    ];
    for (json_body, socket_body, status) in cases {
        let (want, _) = request_err(&mut alice, Packet::Send(socket_body)).await;
        let got = http_send(&server, "alice", json_body.clone()).await;
        assert_eq!(got.status, status, "{json_body}: {}", got.text());
        assert_eq!(got.error_code(), want as u64, "{json_body}: {}", got.text());
    }
    // What only JSON can get wrong: BAD_BODY, INVALID_ARGUMENT as the HTTP API answers them.
    let api = public(&server, &server.token("alice", "phone"));
    let not_json = api.raw("POST", "/v1/send", b"{not json".to_vec()).await;
    assert_eq!(
        (not_json.status, error_name(&not_json).as_str()),
        (400, "BAD_BODY")
    );
    let unknown = api
        .post(
            "/v1/send",
            json!({"client_msg_id": "x", "to": {"user": "bob"}, "color": 1}),
        )
        .await;
    assert_eq!(error_name(&unknown), "BAD_BODY");
    let from = api
        .post(
            "/v1/send",
            json!({"from": "bob", "client_msg_id": "x", "to": {"user": "carol"}, "content": "x"}),
        )
        .await;
    assert_eq!(
        (from.status, error_name(&from).as_str()),
        (400, "INVALID_ARGUMENT")
    );
    let wrong_method = api.get("/v1/send").await;
    assert_eq!(wrong_method.status, 405);
    // Nothing was stored by any of them.
    let (mut bob, login) = server.login("bob", "phone").await;
    assert_eq!(login.current_version, 0);
    assert!(sync_all(&mut bob, 0).await.is_empty());
    server.stop().await;
}

/// A body announced over the limit is refused from its Content-Length, before it is read.
#[tokio::test]
async fn an_oversized_body_is_refused_before_it_is_read() {
    let server = TestServer::start().await;
    let mut tcp = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let head = format!(
        "POST /v1/send HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Length: 1000000000\r\n\r\n{{",
        server.token("alice", "phone")
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
        .await
        .expect("answered without the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("CONTENT_TOO_LARGE"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn a_send_over_https_works_on_the_same_port() {
    let cert_dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (cert_dir.path().join("c.pem"), cert_dir.path().join("k.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let server = TestServer::start_with(|c| {
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
        c.park_idle_ms = 0;
    })
    .await;
    let (mut bob, _) = server.login("bob", "phone").await;

    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let body = text_to("bob", "tls-1", "over https").to_string();
    let request = format!(
        "POST /v1/send HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        server.token("alice", "phone"),
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // The server closes after its answer (a TLS close_notify or a plain end: both end it).
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let (_, push) = recv_push(&mut bob).await;
    assert_eq!(message(pushed(&push)).content, b"over https");
    server.stop().await;
}
