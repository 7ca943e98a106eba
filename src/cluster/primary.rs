//! A cluster of one partition (`cluster_partitions = 1`): the node that owns the partition
//! serves every user from its store, replicated through the partition's log; the others wait
//! as standbys, following the log into their own data directories, and the one that takes the
//! lease next catches up and serves (docs/CLUSTER.md section 10). It is the first step to
//! partition stores: everything but forwarding and deliveries between partitions. The owner
//! snapshots its store and trims the log behind it (`snapshot`); a node whose directory is
//! behind the log's first record restores the newest snapshot before it replays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::log::{Log, LogError, Writer};
use super::node::{Cluster, ClusterError};
use super::replicator::LogReplicator;
use super::snapshot::{self, Snapshots};
use crate::store::Store;

/// The partition a one-partition cluster has.
pub use super::assign::ONE_PARTITION as PARTITION;

/// How often a standby catches up with the log and looks at the lease.
const STANDBY_ROUND: Duration = Duration::from_millis(500);

/// Waits until this node owns the partition, following the log into `db_dir` meanwhile; then
/// replays the rest, takes the log (its epoch record fences the node before) and returns the
/// replicator for the store about to be opened on `db_dir`. `None` if `stop` came first.
pub async fn become_owner(
    cluster: &Arc<Cluster>,
    db_dir: &Path,
    stop: &CancellationToken,
) -> Result<Option<LogReplicator>, ClusterError> {
    // The directory must be this cluster's (or new): another cluster's or a single node's
    // data under the log would mix two histories.
    let id = cluster.id().to_owned();
    blocking(db_dir.to_path_buf(), move |dir| {
        Store::claim_for_cluster(dir, &id).map(|()| 0)
    })
    .await
    .map_err(ClusterError)?;
    let log = open_log(cluster, stop).await?;
    let Some(log) = log else { return Ok(None) };
    let mut announced = false;
    // The directory's log position, once read: later rounds open the store only when the log
    // has records after it.
    let mut known = None;
    // Fenced takes in a row: once is a record that landed after the replay; more is a log
    // that does not follow this directory (see `catch_up`), tried again at a standby's pace.
    let mut fenced = 0u32;
    loop {
        // A stop is seen during a long replay or a snapshot's download too (what was replayed
        // stays: each record is written with its position).
        let caught = tokio::select! {
            r = catch_up(cluster, &log, db_dir, known) => r,
            _ = stop.cancelled() => return Ok(None),
        };
        let at = match caught {
            Ok(at) => {
                known = Some(at);
                cluster.set_log_seq(at);
                at
            }
            Err(e) => {
                tracing::warn!("standby: cannot follow the log: {e}");
                // The directory may have been replaced by a snapshot: read its position again.
                known = None;
                if pause(stop).await {
                    return Ok(None);
                }
                continue;
            }
        };
        if let Some(epoch) = cluster.epoch(PARTITION) {
            match Writer::take(log.clone(), PARTITION, epoch, at).await {
                Ok(writer) => {
                    tracing::info!(epoch, log_seq = at, "serving the partition");
                    let (owner, position) = (cluster.clone(), cluster.clone());
                    position.set_log_seq(writer.last());
                    let replicator = LogReplicator::new(
                        writer,
                        tokio::runtime::Handle::current(),
                        Box::new(move || owner.owns(PARTITION)),
                    )
                    .on_append(Box::new(move |seq| position.set_log_seq(seq)));
                    return Ok(Some(replicator));
                }
                // Records landed after the replay (the old owner's last group): replay them.
                Err(LogError::Fenced { .. }) if fenced == 0 => {
                    fenced += 1;
                    continue;
                }
                Err(e @ LogError::Fenced { .. }) => {
                    fenced += 1;
                    tracing::warn!("cannot take the partition's log ({fenced} times): {e}");
                }
                Err(e) => tracing::warn!("cannot take the partition's log: {e}"),
            }
        } else if !announced {
            tracing::info!("standby: another node owns the partition; following its log");
            announced = true;
        }
        if pause(stop).await {
            return Ok(None);
        }
    }
}

/// Sleeps a standby round; true if `stop` came first.
async fn pause(stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(STANDBY_ROUND) => false,
    }
}

async fn open_log(
    cluster: &Cluster,
    stop: &CancellationToken,
) -> Result<Option<Log>, ClusterError> {
    let started = std::time::Instant::now();
    loop {
        match Log::open(cluster.jetstream().clone(), cluster.replicas()).await {
            Ok(log) => return Ok(Some(log)),
            Err(e) if started.elapsed() > Duration::from_secs(30) => {
                return Err(ClusterError(format!("cannot open the partition log: {e}")))
            }
            Err(_) => {
                if pause(stop).await {
                    return Ok(None);
                }
            }
        }
    }
}

/// Replays what the log holds after `db_dir`'s position (`known`, or read from the directory)
/// into it; returns the new position. A directory behind the log's first record (records after
/// its position were trimmed; a new, empty one once the log was trimmed) is replaced by the
/// newest snapshot first (docs/CLUSTER.md section 4).
async fn catch_up(
    cluster: &Cluster,
    log: &Log,
    db_dir: &Path,
    known: Option<u64>,
) -> Result<u64, String> {
    let dir: PathBuf = db_dir.to_path_buf();
    let mut at = match known {
        Some(at) => at,
        None => {
            blocking(dir.clone(), |dir| {
                Store::replay(dir, std::iter::empty::<(u64, Vec<u8>)>())
            })
            .await?
        }
    };
    // A directory ahead of the log (the stream was deleted or recreated under the same
    // cluster): replaying or taking it would mix two histories. Looked at when the directory's
    // position is read (at the start, after a failed round); later rounds only replay from the
    // log, which keeps it at or behind.
    if known.is_none() {
        let last = log.last(PARTITION).await.map_err(|e| e.to_string())?;
        if last < at {
            return Err(format!(
                "this data directory holds the log up to record {at}, but the log ends at \
                 {last} (was the stream {} deleted?): this node cannot follow it; give it an \
                 empty data directory",
                super::log::STREAM
            ));
        }
    }
    let records = match log.read(PARTITION, at).await {
        Err(LogError::Trimmed { prev, .. }) => {
            tracing::info!(
                log_seq = at,
                "the log was trimmed after this data directory's position (its records now \
                 follow {prev}): restoring the newest snapshot"
            );
            let snapshots = Snapshots::open(cluster.jetstream(), cluster.replicas())
                .await
                .map_err(|e| e.to_string())?;
            at = snapshot::restore(&snapshots, PARTITION, db_dir)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(
                log_seq = at,
                "snapshot restored; replaying the log after it"
            );
            log.read(PARTITION, at).await
        }
        read => read,
    }
    .map_err(|e| e.to_string())?;
    if records.is_empty() {
        return Ok(at);
    }
    blocking(dir, move |dir| {
        Store::replay(dir, records.iter().map(|(s, r)| (*s, r.as_ref())))
    })
    .await
}

async fn blocking(
    dir: PathBuf,
    f: impl FnOnce(&Path) -> crate::store::Result<u64> + Send + 'static,
) -> Result<u64, String> {
    tokio::task::spawn_blocking(move || f(&dir))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}
