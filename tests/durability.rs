//! The `sync` durability mode fsyncs before acknowledging, with many sends per fsync.

mod common;

use common::*;
use missive::store::Durability;
use missive_client::direct;

#[tokio::test]
async fn sync_mode_fsyncs_and_keeps_every_acknowledged_send() {
    let mut server = TestServer::start_with(|c| c.durability = Durability::Sync).await;
    let store = server.handle().store().clone();
    let syncs_before = store.core().wal_syncs();
    let senders = 32;
    let per_sender = 5;
    let mut tasks = Vec::new();
    for s in 0..senders {
        let (client, _events) = server.client(&format!("s{s}"), "d").await;
        tasks.push(tokio::spawn(async move {
            for i in 0..per_sender {
                client
                    .send(direct(format!("r{s}")), 1, format!("{i}"), None)
                    .await
                    .unwrap();
            }
            client.close().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let sends = (senders * per_sender) as u64;
    let syncs = store.core().wal_syncs() - syncs_before;
    println!("{sends} acknowledged sends over the network, {syncs} WAL fsyncs");
    assert!(syncs >= 1, "sync mode fsyncs");
    assert!(syncs <= sends, "at most one fsync per send");
    drop(store);
    // Everything acknowledged is there after a restart.
    server.restart().await;
    for s in 0..senders {
        let store = server.handle().store();
        assert_eq!(
            store.core().check_user(&format!("r{s}")).unwrap(),
            per_sender as u64
        );
    }
    server.stop().await;
}

/// Group commit proper: with many writers waiting on the write-ahead log at once, one fsync
/// covers several of them. Driven at the store level so that the writers really are concurrent
/// (over the network, how many overlap depends on scheduling).
#[test]
fn concurrent_writers_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(
        missive::store::Store::open(&dir.path().join("db"), Durability::Sync).unwrap(),
    );
    let before = store.core().wal_syncs();
    let writers = 64;
    let per_writer = 8;
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || {
                let to = direct(format!("r{w}"));
                let from = format!("s{w}");
                for i in 0..per_writer {
                    let id = format!("{w}-{i}");
                    let req = missive::store::SendRequest {
                        from: from.clone(),
                        client_msg_id: id,
                        to: to.clone(),
                        content_type: 1,
                        content: b"x".to_vec(),
                        mentions: Vec::new(),
                        now_ms: missive::now_ms(),
                        ..Default::default()
                    };
                    store.send_direct(req, None).wait().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let sends = (writers * per_writer) as u64;
    let syncs = store.core().wal_syncs() - before;
    println!("{sends} sends from {writers} concurrent writers, {syncs} WAL fsyncs");
    assert!(syncs >= 1);
    assert!(
        syncs * 2 <= sends,
        "group commit: {syncs} fsyncs for {sends} sends"
    );
}

#[tokio::test]
async fn async_mode_does_not_fsync_per_send() {
    let server = TestServer::start_with(|c| c.durability = Durability::Async).await;
    let store = server.handle().store().clone();
    let before = store.core().wal_syncs();
    let (alice, _e) = server.client("alice", "d").await;
    for i in 0..20 {
        alice
            .send(direct("bob"), 1, format!("{i}"), None)
            .await
            .unwrap();
    }
    assert_eq!(store.core().wal_syncs() - before, 0);
    drop(store);
    server.stop().await;
}

/// One connection's SENDs are pipelined: the server hands each to the writer as it arrives, so
/// sends in flight together share an fsync instead of waiting one fsync each (before the single
/// writer, one user's sends were serialized by that user's lock at one fsync per send).
#[tokio::test]
async fn one_connections_pipelined_sends_share_fsyncs() {
    let mut server = TestServer::start_with(|c| c.durability = Durability::Sync).await;
    let store = server.handle().store().clone();
    let (alice, _e) = server.client("alice", "d").await;
    let before = store.core().wal_syncs();
    let sends = 64u64;
    let alice = std::sync::Arc::new(alice);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..sends {
        let alice = alice.clone();
        tasks.spawn(async move { alice.send(direct("bob"), 1, format!("{i}"), None).await });
    }
    let mut seqs = Vec::new();
    while let Some(ack) = tasks.join_next().await {
        seqs.push(ack.unwrap().unwrap().seq);
    }
    let syncs = store.core().wal_syncs() - before;
    println!("{sends} pipelined sends on one connection, {syncs} WAL fsyncs");
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=sends).collect::<Vec<_>>(), "each stored once");
    assert!(syncs >= 1);
    assert!(
        syncs * 4 <= sends,
        "group commit within one connection: {syncs} fsyncs for {sends} sends"
    );
    alice.close().await;
    drop(store);
    server.restart().await;
    assert_eq!(
        server
            .handle()
            .store()
            .core()
            .current_version("bob")
            .unwrap(),
        sends
    );
    server.stop().await;
}
