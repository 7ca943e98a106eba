//! A one-partition cluster (docs/CLUSTER.md section 10) on three real `nats-server`s and two
//! real `missived` processes: the owner serves, the other waits as a standby. The owner is
//! SIGKILLed while six users chat, and its data directory deleted (a dead machine); the users
//! reconnect to the standby once it has taken over, resend what was not acknowledged (same
//! client message ids), and every user's SYNC shows every acknowledged message exactly once,
//! with gapless versions.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::chat::{self, login, send, user, Plan, Progress};
use common::nats::{nats_cluster, Proc};
use common::primary::{joined, NodeSpec};
use common::{free_port, message, sync_all};
use missive_protocol::Packet;

const USERS: usize = 6;
const PER_USER: usize = 40;

fn start_node(dir: &Path, nats: &str, id: &str, port: u16) -> Proc {
    NodeSpec::new(dir, nats, id, port, None).start()
}

/// Which node (0 for n1, 1 for n2) the partition's lease names.
async fn owner_index(urls: &str) -> usize {
    let js = missive::cluster::connect(urls, "test").await.unwrap();
    let bucket = js.get_key_value(missive::cluster::BUCKET).await.unwrap();
    let lease = bucket.get("lease.0").await.unwrap().expect("a lease");
    let lease: serde_json::Value = serde_json::from_slice(&lease).unwrap();
    match lease["node"].as_str() {
        Some("n1") => 0,
        Some("n2") => 1,
        other => panic!("the lease names {other:?}"),
    }
}

/// Each user writes to the next one on a ring: each conversation has one writer.
fn next(me: usize, _n: usize) -> usize {
    (me + 1) % USERS
}

const PLAN: Plan = Plan {
    users: USERS,
    per_user: PER_USER,
    peer: next,
    pause: Duration::from_millis(20),
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owner_and_its_lost_disk_lose_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let nats = nats_cluster(dir.path());
    let ports = vec![free_port(), free_port()];
    let mut nodes = vec![
        Some(start_node(dir.path(), &nats.urls, "n1", ports[0])),
        Some(start_node(dir.path(), &nats.urls, "n2", ports[1])),
    ];

    // Whichever node took the partition serves; the other forwards its clients to it.
    let (mut probe, _) = login(&ports, "probe").await;
    probe.shutdown().await.ok();
    let owner = owner_index(&nats.urls).await;
    let standby_port = ports[1 - owner];

    // The standby has joined (its node key is in the cluster's bucket): it watches the lease.
    joined(&nats.urls, &format!("n{}", 2 - owner)).await;

    let progress = Arc::new(Progress::default());
    let chats = chat::start(PLAN, &ports, &progress);
    // SIGKILL the owner a third of the way in, and lose its disk.
    progress
        .wait_acked(USERS * PER_USER / 3, Duration::from_secs(60))
        .await;
    let killed_at = Instant::now();
    let acked_before = progress.acked();
    nodes[owner].take().unwrap().signal("-KILL");
    std::fs::remove_dir_all(dir.path().join(format!("n{}", owner + 1))).unwrap();
    let (mut again, _) = login(&[standby_port], "probe").await;
    let served_again = killed_at.elapsed();
    again.shutdown().await.ok();
    assert!(served_again < Duration::from_secs(30), "{served_again:?}");
    let mut all = BTreeMap::new();
    for (i, c) in chats.into_iter().enumerate() {
        all.insert(i, c.await.unwrap());
    }
    eprintln!(
        "{acked_before} sends acked before the SIGKILL; the standby served {served_again:?} \
         after it; all {} acked {:?} after it",
        USERS * PER_USER,
        killed_at.elapsed()
    );

    // Every user's inbox, from the node serving now (the former standby).
    let serving: Vec<u16> = vec![standby_port];
    for me in 0..USERS {
        let (mut conn, port) = login(&serving, &user(me)).await;
        assert_eq!(port, standby_port);
        let entries = sync_all(&mut conn, 0).await;
        let versions: Vec<u64> = entries.iter().map(|e| e.version).collect();
        assert_eq!(
            versions,
            (1..=entries.len() as u64).collect::<Vec<_>>(),
            "{}: versions gapless",
            user(me)
        );
        let mut mine = BTreeSet::new();
        let mut received = BTreeSet::new();
        for e in &entries {
            let m = message(e);
            if m.from_user == user(me) {
                assert!(mine.insert(m.msg_id), "{}: own message twice", user(me));
            } else {
                assert_eq!(m.from_user, user((me + USERS - 1) % USERS));
                assert!(received.insert(m.msg_id), "{}: received twice", user(me));
            }
        }
        // Exactly the acknowledged messages: each acked msg_id once (a resend after the
        // failover acked as a duplicate carries the first one's id).
        let acked: BTreeSet<u64> = all[&me].values().map(|a| a.msg_id).collect();
        assert_eq!(acked.len(), PER_USER, "{}: one id per message", user(me));
        assert_eq!(mine, acked, "{}: own entries are the acked sends", user(me));
        let from_prev: BTreeSet<u64> = all[&((me + USERS - 1) % USERS)]
            .values()
            .map(|a| a.msg_id)
            .collect();
        assert_eq!(
            received,
            from_prev,
            "{}: received every acked message",
            user(me)
        );
        // The conversation (only this user writes in it) has seqs 1.. in sending order.
        let seqs: Vec<u64> = all[&me].values().map(|a| a.seq).collect();
        assert_eq!(
            seqs,
            (1..=PER_USER as u64).collect::<Vec<_>>(),
            "{}",
            user(me)
        );
    }
    drop(nodes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_that_wakes_without_its_lease_stops_and_the_new_owner_has_everything() {
    let dir = tempfile::tempdir().unwrap();
    let nats = nats_cluster(dir.path());
    let ports = vec![free_port(), free_port()];
    let mut nodes = vec![
        start_node(dir.path(), &nats.urls, "n1", ports[0]),
        start_node(dir.path(), &nats.urls, "n2", ports[1]),
    ];
    let (mut ann, _) = login(&ports, "u0").await;
    let owner = owner_index(&nats.urls).await;
    let standby_port = ports[1 - owner];
    joined(&nats.urls, &format!("n{}", 2 - owner)).await;
    let mut acked = BTreeSet::new();
    for n in 0..20 {
        let Ok(Packet::SendAck(ack)) = ann.request(send("u1", n, "u0")).await else {
            panic!("send {n} not acknowledged");
        };
        acked.insert(ack.msg_id);
    }

    // The owner freezes (a long GC pause, a frozen VM) past its lease; the standby takes over.
    nodes[owner].signal("-STOP");
    let (mut ann, port) = login(&[standby_port], "u0").await;
    assert_eq!(port, standby_port);
    // The old owner wakes without its lease: it stops, with a failure status (a supervisor
    // starts it again, as a standby), instead of serving anything more.
    nodes[owner].signal("-CONT");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = nodes[owner].0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the old owner went on running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success(), "{status}");
    // The new owner has everything the old one acknowledged, and goes on.
    let Ok(Packet::SendAck(next)) = ann.request(send("u1", 20, "u0")).await else {
        panic!("the new owner does not take sends");
    };
    acked.insert(next.msg_id);
    let mine: BTreeSet<u64> = sync_all(&mut ann, 0)
        .await
        .iter()
        .map(|e| message(e).msg_id)
        .collect();
    assert_eq!(mine, acked);
    drop(nodes);
}
