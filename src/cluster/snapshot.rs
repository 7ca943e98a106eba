//! Snapshots of a partition's store, and the log trimmed behind them (docs/CLUSTER.md section
//! 4): the owner takes a RocksDB checkpoint of its store, whose log position is S, uploads it
//! to the JetStream object store `missive-snapshots` as `p<partition>.<S>`, checks that the
//! upload is complete, and only then trims the partition's log to the records from S on. A
//! node whose data directory is behind the log's first record (or empty) restores the newest
//! snapshot and replays the records after it.
//!
//! Why this order is safe: at every moment the newest complete snapshot's S is at or after the
//! log's trim point, so the newest snapshot plus the log is the whole partition. A snapshot is
//! named by its S and a restore takes the highest S, so an upload by an old owner that finishes
//! late never hides a newer one; a trim happens only after an upload was read back as complete
//! (its size, digest and every chunk stored), and only while this node holds the lease and the
//! log's last record is its own epoch's; older snapshots are deleted only after a newer one is
//! complete.
//!
//! A snapshot object is a pack of the checkpoint's files: `MISSIVE-SNAPSHOT 1\n`, S (u64,
//! big-endian), the number of files (u32), then per file its name's length (u16), name, length
//! (u64) and bytes. The object store's SHA-256 digest covers the whole pack.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, object_store, stream};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

use super::assign::ONE_PARTITION as PARTITION;
use super::log::{Log, LogError};
use super::node::Cluster;
use crate::store::Store;

/// The object store of every partition's snapshots.
pub const BUCKET: &str = "missive-snapshots";
/// The first bytes of a snapshot pack.
const MAGIC: &[u8] = b"MISSIVE-SNAPSHOT 1\n";
/// The object store's chunks: large ones (fewer acknowledged publishes), under NATS's 1 MiB.
const CHUNK: usize = 512 << 10;
/// How often the owner compares its log position with the last snapshot's.
const ROUND: Duration = Duration::from_secs(1);
/// How long the owner waits after a failed snapshot before it tries again.
const RETRY: Duration = Duration::from_secs(10);

/// Why a snapshot or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// This node no longer holds the partition (its lease is gone, or a newer epoch wrote the
    /// log's last record): it must not trim.
    #[error("partition {0}: not this node's any more; the log is not trimmed")]
    NotOwner(u32),
    /// The upload did not complete, or did not read back as uploaded: the log is not trimmed.
    #[error("snapshot upload: {0}")]
    Upload(String),
    /// The log was trimmed but there is no snapshot to restore from.
    #[error("partition {0}: its log was trimmed but no snapshot is stored")]
    Missing(u32),
    #[error("snapshot: {0}")]
    Other(String),
}

fn other(e: impl std::fmt::Display) -> SnapshotError {
    SnapshotError::Other(e.to_string())
}

impl From<LogError> for SnapshotError {
    fn from(e: LogError) -> SnapshotError {
        SnapshotError::Other(e.to_string())
    }
}

/// One stored snapshot: its partition, its log position, its object and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub partition: u32,
    /// The log position of the last group the snapshot holds.
    pub seq: u64,
    pub name: String,
    pub bytes: u64,
}

fn object_name(partition: u32, seq: u64) -> String {
    format!("p{partition}.{seq:020}")
}

/// The partition and log position an object's name says, if it is a snapshot's.
fn parse_name(name: &str) -> Option<(u32, u64)> {
    let (p, seq) = name.strip_prefix('p')?.split_once('.')?;
    Some((p.parse().ok()?, seq.parse().ok()?))
}

/// The snapshots' object store.
#[derive(Clone)]
pub struct Snapshots {
    objects: object_store::ObjectStore,
    /// The stream under the object store, to count an upload's stored chunks.
    stream: stream::Stream,
}

impl Snapshots {
    /// Opens the object store, creating it with `replicas` copies if it does not exist.
    pub async fn open(
        js: &jetstream::Context,
        replicas: usize,
    ) -> Result<Snapshots, SnapshotError> {
        let objects = match js.get_object_store(BUCKET).await {
            Ok(objects) => objects,
            Err(_) => {
                let created = js
                    .create_object_store(object_store::Config {
                        bucket: BUCKET.into(),
                        description: Some("Missive: the partitions' snapshots".into()),
                        num_replicas: replicas,
                        storage: stream::StorageType::File,
                        ..Default::default()
                    })
                    .await;
                match created {
                    Ok(objects) => objects,
                    // Another node created it at the same moment.
                    Err(first) => js
                        .get_object_store(BUCKET)
                        .await
                        .map_err(|_| other(format!("cannot create {BUCKET}: {first}")))?,
                }
            }
        };
        let stream = js
            .get_stream(format!("OBJ_{BUCKET}"))
            .await
            .map_err(other)?;
        Ok(Snapshots { objects, stream })
    }

