//! A network partition that isolates the owner of a one-partition cluster from NATS, while its
//! clients can still reach it (docs/CLUSTER.md section 8). The owner runs in a network namespace
//! of its own with two veth links: one to the clients, one to the NATS servers. The NATS link is
//! cut while two users chat. The isolated owner must stop acknowledging (its lease is gone: its
//! appends cannot reach the log, and it stops once it no longer believes in its lease) and must
//! not diverge: the standby takes over, the users finish there, and every user's SYNC shows
//! every acknowledged message exactly once, with gapless versions; the isolated node exits with
//! a failure status instead of serving on.
//!
//! Needs root (network namespaces); the test says so and does nothing without it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::chat::send;
use common::nats::nats_cluster_on;
use common::primary::NodeSpec;
use common::{free_port, message, sync_all, SECRET};
use missive_client::Connection;
use missive_protocol::Packet;

const PER_USER: usize = 60;

/// Runs `ip` with `args`; panics with its output if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace with two veth links to the root namespace: `client` (10.231.k.0/24)
/// and `nats` (10.232.k.0/24); the namespace's side is `.2`, the root's `.1`. Deleted on drop.
struct Netns {
    name: String,
    k: u32,
}

impl Netns {
    fn create() -> Netns {
        let pid = std::process::id();
        let k = pid % 250 + 1;
        let ns = Netns {
            name: format!("msv{pid}"),
            k,
        };
        ns.delete();
        ip(&["netns", "add", &ns.name]);
        for (link, net) in [("c", 231), ("n", 232)] {
            let root = format!("mv{link}{pid}");
            let inner = format!("mv{link}{pid}x");
            ip(&["link", "add", &root, "type", "veth", "peer", "name", &inner]);
            ip(&["link", "set", &inner, "netns", &ns.name]);
            ip(&["addr", "add", &format!("10.{net}.{k}.1/24"), "dev", &root]);
            ip(&["link", "set", &root, "up"]);
            ns.exec(&["addr", "add", &format!("10.{net}.{k}.2/24"), "dev", &inner]);
            ns.exec(&["link", "set", &inner, "up"]);
        }
        ns.exec(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip <args>` inside the namespace.
    fn exec(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// The namespace's side of the NATS link, up or down.
    fn nats_link(&self, up: bool) {
        let inner = format!("mvn{}x", self.name.trim_start_matches("msv"));
        self.exec(&["link", "set", &inner, if up { "up" } else { "down" }]);
    }

    fn client_addr(&self) -> String {
        format!("10.231.{}.2", self.k)
    }

    fn nats_host(&self) -> String {
        format!("10.232.{}.1", self.k)
    }

    fn delete(&self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .stderr(Stdio::null())
            .status();
        let pid = self.name.trim_start_matches("msv");
        for link in ["c", "n"] {
            let _ = Command::new("ip")
                .args(["link", "delete", &format!("mv{link}{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.delete();
    }
}

/// The node the partition's lease names, once there is one.
async fn owner(urls: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(js) = missive::cluster::connect(urls, "test").await {
            if let Ok(bucket) = js.get_key_value(missive::cluster::BUCKET).await {
                if let Ok(Some(v)) = bucket.get("lease.0").await {
                    let lease: serde_json::Value = serde_json::from_slice(&v).unwrap();
                    if let Some(n) = lease["node"].as_str().filter(|n| !n.is_empty()) {
                        return n.to_owned();
                    }
                }
            }
        }
        assert!(Instant::now() < deadline, "nobody took the partition");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `name` logged in at the first of `addrs` that serves, trying for up to 60 s; the address.
async fn login(addrs: &[String], name: &str) -> (Connection, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for addr in addrs {
            let connect = Connection::connect_timeout(addr, Duration::from_secs(2));
            if let Ok(mut conn) = connect.await {
                let expires = (missive::now_ms() / 1000) as u64 + 600;
                let token = missive_protocol::token::mint(SECRET.as_bytes(), name, "d", expires);
                let logged =
                    tokio::time::timeout(Duration::from_secs(5), conn.login(&token, "d", 0));
                if let Ok(Ok(_)) = logged.await {
                    return (conn, addr.clone());
                }
            }
        }
        assert!(Instant::now() < deadline, "{name}: nobody served in 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One acknowledged send: its message id, and when and where it was acknowledged.
struct Ack {
    msg_id: u64,
    at: Instant,
    addr: String,
}

/// `from` sends `PER_USER` messages to `to`, one at a time, logging in again at the first of
/// `addrs` that serves after any failure and resending with the same client message id. The
/// acks, and the error codes the sends were answered with.
async fn chat(
    from: &str,
    to: &str,
    addrs: Vec<String>,
    acked: Arc<AtomicUsize>,
) -> (Vec<Ack>, Vec<u32>) {
    let (mut conn, mut addr) = login(&addrs, from).await;
    let mut acks = Vec::new();
    let mut errors = Vec::new();
    while acks.len() < PER_USER {
        let reply = conn
            .request_timeout(send(to, acks.len(), from), Duration::from_secs(5))
            .await;
        match reply {
            Ok(Packet::SendAck(ack)) => {
                acks.push(Ack {
                    msg_id: ack.msg_id,
                    at: Instant::now(),
                    addr: addr.clone(),
                });
                acked.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            other => {
                if let Err(missive_client::ClientError::Server { code, .. }) = other {
                    errors.push(code);
                }
                (conn, addr) = login(&addrs, from).await;
            }
        }
    }
    (acks, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_cut_off_from_nats_stops_acknowledging_and_does_not_diverge() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !root {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let ns = Netns::create();
    let dir = tempfile::tempdir().unwrap();
    let nats = nats_cluster_on(dir.path(), &ns.nats_host());
    let urls = nats.urls.clone();
    let n1 = NodeSpec::new(dir.path(), &urls, "n1", free_port(), None)
        .in_netns(&ns.name, &ns.client_addr());
    let n2 = NodeSpec::new(dir.path(), &urls, "n2", free_port(), None);
    let (n1_addr, n2_addr) = (n1.addr(), n2.addr());
    let mut n1 = n1.start();
    assert_eq!(owner(&urls).await, "n1");
    let _n2 = n2.start();

    // alice connects to the owner itself, bob to the standby (forwarded to the owner); both
    // fall back to the other address.
    let acked = Arc::new(AtomicUsize::new(0));
    let alice = tokio::spawn(chat(
        "alice",
        "bob",
        vec![n1_addr.clone(), n2_addr.clone()],
        acked.clone(),
    ));
    let bob = tokio::spawn(chat(
        "bob",
        "alice",
        vec![n2_addr.clone(), n1_addr.clone()],
        acked.clone(),
    ));
    while acked.load(Ordering::Relaxed) < PER_USER * 2 / 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Cut the owner off from NATS; its clients still reach it.
    ns.nats_link(false);
    let cut = Instant::now();
    // It stops once it no longer believes in its lease (a TTL, 5 s, after its last renewal),
    // giving up the append it was waiting on, and after its 10 s for sessions to finish.
    let status = n1.exited(Duration::from_secs(20)).await;
    let stopped = cut.elapsed();
    assert!(!status.success(), "the isolated owner exited with {status}");
    let ((alice, alice_errors), (bob, bob_errors)) = (alice.await.unwrap(), bob.await.unwrap());
    // A send in flight when the owner stopped was answered SHUTTING_DOWN (resend it), never
    // INTERNAL (which promises nothing was stored: it may have reached the log).
    let internal = missive_protocol::ErrorCode::Internal as u32;
    let errors: Vec<u32> = alice_errors.into_iter().chain(bob_errors).collect();
    assert!(!errors.contains(&internal), "answers: {errors:?}");
    assert_eq!(owner(&urls).await, "n2");

    // Nothing was acknowledged through the isolated owner once its lease could have gone (a
    // lease TTL, 5 s, after the cut): after that, only the new owner acknowledges.
    let lease_end = cut + Duration::from_secs(5);
    let late: Vec<&Ack> = alice
        .iter()
        .filter(|a| a.addr == n1_addr && a.at > lease_end)
        .collect();
    assert!(
        late.is_empty(),
        "{} sends acked by the isolated owner",
        late.len()
    );
    let before = alice.iter().chain(&bob).filter(|a| a.at < cut).count();
    eprintln!(
        "{before} sends acked before the cut; the isolated owner stopped {stopped:?} after it; \
         error answers {errors:?}"
    );

    // Every user's inbox, at the new owner: each acknowledged message exactly once (a resend
    // after the cut acked as a duplicate carries the first id), versions gapless.
    let sent = BTreeMap::from([("alice", &alice), ("bob", &bob)]);
    for (me, other) in [("alice", "bob"), ("bob", "alice")] {
        let (mut conn, _) = login(std::slice::from_ref(&n2_addr), me).await;
        let entries = sync_all(&mut conn, 0).await;
        let versions: Vec<u64> = entries.iter().map(|e| e.version).collect();
        assert_eq!(versions, (1..=entries.len() as u64).collect::<Vec<_>>());
        let (mut mine, mut received) = (Vec::new(), Vec::new());
        for e in &entries {
            let m = message(e);
            if m.from_user == me {
                mine.push(m.msg_id);
            } else {
                received.push(m.msg_id);
            }
        }
        let ids = |who: &str| -> BTreeSet<u64> { sent[who].iter().map(|a| a.msg_id).collect() };
        assert_eq!(ids(me).len(), PER_USER, "{me}: one id per message");
        assert_eq!(mine.len(), PER_USER, "{me}: each own message once");
        assert_eq!(mine.iter().copied().collect::<BTreeSet<_>>(), ids(me));
        assert_eq!(received.len(), PER_USER, "{me}: each received message once");
        assert_eq!(
            received.iter().copied().collect::<BTreeSet<_>>(),
            ids(other)
        );
    }
}
