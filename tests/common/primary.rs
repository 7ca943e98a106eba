//! Real `missived` processes forming a one-partition cluster (docs/CLUSTER.md section 10) on
//! the NATS servers of [`super::nats`]: the owner of the partition serves, the others wait as
//! standbys and forward the clients that reach them to the owner.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::nats::Proc;
use super::SECRET;

/// How to start (and start again) one node: the same id, data directory and ports each time.
#[derive(Clone)]
pub struct NodeSpec {
    pub id: String,
    /// `<dir>/<id>`.
    pub data_dir: PathBuf,
    pub nats: String,
    /// The client port (a standby forwards to the owner).
    pub port: u16,
    /// The server API's port (with `http::API_KEY`), or none.
    pub http: Option<u16>,
    /// The address it listens on (127.0.0.1 unless [`NodeSpec::in_netns`]).
    pub host: String,
    /// The network namespace it runs in, if any.
    pub netns: Option<String>,
    /// More environment for `missived` (settings), after the defaults above.
    pub env: Vec<(String, String)>,
}

impl NodeSpec {
    pub fn new(dir: &Path, nats: &str, id: &str, port: u16, http: Option<u16>) -> NodeSpec {
        NodeSpec {
            id: id.to_owned(),
            data_dir: dir.join(id),
            nats: nats.to_owned(),
            port,
            http,
            host: "127.0.0.1".into(),
            netns: None,
            env: Vec::new(),
        }
    }

    /// This node started with the environment variable `key` (a setting) set to `value`.
    pub fn with_env(mut self, key: &str, value: impl ToString) -> NodeSpec {
        self.env.push((key.to_owned(), value.to_string()));
        self
    }

    /// This node run in network namespace `netns`, listening on `host` there.
    pub fn in_netns(mut self, netns: &str, host: &str) -> NodeSpec {
        self.netns = Some(netns.to_owned());
        self.host = host.to_owned();
        self
    }

    /// The client address, `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Starts `missived` with this node's settings.
    pub fn start(&self) -> Proc {
        let http = self
            .http
            .map_or(String::new(), |p| format!("127.0.0.1:{p}"));
        let bin = env!("CARGO_BIN_EXE_missived");
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, bin]);
                c
            }
            None => Command::new(bin),
        };
        let child = command
            .args(["--listen", &self.addr()])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--secret", SECRET, "--durability", "async", "--log", "warn"])
            .args(["--http-listen", &http])
            .args(["--cluster", &self.nats, "--node-id", &self.id])
            .env_remove("MISSIVE_CONFIG")
            .env("MISSIVE_API_KEY", super::http::API_KEY)
            .env("MISSIVE_CLUSTER_PARTITIONS", "1")
            // The tests read pushes only at the end: no retransmits meanwhile.
            .env("MISSIVE_ACK_TIMEOUT_MS", "600000")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .spawn()
            .expect("missived starts");
        Proc(child)
    }

    /// The server API of this node (answering only while it owns the partition).
    pub fn api(&self) -> super::http::Api {
        let port = self.http.expect("started with a server API");
        super::http::Api::new(
            format!("127.0.0.1:{port}").parse().unwrap(),
            Some(super::http::API_KEY),
        )
    }
}

/// Waits until node `id` has joined (its key is in the cluster's bucket): a standby then
/// watches the lease.
pub async fn joined(urls: &str, id: &str) {
    let js = missive::cluster::connect(urls, "test").await.unwrap();
    let bucket = js.get_key_value(missive::cluster::BUCKET).await.unwrap();
    let key = format!("node.{id}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(bucket.get(&key).await, Ok(Some(_))) {
        assert!(Instant::now() < deadline, "{id} did not join");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether something listens on loopback `port` now.
pub async fn listening(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

/// The node's `GET /v1/cluster`, or `None` while it does not answer (a standby, a node
/// stopping).
pub async fn cluster_view(node: &NodeSpec) -> Option<serde_json::Value> {
    if !listening(node.http?).await {
        return None;
    }
    // On a task of its own: the helper panics when the connection breaks (a node exiting).
    let api = node.api();
    let probe = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(2), api.get("/v1/cluster")).await
    });
    match probe.await {
        Ok(Ok(a)) if a.status == 200 => Some(a.json()),
        _ => None,
    }
}

/// The node that answers `GET /v1/cluster` as the partition's owner now, if any.
pub async fn owner(specs: &[NodeSpec]) -> Option<usize> {
    for (i, spec) in specs.iter().enumerate() {
        if let Some(v) = cluster_view(spec).await {
            if v["owned_here"] == serde_json::json!([0]) {
                return Some(i);
            }
        }
    }
    None
}