    /// `partition`'s snapshots, oldest first.
    pub async fn list(&self, partition: u32) -> Result<Vec<Snapshot>, SnapshotError> {
        let mut listed = self.objects.list().await.map_err(other)?;
        let mut out = Vec::new();
        while let Some(info) = tokio::time::timeout(Duration::from_secs(10), listed.next())
            .await
            .map_err(|_| other("listing the snapshots stalled"))?
        {
            let info = info.map_err(other)?;
            if let Some((p, seq)) = parse_name(&info.name) {
                if p == partition && !info.deleted {
                    out.push(Snapshot {
                        partition,
                        seq,
                        name: info.name,
                        bytes: info.size as u64,
                    });
                }
            }
        }
        out.sort_by_key(|s| s.seq);
        Ok(out)
    }

    /// `partition`'s newest snapshot, if any.
    pub async fn latest(&self, partition: u32) -> Result<Option<Snapshot>, SnapshotError> {
        Ok(self.list(partition).await?.pop())
    }

    /// Uploads the checkpoint in `dir`, which holds `partition`'s log up to `seq`, and reads the
    /// upload back: the object as stored must have the pack's size and digest, and the stream
    /// must hold every chunk. Only an `Ok` upload may be trimmed behind.
    pub async fn upload(
        &self,
        partition: u32,
        dir: &Path,
        seq: u64,
    ) -> Result<Snapshot, SnapshotError> {
        let (mut pack, size) = pack(dir, seq).await.map_err(other)?;
        let name = object_name(partition, seq);
        let meta = object_store::ObjectMetadata {
            name: name.clone(),
            description: Some(format!("partition {partition}, log up to {seq}")),
            chunk_size: Some(CHUNK),
            ..Default::default()
        };
        let up = |e: &dyn std::fmt::Display| SnapshotError::Upload(format!("{name}: {e}"));
        let put = self
            .objects
            .put(meta, &mut pack)
            .await
            .map_err(|e| up(&e))?;
        if put.size as u64 != size {
            return Err(up(&format!("{} bytes read of {size}", put.size)));
        }
        let stored = self.objects.info(&name).await.map_err(|e| up(&e))?;
        if stored.deleted
            || stored.nuid != put.nuid
            || stored.size != put.size
            || stored.digest != put.digest
            || stored.chunks != put.chunks
        {
            return Err(up(&"the object stored is not the one uploaded"));
        }
        let chunks = self.chunks_stored(&put.nuid).await.map_err(|e| up(&e))?;
        if chunks != put.chunks {
            return Err(up(&format!("{chunks} of {} chunks stored", put.chunks)));
        }
        Ok(Snapshot {
            partition,
            seq,
            name,
            bytes: size,
        })
    }

    async fn chunks_stored(&self, nuid: &str) -> Result<usize, SnapshotError> {
        let subject = format!("$O.{BUCKET}.C.{nuid}");
        let mut subjects = self
            .stream
            .info_with_subjects(&subject)
            .await
            .map_err(other)?;
        let mut count = 0;
        while let Some(item) = subjects.next().await {
            let (s, n) = item.map_err(other)?;
            if s == subject {
                count += n;
            }
        }
        Ok(count)
    }

    /// Deletes `partition`'s snapshots older than `seq` (a newer one is complete).
    pub async fn prune(&self, partition: u32, seq: u64) -> Result<(), SnapshotError> {
        for old in self.list(partition).await? {
            if old.seq < seq {
                self.objects.delete(&old.name).await.map_err(other)?;
            }
        }
        Ok(())
    }

