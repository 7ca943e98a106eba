//! Snapshots and the log trimmed behind them (docs/CLUSTER.md section 4), on three real
//! `nats-server`s with replicas 3:
//!
//! - through the library, a replicated store: an upload that does not complete trims nothing,
//!   a complete one trims the log to the snapshot's position, an owner that lost the lease or
//!   was fenced by a newer epoch trims nothing, and a directory restored from the snapshot plus
//!   the log holds what the store holds;
//! - with real `missived` processes: the owner takes snapshots while users chat and the log's
//!   first record moves past 1; a new node with an empty data directory (which cannot replay
//!   the log from its start) takes over from a SIGKILLed owner from the snapshot plus the log,
//!   and every user's SYNC holds every acknowledged message exactly once, versions gapless.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::chat::{self, Plan, Progress};
use common::free_port;
use common::http::{Api, API_KEY};
use common::nats::{nats_cluster, open_log, replicated_store, Proc};
use common::primary::{joined, listening, NodeSpec};
use missive::cluster::log::{Log, LogError, Writer};
use missive::cluster::snapshot::{self, SnapshotError, Snapshots, Snapshotter};
use missive::ids::Version;
use missive::store::{Durability, SendRequest, Store};
use missive_protocol::pb::{Conversation, ConversationKind};

/// A store in `dir` whose groups go to partition 0 of `log`, taken at `epoch`.
async fn replicated(dir: &Path, log: &Log, epoch: u64) -> Arc<Store> {
    Arc::new(replicated_store(dir, log, 0, epoch).await)
}

const USERS: [&str; 3] = ["ann", "ben", "cat"];

/// `n` messages around the three users, acknowledged.
async fn chat_in(store: &Store, from_n: usize, n: usize) {
    for i in from_n..from_n + n {
        let (from, to) = (USERS[i % 3], USERS[(i + 1) % 3]);
        let req = SendRequest {
            from: from.into(),
            client_msg_id: format!("{from}-{i}"),
            to: Conversation {
                kind: ConversationKind::Direct as i32,
                id: to.into(),
            },
            content_type: 1,
            content: format!("message {i} from {from}").into_bytes(),
            now_ms: missive::now_ms(),
            ..Default::default()
        };
        store.send_direct(req, None).await.expect("acknowledged");
    }
}

/// Every user's inbox as stored: (version, the entry's bytes).
fn inboxes(store: &Store) -> Vec<Vec<(u64, Vec<u8>)>> {
    USERS
        .iter()
        .map(|u| {
            let page = store
                .core()
                .inbox_after(u, Version(0), 100_000, usize::MAX)
                .unwrap();
            assert!(!page.has_more);
            page.entries
                .iter()
                .map(|e| (e.version, prost::Message::encode_to_vec(e)))
                .collect()
        })
        .collect()
}

