//! [`Core`]: the committed data (RocksDB and what every reader shares), and [`Durability`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use rocksdb::{Options, DB};

use super::error::{Result, StoreError};
use super::family::Family;
use super::keys;
use super::outbox::Outbox;

/// Whether an acknowledged write survives a power loss (`Sync`) or only a process crash (`Async`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// The write-ahead log is fsynced before a change is acknowledged (group commit).
    Sync,
    /// The write-ahead log is written (it survives a crash of missived) but not fsynced.
    Async,
}

/// The committed data: RocksDB and what every reader shares.
pub struct Core {
    pub(super) db: DB,
    /// Kept for its statistics (WAL syncs and writes), shared with the open DB.
    pub(super) options: Options,
    pub(super) last_msg_id: AtomicU64,
    pub(super) durability: Durability,
    pub(super) writes: AtomicU64,
    pub(super) failed: AtomicBool,
    pub(super) outbox: OnceLock<Arc<dyn Outbox>>,
    /// Where each commit group is appended before it is written (a cluster's partition log).
    pub(super) replicator: OnceLock<Arc<dyn super::replicate::Replicator>>,
    /// Set when offline push is on: woken after a commit that queued notifications.
    pub(super) push_wake: OnceLock<Arc<tokio::sync::Notify>>,
    /// Set when events for the app are on: which kinds, and the worker's wake-up.
    pub(super) events: OnceLock<(super::event_kind::EventKinds, Arc<tokio::sync::Notify>)>,
    /// Changes submitted and not yet run by the writer.
    pub(super) queued: std::sync::atomic::AtomicUsize,
    /// How long writing a group's batch took (including the fsync in `sync` durability).
    pub(super) commit_latency: crate::metrics::Histogram,
}