    /// Downloads `snapshot` into `dir` (which must not exist) and checks it: every file as
    /// packed, the object's digest, and a store of the schema whose log position is the
    /// snapshot's.
    pub async fn download(&self, snapshot: &Snapshot, dir: &Path) -> Result<(), SnapshotError> {
        let objects = self.objects.clone();
        let name = snapshot.name.clone();
        let into = dir.to_path_buf();
        let expected = snapshot.seq;
        // The object's reader panics if NATS refuses its consumer: a task keeps that a failed
        // download.
        let limit = Duration::from_secs(60 + snapshot.bytes / (1 << 20));
        let fetched = tokio::spawn(async move {
            let mut object = objects.get(&name).await.map_err(other)?;
            tokio::time::timeout(limit, unpack(&mut object, &into, expected))
                .await
                .map_err(|_| other(format!("downloading {name} took over {limit:?}")))?
                .map_err(other)
        })
        .await
        .map_err(other)?;
        fetched?;
        let dir = dir.to_path_buf();
        let held = tokio::task::spawn_blocking(move || crate::store::inspect(&dir))
            .await
            .map_err(other)?
            .map_err(other)?;
        if held.log_seq != snapshot.seq {
            return Err(other(format!(
                "{} holds the log up to {}, not {}",
                snapshot.name, held.log_seq, snapshot.seq
            )));
        }
        Ok(())
    }
}

/// The pack of the checkpoint in `dir` as a reader, and its length.
async fn pack(dir: &Path, seq: u64) -> std::io::Result<(Box<dyn AsyncRead + Unpin + Send>, u64)> {
    let mut files = Vec::new();
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(e) = entries.next_entry().await? {
        let meta = e.metadata().await?;
        let name = e
            .file_name()
            .into_string()
            .map_err(|n| std::io::Error::other(format!("a checkpoint file named {n:?}")))?;
        if !meta.is_file() {
            return Err(std::io::Error::other(format!(
                "{name} in a checkpoint is not a file"
            )));
        }
        files.push((name, e.path(), meta.len()));
    }
    files.sort();
    let mut head = MAGIC.to_vec();
    head.extend_from_slice(&seq.to_be_bytes());
    head.extend_from_slice(&(files.len() as u32).to_be_bytes());
    let mut size = head.len() as u64;
    let mut reader: Box<dyn AsyncRead + Unpin + Send> = Box::new(std::io::Cursor::new(head));
    for (name, path, len) in files {
        let mut h = (name.len() as u16).to_be_bytes().to_vec();
        h.extend_from_slice(name.as_bytes());
        h.extend_from_slice(&len.to_be_bytes());
        size += h.len() as u64 + len;
        // A checkpoint's files do not change; `take` bounds a file that grew anyway, and the
        // size check after the upload fails one that shrank.
        let file = tokio::fs::File::open(&path).await?.take(len);
        reader = Box::new(reader.chain(std::io::Cursor::new(h)).chain(file));
    }
    Ok((reader, size))
}

/// Writes the pack read from `from` into the new directory `dir`; checks it holds `seq`.
async fn unpack(from: &mut (impl AsyncRead + Unpin), dir: &Path, seq: u64) -> std::io::Result<()> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut magic = vec![0; MAGIC.len()];
    from.read_exact(&mut magic).await?;
    if magic != MAGIC {
        return Err(bad("not a snapshot pack".into()));
    }
    let packed = from.read_u64().await?;
    if packed != seq {
        return Err(bad(format!("the pack holds {packed}, its name says {seq}")));
    }
    let count = from.read_u32().await?;
    tokio::fs::create_dir(dir).await?;
    for _ in 0..count {
        let len = from.read_u16().await? as usize;
        let mut name = vec![0; len];
        from.read_exact(&mut name).await?;
        let name = String::from_utf8(name).map_err(|_| bad("a file name".into()))?;
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(bad(format!("a file named {name:?}")));
        }
        let len = from.read_u64().await?;
        let mut file = tokio::fs::File::create(dir.join(&name)).await?;
        let copied = tokio::io::copy(&mut (&mut *from).take(len), &mut file).await?;
        if copied != len {
            return Err(bad(format!("{name}: {copied} of {len} bytes")));
        }
        file.sync_all().await?;
    }
    // The end, where the object's digest is checked.
    let mut rest = Vec::new();
    from.read_to_end(&mut rest).await?;
    if !rest.is_empty() {
        return Err(bad(format!("{} bytes after the last file", rest.len())));
    }
    Ok(())
}

/// Takes a partition's snapshots: checkpoint, upload, check, trim, prune.
pub struct Snapshotter {
    pub log: Log,
    pub snapshots: Snapshots,
    pub store: Arc<Store>,
    /// Where checkpoints are written before the upload: a directory on the store's
    /// filesystem (its files are then hard links).
    pub scratch: PathBuf,
    pub partition: u32,
}

