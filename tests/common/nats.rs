//! Real `nats-server` processes with JetStream for the cluster's tests (Debian package
//! `nats-server`; `.ci/run` installs it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::restart_port;

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.0.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig}");
    }

    /// Waits up to `limit` for the process to end; its status.
    pub async fn exited(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().expect("the child's status") {
                return status;
            }
            assert!(Instant::now() < deadline, "still running after {limit:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Three NATS servers with JetStream, routed to each other as one cluster.
pub struct Nats {
    pub servers: Vec<Proc>,
    pub urls: String,
    /// The address the servers listen on.
    host: String,
    dir: PathBuf,
    client: Vec<u16>,
    route: Vec<u16>,
}

/// Three NATS servers with JetStream, routed to each other as one cluster, their stores under
/// `dir`; each on ports it can start again on ([`restart_port`]).
pub fn nats_cluster(dir: &Path) -> Nats {
    nats_cluster_on(dir, "127.0.0.1")
}

/// [`nats_cluster`] listening on `host` (an address of this machine).
pub fn nats_cluster_on(dir: &Path, host: &str) -> Nats {
    let client: Vec<u16> = (0..3).map(|_| restart_port()).collect();
    let route: Vec<u16> = (0..3).map(|_| restart_port()).collect();
    let urls = client
        .iter()
        .map(|p| format!("nats://{host}:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut nats = Nats {
        servers: Vec::new(),
        urls,
        host: host.to_owned(),
        dir: dir.to_path_buf(),
        client,
        route,
    };
    nats.servers = (0..3).map(|i| nats.spawn(i)).collect();
    nats
}

impl Nats {
    /// Server `i` (named `nats<i>`), on its ports and its store directory.
    fn spawn(&self, i: usize) -> Proc {
        let routes = self
            .route
            .iter()
            .map(|p| format!("nats://{}:{p}", self.host))
            .collect::<Vec<_>>()
            .join(",");
        let child = Command::new("nats-server")
            .args(["-js", "-a", &self.host, "-n", &format!("nats{i}")])
            .args(["-p", &self.client[i].to_string()])
            .arg("-sd")
            .arg(self.dir.join(format!("nats{i}")))
            .args(["--cluster_name", "missive-test"])
            .args([
                "--cluster",
                &format!("nats://{}:{}", self.host, self.route[i]),
            ])
            .args(["--routes", &routes])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts (apt-get install nats-server)");
        Proc(child)
    }

    /// Starts server `i` again (after it stopped) on the same ports and store directory.
    pub fn restart(&mut self, i: usize) {
        self.servers[i] = self.spawn(i);
    }
}

/// The partitions' log on `urls`, with 3 replicas, once the NATS cluster has elected its
/// JetStream leader (within seconds of starting).
pub async fn open_log(urls: &str) -> missive::cluster::log::Log {
    let js = missive::cluster::connect(urls, "test").await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match missive::cluster::log::Log::open(js.clone(), 3).await {
            Ok(log) => return log,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "no stream: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
        }
    }
}

/// Waits until every JetStream stream on `urls` has a leader and all three of its replicas
/// are current (a restarted server has caught up), at most `limit`.
pub async fn streams_current(urls: &str, limit: Duration) {
    use futures_util::TryStreamExt;
    let js = missive::cluster::connect(urls, "test").await.unwrap();
    let deadline = Instant::now() + limit;
    loop {
        let names: Vec<String> = js.stream_names().try_collect().await.unwrap_or_default();
        let mut behind = Vec::new();
        for name in &names {
            let info = match js.get_stream(name).await {
                Ok(s) => s.get_info().await.ok(),
                Err(_) => None,
            };
            let cluster = info.and_then(|i| i.cluster);
            // The leader is not among `replicas`: the other two are.
            let current = cluster.as_ref().is_some_and(|c| {
                c.leader.is_some() && c.replicas.len() == 2 && c.replicas.iter().all(|r| r.current)
            });
            if !current {
                behind.push((name.clone(), cluster));
            }
        }
        if !names.is_empty() && behind.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "streams not current within {limit:?}: {behind:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The index of the server leading JetStream stream `stream`'s replication now, if any.
pub async fn stream_leader(js: &async_nats::jetstream::Context, stream: &str) -> Option<usize> {
    let info = js.get_stream(stream).await.ok()?.get_info().await.ok()?;
    let leader = info.cluster?.leader?;
    leader.strip_prefix("nats")?.parse().ok()
}

/// Moves the leadership of `stream` until `want` holds for its leader (asking the leader to
/// step down, so another replica is elected), at most `limit`; the leader then.
pub async fn place_leader(
    js: &async_nats::jetstream::Context,
    stream: &str,
    want: impl Fn(usize) -> bool,
    limit: Duration,
) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(leader) = stream_leader(js, stream).await {
            if want(leader) {
                return leader;
            }
            let subject = format!("STREAM.LEADER.STEPDOWN.{stream}");
            // Not answered during an election: the next round asks again.
            let _: Result<serde_json::Value, _> = js.request(subject, &serde_json::json!({})).await;
        }
        assert!(
            Instant::now() < deadline,
            "{stream}: no leader where wanted within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A store in `dir` whose commit groups go to `partition` of `log`, through a writer taken at
/// `epoch` after the partition's last record (the node always believes it owns it).
pub async fn replicated_store(
    dir: &Path,
    log: &missive::cluster::log::Log,
    partition: u32,
    epoch: u64,
) -> missive::store::Store {
    use missive::cluster::log::Writer;
    use missive::cluster::replicator::LogReplicator;
    let store = missive::store::Store::open(dir, missive::store::Durability::Async).unwrap();
    let last = log.last(partition).await.unwrap();
    let writer = Writer::take(log.clone(), partition, epoch, last)
        .await
        .unwrap();
    store.set_replicator(std::sync::Arc::new(LogReplicator::new(
        writer,
        tokio::runtime::Handle::current(),
        Box::new(|| true),
    )));
    store
}