thread_local! {
    /// Set while [`Core::in_memory`] runs a read on this thread: reads then use only memtables
    /// and the block cache.
    static IN_MEMORY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Clears `IN_MEMORY` again, also if the read panics.
struct InMemoryGuard(bool);

impl Drop for InMemoryGuard {
    fn drop(&mut self) {
        IN_MEMORY.set(self.0);
    }
}

impl Core {
    /// Options for a read on this thread (memory only inside [`Core::in_memory`]).
    pub(crate) fn read_opts(&self) -> rocksdb::ReadOptions {
        let mut o = rocksdb::ReadOptions::default();
        if IN_MEMORY.get() {
            o.set_read_tier(rocksdb::ReadTier::BlockCache);
        }
        o
    }

    /// An iterator over `family` from `start` forwards.
    pub(crate) fn iter_from(&self, family: Family, start: &[u8]) -> rocksdb::DBIterator<'_> {
        self.db.iterator_cf_opt(
            self.cf(family),
            self.read_opts(),
            rocksdb::IteratorMode::From(start, rocksdb::Direction::Forward),
        )
    }

    /// An iterator over the keys of `family` that start with `prefix`, from the first. It is
    /// bounded above, so RocksDB stops at the prefix's end instead of stepping over what lies
    /// past it: in `unread`, where counts are deleted as they drop to 0, a seek into an empty
    /// prefix would otherwise walk the deleted keys of other users up to the next live one.
    pub(crate) fn iter_prefix(&self, family: Family, prefix: &[u8]) -> rocksdb::DBIterator<'_> {
        self.iter_prefix_from(family, prefix, prefix)
    }

    /// [`Self::iter_prefix`] from `start` (a key within the prefix, or before it) on.
    pub(crate) fn iter_prefix_from(
        &self,
        family: Family,
        prefix: &[u8],
        start: &[u8],
    ) -> rocksdb::DBIterator<'_> {
        let mut opts = self.read_opts();
        if let Some(end) = keys::prefix_end(prefix) {
            opts.set_iterate_upper_bound(end);
        }
        self.db.iterator_cf_opt(
            self.cf(family),
            opts,
            rocksdb::IteratorMode::From(start, rocksdb::Direction::Forward),
        )
    }

    pub(crate) fn raw_iter(&self, family: Family) -> rocksdb::DBRawIterator<'_> {
        self.db
            .raw_iterator_cf_opt(self.cf(family), self.read_opts())
    }

    /// Runs the read `f` on what is in memory only (memtables and the block cache), so that an
    /// async task can run it at once instead of handing it to a thread that may wait for the
    /// disk. `None`: it needed the disk; run it again where blocking is fine. Reads only: `f`
    /// may stop part way.
    pub fn in_memory<T>(&self, f: impl FnOnce() -> Result<T>) -> Option<Result<T>> {
        let _guard = InMemoryGuard(IN_MEMORY.replace(true));
        match f() {
            Err(StoreError::Db(e)) if e.kind() == rocksdb::ErrorKind::Incomplete => None,
            r => Some(r),
        }
    }

    /// Refuses changes after a failed write.
    pub(crate) fn check_failed(&self) -> Result<()> {
        if self.failed.load(Ordering::SeqCst) {
            Err(StoreError::Failed("an earlier write failed".into()))
        } else {
            Ok(())
        }
    }

    /// A `Core` over an opened database, with nothing counted or set yet.
    pub(super) fn with_db(db: DB, options: Options, durability: Durability) -> Core {
        Core {
            db,
            options,
            last_msg_id: AtomicU64::new(0),
            durability,
            writes: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            outbox: OnceLock::new(),
            replicator: OnceLock::new(),
            push_wake: OnceLock::new(),
            events: OnceLock::new(),
            queued: Default::default(),
            commit_latency: Default::default(),
        }
    }

    pub(super) fn fail(&self) {
        self.failed.store(true, Ordering::SeqCst);
    }

    /// Writes one group's batch (fsynced in `sync` durability).
    pub(super) fn write_batch(&self, batch: rocksdb::WriteBatch, writes: usize) -> Result<()> {
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(self.durability == Durability::Sync);
        let started = std::time::Instant::now();
        self.db.write_opt(batch, &wo)?;
        self.commit_latency.observe(started.elapsed());
        self.writes.fetch_add(writes as u64, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn cf(&self, family: Family) -> &rocksdb::ColumnFamily {
        // Every family in `Family::ALL` is created by `open`.
        self.db
            .cf_handle(family.name())
            .expect("column family opened")
    }

    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Keys written or deleted by this store's committed changes.
    pub fn keys_written(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Changes submitted and not yet run by the writer (the writer's queue depth).
    pub fn queued_changes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// The time each committed group's batch took to write (and fsync).
    pub fn commit_latency(&self) -> &crate::metrics::Histogram {
        &self.commit_latency
    }

    /// Write-ahead-log fsyncs since the store was opened.
    pub fn wal_syncs(&self) -> u64 {
        self.options
            .get_ticker_count(rocksdb::statistics::Ticker::WalFileSynced)
    }

    /// Write batches RocksDB committed, on their own or grouped with another writer's.
    pub fn write_batches(&self) -> u64 {
        use rocksdb::statistics::Ticker;
        self.options.get_ticker_count(Ticker::WriteDoneBySelf)
            + self.options.get_ticker_count(Ticker::WriteDoneByOther)
    }

    /// Up to `limit` items of `family` after the key `after` (from the first if `None`), in key
    /// order: `take` makes an item of a key and its value (`None`: skipped).
    pub(super) fn scan_after<T>(
        &self,
        family: Family,
        after: Option<&[u8]>,
        limit: usize,
        mut take: impl FnMut(&[u8], &[u8]) -> Option<T>,
    ) -> Result<Vec<T>> {
        let mut it = self.raw_iter(family);
        match after {
            Some(k) => {
                it.seek(k);
                if it.key() == Some(k) {
                    it.next();
                }
            }
            None => it.seek_to_first(),
        }
        let mut out = Vec::new();
        while out.len() < limit {
            let (Some(k), Some(v)) = (it.key(), it.value()) else {
                break;
            };
            out.extend(take(k, v));
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    pub(super) fn last_key_u64(&self, family: Family) -> Result<u64> {
        let mut it = self.raw_iter(family);
        it.seek_to_last();
        it.status()?;
        Ok(it.key().and_then(keys::u64_value).unwrap_or(0))
    }

    /// A new message id: milliseconds since the epoch << 22 plus a counter; always increasing,
    /// also across restarts (it starts above the largest stored id) and clock steps back.
    pub fn next_msg_id(&self, now_ms: i64) -> u64 {
        let floor = (now_ms.max(0) as u64) << 22;
        let mut prev = self.last_msg_id.load(Ordering::SeqCst);
        loop {
            let next = floor.max(prev + 1);
            match self.last_msg_id.compare_exchange_weak(
                prev,
                next,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return next,
                Err(actual) => prev = actual,
            }
        }
    }

    /// The user's newest committed inbox version (0 if the inbox is empty).
    pub fn current_version(&self, user: &str) -> Result<u64> {
        self.stored_version(user)
    }

    pub(crate) fn stored_version(&self, user: &str) -> Result<u64> {
        let mut it = self.raw_iter(Family::Inbox);
        it.seek_for_prev(keys::inbox(user, u64::MAX));
        it.status()?;
        match it.key() {
            Some(k) if k.starts_with(&keys::user_prefix(user)) => {
                Ok(keys::inbox_version(k).unwrap_or(0))
            }
            _ => Ok(0),
        }
    }

    /// Flushes memtables and the WAL; called at shutdown.
    pub fn flush(&self) -> Result<()> {
        self.db.flush_wal(true)?;
        for family in Family::ALL {
            self.db.flush_cf(self.cf(family))?;
        }
        Ok(())
    }

    /// Whether sends queue offline-push notifications.
    pub(crate) fn push_enabled(&self) -> bool {
        self.push_wake.get().is_some()
    }
}