/// A snapshot taken, and the log's first record after the trim.
#[derive(Debug, Clone)]
pub struct Taken {
    pub snapshot: Snapshot,
    pub log_first: u64,
}

impl Snapshotter {
    /// Takes a snapshot of the store and trims the log behind it, as the writer of `epoch`:
    /// the trim happens only once the upload is complete and read back, and only if `owns()`
    /// and the log's last record is still this epoch's (a fenced owner trims nothing). The
    /// checkpoint runs on a blocking thread; the store's writer goes on meanwhile. Not
    /// cancel-safe in the sense that a dropped upload leaves its chunks unreferenced.
    pub async fn take(
        &self,
        epoch: u64,
        owns: &(dyn Fn() -> bool + Sync),
    ) -> Result<Taken, SnapshotError> {
        let dir = self
            .scratch
            .join(format!("snapshot-{}.tmp", self.partition));
        let store = self.store.clone();
        let at = dir.clone();
        let seq = tokio::task::spawn_blocking(move || -> Result<u64, String> {
            remove_dir(&at).map_err(|e| e.to_string())?;
            store.core().checkpoint(&at).map_err(|e| e.to_string())?;
            crate::store::inspect(&at)
                .map(|held| held.log_seq)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(other)?
        .map_err(|e| other(format!("checkpoint: {e}")));
        let uploaded = match seq {
            Ok(0) => Err(other("the store holds no replicated group yet")),
            Ok(seq) => self.snapshots.upload(self.partition, &dir, seq).await,
            Err(e) => Err(e),
        };
        let at = dir.clone();
        let _ = tokio::task::spawn_blocking(move || remove_dir(&at)).await;
        let snapshot = uploaded?;
        if !owns() || self.log.last_epoch(self.partition).await? != epoch {
            return Err(SnapshotError::NotOwner(self.partition));
        }
        self.log.trim(self.partition, snapshot.seq).await?;
        if let Err(e) = self.snapshots.prune(self.partition, snapshot.seq).await {
            tracing::warn!("cannot delete the snapshots before {}: {e}", snapshot.seq);
        }
        let log_first = self.log.first(self.partition).await?;
        Ok(Taken {
            snapshot,
            log_first,
        })
    }
}

fn remove_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        done => done,
    }
}

