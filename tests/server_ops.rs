//! Starting, catching up at volume, concurrency and slow consumers.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;
use missive::config::Config;
use missive::store::SendRequest;
use missive::Server;
use missive_client::{direct, pb, Connection};
use missive_protocol::Packet;

#[tokio::test]
async fn a_port_in_use_is_named_with_a_way_out() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        listen: vec![addr.clone()],
        ..test_config(&dir)
    };
    let err = match Server::start(config).await {
        Ok(_) => panic!("bound a port that is taken"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains(&addr), "{err}");
    assert!(err.contains("--listen"), "{err}");
    assert!(err.contains("MISSIVE_LISTEN"), "{err}");
}

#[tokio::test]
async fn without_a_secret_one_is_generated_owner_only_and_kept() {
    let server = TestServer::start_with(|c| c.secret = None).await;
    let path = server.dir.path().join("secret");
    let secret = std::fs::read_to_string(&path).unwrap();
    assert_eq!(secret.len(), 64);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Tokens minted with the generated secret log in.
    let token = missive_protocol::token::mint(secret.as_bytes(), "alice", "d", u64::MAX / 2);
    let mut conn = server.connect().await;
    conn.login(&token, "d", 0).await.unwrap();
    drop(conn);
    let mut server = server;
    server.restart().await;
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        secret,
        "kept across restarts"
    );
    server.stop().await;
}

#[tokio::test]
async fn ten_thousand_missed_messages_arrive_in_a_few_round_trips() {
    let server = TestServer::start().await;
    let store = server.handle().store().clone();
    // Queued at once; the writer commits them in a few large groups.
    let pending: Vec<_> = (0..10_000u32)
        .map(|i| {
            store.send_direct(
                SendRequest {
                    from: "alice".into(),
                    client_msg_id: format!("m{i}"),
                    to: direct("bob"),
                    content_type: 1,
                    content: format!("message number {i}").into_bytes(),
                    mentions: Vec::new(),
                    now_ms: missive::now_ms(),
                    ..Default::default()
                },
                None,
            )
        })
        .collect();
    for p in pending {
        p.await.unwrap();
    }
    let (mut bob, ack) = server.login("bob", "phone").await;
    assert_eq!(ack.current_version, 10_000);
    assert_eq!(ack.unread_total, 10_000);
    let mut since = 0;
    let mut trips = 0;
    let mut seen = 0u64;
    loop {
        let Packet::SyncAck(page) = bob
            .request(Packet::Sync(pb::Sync {
                since_version: since,
                limit: 5000,
            }))
            .await
            .unwrap()
        else {
            panic!("expected SYNC_ACK")
        };
        trips += 1;
        for e in &page.entries {
            seen += 1;
            assert_eq!(e.version, seen, "in order, no gaps");
            assert_eq!(
                message(e).content,
                format!("message number {}", seen - 1).into_bytes()
            );
        }
        since = page.new_version;
        if !page.has_more {
            break;
        }
    }
    assert_eq!(seen, 10_000);
    assert!(trips <= 4, "{trips} round trips");
    server.stop().await;
}

#[tokio::test]
async fn concurrent_senders_to_one_user_leave_gapless_versions() {
    let server = TestServer::start().await;
    let mut tasks = Vec::new();
    for s in 0..6 {
        let (client, _events) = server.client(&format!("sender{s}"), "d").await;
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                client
                    .send(direct("bob"), 1, format!("{s}/{i}"), None)
                    .await
                    .unwrap();
            }
            client.close().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let store = server.handle().store().clone();
    assert_eq!(store.core().check_user("bob").unwrap(), 150);
    assert_eq!(store.core().unread_total("bob").unwrap(), 150);
    let (mut bob, _) = server.login("bob", "d").await;
    let entries = sync_all(&mut bob, 0).await;
    // Each sender's messages arrive in the order sent.
    for s in 0..6 {
        let mine: Vec<String> = entries
            .iter()
            .map(|e| String::from_utf8(message(e).content.clone()).unwrap())
            .filter(|t| t.starts_with(&format!("{s}/")))
            .collect();
        let expected: Vec<String> = (0..25).map(|i| format!("{s}/{i}")).collect();
        assert_eq!(mine, expected);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_dropped_without_stalling_others_or_losing_messages() {
    let server = TestServer::start_with(|c| {
        c.outbound_queue = 16;
        c.max_content_len = 60_000;
    })
    .await;
    // Bob logs in on a raw connection and then never reads.
    let mut bob = server.connect().await;
    bob.login(&server.token("bob", "stuck"), "stuck", 0)
        .await
        .unwrap();
    let (alice, _) = server.client("alice", "d").await;
    let (_carol, mut carol_events) = server.client("carol", "d").await;
    let big = vec![b'x'; 60_000];
    for i in 0..200u32 {
        alice
            .send(direct("bob"), 1, big.clone(), Some(format!("b{i}")))
            .await
            .unwrap();
        if i % 50 == 0 {
            // Others are served all along.
            alice
                .send(direct("carol"), 1, format!("still here {i}"), None)
                .await
                .unwrap();
            let e = tokio::time::timeout(Duration::from_secs(5), next_entry(&mut carol_events))
                .await
                .expect("carol is not stalled");
            assert_eq!(message(&e).content, format!("still here {i}").into_bytes());
        }
    }
    // Bob's stuck connection was closed; he reconnects and syncs everything.
    let closed = drain_until_closed(&mut bob).await;
    assert!(closed, "the stuck connection was closed");
    let (mut bob2, ack) = server.login("bob", "phone").await;
    assert_eq!(ack.current_version, 200);
    let entries = sync_all(&mut bob2, 0).await;
    assert_eq!(entries.len(), 200);
    server.stop().await;
}

/// Reads (and discards) until the server closes the connection; false if it stays open 15 s.
async fn drain_until_closed(conn: &mut Connection) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match tokio::time::timeout_at(deadline, conn.read_raw(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}
