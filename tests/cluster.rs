//! The cluster's membership on real NATS: three `nats-server` processes with JetStream
//! (replicas = 3) and several real `missived` processes on loopback (docs/CLUSTER.md
//! section 3). The nodes share the partitions, a SIGKILLed node's partitions are taken within
//! the bound, a paused node does not believe in leases it lost, a node that leaves hands its
//! partitions over at once, a new node gets its share, and a node that disagrees with the
//! cluster's config is refused.
//!
//! Needs `nats-server` (Debian package `nats-server`; `.ci/run` installs it).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use common::http::{Api, API_KEY};
use common::nats::{nats_cluster, Proc};
use common::SECRET;
use serde_json::Value;

const PARTITIONS: u32 = 16;

/// A `missived` cluster node.
struct Node {
    proc: Proc,
    api: Api,
    http: String,
    id: String,
}

fn start_node(dir: &Path, nats: &str, id: &str, extra: &[(&str, &str)]) -> Node {
    let http = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_missived"));
    cmd.args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.join(id))
        .args(["--secret", SECRET, "--durability", "async", "--log", "warn"])
        .args(["--http-listen", &format!("127.0.0.1:{http}")])
        .args(["--cluster", nats, "--node-id", id])
        .env_remove("MISSIVE_CONFIG")
        .env("MISSIVE_API_KEY", API_KEY)
        .env("MISSIVE_CLUSTER_PARTITIONS", PARTITIONS.to_string())
        .env(
            "MISSIVE_CLUSTER_ADVERTISE",
            format!("tcp://{id}.example:443"),
        )
        .stdin(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("missived starts");
    Node {
        proc: Proc(child),
        api: Api::new(format!("127.0.0.1:{http}").parse().unwrap(), Some(API_KEY)),
        http: format!("127.0.0.1:{http}"),
        id: id.to_owned(),
    }
}

/// The node's `/v1/cluster`, or `None` while it is not answering.
async fn view(node: &Node) -> Option<Value> {
    let up = tokio::net::TcpStream::connect(&node.http).await.is_ok();
    if !up {
        return None;
    }
    // On a task of its own: the helper panics when the connection breaks (a node exiting).
    let api = node.api.clone();
    let probe = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(2), api.get("/v1/cluster")).await
    });
    match probe.await {
        Ok(Ok(a)) if a.status == 200 => Some(a.json()),
        _ => None,
    }
}

fn owned(v: &Value) -> BTreeSet<u64> {
    v["owned_here"]
        .as_array()
        .expect("owned_here")
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect()
}

/// Every answering node's `owned_here`, probed at the same time.
async fn beliefs(nodes: &[&Node]) -> BTreeMap<String, BTreeSet<u64>> {
    let views = futures_util::future::join_all(nodes.iter().map(|n| view(n))).await;
    nodes
        .iter()
        .zip(views)
        .filter_map(|(n, v)| Some((n.id.clone(), owned(&v?))))
        .collect()
}

/// The (partition, node, node) triples two nodes both claim in `by_node`.
fn doubles(by_node: &BTreeMap<String, BTreeSet<u64>>) -> BTreeSet<(u64, String, String)> {
    let mut out = BTreeSet::new();
    for (a, pa) in by_node {
        for (b, pb) in by_node {
            if a < b {
                for p in pa.intersection(pb) {
                    out.insert((*p, a.clone(), b.clone()));
                }
            }
        }
    }
    out
}