/// The owner's snapshot task in a one-partition cluster: every `every` log records (0: never)
/// a snapshot of `store`, and the log trimmed behind it, until `stop` or until this node no
/// longer owns the partition. Checkpoints go to `scratch` (the data directory).
pub async fn run(
    cluster: Arc<Cluster>,
    store: Arc<Store>,
    scratch: PathBuf,
    every: u64,
    stop: CancellationToken,
) {
    if every == 0 {
        return;
    }
    let Some(epoch) = cluster.epoch(PARTITION) else {
        return;
    };
    let (log, snapshots, last, first) = loop {
        match open(&cluster).await {
            Ok(v) => break v,
            Err(e) => tracing::warn!("snapshots: {e}; trying again"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    };
    cluster
        .snapshot_stats()
        .saw(last.as_ref().map(|s| (s.seq, s.bytes)), first);
    let mut last = last.map_or(0, |s| s.seq);
    let taker = Snapshotter {
        log,
        snapshots,
        store,
        scratch,
        partition: PARTITION,
    };
    let owns = || cluster.owns(PARTITION);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(ROUND) => {}
        }
        let at = match taker.store.core().log_seq() {
            Ok(at) => at,
            Err(e) => {
                tracing::warn!("snapshots: cannot read the log position: {e}");
                continue;
            }
        };
        if at.saturating_sub(last) < every {
            continue;
        }
        let took = tokio::select! {
            _ = stop.cancelled() => return,
            took = taker.take(epoch, &owns) => took,
        };
        match took {
            Ok(t) => {
                tracing::info!(
                    seq = t.snapshot.seq,
                    bytes = t.snapshot.bytes,
                    log_first = t.log_first,
                    "snapshot uploaded; log trimmed"
                );
                last = t.snapshot.seq;
                let stats = cluster.snapshot_stats();
                stats.took();
                stats.saw(Some((t.snapshot.seq, t.snapshot.bytes)), t.log_first);
            }
            Err(SnapshotError::NotOwner(_)) => return,
            Err(e) => {
                tracing::warn!("snapshot failed (the log is not trimmed): {e}");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    }
}

/// The log, the snapshots, the newest snapshot and the log's first record.
async fn open(cluster: &Cluster) -> Result<(Log, Snapshots, Option<Snapshot>, u64), SnapshotError> {
    let js = cluster.jetstream();
    let log = Log::open(js.clone(), cluster.replicas()).await?;
    let snapshots = Snapshots::open(js, cluster.replicas()).await?;
    let last = snapshots.latest(PARTITION).await?;
    let first = log.first(PARTITION).await?;
    Ok((log, snapshots, last, first))
}

/// Restores `partition`'s newest snapshot into the data directory `db_dir` (replacing what it
/// held: it was behind the log's first record); returns the restored log position. The
/// snapshot is downloaded into `<db_dir>.restore` and checked there, then renamed into place,
/// so a failure or a crash leaves either the old directory or none (a node with none restores
/// again). No store may be open on `db_dir`.
pub async fn restore(
    snapshots: &Snapshots,
    partition: u32,
    db_dir: &Path,
) -> Result<u64, SnapshotError> {
    let latest = snapshots
        .latest(partition)
        .await?
        .ok_or(SnapshotError::Missing(partition))?;
    let fresh = db_dir.with_extension("restore");
    let old = db_dir.with_extension("old");
    for dir in [fresh.clone(), old.clone()] {
        tokio::task::spawn_blocking(move || remove_dir(&dir))
            .await
            .map_err(other)?
            .map_err(other)?;
    }
    snapshots.download(&latest, &fresh).await?;
    let db = db_dir.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        if db.exists() {
            std::fs::rename(&db, &old)?;
        }
        std::fs::rename(&fresh, &db)?;
        if let Some(parent) = db.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        remove_dir(&old)
    })
    .await
    .map_err(other)?
    .map_err(other)?;
    Ok(latest.seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_named_by_its_partition_and_log_position() {
        let name = object_name(3, 12_345);
        assert_eq!(name, "p3.00000000000000012345");
        assert_eq!(parse_name(&name), Some((3, 12_345)));
        // Names sort as their positions do.
        assert!(object_name(0, 99) < object_name(0, 100));
        for other in ["p3", "x3.5", "p.5", "p3.x", "p3.5.6"] {
            assert_eq!(parse_name(other), None, "{other}");
        }
    }

    #[tokio::test]
    async fn a_pack_unpacks_to_the_same_files_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        std::fs::create_dir(&from).unwrap();
        std::fs::write(from.join("CURRENT"), b"MANIFEST-000005\n").unwrap();
        std::fs::write(from.join("000009.sst"), vec![7u8; 300_000]).unwrap();
        std::fs::write(from.join("empty.log"), b"").unwrap();
        let (mut reader, size) = pack(&from, 42).await.unwrap();
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).await.unwrap();
        assert_eq!(bytes.len() as u64, size);

        let to = dir.path().join("to");
        unpack(&mut &bytes[..], &to, 42).await.unwrap();
        for name in ["CURRENT", "000009.sst", "empty.log"] {
            assert_eq!(
                std::fs::read(to.join(name)).unwrap(),
                std::fs::read(from.join(name)).unwrap(),
                "{name}"
            );
        }
        assert_eq!(std::fs::read_dir(&to).unwrap().count(), 3);

        // Another position than its name says, a cut, bytes after the end, a path as a name.
        let wrong = dir.path().join("wrong");
        assert!(unpack(&mut &bytes[..], &wrong, 41).await.is_err());
        let cut = dir.path().join("cut");
        assert!(unpack(&mut &bytes[..bytes.len() - 1], &cut, 42)
            .await
            .is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        let long = dir.path().join("long");
        assert!(unpack(&mut &longer[..], &long, 42).await.is_err());
        let mut escape = MAGIC.to_vec();
        escape.extend_from_slice(&42u64.to_be_bytes());
        escape.extend_from_slice(&1u32.to_be_bytes());
        escape.extend_from_slice(&4u16.to_be_bytes());
        escape.extend_from_slice(b"../x");
        escape.extend_from_slice(&0u64.to_be_bytes());
        let esc = dir.path().join("esc");
        assert!(unpack(&mut &escape[..], &esc, 42).await.is_err());
        assert!(!dir.path().join("x").exists());
    }
}
