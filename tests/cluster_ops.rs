//! Operations on a one-partition cluster (docs/CLUSTER.md sections 7, 8 and 10) while six users
//! chat 1:1 through the reference client: three real `nats-server`s and three or four real
//! `missived` processes on loopback. A NATS server is SIGKILLed; every `missived` and every
//! NATS server is restarted in turn; a node is added and the partition moves to it, and a node
//! is removed. After each, every user's SYNC holds every acknowledged message exactly once and
//! nothing else, versions are gapless, each conversation's seqs are 1, 2, 3, ..., and the
//! unread counts equal a recount.
//!
//! The nodes run under a supervisor that starts a node again when it stops by itself (a node
//! that loses the lease stops with a failure status). The tests run one at a time (each runs up
//! to seven processes with five-second leases; two at once on a two-core machine would test the
//! machine). Needs `nats-server` (`.ci/run` installs it).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::chat::{self, Acks, Plan, Progress};
use common::nats::{nats_cluster, open_log, place_leader, streams_current, Nats};
use common::primary::{owner, preference, wait_live, wait_owner, NodeSpec, Supervisor};
use common::restart_port;
use missive::cluster::log::STREAM;
use tempfile::TempDir;

/// One test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const USERS: usize = 6;

/// Each user writes to both neighbours on a ring, in turn: every conversation has two writers,
/// so replies read what came before them and the unread counts move both ways.
fn neighbour(me: usize, n: usize) -> usize {
    if n.is_multiple_of(2) {
        (me + 1) % USERS
    } else {
        (me + USERS - 1) % USERS
    }
}

/// Steady load until the test stops it.
fn plan() -> Plan {
    Plan {
        users: USERS,
        per_user: usize::MAX,
        peer: neighbour,
        pause: Duration::from_millis(30),
    }
}

struct Cluster {
    nodes: Supervisor,
    /// Every node's client port, in node order: the clients try them in turn.
    ports: Vec<u16>,
    /// The node that owns the partition after the start.
    owner: usize,
    nats: Nats,
    _dir: TempDir,
}

/// Three NATS servers and one node per id in `ids`, of which the first `started` are started:
/// the one the cluster prefers first (it takes the lease and, being preferred, keeps it), then
/// the others, once the owner lists them as live standbys.
async fn cluster(ids: &[&str], started: usize) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let nats = nats_cluster(dir.path());
    let specs: Vec<NodeSpec> = ids
        .iter()
        .map(|id| {
            NodeSpec::new(
                dir.path(),
                &nats.urls,
                id,
                restart_port(),
                Some(restart_port()),
            )
        })
        .collect();
    let ports = specs.iter().map(|s| s.port).collect();
    let best = preference(&ids[..started])[0];
    let owner = ids.iter().position(|&id| id == best).unwrap();
    let nodes = Supervisor::new(&specs);
    nodes.start(owner);
    assert_eq!(wait_owner(&specs, Duration::from_secs(60)).await, owner);
    for i in (0..started).filter(|&i| i != owner) {
        let at = nodes.start(i);
        wait_live(&specs, ids[i], at, Duration::from_secs(30)).await;
    }
    Cluster {
        nodes,
        ports,
        owner,
        nats,
        _dir: dir,
    }
}

/// Acknowledged sends after `t`.
fn acked_after(all: &BTreeMap<usize, Acks>, t: Instant) -> usize {
    all.values()
        .flat_map(|a| a.values())
        .filter(|a| a.at > t)
        .count()
}

/// Waits for `n` more acknowledged sends (at most 60 s): the load goes on.
async fn more(progress: &Progress, n: usize) {
    progress
        .wait_acked(progress.acked() + n, Duration::from_secs(60))
        .await;
}

/// The bucket of the cluster's leases (a JetStream stream of its own).
fn lease_stream() -> String {
    format!("KV_{}", missive::cluster::BUCKET)
}

