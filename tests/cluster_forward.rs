//! A client may connect to any node of a one-partition cluster (docs/CLUSTER.md section 6): the
//! standby forwards its clients' connections to the owner, naming each client's address in a
//! signed preamble. Three real `nats-server`s and two real `missived`s on loopback.
//!
//! - a user connected through the standby chats with one connected to the owner, both ways,
//!   pushes included;
//! - `GET /v1/entry?user=` through the standby lists the owner's address first;
//! - the owner applies the failed-login budget to the client's address, not to the standby's:
//!   a client failing logins through the standby is refused, another client through the same
//!   standby is not;
//! - a preamble not signed with the cluster's secret is refused;
//! - a standby asked to stop (SIGTERM) leaves the cluster and exits with success;
//! - when the owner is SIGKILLed, the standby's clients lose their connection; one that
//!   connects to the standby during the gap is held there and served, on that connection, once
//!   the standby has taken over.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::http::{Api, API_KEY};
use common::nats::{nats_cluster, Proc};
use common::primary::NodeSpec;
use common::{free_port, SECRET};
use missive::cluster::forward::preamble;
use missive_client::Connection;
use missive_protocol::{pb, ErrorCode, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A node of a one-partition cluster that advertises its client address, with a small
/// failed-login budget refilling slowly (the test spends one address's) and a 3 s login timeout
/// (silent connections are closed by the owner after it).
fn start_node(dir: &Path, nats: &str, id: &str, port: u16, http: Option<u16>) -> Proc {
    NodeSpec::new(dir, nats, id, port, http)
        .with_env(
            "MISSIVE_CLUSTER_ADVERTISE",
            format!("tcp://127.0.0.1:{port}"),
        )
        .with_env("MISSIVE_LOGIN_FAILURES_BURST", 3)
        .with_env("MISSIVE_LOGIN_FAILURES_PER_SEC", 1)
        .with_env("MISSIVE_LOGIN_TIMEOUT_MS", 3000)
        .start()
}

/// The cluster's bucket, once the first node has created it.
async fn bucket(urls: &str) -> async_nats::jetstream::kv::Store {
    let js = missive::cluster::connect(urls, "test").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match js.get_key_value(missive::cluster::BUCKET).await {
            Ok(b) => return b,
            Err(e) => assert!(Instant::now() < deadline, "no bucket: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The node named in the partition's lease, once there is one.
async fn owner(urls: &str) -> String {
    let bucket = bucket(urls).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(v)) = bucket.get("lease.0").await {
            let lease: serde_json::Value = serde_json::from_slice(&v).unwrap();
            if let Some(node) = lease["node"].as_str().filter(|n| !n.is_empty()) {
                return node.to_owned();
            }
        }
        assert!(Instant::now() < deadline, "nobody took the partition");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until node `id` has joined (its key is in the cluster's bucket).
async fn joined(urls: &str, id: &str) {
    let bucket = bucket(urls).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(bucket.get(format!("node.{id}")).await, Ok(Some(_))) {
        assert!(Instant::now() < deadline, "{id} did not join");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A connection to `port` from the loopback address `from` (127.0.0.x: one client address).
async fn connect_from(from: &str, port: u16) -> std::io::Result<Connection> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse::<SocketAddr>().unwrap())?;
    let stream = socket
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await?;
    Ok(Connection::from_stream(stream).expect("a client on the stream"))
}

fn token(user: &str) -> String {
    let expires = (missive::now_ms() / 1000) as u64 + 600;
    missive_protocol::token::mint(SECRET.as_bytes(), user, "d", expires)
}

/// `user` logged in through `port` from `from`, trying for up to `limit`.
async fn login_from(from: &str, port: u16, user: &str, limit: Duration) -> Connection {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(mut conn) = connect_from(from, port).await {
            let token = token(user);
            let logged = tokio::time::timeout(Duration::from_secs(5), conn.login(&token, "d", 0));
            if let Ok(Ok(_)) = logged.await {
                return conn;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{user}: not served through port {port} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn send(to: &str, id: &str, text: &str) -> Packet {
    Packet::Send(pb::Send {
        client_msg_id: id.into(),
        to: Some(pb::Conversation {
            kind: pb::ConversationKind::Direct as i32,
            id: to.into(),
        }),
        content_type: 1,
        content: text.as_bytes().to_vec(),
        ..Default::default()
    })
}

/// Sends `text` from `conn` to `to` and waits for `peer` to be pushed it (and acks the push).
async fn say(conn: &mut Connection, to: &str, id: &str, text: &str, peer: &mut Connection) {
    let reply = conn
        .request_timeout(send(to, id, text), Duration::from_secs(10))
        .await
        .expect("an answer to SEND");
    assert!(matches!(reply, Packet::SendAck(_)), "{reply:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{to} was not pushed {text:?}");
        if let Ok(Some((_, Packet::Push(p)))) = peer.recv_packet_timeout(left).await {
            let Some(entry) = p.entry.as_ref() else {
                continue;
            };
            let m = common::message(entry);
            if m.content == text.as_bytes() {
                peer.push_ack(entry.version).await.unwrap();
                assert_eq!(m.from_user, conn_user(text));
                return;
            }
        }
    }
}

/// Who sent a text of this test ("<user>: ...").
fn conn_user(text: &str) -> String {
    text.split(':').next().unwrap().to_owned()
}

/// `GET /v1/entry?user=` on a client port: the addresses listed, in order.
async fn entry(port: u16, user: &str) -> Vec<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!("GET /v1/entry?user={user} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut body = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut body)).await;
    let text = String::from_utf8_lossy(&body);
    let json = text.split("\r\n\r\n").nth(1).expect("a body");
    let doc: serde_json::Value = serde_json::from_str(json).expect("JSON");
    doc["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["url"].as_str().unwrap().to_owned())
        .collect()
}

/// The error code the server answered a LOGIN with a bad token with (`None`: no answer).
async fn bad_login(from: &str, port: u16) -> Option<u32> {
    let mut conn = connect_from(from, port).await.ok()?;
    let login = conn.login("not-a-token", "d", 0);
    match tokio::time::timeout(Duration::from_secs(5), login).await {
        Ok(Err(missive_client::ClientError::Server { code, .. })) => Some(code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_the_standby_are_forwarded_to_the_owner_and_served_by_the_standby_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let nats = nats_cluster(dir.path());
    let (p1, p2) = (free_port(), free_port());
    let http_port = free_port();
    let http = format!("127.0.0.1:{http_port}");
    let mut n1 = start_node(dir.path(), &nats.urls, "n1", p1, Some(http_port));
    assert_eq!(owner(&nats.urls).await, "n1");
    let n2 = start_node(dir.path(), &nats.urls, "n2", p2, None);
    joined(&nats.urls, "n2").await;

    // A standby asked to stop (SIGTERM) leaves the cluster and exits with success.
    let mut n3 = start_node(dir.path(), &nats.urls, "n3", free_port(), None);
    joined(&nats.urls, "n3").await;
    n3.signal("-TERM");
    let status = n3.exited(Duration::from_secs(10)).await;
    assert!(status.success(), "a standby's SIGTERM ended with {status}");
    assert!(
        matches!(bucket(&nats.urls).await.get("node.n3").await, Ok(None)),
        "the stopped standby's key is still there"
    );

    // alice through the standby (from 127.0.0.2), bob on the owner: both ways, with pushes.
    let mut alice = login_from("127.0.0.2", p2, "alice", Duration::from_secs(30)).await;
    let mut bob = login_from("127.0.0.1", p1, "bob", Duration::from_secs(30)).await;
    say(&mut alice, "bob", "a1", "alice: hello through n2", &mut bob).await;
    say(&mut bob, "alice", "b1", "bob: hello from n1", &mut alice).await;

    // The owner's /v1/cluster shows both nodes' log positions: the standby follows the log
    // and catches up (lag 0) at the owner's position.
    let api = Api::new(http.parse().unwrap(), Some(API_KEY));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view = api.get("/v1/cluster").await.json();
        let nodes = view["nodes"].as_array().unwrap().clone();
        let node = |id: &str| nodes.iter().find(|n| n["id"] == id).cloned();
        if let (Some(a), Some(b)) = (node("n1"), node("n2")) {
            let (sa, sb) = (&a["info"]["log_seq"], &b["info"]["log_seq"]);
            if sa.as_u64() > Some(0) && sa == sb {
                assert_eq!(
                    (a["lag_records"].as_u64(), b["lag_records"].as_u64()),
                    (Some(0), Some(0))
                );
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the standby did not catch up: {view}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The entry point, asked through the standby, lists the owner first, then the standby
    // (then the owner's WebSocket fallback).
    assert_eq!(
        entry(p2, "alice").await[..2],
        [
            format!("tcp://127.0.0.1:{p1}"),
            format!("tcp://127.0.0.1:{p2}")
        ]
    );

    // Failed logins through the standby are charged to the client's address: 127.0.0.3 spends
    // its budget (3) and is refused, while 127.0.0.2 through the same standby still logs in.
    let mut refused = false;
    for _ in 0..8 {
        match bad_login("127.0.0.3", p2).await {
            Some(code) if code == ErrorCode::ServerBusy as u32 => {
                refused = true;
                break;
            }
            Some(code) => assert_eq!(code, ErrorCode::AuthFailed as u32),
            None => panic!("a bad login through the standby got no answer"),
        }
    }
    assert!(refused, "127.0.0.3 was never refused for its failed logins");
    let mut carol = login_from("127.0.0.2", p2, "carol", Duration::from_secs(5)).await;
    assert!(
        bad_login("127.0.0.3", p2).await == Some(ErrorCode::ServerBusy as u32),
        "the failing address is still refused"
    );
    carol.heartbeat().await.unwrap();

    // Preambles straight to the owner, from 127.0.0.4, claiming 10.9.9.9 (the test knows the
    // secret): signed and naming the address it comes from, it is read, and the client behind
    // it served; signed with another secret, or naming another forwarding address (a line
    // replayed from elsewhere), it is refused without an answer.
    let claim: SocketAddr = "10.9.9.9:1234".parse().unwrap();
    let from: std::net::IpAddr = "127.0.0.4".parse().unwrap();
    let elsewhere: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let now = missive::now_ms();
    let cases = [
        (
            preamble(SECRET.as_bytes(), claim, from, now),
            true,
            "signed",
        ),
        (
            preamble(b"another secret", claim, from, now),
            false,
            "another secret",
        ),
        (
            preamble(SECRET.as_bytes(), claim, elsewhere, now),
            false,
            "replayed",
        ),
    ];
    for (line, served, what) in cases {
        let mut conn = connect_from("127.0.0.4", p1).await.unwrap();
        conn.write_raw(&line).await.unwrap();
        let token = token("mallory");
        let answer = tokio::time::timeout(Duration::from_secs(5), conn.login(&token, "d", 0)).await;
        let answer = answer.expect("answered or closed in time");
        assert_eq!(answer.is_ok(), served, "{what}: {answer:?}");
    }

    // Clients that connect through the standby and say nothing: the owner closes them at its
    // login timeout, and the standby lets go of them at once (their sockets and its own), even
    // though they keep their end open.
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", n2.0.id()))
            .unwrap()
            .count()
    };
    let base = fds();
    let mut silent = Vec::new();
    for _ in 0..20 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.6:0".parse().unwrap()).unwrap();
        silent.push(
            socket
                .connect(format!("127.0.0.1:{p2}").parse().unwrap())
                .await
                .unwrap(),
        );
    }
    for s in &mut silent {
        let mut buf = [0u8; 256];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
                Ok(Ok(0)) => break,
                Ok(Ok(_)) => continue, // the LOGIN_TIMEOUT error
                other => panic!("a silent client was not closed: {other:?}"),
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while fds() > base + 2 {
        assert!(
            Instant::now() < deadline,
            "the standby still holds {} descriptors more than before",
            fds() - base
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(silent);

    // The owner dies: the forwarded connection ends; the same address serves once the standby
    // has taken over.
    n1.signal("-KILL");
    let _ = n1.exited(Duration::from_secs(5)).await;
    let killed = Instant::now();
    let lost = alice.recv_packet_timeout(Duration::from_secs(10)).await;
    assert!(
        matches!(
            lost,
            Ok(None)
                | Err(missive_client::ClientError::Closed | missive_client::ClientError::Io(_))
        ),
        "the forwarded connection outlived the owner: {lost:?}"
    );
    // A client that connects during the gap is held by the standby, not refused: its one
    // LOGIN is answered once the standby serves, without a reconnect.
    let mut alice = connect_from("127.0.0.2", p2).await.unwrap();
    let token = token("alice");
    let login = tokio::time::timeout(Duration::from_secs(20), alice.login(&token, "d", 0));
    let ack = login.await;
    assert!(
        matches!(ack, Ok(Ok(_))),
        "a client held through the takeover: {ack:?}"
    );
    let mut bob = login_from("127.0.0.1", p2, "bob", Duration::from_secs(30)).await;
    let served_after = killed.elapsed();
    assert!(
        served_after < Duration::from_secs(20),
        "served again {served_after:?} after the kill"
    );
    eprintln!("served through the standby's address again {served_after:?} after the kill");
    assert_eq!(owner(&nats.urls).await, "n2");
    say(
        &mut alice,
        "bob",
        "a2",
        "alice: after the takeover",
        &mut bob,
    )
    .await;
    // The entry point now lists the only live node.
    let listed = entry(p2, "bob").await;
    assert_eq!(listed[0], format!("tcp://127.0.0.1:{p2}"));
    assert!(
        !listed.contains(&format!("tcp://127.0.0.1:{p1}")),
        "the dead node is still listed: {listed:?}"
    );
}

/// A single node's data directory given to a cluster node: refused with a message saying why,
/// before anything is written to it; the single node still has its message afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_nodes_data_directory_is_refused_by_a_cluster_node() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("single");
    let single = |port: u16| {
        Command::new(env!("CARGO_BIN_EXE_missived"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(&data)
            .args(["--secret", SECRET, "--log", "warn", "--http-listen", ""])
            .env_remove("MISSIVE_CONFIG")
            .stdin(Stdio::null())
            .spawn()
            .map(Proc)
            .expect("missived starts")
    };
    let port = free_port();
    let mut node = single(port);
    let mut alice = login_from("127.0.0.1", port, "alice", Duration::from_secs(30)).await;
    let reply = alice
        .request(send("bob", "a1", "alice: kept"))
        .await
        .unwrap();
    assert!(matches!(reply, Packet::SendAck(_)), "{reply:?}");
    node.signal("-TERM");
    assert!(node.exited(Duration::from_secs(20)).await.success());

    let before = files(&data);
    let nats = nats_cluster(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_missived"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(&data)
        .args(["--secret", SECRET, "--log", "warn", "--http-listen", ""])
        .args(["--cluster", &nats.urls, "--node-id", "n1"])
        .env_remove("MISSIVE_CONFIG")
        .env("MISSIVE_CLUSTER_PARTITIONS", "1")
        .stdin(Stdio::null())
        .output()
        .expect("missived runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a cluster node served a single node's directory"
    );
    assert!(
        stderr.contains("not in this cluster's log"),
        "the refusal does not say why: {stderr}"
    );

    // Nothing was changed: the store's files are as they were (RocksDB's own info log
    // aside), and the single node starts again on it with its message.
    assert_eq!(files(&data), before, "the refused directory was written to");
    let mut node = single(port);
    let mut alice = login_from("127.0.0.1", port, "alice", Duration::from_secs(30)).await;
    let entries = common::sync_all(&mut alice, 0).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(common::message(&entries[0]).content, b"alice: kept");
    node.signal("-TERM");
    let _ = node.exited(Duration::from_secs(20)).await;
}

/// The files of a data directory's store (name, size, modification time), RocksDB's info logs
/// (`LOG*`) aside.
fn files(data: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut out: Vec<_> = std::fs::read_dir(data.join("db"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_name().to_string_lossy().starts_with("LOG"))
        .map(|e| {
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                m.len(),
                m.modified().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}
