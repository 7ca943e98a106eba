//! This node in the cluster: the connection to NATS, the `missive-cluster` bucket (the
//! cluster's config, the nodes, the leases), the watch that feeds the lease table, and the
//! loop that renews, takes and releases leases (docs/CLUSTER.md section 3).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::lease::{Action, Lease, Outcome, Table, Timing};

/// The bucket of the cluster's config, nodes and leases.
pub const BUCKET: &str = "missive-cluster";

/// What a node needs to join.
#[derive(Debug, Clone)]
pub struct Settings {
    /// NATS servers, comma-separated (`nats://127.0.0.1:4222,nats://…`).
    pub urls: String,
    pub node_id: String,
    /// Partitions, when this node creates the cluster; a node that joins must agree.
    pub partitions: u32,
    /// Replicas of the bucket (and later of the log): 3 with three NATS servers.
    pub replicas: usize,
    pub timing: Timing,
    /// This node's client addresses, for `/v1/cluster` and the entry point.
    pub addrs: Vec<String>,
    /// This node's server API address.
    pub http: String,
    /// Where the other nodes forward clients to this node (`host:port` of a client listener;
    /// `cluster::forward`). Empty: nowhere.
    pub forward: String,
    /// The token secret: every node must have the same (its fingerprint is in the config).
    pub secret: Vec<u8>,
}

/// Why a node cannot join.
#[derive(Debug, thiserror::Error)]
#[error("cluster: {0}")]
pub struct ClusterError(pub String);

/// The cluster's config (`config` key), written once by the node that creates the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ClusterConfig {
    partitions: u32,
    /// The first 16 hex digits of SHA-256 over a label and the token secret.
    secret_fingerprint: String,
    created_ms: i64,
}

/// A node's registration (`node.<id>`), rewritten every renewal.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NodeInfo {
    addrs: Vec<String>,
    http: String,
    #[serde(default)]
    forward: String,
    /// The partition log's position this node's data directory holds (a one-partition
    /// cluster: the owner's last append, a standby's last replayed record).
    #[serde(default)]
    log_seq: u64,
    started_ms: i64,
    renewed_ms: i64,
    draining: bool,
}

/// A running member of the cluster.
pub struct Cluster {
    /// The cluster's identity: when it was created and its secret's fingerprint.
    id: String,
    settings: Settings,
    js: async_nats::jetstream::Context,
    kv: kv::Store,
    table: Mutex<Table>,
    started_ms: i64,
    draining: std::sync::atomic::AtomicBool,
    /// See [`Cluster::set_log_seq`].
    log_seq: std::sync::atomic::AtomicU64,
    /// This node's snapshots as the owner of a one-partition cluster.
    snapshots: super::stats::SnapshotStats,
}