/// SIGKILLs one NATS server of three while the users chat: `lease_leader` says whether it is
/// the one leading the lease bucket's replication, and the log's stream has its leader there
/// too or not (the other two servers elect new leaders, which NATS does 4 to 9 s after it last
/// heard from the old one). Checks that the same owner goes on serving, that every user's
/// sends go on being acknowledged, and that nothing acknowledged is lost or doubled.
async fn lose_a_nats_server(lease_leader: bool) {
    let _one = SERIAL.lock().await;
    let c = cluster(&["n1", "n2", "n3"], 3).await;
    let progress = Arc::new(Progress::default());
    let chats = chat::start(plan(), &c.ports, &progress);
    more(&progress, 300).await;

    let js = missive::cluster::connect(&c.nats.urls, "test")
        .await
        .unwrap();
    let log = open_log(&c.nats.urls).await;
    let limit = Duration::from_secs(20);
    let log_leader = place_leader(&js, STREAM, |_| true, limit).await;
    let victim = if lease_leader {
        place_leader(&js, &lease_stream(), |l| l != log_leader, limit).await
    } else {
        place_leader(&js, &lease_stream(), |l| l != log_leader, limit).await;
        log_leader
    };
    assert_eq!(
        log.leader().await.unwrap(),
        Some(format!("nats{log_leader}"))
    );
    let acked_before = progress.acked();
    let killed = Instant::now();
    c.nats.servers[victim].signal("-KILL");
    more(&progress, 600).await;
    // Past the lease's life and NATS's longest election, so that a lease lost to it shows.
    let settled = killed + Duration::from_secs(15);
    tokio::time::sleep_until(settled.into()).await;
    more(&progress, 100).await;
    let all = chat::finish(&progress, chats).await;
    let end = Instant::now();

    let silence = chat::longest_silence(&all, killed, end);
    let after = acked_after(&all, killed);
    eprintln!(
        "nats{victim} (leading the {}) SIGKILLed after {acked_before} acked sends; {after} \
         acked in the {:?} after it, the longest time without an acknowledgement {silence:?}; \
         sends tried again: {:?}; nodes that stopped: {:?}",
        if lease_leader { "lease bucket" } else { "log" },
        end - killed,
        progress.retries(),
        c.nodes.unasked()
    );
    let specs = c.nodes.specs();
    if lease_leader {
        // No lease can be renewed until NATS has elected the bucket's new leader (4 to 9 s),
        // longer than the owner may believe in its lease (4.5 s): the owner may stop (with a
        // failure status; its supervisor starts it again as a standby) and another node takes
        // the partition once the bucket answers. The service comes back within a bound.
        wait_owner(&specs, Duration::from_secs(5)).await;
        for u in c.nodes.unasked() {
            assert!(
                !u.status.success(),
                "{} stopped by itself with {}",
                u.id,
                u.status
            );
        }
        assert!(silence < Duration::from_secs(20), "{silence:?}");
    } else {
        // The service did not stop: no node stopped, the same node owns the partition, and
        // every user's sends went on being acknowledged on two NATS servers.
        assert!(c.nodes.unasked().is_empty(), "{:?}", c.nodes.unasked());
        assert_eq!(
            wait_owner(&specs, Duration::from_secs(5)).await,
            c.owner,
            "the owner kept the partition"
        );
        assert!(silence < Duration::from_secs(12), "{silence:?}");
    }
    for (user, acks) in &all {
        assert!(
            acks.values().filter(|a| a.at > killed).count() >= 20,
            "u{user}: too few sends acknowledged after the loss"
        );
    }
    let checked = chat::check(&c.ports, &all).await;
    eprintln!("{checked} messages checked");
    c.nodes.kill_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_log_leaders_nats_server_under_load_loses_nothing_and_sends_go_on() {
    lose_a_nats_server(false).await;
}

/// NATS elects the lease bucket's new leader 4 to 9 s after it last heard from the old one
/// (nats-server's RAFT election timeout), and no lease can be renewed meanwhile; the owner
/// believes in its lease for at most `lease_ttl_ms` less the margin after sending its last
/// renewal, so it may give the partition up and stop, and a node takes over once the bucket
/// answers: nothing is lost, and the service is back within 20 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_lease_buckets_nats_server_under_load_loses_nothing_and_sends_go_on() {
    lose_a_nats_server(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_node_and_every_nats_server_under_load_loses_nothing() {
    let _one = SERIAL.lock().await;
    let mut c = cluster(&["n1", "n2", "n3"], 3).await;
    let specs = c.nodes.specs();
    let progress = Arc::new(Progress::default());
    let chats = chat::start(plan(), &c.ports, &progress);
    more(&progress, 300).await;
    let began = Instant::now();

    // Every node in turn, the owner last: SIGTERM, started again on its data directory, and
    // waited for as a live standby before the next.
    let mut order: Vec<usize> = (0..3).filter(|&i| i != c.owner).collect();
    order.push(c.owner);
    for i in order {
        let owned = owner(&specs).await == Some(i);
        let stopped = Instant::now();
        let status = c.nodes.stop(i, "-TERM", Duration::from_secs(30)).await;
        let mut line = format!("{} stopped ({status})", specs[i].id);
        if owned {
            // A graceful stop, which releases the lease at once: another node serves.
            assert!(status.success(), "the owner stopped with {status}");
            let next = wait_owner(&specs, Duration::from_secs(20)).await;
            assert_ne!(next, i);
            line += &format!(
                "; {} serves {:?} after the SIGTERM",
                specs[next].id,
                stopped.elapsed()
            );
        }
        let at = c.nodes.start(i);
        wait_live(&specs, &specs[i].id, at, Duration::from_secs(30)).await;
        eprintln!("{line}; back as a standby {:?} after it", stopped.elapsed());
        more(&progress, 100).await;
    }

    // Every NATS server in turn: SIGTERM, started again on its store, and waited for until
    // every stream's three replicas are current before the next.
    for i in 0..3 {
        let stopped = Instant::now();
        c.nats.servers[i].signal("-TERM");
        let status = c.nats.servers[i].exited(Duration::from_secs(30)).await;
        c.nats.restart(i);
        streams_current(&c.nats.urls, Duration::from_secs(60)).await;
        eprintln!(
            "nats{i} stopped ({status}), started again and current {:?} after the SIGTERM",
            stopped.elapsed()
        );
        more(&progress, 100).await;
    }
    // With one partition nothing moves it back: the node that took it over keeps it, and no
    // node stopped by itself (each stop above was asked for).
    assert!(c.nodes.unasked().is_empty(), "{:?}", c.nodes.unasked());
    assert!(owner(&specs).await.is_some());
    more(&progress, 100).await;
    let all = chat::finish(&progress, chats).await;
    let end = Instant::now();
    eprintln!(
        "{} sends acked; during the restarts ({:?}) the longest time without an \
         acknowledgement {:?}; sends tried again: {:?}; nodes that stopped by themselves: {:?}",
        progress.acked(),
        end - began,
        chat::longest_silence(&all, began, end),
        progress.retries(),
        c.nodes.unasked()
    );
    let checked = chat::check(&c.ports, &all).await;
    eprintln!("{checked} messages checked");
    c.nodes.kill_all();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_under_load_takes_the_partition_over_and_a_node_removed_loses_nothing() {
    let _one = SERIAL.lock().await;
    // The new node: one the cluster prefers to the two standbys but not to the owner, so that
    // the partition stays where it is while the new node follows the log, and moves to it when
    // the owner leaves.
    let base = ["n1", "n2", "n3"];
    let first = preference(&base)[0];
    let new = (4..)
        .map(|i| format!("n{i}"))
        .find(|id| {
            let all = [base[0], base[1], base[2], id.as_str()];
            preference(&all)[..2] == [first, id.as_str()]
        })
        .unwrap();
    let c = cluster(&[base[0], base[1], base[2], &new], 3).await;
    let specs = c.nodes.specs();
    let progress = Arc::new(Progress::default());
    let chats = chat::start(plan(), &c.ports, &progress);
    more(&progress, 300).await;

    // Add a node, with an empty data directory: it joins as a standby and follows the log.
    let at = c.nodes.start(3);
    wait_live(&specs, &new, at, Duration::from_secs(30)).await;
    more(&progress, 300).await;

    // The owner leaves (SIGTERM releases the lease): the partition moves to the new node.
    let moved = Instant::now();
    let status = c
        .nodes
        .stop(c.owner, "-TERM", Duration::from_secs(30))
        .await;
    assert!(status.success(), "the owner stopped with {status}");
    assert_eq!(
        wait_owner(&specs, Duration::from_secs(20)).await,
        3,
        "the new node serves"
    );
    let took = moved.elapsed();
    more(&progress, 300).await;

    // Remove a standby.
    let standby = (0..3).find(|&i| i != c.owner).unwrap();
    let status = c
        .nodes
        .stop(standby, "-TERM", Duration::from_secs(30))
        .await;
    more(&progress, 300).await;
    let all = chat::finish(&progress, chats).await;
    let end = Instant::now();
    eprintln!(
        "{new} added; the owner's SIGTERM moved the partition to it in {took:?}, the longest \
         time without an acknowledgement after it {:?}; {} stopped ({status}); {} sends acked; \
         sends tried again: {:?}",
        chat::longest_silence(&all, moved, end),
        specs[standby].id,
        progress.acked(),
        progress.retries()
    );
    assert!(c.nodes.unasked().is_empty(), "{:?}", c.nodes.unasked());
    assert_eq!(owner(&specs).await, Some(3), "the new node still serves");
    let checked = chat::check(&c.ports, &all).await;
    eprintln!("{checked} messages checked");
    c.nodes.kill_all();
}

/// Draining the owner (SIGUSR1, as `POST /v1/drain`) of a one-partition cluster under load: it
/// finishes its writes, hands the partition over and stops with success; another node serves
/// at once and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_owner_hands_the_partition_over_and_stops_under_load() {
    let _one = SERIAL.lock().await;
    let c = cluster(&["n1", "n2", "n3"], 3).await;
    let specs = c.nodes.specs();
    let progress = Arc::new(Progress::default());
    let chats = chat::start(plan(), &c.ports, &progress);
    more(&progress, 300).await;
    let drained = Instant::now();
    let status = c
        .nodes
        .stop(c.owner, "-USR1", Duration::from_secs(30))
        .await;
    assert!(status.success(), "the drained owner stopped with {status}");
    let next = wait_owner(&specs, Duration::from_secs(20)).await;
    assert_ne!(next, c.owner);
    let took = drained.elapsed();
    more(&progress, 300).await;
    let all = chat::finish(&progress, chats).await;
    eprintln!(
        "{} drained: {} serves {took:?} after the SIGUSR1; the longest time without an \
         acknowledgement {:?}; sends tried again: {:?}",
        specs[c.owner].id,
        specs[next].id,
        chat::longest_silence(&all, drained, Instant::now()),
        progress.retries()
    );
    assert!(c.nodes.unasked().is_empty(), "{:?}", c.nodes.unasked());
    let checked = chat::check(&c.ports, &all).await;
    eprintln!("{checked} messages checked");
    c.nodes.kill_all();
}
