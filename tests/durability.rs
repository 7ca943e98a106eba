//! The `sync` durability mode fsyncs before acknowledging, with many sends per fsync.

mod common;

use common::*;
use missive::store::Durability;
use missive_client::direct;

#[tokio::test]
async fn sync_mode_groups_concurrent_sends_into_shared_fsyncs() {
    let mut server = TestServer::start_with(|c| c.durability = Durability::Sync).await;
    let store = server.handle().store().clone();
    let syncs_before = store.wal_syncs();
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
    let syncs = store.wal_syncs() - syncs_before;
    println!("{sends} acknowledged sends, {syncs} WAL fsyncs");
    assert!(syncs >= 1, "sync mode fsyncs");
    assert!(
        syncs * 2 <= sends,
        "group commit: {syncs} fsyncs for {sends} sends"
    );
    drop(store);
    // Everything acknowledged is there after a restart.
    server.restart().await;
    for s in 0..senders {
        let store = server.handle().store();
        assert_eq!(
            store.check_user(&format!("r{s}")).unwrap(),
            per_sender as u64
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn async_mode_does_not_fsync_per_send() {
    let server = TestServer::start_with(|c| c.durability = Durability::Async).await;
    let store = server.handle().store().clone();
    let before = store.wal_syncs();
    let (alice, _e) = server.client("alice", "d").await;
    for i in 0..20 {
        alice
            .send(direct("bob"), 1, format!("{i}"), None)
            .await
            .unwrap();
    }
    assert_eq!(store.wal_syncs() - before, 0);
    drop(store);
    server.stop().await;
}