fn fingerprint(secret: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"missive cluster secret\0");
    h.update(secret);
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Cluster {
    /// Connects to NATS, creates the bucket and the cluster's config if this is the first node,
    /// checks that this node agrees with the config, and returns the member (not yet started).
    pub async fn join(settings: Settings) -> Result<Arc<Cluster>, ClusterError> {
        let js = connect(&settings.urls, &settings.node_id).await?;
        // JetStream needs a meta leader before the first bucket: a cluster of NATS servers just
        // started elects one within seconds, so this retries for a while.
        let deadline = Instant::now() + Duration::from_secs(30);
        let kv = loop {
            match bucket(&js, settings.replicas).await {
                Ok(kv) => break kv,
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    tracing::info!("{e}; trying again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let now_ms = crate::clock::now_ms();
        let mine = ClusterConfig {
            partitions: settings.partitions,
            secret_fingerprint: fingerprint(&settings.secret),
            created_ms: now_ms,
        };
        let body = Bytes::from(serde_json::to_vec(&mine).expect("config serializes"));
        // Create-if-absent: of nodes starting together one writes it, the others read it (a
        // create that lost the race fails without saying why, so a failure is followed by a
        // read, a few times).
        let mut tries = 0;
        let config = loop {
            tries += 1;
            let created = kv.create("config", body.clone()).await;
            if created.is_ok() {
                break mine.clone();
            }
            match kv.get("config").await {
                Ok(Some(stored)) => {
                    break serde_json::from_slice::<ClusterConfig>(&stored).map_err(|e| {
                        ClusterError(format!("the key `config` of {BUCKET} is not ours: {e}"))
                    })?
                }
                _ if tries < 10 => tokio::time::sleep(Duration::from_millis(300)).await,
                Ok(None) | Err(_) => {
                    let why = created.err().map(|e| e.to_string()).unwrap_or_default();
                    return Err(ClusterError(format!(
                        "cannot write the cluster's config to {BUCKET}: {why}"
                    )));
                }
            }
        };
        if config.partitions != settings.partitions {
            return Err(ClusterError(format!(
                "this cluster was created with cluster_partitions = {}, this node has {}; \
                 partitions are fixed for a cluster's life (docs/CLUSTER.md section 2)",
                config.partitions, settings.partitions
            )));
        }
        if config.secret_fingerprint != mine.secret_fingerprint {
            return Err(ClusterError(
                "this node's token secret differs from the cluster's: every node needs the same \
                 `secret`, or tokens minted by one are refused by another"
                    .into(),
            ));
        }
        let table = Table::new(
            &settings.node_id,
            settings.partitions,
            settings.timing,
            Instant::now(),
        );
        let id = format!("{}-{}", config.created_ms, config.secret_fingerprint);
        Ok(Arc::new(Cluster {
            id,
            settings,
            js,
            kv,
            table: Mutex::new(table),
            started_ms: now_ms,
            draining: false.into(),
            log_seq: 0.into(),
            snapshots: Default::default(),
        }))
    }

    /// The cluster's identity (its creation time and its secret's fingerprint), which marks
    /// the data directories that follow its log.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    pub fn partitions(&self) -> u32 {
        self.settings.partitions
    }

    /// JetStream, for the partitions' log.
    pub fn jetstream(&self) -> &async_nats::jetstream::Context {
        &self.js
    }

    /// Replicas of the bucket and the log.
    pub fn replicas(&self) -> usize {
        self.settings.replicas
    }

    /// The epoch of `partition`'s lease if this node owns it now.
    pub fn epoch(&self, partition: u32) -> Option<u64> {
        self.table.lock().epoch(partition, Instant::now())
    }

    /// This node's snapshots (docs/CLUSTER.md section 4).
    pub fn snapshot_stats(&self) -> &super::stats::SnapshotStats {
        &self.snapshots
    }

    /// Whether this node owns `partition` now.
    pub fn owns(&self, partition: u32) -> bool {
        self.table.lock().owns(partition, Instant::now())
    }

    /// The partition log's position this node's data directory now holds (a one-partition
    /// cluster), registered with the node's key at the next renewal: the other nodes show this
    /// node's lag behind the furthest.
    pub fn set_log_seq(&self, seq: u64) {
        self.log_seq
            .fetch_max(seq, std::sync::atomic::Ordering::Relaxed);
    }

    /// See [`Cluster::set_log_seq`].
    pub fn log_seq(&self) -> u64 {
        self.log_seq.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many log records this node's directory is behind the furthest live node's (the
    /// owner's), as their keys last said (this node's own position read now).
    pub fn lag(&self) -> u64 {
        let now = Instant::now();
        let table = self.table.lock();
        let furthest = table
            .nodes_view(now)
            .iter()
            .filter(|n| n.live)
            .filter_map(|n| n.info.get("log_seq")?.as_u64())
            .max()
            .unwrap_or(0);
        furthest.saturating_sub(self.log_seq())
    }

    /// Where to forward a client of `partition`: its owner's forwarding address, unless the
    /// owner is this node, or none is known (no owner now: a takeover is under way).
    pub fn forward_target(&self, partition: u32) -> Option<String> {
        let table = self.table.lock();
        let owner = table.owner(partition)?;
        if owner == self.settings.node_id {
            return None;
        }
        let forward = table.node_info(owner)?.get("forward")?.as_str()?;
        // Never to this node's own address (a misconfiguration would loop).
        (!forward.is_empty() && forward != self.settings.forward).then(|| forward.to_owned())
    }

    /// The client addresses `GET /v1/entry?user=` lists (docs/CLUSTER.md section 6): those of
    /// the node that owns the user's partition (of partition 0 without a user, or in a
    /// one-partition cluster), then those of every other live node, this one included.
    pub fn entry_addresses(&self, user: Option<&str>) -> Vec<String> {
        let partition = match (user, self.settings.partitions) {
            (Some(u), p) if p > 1 => super::assign::partition_of(u, p),
            _ => 0,
        };
        let now = Instant::now();
        let table = self.table.lock();
        let addrs_of = |id: &str| -> Vec<String> {
            if id == self.settings.node_id {
                return self.settings.addrs.clone();
            }
            table
                .node_info(id)
                .and_then(|i| i.get("addrs"))
                .and_then(|a| serde_json::from_value::<Vec<String>>(a.clone()).ok())
                .unwrap_or_default()
        };
        // Every node whose key changed within a TTL (as `/v1/cluster` shows them): a node that
        // has just joined is listed at once.
        let live: Vec<String> = table
            .nodes_view(now)
            .into_iter()
            .filter(|n| n.live)
            .map(|n| n.id)
            .collect();
        let live: Vec<&str> = live.iter().map(String::as_str).collect();
        let owner = table.owner(partition).filter(|o| live.contains(o));
        let mut out: Vec<String> = owner.map(addrs_of).unwrap_or_default();
        let mut rest: Vec<&str> = live.iter().copied().filter(|n| Some(*n) != owner).collect();
        rest.sort_unstable();
        for id in rest {
            for a in addrs_of(id) {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        out
    }

    /// Runs the watch and the lease loop until `stop`; then releases every lease (so the
    /// survivors take them at once instead of after a TTL) and deletes this node's key.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let watch = tokio::spawn(self.clone().watch(stop.clone()));
        let mut tick = tokio::time::interval(self.settings.timing.renew);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => self.round().await,
            }
        }
        self.table.lock().release_all();
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.round().await;
        let key = format!("node.{}", self.settings.node_id);
        let _ = tokio::time::timeout(self.settings.timing.renew, self.kv.delete(key)).await;
        watch.abort();
        tracing::info!("left the cluster");
    }

    /// One renewal round: this node's key, then every lease action, concurrently, each bounded
    /// by the renewal interval.
    async fn round(&self) {
        let limit = self.settings.timing.renew;
        let info = NodeInfo {
            addrs: self.settings.addrs.clone(),
            http: self.settings.http.clone(),
            forward: self.settings.forward.clone(),
            log_seq: self.log_seq(),
            started_ms: self.started_ms,
            renewed_ms: crate::clock::now_ms(),
            draining: self.draining.load(std::sync::atomic::Ordering::Relaxed),
        };
        let key = format!("node.{}", self.settings.node_id);
        let body = Bytes::from(serde_json::to_vec(&info).expect("node info serializes"));
        // The node key goes alongside the leases, not before them, so a slow put does not
        // delay the renewals.
        let node_key = async {
            if tokio::time::timeout(limit, self.kv.put(key, body))
                .await
                .is_err()
            {
                tracing::warn!("cluster: node key not renewed in time");
            }
        };
        let sent = Instant::now();
        let actions = self.table.lock().actions(sent, crate::clock::now_ms());
        let writes = actions.iter().map(|a| async move {
            let outcome = match tokio::time::timeout(limit, self.write(a)).await {
                Ok(outcome) => outcome,
                Err(_) => Outcome::Unknown,
            };
            // On a conflict, the key as it is now: it may hold a write of ours whose answer
            // was lost, which the table then adopts instead of giving the partition up.
            let current = match outcome {
                Outcome::Conflict => self.current(a).await,
                _ => None,
            };
            (a, outcome, current)
        });
        let (results, ()) = tokio::join!(futures_util::future::join_all(writes), node_key);
        for (action, outcome, current) in results {
            let mut table = self.table.lock();
            if let Some((partition, revision, lease)) = current {
                table.saw_lease(partition, revision, lease, Instant::now());
            }
            table.finished(action, outcome, sent);
        }
    }

    /// The lease an action was about, as the bucket holds it now.
    async fn current(&self, action: &Action) -> Option<(u32, u64, Option<Lease>)> {
        let partition = match action {
            Action::Update { partition, .. } | Action::Create { partition, .. } => *partition,
        };
        let read = self.kv.entry(lease_key(partition));
        let entry = tokio::time::timeout(self.settings.timing.renew, read)
            .await
            .ok()?
            .ok()??;
        let lease = match entry.operation {
            Operation::Put => serde_json::from_slice(&entry.value).ok(),
            Operation::Delete | Operation::Purge => None,
        };
        Some((partition, entry.revision, lease))
    }

    async fn write(&self, action: &Action) -> Outcome {
        match action {
            Action::Create { partition, lease } => {
                match self.kv.create(lease_key(*partition), encode(lease)).await {
                    Ok(rev) => Outcome::Written(rev),
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Outcome::Conflict,
                    Err(e) => {
                        tracing::debug!("cluster: lease create: {e}");
                        Outcome::Unknown
                    }
                }
            }
            Action::Update {
                partition,
                revision,
                lease,
            } => match self
                .kv
                .update(lease_key(*partition), encode(lease), *revision)
                .await
            {
                Ok(rev) => Outcome::Written(rev),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Outcome::Conflict,
                Err(e) => {
                    tracing::debug!("cluster: lease update: {e}");
                    Outcome::Unknown
                }
            },
        }
    }

    /// Feeds every change of the bucket to the table; watches again after an error.
    async fn watch(self: Arc<Self>, stop: CancellationToken) {
        while !stop.is_cancelled() {
            let mut entries = match self.kv.watch_with_history(">").await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!("cluster: cannot watch {BUCKET}: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            while let Some(entry) = entries.next().await {
                let Ok(entry) = entry else { break };
                let value = match entry.operation {
                    Operation::Put => Some(entry.value),
                    Operation::Delete | Operation::Purge => None,
                };
                let now = Instant::now();
                let mut table = self.table.lock();
                if let Some(p) = entry.key.strip_prefix("lease.") {
                    if let Ok(p) = p.parse::<u32>() {
                        let lease = value.and_then(|v| serde_json::from_slice::<Lease>(&v).ok());
                        table.saw_lease(p, entry.revision, lease, now);
                    }
                } else if let Some(id) = entry.key.strip_prefix("node.") {
                    let info = value.and_then(|v| serde_json::from_slice(&v).ok());
                    table.saw_node(id, entry.revision, info, now);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET /v1/cluster`: this node, the settings, the nodes and every partition.
    pub fn status(&self) -> serde_json::Value {
        let now = Instant::now();
        let table = self.table.lock();
        let partitions = table.partitions_view(now);
        serde_json::json!({
            "node": self.settings.node_id,
            "partitions": self.settings.partitions,
            "replicas": self.settings.replicas,
            "lease_ttl_ms": self.settings.timing.ttl.as_millis() as u64,
            "owned_here": table.owned(now),
            "takeovers": table.takeovers,
            "losses": table.losses,
            "nodes": with_lag(table.nodes_view(now), &self.settings.node_id, self.log_seq()),
            "partition_table": partitions,
            "snapshot": self.snapshots.view(),
        })
    }

    /// The partitions this node owns, its takeovers and losses so far, and the live nodes
    /// (metrics).
    pub fn counts(&self) -> (usize, u64, u64, usize) {
        let now = Instant::now();
        let table = self.table.lock();
        (
            table.owned(now).len(),
            table.takeovers,
            table.losses,
            table.live_nodes(now).len(),
        )
    }
}

/// The nodes for `/v1/cluster`, each with `lag_records`: how far its `log_seq` is behind the
/// furthest live node's (this node's position as of now, the others' as their keys last said).
fn with_lag(nodes: Vec<super::lease::NodeView>, me: &str, mine: u64) -> Vec<serde_json::Value> {
    let seq = |n: &super::lease::NodeView| -> u64 {
        if n.id == me {
            mine
        } else {
            n.info.get("log_seq").and_then(|v| v.as_u64()).unwrap_or(0)
        }
    };
    let furthest = nodes.iter().filter(|n| n.live).map(seq).max().unwrap_or(0);
    nodes
        .iter()
        .map(|n| {
            let mut v = serde_json::to_value(n).expect("a node view serializes");
            v["lag_records"] = furthest.saturating_sub(seq(n)).into();
            v
        })
        .collect()
}

/// Connects to the NATS servers `urls` (comma-separated) as `name`, for JetStream.
pub async fn connect(
    urls: &str,
    name: &str,
) -> Result<async_nats::jetstream::Context, ClusterError> {
    let addrs: Vec<async_nats::ServerAddr> = urls
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|e| ClusterError(format!("{s:?} is not a NATS URL: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let client = async_nats::ConnectOptions::new()
        .name(format!("missived {name}"))
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(2)))
        .retry_on_initial_connect()
        .connect(addrs)
        .await
        .map_err(|e| ClusterError(format!("cannot connect to NATS at {urls}: {e}")))?;
    // Short request timeouts: a request that hangs (a JetStream leader being elected) is
    // better tried again soon than waited on for the client's default 10 s.
    let mut js = async_nats::jetstream::new(client);
    js.set_timeout(Duration::from_secs(2));
    Ok(js)
}

/// The cluster's bucket, created if this is the first node.
async fn bucket(
    js: &async_nats::jetstream::Context,
    replicas: usize,
) -> Result<kv::Store, ClusterError> {
    if let Ok(kv) = js.get_key_value(BUCKET).await {
        return Ok(kv);
    }
    let created = js
        .create_key_value(kv::Config {
            bucket: BUCKET.into(),
            description: "Missive: the cluster's config, its nodes and the partitions' leases"
                .into(),
            history: 1,
            num_replicas: replicas,
            ..Default::default()
        })
        .await;
    match created {
        Ok(kv) => Ok(kv),
        // Another node created it at the same moment.
        Err(first) => js.get_key_value(BUCKET).await.map_err(|_| {
            ClusterError(format!(
                "cannot create the key-value bucket {BUCKET} (is JetStream enabled? {replicas}                  replicas need as many NATS servers): {first}"
            ))
        }),
    }
}

fn lease_key(partition: u32) -> String {
    format!("lease.{partition}")
}

fn encode(lease: &Lease) -> Bytes {
    Bytes::from(serde_json::to_vec(lease).expect("lease serializes"))
}
