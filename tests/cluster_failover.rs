//! A one-partition cluster (docs/CLUSTER.md section 10) on three real `nats-server`s and two
//! real `missived` processes: the owner serves, the other waits as a standby. The owner is
//! SIGKILLed while six users chat, and its data directory deleted (a dead machine); the users
//! reconnect to the standby once it has taken over, resend what was not acknowledged (same
//! client message ids), and every user's SYNC shows every acknowledged message exactly once,
//! with gapless versions.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::nats::{nats_cluster, Proc};
use common::{free_port, message, sync_all, SECRET};
use missive_client::Connection;
use missive_protocol::pb;
use missive_protocol::Packet;

const USERS: usize = 6;
const PER_USER: usize = 40;

fn start_node(dir: &Path, nats: &str, id: &str, port: u16) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_missived"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.join(id))
        .args(["--secret", SECRET, "--durability", "async", "--log", "warn"])
        .args(["--http-listen", ""])
        .args(["--cluster", nats, "--node-id", id])
        .env_remove("MISSIVE_CONFIG")
        .env("MISSIVE_CLUSTER_PARTITIONS", "1")
        // The test reads pushes only at the end: no retransmits meanwhile.
        .env("MISSIVE_ACK_TIMEOUT_MS", "600000")
        .stdin(Stdio::null())
        .spawn()
        .expect("missived starts");
    Proc(child)
}

/// Waits until node `id` has joined (its key is in the cluster's bucket): a standby then
/// watches the lease.
async fn joined(urls: &str, id: &str) {
    let js = missive::cluster::connect(urls, "test").await.unwrap();
    let bucket = js.get_key_value(missive::cluster::BUCKET).await.unwrap();
    let key = format!("node.{id}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(bucket.get(&key).await, Ok(Some(_))) {
        assert!(Instant::now() < deadline, "{id} did not join");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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

fn user(i: usize) -> String {
    format!("u{i}")
}

/// Logs `name` in at whichever of `ports` serves, trying for up to 60 s.
async fn login(ports: &[u16], name: &str) -> (Connection, u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for &port in ports {
            let addr = format!("127.0.0.1:{port}");
            if let Ok(Ok(mut conn)) =
                tokio::time::timeout(Duration::from_secs(2), Connection::connect(&addr)).await
            {
                let expires = (missive::now_ms() / 1000) as u64 + 600;
                let token = missive_protocol::token::mint(SECRET.as_bytes(), name, "d", expires);
                let logged =
                    tokio::time::timeout(Duration::from_secs(5), conn.login(&token, "d", 0));
                if let Ok(Ok(_)) = logged.await {
                    return (conn, port);
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name}: no node served within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn send(to: &str, n: usize, from: &str) -> Packet {
    Packet::Send(pb::Send {
        client_msg_id: format!("{from}-{n}"),
        to: Some(pb::Conversation {
            kind: pb::ConversationKind::Direct as i32,
            id: to.into(),
        }),
        content_type: 1,
        content: format!("{from} #{n}").into_bytes(),
        ..Default::default()
    })
}

/// What one user's sends were acknowledged with: client number -> (msg_id, seq, duplicate).
type Acks = BTreeMap<usize, (u64, u64, bool)>;

async fn chat(me: usize, ports: Vec<u16>, sent: Arc<AtomicUsize>) -> Acks {
    let name = user(me);
    let to = user((me + 1) % USERS);
    let (mut conn, _) = login(&ports, &name).await;
    let mut acks = Acks::new();
    let mut n = 0;
    while n < PER_USER {
        let reply = conn
            .request_timeout(send(&to, n, &name), Duration::from_secs(10))
            .await;
        match reply {
            Ok(Packet::SendAck(ack)) => {
                acks.insert(n, (ack.msg_id, ack.seq, ack.duplicate));
                sent.fetch_add(1, Ordering::Relaxed);
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // The node died (or is stopping): reconnect wherever the partition is served now
            // and send the same message again, with the same client message id.
            _ => conn = login(&ports, &name).await.0,
        }
    }
    acks
}

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

    let sent = Arc::new(AtomicUsize::new(0));
    let chats: Vec<_> = (0..USERS)
        .map(|i| tokio::spawn(chat(i, ports.clone(), sent.clone())))
        .collect();
    // SIGKILL the owner a third of the way in, and lose its disk.
    while sent.load(Ordering::Relaxed) < USERS * PER_USER / 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed_at = Instant::now();
    let acked_before = sent.load(Ordering::Relaxed);
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
        let acked: BTreeSet<u64> = all[&me].values().map(|a| a.0).collect();
        assert_eq!(acked.len(), PER_USER, "{}: one id per message", user(me));
        assert_eq!(mine, acked, "{}: own entries are the acked sends", user(me));
        let from_prev: BTreeSet<u64> = all[&((me + USERS - 1) % USERS)]
            .values()
            .map(|a| a.0)
            .collect();
        assert_eq!(
            received,
            from_prev,
            "{}: received every acked message",
            user(me)
        );
        // The conversation (only this user writes in it) has seqs 1.. in sending order.
        let seqs: Vec<u64> = all[&me].values().map(|a| a.1).collect();
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