/// Waits until some node owns the partition and answers for it (at most `limit`); which.
pub async fn wait_owner(specs: &[NodeSpec], limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(i) = owner(specs).await {
            return i;
        }
        assert!(Instant::now() < deadline, "no owner within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the owner (whichever of `specs` it is) lists node `id` in `GET /v1/cluster`
/// as live, registered by a process started at `since_ms` (wall clock) or later (at most
/// `limit`).
pub async fn wait_live(specs: &[NodeSpec], id: &str, since_ms: i64, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let mut listed = None;
        if let Some(i) = owner(specs).await {
            listed = cluster_view(&specs[i]).await.and_then(|v| {
                v["nodes"]
                    .as_array()?
                    .iter()
                    .find(|n| n["id"] == id)
                    .cloned()
            });
        }
        let live = listed.as_ref().is_some_and(|n| {
            n["live"] == true && n["info"]["started_ms"].as_i64().unwrap_or(0) >= since_ms
        });
        if live {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the owner does not list {id} as live (started at {since_ms}) within {limit:?}: \
             {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The node ids `ids` in the order the cluster prefers them for the partition (rendezvous
/// hashing, docs/CLUSTER.md section 3): the first takes a free lease first, and an owner hands
/// the partition to a better node once that node has been live for a TTL.
pub fn preference<'a>(ids: &[&'a str]) -> Vec<&'a str> {
    let mut rest = ids.to_vec();
    let mut out = Vec::new();
    while let Some(best) = missive::cluster::assign::preferred(0, rest.iter().copied()) {
        rest.retain(|&n| n != best);
        out.push(best);
    }
    out
}

/// A node's exit that no test step asked for.
#[derive(Debug, Clone)]
pub struct Unasked {
    pub id: String,
    pub status: ExitStatus,
    /// Since the [`Supervisor`] started.
    pub after: Duration,
}

struct Slot {
    spec: NodeSpec,
    proc: Option<Proc>,
}

/// Runs the nodes as a supervisor would: a node that exits without a test step asking for it
/// (a node that lost the lease stops with a failure status) is started again on the same data
/// directory, and its exit is recorded.
#[derive(Clone)]
pub struct Supervisor {
    slots: Arc<Mutex<Vec<Slot>>>,
    unasked: Arc<Mutex<Vec<Unasked>>>,
}

impl Supervisor {
    /// Supervises `specs`, none started yet; stops watching when the runtime ends.
    pub fn new(specs: &[NodeSpec]) -> Supervisor {
        let slots = specs
            .iter()
            .map(|spec| Slot {
                spec: spec.clone(),
                proc: None,
            })
            .collect();
        let sup = Supervisor {
            slots: Arc::new(Mutex::new(slots)),
            unasked: Arc::default(),
        };
        let watch = sup.clone();
        let started = Instant::now();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                watch.restart_exited(started);
            }
        });
        sup
    }

    fn restart_exited(&self, started: Instant) {
        let mut slots = self.slots.lock().unwrap();
        for slot in slots.iter_mut() {
            let Some(proc) = slot.proc.as_mut() else {
                continue;
            };
            if let Some(status) = proc.0.try_wait().expect("the child's status") {
                eprintln!(
                    "{} exited by itself ({status}): starting it again",
                    slot.spec.id
                );
                self.unasked.lock().unwrap().push(Unasked {
                    id: slot.spec.id.clone(),
                    status,
                    after: started.elapsed(),
                });
                slot.proc = Some(slot.spec.start());
            }
        }
    }

    /// Node `i`'s settings.
    pub fn spec(&self, i: usize) -> NodeSpec {
        self.slots.lock().unwrap()[i].spec.clone()
    }

    /// Every node's settings (started or not).
    pub fn specs(&self) -> Vec<NodeSpec> {
        let slots = self.slots.lock().unwrap();
        slots.iter().map(|s| s.spec.clone()).collect()
    }

    /// Starts node `i`; the wall-clock time (ms) just before, for [`wait_live`].
    pub fn start(&self, i: usize) -> i64 {
        let mut slots = self.slots.lock().unwrap();
        assert!(slots[i].proc.is_none(), "{} runs already", slots[i].spec.id);
        let at = missive::now_ms();
        slots[i].proc = Some(slots[i].spec.start());
        at
    }

    /// Sends `sig` to node `i` and waits for it to exit (at most `limit`); its status. The
    /// node stays stopped until [`Supervisor::start`].
    pub async fn stop(&self, i: usize, sig: &str, limit: Duration) -> ExitStatus {
        let mut proc = {
            let mut slots = self.slots.lock().unwrap();
            slots[i].proc.take().expect("the node runs")
        };
        proc.signal(sig);
        proc.exited(limit).await
    }

    /// The exits no test step asked for, so far.
    pub fn unasked(&self) -> Vec<Unasked> {
        self.unasked.lock().unwrap().clone()
    }

    /// Kills every node.
    pub fn kill_all(&self) {
        self.slots.lock().unwrap().clear();
    }
}