fn trimmed(read: Result<Vec<(u64, bytes::Bytes)>, LogError>) -> bool {
    matches!(read, Err(LogError::Trimmed { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_trimmed_only_behind_a_complete_snapshot_of_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let nats = nats_cluster(dir.path());
    let log = open_log(&nats.urls).await;
    let js = missive::cluster::connect(&nats.urls, "test").await.unwrap();
    let store = replicated(&dir.path().join("owner"), &log, 1).await;
    chat_in(&store, 0, 120).await;

    // A bucket too small for the snapshot: the upload fails part way, nothing is trimmed.
    js.create_object_store(async_nats::jetstream::object_store::Config {
        bucket: snapshot::BUCKET.into(),
        max_bytes: 16 << 10,
        num_replicas: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let taker = Snapshotter {
        log: log.clone(),
        snapshots: Snapshots::open(&js, 3).await.unwrap(),
        store: store.clone(),
        scratch: dir.path().to_path_buf(),
        partition: 0,
    };
    let owns = || true;
    let failed = taker.take(1, &owns).await;
    assert!(
        matches!(failed, Err(SnapshotError::Upload(_))),
        "{failed:?}"
    );
    assert_eq!(log.first(0).await.unwrap(), 1, "nothing trimmed");
    assert!(!trimmed(log.read(0, 0).await));
    assert_eq!(taker.snapshots.latest(0).await.unwrap(), None);

    // With room, the snapshot is uploaded, read back, and the log trimmed to its position.
    js.delete_object_store(snapshot::BUCKET).await.unwrap();
    let taker = Snapshotter {
        snapshots: Snapshots::open(&js, 3).await.unwrap(),
        ..taker
    };
    let first = taker.take(1, &owns).await.unwrap();
    let at = store.core().log_seq().unwrap();
    assert_eq!(first.snapshot.seq, at, "a checkpoint of the idle store");
    assert_eq!(first.log_first, at);
    assert_eq!(log.first(0).await.unwrap(), at);
    assert!(
        trimmed(log.read(0, 0).await),
        "the log no longer starts at 1"
    );
    assert!(log.read(0, at).await.unwrap().is_empty());

    // A second one: the first is deleted once the second is complete.
    chat_in(&store, 120, 60).await;
    let second = taker.take(1, &owns).await.unwrap();
    assert!(second.snapshot.seq > first.snapshot.seq);
    assert_eq!(
        taker.snapshots.list(0).await.unwrap(),
        vec![second.snapshot.clone()]
    );

    // An owner that no longer believes in its lease uploads, but trims nothing.
    chat_in(&store, 180, 30).await;
    let not_mine = || false;
    let refused = taker.take(1, &not_mine).await;
    assert!(
        matches!(refused, Err(SnapshotError::NotOwner(0))),
        "{refused:?}"
    );
    assert_eq!(log.first(0).await.unwrap(), second.snapshot.seq);

    // A directory restored from the newest snapshot plus the log after it holds what the
    // owner holds.
    let restored = dir.path().join("restored").join("db");
    std::fs::create_dir_all(restored.parent().unwrap()).unwrap();
    let from = snapshot::restore(&taker.snapshots, 0, &restored)
        .await
        .unwrap();
    assert!(from > second.snapshot.seq, "the newest snapshot");
    let records = log.read(0, from).await.unwrap();
    let at = Store::replay(&restored, records.iter().map(|(s, r)| (*s, r.as_ref()))).unwrap();
    assert_eq!(at, store.core().log_seq().unwrap());
    let copy = Store::open(&restored, Durability::Async).unwrap();
    // The same state as the owner's, every family key by key, the log position included.
    missive::check::check_replica(store.core(), copy.core()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(inboxes(&copy), inboxes(&store));
    assert_eq!(inboxes(&copy)[0].len(), 140, "ann sent 70 and got 70");
    drop(copy);

    // A new owner takes the partition (epoch 2): the old one is fenced, and trims nothing even
    // while it still believes in its lease.
    let before = log.first(0).await.unwrap();
    let newer = Writer::take(log.clone(), 0, 2, log.last(0).await.unwrap())
        .await
        .unwrap();
    let fenced = taker.take(1, &owns).await;
    assert!(
        matches!(fenced, Err(SnapshotError::NotOwner(0))),
        "{fenced:?}"
    );
    assert_eq!(log.first(0).await.unwrap(), before);
    drop(newer);
}

/// Starts a one-partition cluster node with a server API and snapshots every `every` records.
fn start_node(dir: &Path, nats: &str, id: &str, port: u16, http: u16, every: u64) -> Proc {
    NodeSpec::new(dir, nats, id, port, Some(http))
        .with_env("MISSIVE_CLUSTER_SNAPSHOT_RECORDS", every)
        .start()
}

/// The node's `missive_cluster_snapshots_total` and its `/v1/cluster` snapshot view, once it
/// answers.
async fn snapshots_of(http: u16) -> Option<(f64, serde_json::Value)> {
    if !listening(http).await {
        return None;
    }
    let api = Api::new(format!("127.0.0.1:{http}").parse().unwrap(), Some(API_KEY));
    // On a task of its own: the helper panics when the connection breaks.
    let probe = tokio::spawn(async move {
        let metrics = api.metrics().await;
        let view = api.get("/v1/cluster").await.json();
        (metrics.get("missive_cluster_snapshots_total"), view)
    });
    match tokio::time::timeout(Duration::from_secs(5), probe).await {
        Ok(Ok((taken, view))) => Some((taken, view["snapshot"].clone())),
        _ => None,
    }
}

/// Waits until the node at `http` has taken `n` snapshots; its snapshot view.
async fn wait_snapshots(http: u16, n: f64, limit: Duration) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        if let Some((taken, view)) = snapshots_of(http).await {
            if taken >= n {
                return view;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{n} snapshots not taken in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_with_an_empty_directory_takes_over_from_the_snapshot_and_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let nats = nats_cluster(dir.path());
    let (port1, http1, port3, http3) = (free_port(), free_port(), free_port(), free_port());
    let every = 100;
    let mut owner = Some(start_node(
        dir.path(),
        &nats.urls,
        "n1",
        port1,
        http1,
        every,
    ));
    let ports = vec![port1, port3];
    let plan = Plan {
        users: 6,
        per_user: 100_000,
        peer: |me, _| (me + 1) % 6,
        pause: Duration::from_millis(10),
    };
    let progress = Arc::new(Progress::default());
    let chats = chat::start(plan, &ports, &progress);

    // The owner snapshots twice and trims the log: it no longer starts at record 1.
    let view = wait_snapshots(http1, 2.0, Duration::from_secs(120)).await;
    let log = open_log(&nats.urls).await;
    let log_first = log.first(0).await.unwrap();
    assert!(
        log_first > 1,
        "the log was trimmed: first record {log_first}"
    );
    assert!(trimmed(log.read(0, 0).await), "no replay from the start");
    assert!(view["last_seq"].as_u64().unwrap() >= log_first, "{view}");
    let acked_at_trim = progress.acked();

    // A new node, with an empty data directory, joins as a standby.
    let newcomer = start_node(dir.path(), &nats.urls, "n3", port3, http3, every);
    joined(&nats.urls, "n3").await;
    progress
        .wait_acked(acked_at_trim + 200, Duration::from_secs(60))
        .await;

    // The owner dies with its disk; the newcomer takes over from the snapshot and the log.
    let killed_at = Instant::now();
    let acked_before = progress.acked();
    owner.take().unwrap().signal("-KILL");
    std::fs::remove_dir_all(dir.path().join("n1")).unwrap();
    progress
        .wait_acked(acked_before + 300, Duration::from_secs(60))
        .await;
    let served_after = killed_at.elapsed();
    // It goes on snapshotting and trimming as the new owner.
    let view = wait_snapshots(http3, 1.0, Duration::from_secs(60)).await;
    let all = chat::finish(&progress, chats).await;
    assert!(log.first(0).await.unwrap() > log_first, "{view}");
    let checked = chat::check(&[port3], &all).await;
    eprintln!(
        "{acked_at_trim} sends acked when the log was first seen trimmed (first record \
         {log_first}), {acked_before} at the SIGKILL; the newcomer served 300 more within \
         {served_after:?}; {checked} messages checked; retries {:?}",
        progress.retries()
    );
    drop(newcomer);
}