/// Polls `nodes` until each answers and together they own every partition, each exactly
/// once; returns who owns what. Panics after `limit`, and if two nodes claim one partition in
/// two polls in a row (a single poll may catch a handover between its probes; a real double
/// owner lasts at least a renewal round).
async fn settled(nodes: &[&Node], limit: Duration) -> BTreeMap<String, BTreeSet<u64>> {
    let start = Instant::now();
    let mut before = BTreeSet::new();
    loop {
        let by_node = beliefs(nodes).await;
        let now = doubles(&by_node);
        let lasting: Vec<_> = now.intersection(&before).collect();
        assert!(lasting.is_empty(), "owned twice in two polls: {lasting:?}");
        before = now;
        let total: usize = by_node.values().map(BTreeSet::len).sum();
        let union: BTreeSet<u64> = by_node.values().flatten().copied().collect();
        if by_node.len() == nodes.len() && total == PARTITIONS as usize && union.len() == total {
            return by_node;
        }
        assert!(
            start.elapsed() < limit,
            "not settled within {limit:?}: {by_node:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn nodes_share_the_partitions_and_take_over_a_dead_or_paused_ones_within_ten_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let nats = nats_cluster(dir.path());
    let n1 = start_node(dir.path(), &nats.urls, "n1", &[]);
    let n2 = start_node(dir.path(), &nats.urls, "n2", &[]);
    let n3 = start_node(dir.path(), &nats.urls, "n3", &[]);

    // All three come up, see each other, and the partitions settle at their preferred nodes:
    // each node owns some, none is owned twice.
    let start = Instant::now();
    let mut shares = settled(&[&n1, &n2, &n3], Duration::from_secs(60)).await;
    while shares.values().any(BTreeSet::is_empty) {
        assert!(start.elapsed() < Duration::from_secs(60), "{shares:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        shares = settled(&[&n1, &n2, &n3], Duration::from_secs(30)).await;
    }
    let v = view(&n1).await.unwrap();
    assert_eq!(v["partitions"], PARTITIONS);
    assert_eq!(v["replicas"], 3);
    let nodes: BTreeSet<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, BTreeSet::from(["n1", "n2", "n3"]));
    let advertised = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "n2")
        .unwrap()["info"]["addrs"][0]
        .clone();
    assert_eq!(advertised, "tcp://n2.example:443");
    // Every partition's lease names the node that believes it owns it.
    for p in v["partition_table"].as_array().unwrap() {
        let owner = p["owner"].as_str().expect("every partition has an owner");
        let number = p["partition"].as_u64().unwrap();
        assert!(shares[owner].contains(&number), "{p} vs {shares:?}");
    }

    // SIGKILL n2: n1 and n3 own everything within 10 s (the bound; the TTL is 5 s).
    let lost = shares["n2"].clone();
    n2.proc.signal("-KILL");
    let killed = Instant::now();
    let after = settled(&[&n1, &n3], Duration::from_secs(10)).await;
    let took = killed.elapsed();
    assert!(took <= Duration::from_secs(10), "took {took:?}");
    for p in &lost {
        assert!(after.values().any(|s| s.contains(p)), "{p} not taken");
    }
    let v = view(&n1).await.unwrap();
    for p in v["partition_table"].as_array().unwrap() {
        if lost.contains(&p["partition"].as_u64().unwrap()) {
            assert!(
                p["epoch"].as_u64().unwrap() >= 2,
                "a takeover raises the epoch: {p}"
            );
        }
    }
    eprintln!(
        "a SIGKILLed node's {} partitions were taken in {took:?}",
        lost.len()
    );

    // SIGSTOP n1 (a long pause: GC, a stalled disk, a frozen VM) for longer than the TTL: n3
    // takes its partitions; when n1 wakes, it believes in none of them, before it has run a
    // single renewal (its belief ends at a deadline on its own monotonic clock).
    let paused = after["n1"].clone();
    n1.proc.signal("-STOP");
    let stopped = Instant::now();
    let alone = settled(&[&n3], Duration::from_secs(12)).await;
    assert_eq!(alone["n3"].len(), PARTITIONS as usize);
    eprintln!(
        "a paused node's partitions were taken in {:?}",
        stopped.elapsed()
    );
    n1.proc.signal("-CONT");
    let woke = view(&n1).await.expect("n1 answers after SIGCONT");
    let believed = owned(&woke);
    assert!(
        believed.is_disjoint(&alone["n3"]),
        "n1 woke believing in {believed:?} (it had {paused:?}), all now n3's"
    );
    // And it rejoins: the partitions settle between the two again, none owned twice.
    let start = Instant::now();
    loop {
        let s = settled(&[&n1, &n3], Duration::from_secs(30)).await;
        if !s["n1"].is_empty() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_node_that_leaves_hands_over_at_once_and_a_new_node_gets_its_share() {
    let dir = tempfile::tempdir().unwrap();
    let nats = nats_cluster(dir.path());
    let n1 = start_node(dir.path(), &nats.urls, "n1", &[]);
    let n2 = start_node(dir.path(), &nats.urls, "n2", &[]);
    let shares = loop {
        let s = settled(&[&n1, &n2], Duration::from_secs(60)).await;
        if s.values().all(|o| !o.is_empty()) {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // SIGTERM n2: a graceful stop releases its leases, so n1 takes them well within a TTL
    // (5 s) instead of waiting for them to run out.
    n2.proc.signal("-TERM");
    let left = Instant::now();
    let after = settled(&[&n1], Duration::from_secs(20)).await;
    let took = left.elapsed();
    assert_eq!(after["n1"].len(), PARTITIONS as usize);
    assert!(
        took < Duration::from_secs(4),
        "n2's {} partitions came over in {took:?}, not at once",
        shares["n2"].len()
    );
    let v = view(&n1).await.unwrap();
    assert!(
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["id"] != "n2"),
        "a node that left is no longer listed: {v}"
    );

    // A new node n3: after it has settled (a TTL), the partitions that prefer it move to it,
    // one handover each, and nothing is owned twice.
    let n3 = start_node(dir.path(), &nats.urls, "n3", &[]);
    let start = Instant::now();
    let shares = loop {
        let s = settled(&[&n1, &n3], Duration::from_secs(30)).await;
        if !s["n3"].is_empty() && start.elapsed() > Duration::from_secs(8) {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(40), "{s:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        (3..=13).contains(&shares["n3"].len()),
        "n3 got {} of {PARTITIONS}",
        shares["n3"].len()
    );
}

#[tokio::test]
async fn a_node_that_disagrees_with_the_cluster_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let nats = nats_cluster(dir.path());
    let n1 = start_node(dir.path(), &nats.urls, "n1", &[]);
    settled(&[&n1], Duration::from_secs(60)).await;

    // Each refusal names its reason on stderr and exits non-zero.
    let out = Command::new(env!("CARGO_BIN_EXE_missived"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.path().join("n2b"))
        .args([
            "--secret",
            "another-secret-0123456789abcdef",
            "--log",
            "error",
        ])
        .args(["--http-listen", ""])
        .args(["--cluster", &nats.urls, "--node-id", "n2b"])
        .env_remove("MISSIVE_CONFIG")
        .env("MISSIVE_CLUSTER_PARTITIONS", PARTITIONS.to_string())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("secret"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_missived"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.path().join("n2c"))
        .args(["--secret", SECRET, "--log", "error", "--http-listen", ""])
        .args(["--cluster", &nats.urls, "--node-id", "n2c"])
        .env_remove("MISSIVE_CONFIG")
        .env("MISSIVE_CLUSTER_PARTITIONS", "32")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cluster_partitions = 16") && stderr.contains("32"),
        "{stderr}"
    );
    // n1 was not disturbed.
    assert_eq!(owned(&view(&n1).await.unwrap()).len(), PARTITIONS as usize);
}

#[tokio::test]
async fn a_single_node_has_no_cluster_view() {
    let server = common::TestServer::start_api(|_| {}).await;
    let answer = server.api().get("/v1/cluster").await;
    assert_eq!((answer.status, answer.error_code()), (404, 13));
    assert!(answer.text().contains("--cluster"), "{}", answer.text());
    server.stop().await;
}
