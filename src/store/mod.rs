//! Storage on RocksDB: the column-family catalog, key codecs, a typed transaction, queries.
//!
//! Nothing outside this module names a RocksDB type; nothing in it knows of sockets.
//!
//! Every logical change (a send, a read, a recall, ...) is one [`Txn`], run by the single writer
//! thread ([`writer`]) one after another: inbox versions are allocated in order and counters are
//! read-modify-written without locks. The changes that queued up while the group before was being
//! written are committed as one atomic `WriteBatch` (fsynced in `sync` durability: group commit)
//! by a second thread, the committer, which only then answers them and hands their pushes to the
//! [`Outbox`]. Reads that only look run on the
//! caller's thread against the committed data ([`Core`], which [`Store`] derefs to).

mod groups;
mod keys;
mod membership;
mod messages;
mod migrate;
mod pending;
mod push;
mod queries;
mod read;
mod revoked;
mod txn;
mod unread;
mod writer;

pub use groups::{GroupChange, Page};
pub use keys::ConvKey;
pub use membership::GroupLimits;
pub use messages::{Delivery, SendOutcome, SendRequest};
pub use pending::Pending;
pub use push::{PushItem, PushKey};
pub use read::Reader;
pub use txn::Txn;
pub use writer::{GroupNotice, Outbox};

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use missive_protocol::ErrorCode;
use rocksdb::{ColumnFamilyDescriptor, Options, DB};
use thiserror::Error;

/// Column families, each named after what it maps.
pub mod cf {
    /// "schema" -> u32 schema version.
    pub const META: &str = "meta";
    /// message id -> `Message` (conversation as addressed by the sender).
    pub const CONTENT: &str = "content";
    /// user + version -> `InboxEntry` (messages as id-only stubs).
    pub const INBOX: &str = "inbox";
    /// user + conversation -> `Contact` (last message as an id-only stub). Listed newest first
    /// by sorting a user's entries at query time (see `Core::contacts`).
    pub const CONTACTS: &str = "contacts";
    /// user + 0 -> total; user + 1 + conversation -> count; user + 2 + conversation -> read seq;
    /// user + 3 + message id -> () (hidden by delete).
    pub const UNREAD: &str = "unread";
    /// sender + client message id -> `SendAck`.
    pub const DEDUP: &str = "dedup";
    /// conversation -> u64 last seq.
    pub const CONVS: &str = "convs";
    /// conversation + seq -> u64 message id.
    pub const CONV_LOG: &str = "conv_log";
    /// group id -> `GroupInfo` (name, owner, member count, history visibility).
    pub const GROUPS: &str = "groups";
    /// group + 0 + user -> `GroupMember` (current); group + 1 + user -> `GroupMember` (former).
    pub const MEMBERS: &str = "members";
    /// user + group id -> (): the groups a user belongs to.
    pub const USER_GROUPS: &str = "user_groups";
    /// conversation + seq -> (): recalled messages of groups (for computed unread counts).
    pub const RECALLED: &str = "recalled";
    /// message id + user -> (): offline-push notifications to send (`src/push`). Added to
    /// schema 2 without a version change: it is created empty when a directory without it is
    /// opened, and an older missived opens it as an unknown family and ignores it.
    pub const PUSH_QUEUE: &str = "push_queue";
    /// user -> u64 R (Unix seconds): the user's login tokens issued at or before R, and all
    /// their v1 tokens, are revoked (`store::revoked`). Added to schema 2 without a version
    /// change, as `push_queue` was: created empty when a directory without it is opened; an
    /// older missived opens it as an unknown family and ignores it (and so lets revoked
    /// tokens in).
    pub const REVOKED: &str = "revoked";

    /// Schema 1 had a time index of contacts; opening such a data directory drops it.
    pub const DROPPED_IN_2: &str = "contacts_by_time";

    pub const ALL: &[&str] = &[
        META,
        CONTENT,
        INBOX,
        CONTACTS,
        UNREAD,
        DEDUP,
        CONVS,
        CONV_LOG,
        GROUPS,
        MEMBERS,
        USER_GROUPS,
        RECALLED,
        PUSH_QUEUE,
        REVOKED,
    ];
}

/// The schema this code reads and writes. Older data directories are upgraded on open: version
/// 1 loses its `contacts_by_time` family (nothing else changed in 2); version 2 gets the group
/// fan-out modes, stored unread counts of write fan-out groups and the per-user group indexes
/// of 3 (`migrate::to_3`).
pub const SCHEMA_VERSION: u32 = 3;

/// The fan-out threshold an upgrade assumes when the caller does not name one.
pub const DEFAULT_FANOUT_THRESHOLD: usize = 100;

/// Whether an acknowledged write survives a power loss (`Sync`) or only a process crash (`Async`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// The write-ahead log is fsynced before a change is acknowledged (group commit).
    Sync,
    /// The write-ahead log is written (it survives a crash of missived) but not fsynced.
    Async,
}

/// What can go wrong in the store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// RocksDB failed: the server cannot go on safely.
    #[error("storage failure: {0}")]
    Db(#[from] rocksdb::Error),
    /// Stored bytes do not decode.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The data directory holds another schema version.
    #[error("data directory has schema version {found}, this missived reads {SCHEMA_VERSION}")]
    Schema { found: u32 },
    /// The request is refused; nothing was written.
    #[error("{message}")]
    Refused { code: ErrorCode, message: String },
    /// An earlier write failed, or the store is closing: no more changes are taken.
    #[error("storage unavailable: {0}")]
    Failed(String),
}

impl StoreError {
    pub(crate) fn refused(code: ErrorCode, message: impl Into<String>) -> StoreError {
        StoreError::Refused {
            code,
            message: message.into(),
        }
    }
}

impl From<prost::DecodeError> for StoreError {
    fn from(e: prost::DecodeError) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The store: committed data to read ([`Core`], through `Deref`) and the writer that changes it.
pub struct Store {
    core: Arc<Core>,
    writer: writer::Handle,
}

/// The committed data: RocksDB and what every reader shares.
pub struct Core {
    db: DB,
    /// Kept for its statistics (WAL syncs and writes), shared with the open DB.
    options: Options,
    last_msg_id: AtomicU64,
    durability: Durability,
    writes: AtomicU64,
    failed: AtomicBool,
    outbox: OnceLock<Arc<dyn Outbox>>,
    /// Set when offline push is on: woken after a commit that queued notifications.
    push_wake: OnceLock<Arc<tokio::sync::Notify>>,
    /// Changes submitted and not yet run by the writer.
    queued: std::sync::atomic::AtomicUsize,
    /// How long writing a group's batch took (including the fsync in `sync` durability).
    commit_latency: crate::metrics::Histogram,
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

/// Most changes waiting for the writer; beyond it a change is refused with SERVER_BUSY.
const MAX_QUEUED: usize = 65_536;

impl std::ops::Deref for Store {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir` and starts its writer.
    pub fn open(dir: &Path, durability: Durability) -> Result<Store> {
        Store::open_with(dir, durability, DEFAULT_FANOUT_THRESHOLD)
    }

    /// [`Store::open`], upgrading an older data directory with the server's fan-out threshold
    /// (groups above it become read fan-out).
    pub fn open_with(dir: &Path, durability: Durability, fanout_threshold: usize) -> Result<Store> {
        let core = Arc::new(Core::open(dir, durability, fanout_threshold)?);
        let writer = writer::Handle::start(core.clone())
            .map_err(|e| StoreError::Failed(format!("cannot start the writer thread: {e}")))?;
        Ok(Store { core, writer })
    }

    /// Where committed changes send their pushes. Set once, before the first change.
    pub fn set_outbox(&self, outbox: Arc<dyn Outbox>) {
        let _ = self.core.outbox.set(outbox);
    }

    /// Queues a change for the writer; the result arrives once its group is committed.
    /// `fresh`: the change scans the store, so what is pending is committed before it runs.
    pub(crate) fn change<T, F>(&self, fresh: bool, f: F) -> Pending<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Txn<'_>) -> Result<T> + Send + 'static,
    {
        let (tx, pending) = Pending::channel();
        if let Err(e) = self.core.check_failed() {
            tx.send(Err(e));
            return pending;
        }
        // Bounded: past this many queued changes, new ones are refused rather than queued.
        if self.core.queued.fetch_add(1, Ordering::Relaxed) >= MAX_QUEUED {
            self.core.queued.fetch_sub(1, Ordering::Relaxed);
            tx.send(Err(StoreError::refused(
                ErrorCode::ServerBusy,
                "the store is overloaded; retry later",
            )));
            return pending;
        }
        let op: writer::Op = Box::new(move |txn: &mut Txn<'_>| {
            txn.core().queued.fetch_sub(1, Ordering::Relaxed);
            if let Err(e) = txn.core().check_failed() {
                tx.send(Err(e));
                return false;
            }
            match f(txn) {
                Ok(value) => {
                    txn.on_commit(Box::new(move |r: Result<()>| tx.send(r.map(|()| value))));
                    true
                }
                Err(e) => {
                    tx.send(Err(e));
                    false
                }
            }
        });
        if self.writer.submit(fresh, op).is_err() {
            // The writer has stopped; the op (and its sender) is dropped: the result is Failed.
            tracing::error!("store writer stopped");
        }
        pending
    }
}

/// Memtables of all families together.
const DB_WRITE_BUFFER: usize = 128 << 20;
/// One memtable of one family: small enough that inserts and lookups stay fast (a skiplist
/// insert walks cache-missing nodes; at 16 MiB the inserts took a quarter of the server's CPU in
/// `chat`, at 4 MiB about a tenth; 1 MiB flushes too often: BENCHMARKS.md).
const WRITE_BUFFER: usize = 4 << 20;
/// The block cache, shared by every family.
const BLOCK_CACHE: usize = 64 << 20;

/// Per-family tuning: LZ4, a bloom filter on every table and on the memtable (most point reads in
/// a send, such as the dedup check, are for keys that are not there), the shared block cache.
fn family_options(cache: &rocksdb::Cache) -> Options {
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_bloom_filter(10.0, false);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    let mut o = Options::default();
    o.set_compression_type(rocksdb::DBCompressionType::Lz4);
    o.set_block_based_table_factory(&table);
    o.set_write_buffer_size(WRITE_BUFFER);
    // Writes stop once 4 full memtables of a family wait for their flush (RocksDB's default:
    // 2): flushes run at the lowest CPU priority and, when the cores are saturated, get a core
    // late. With 2, `chat` at capacity stopped writes 17 times in 10 s; with 4, 4 times.
    o.set_max_write_buffer_number(4);
    o.set_memtable_prefix_bloom_ratio(0.05);
    o.set_memtable_whole_key_filtering(true);
    o
}

impl Core {
    fn open(dir: &Path, durability: Durability, fanout_threshold: usize) -> Result<Core> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(4);
        opts.enable_statistics();
        // Tickers only (the metrics read a few counters): no histograms, no timers, which
        // would read the clock around every Get and write.
        opts.set_statistics_level(rocksdb::statistics::StatsLevel::ExceptHistogramOrTimers);
        // One thread writes batches (the committer): no concurrent memtable inserts, no
        // write-thread spinning.
        opts.set_allow_concurrent_memtable_write(false);
        opts.set_enable_write_thread_adaptive_yield(false);
        // Every family's memtables together (a flush is forced past this).
        opts.set_db_write_buffer_size(DB_WRITE_BUFFER);
        // Flushes and compactions at the lowest CPU priority (nice 19): on a small box they
        // would otherwise take a core from the connections, the writer and the committer for
        // tens of milliseconds each, and every message in flight then waits (BENCHMARKS.md).
        // They still get every idle cycle; if they fall behind, RocksDB's write stall slows
        // the writer until they catch up.
        let mut env = rocksdb::Env::new()?;
        env.lower_thread_pool_cpu_priority();
        env.lower_high_priority_thread_pool_cpu_priority();
        opts.set_env(&env);
        // Families already there (none for a new directory) are opened too: an older schema's.
        let existing = DB::list_cf(&opts, dir).unwrap_or_default();
        let mut names: Vec<&str> = cf::ALL.to_vec();
        for name in &existing {
            if !names.contains(&name.as_str()) && name != rocksdb::DEFAULT_COLUMN_FAMILY_NAME {
                names.push(name);
            }
        }
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE);
        let cfs = names
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, family_options(&cache)));
        let db = DB::open_cf_descriptors(&opts, dir, cfs)?;
        let mut core = Core {
            db,
            options: opts,
            last_msg_id: AtomicU64::new(0),
            durability,
            writes: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            outbox: OnceLock::new(),
            push_wake: OnceLock::new(),
            queued: Default::default(),
            commit_latency: Default::default(),
        };
        core.check_schema(fanout_threshold)?;
        let last = core.last_key_u64(cf::CONTENT)?;
        core.last_msg_id.store(last, Ordering::SeqCst);
        Ok(core)
    }

    /// Options for a read on this thread (memory only inside [`Core::in_memory`]).
    pub(crate) fn read_opts(&self) -> rocksdb::ReadOptions {
        let mut o = rocksdb::ReadOptions::default();
        if IN_MEMORY.get() {
            o.set_read_tier(rocksdb::ReadTier::BlockCache);
        }
        o
    }

    /// An iterator over `family` from `start` forwards.
    pub(crate) fn iter_from(&self, family: &str, start: &[u8]) -> rocksdb::DBIterator<'_> {
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
    pub(crate) fn iter_prefix(&self, family: &str, prefix: &[u8]) -> rocksdb::DBIterator<'_> {
        self.iter_prefix_from(family, prefix, prefix)
    }

    /// [`Self::iter_prefix`] from `start` (a key within the prefix, or before it) on.
    pub(crate) fn iter_prefix_from(
        &self,
        family: &str,
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

    pub(crate) fn raw_iter(&self, family: &str) -> rocksdb::DBRawIterator<'_> {
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

    pub(super) fn fail(&self) {
        self.failed.store(true, Ordering::SeqCst);
    }

    /// Writes one group's batch (fsynced in `sync` durability).
    fn write_batch(&self, batch: rocksdb::WriteBatch, writes: usize) -> Result<()> {
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(self.durability == Durability::Sync);
        let started = std::time::Instant::now();
        self.db.write_opt(batch, &wo)?;
        self.commit_latency.observe(started.elapsed());
        self.writes.fetch_add(writes as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Checks the schema version, upgrading an older directory; a new one gets the current.
    fn check_schema(&mut self, fanout_threshold: usize) -> Result<()> {
        let meta = self.cf(cf::META);
        let found = match self.db.get_cf(meta, b"schema")? {
            None => None,
            Some(v) => Some(u32::from_be_bytes(
                v[..]
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("schema version".into()))?,
            )),
        };
        match found {
            Some(SCHEMA_VERSION) => Ok(()),
            None => {
                let mut wo = rocksdb::WriteOptions::default();
                wo.set_sync(true);
                let meta = self.cf(cf::META);
                self.db
                    .put_cf_opt(meta, b"schema", SCHEMA_VERSION.to_be_bytes(), &wo)?;
                Ok(())
            }
            Some(1) | Some(2) => {
                if self.db.cf_handle(cf::DROPPED_IN_2).is_some() {
                    self.db.drop_cf(cf::DROPPED_IN_2)?;
                }
                tracing::info!("upgrading the data directory to schema {SCHEMA_VERSION}");
                migrate::to_3(self, fanout_threshold)
            }
            Some(found) => Err(StoreError::Schema { found }),
        }
    }

    pub(crate) fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        // Every family in `cf::ALL` is created by `open`.
        self.db.cf_handle(name).expect("column family opened")
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

    fn last_key_u64(&self, family: &str) -> Result<u64> {
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
        let mut it = self.raw_iter(cf::INBOX);
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
        for name in cf::ALL {
            self.db.flush_cf(self.cf(name))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A schema 2 data directory with every column family but `missing` (one added later),
    /// and bob's unread total of 3 in it.
    fn schema_2_dir_without(missing: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let names: Vec<&str> = cf::ALL.iter().copied().filter(|n| *n != missing).collect();
        let db = DB::open_cf(&opts, dir.path(), &names).unwrap();
        let meta = db.cf_handle(cf::META).unwrap();
        db.put_cf(meta, b"schema", 2u32.to_be_bytes()).unwrap();
        let unread = db.cf_handle(cf::UNREAD).unwrap();
        db.put_cf(unread, keys::unread_total("bob"), 3u64.to_be_bytes())
            .unwrap();
        dir
    }

    /// A schema 2 data directory from before offline push (no `push_queue` family) opens as it
    /// is: the family is created empty, data and schema version are kept, and a send queues a
    /// notification in it once push is on.
    #[test]
    fn schema_2_directory_without_push_queue_opens() {
        let dir = schema_2_dir_without(cf::PUSH_QUEUE);
        let store = Store::open(dir.path(), Durability::Async).unwrap();
        assert_eq!(store.unread_total("bob").unwrap(), 3, "data kept");
        assert_eq!(store.push_queue_len().unwrap(), 0);
        store.enable_push(Arc::new(tokio::sync::Notify::new()));
        let req = SendRequest {
            from: "alice".into(),
            client_msg_id: "c1".into(),
            to: missive_protocol::pb::Conversation {
                kind: missive_protocol::pb::ConversationKind::Direct as i32,
                id: "bob".into(),
            },
            content_type: 1,
            content: b"hi".to_vec(),
            now_ms: 1_764_000_000_000,
        };
        let ack = store.send_direct(req, None).wait().unwrap().ack;
        let queued = store.push_queue_after(None, 10).unwrap();
        assert_eq!(
            queued,
            vec![PushKey::new(ack.msg_id, "bob")],
            "no outbox: offline"
        );
        let item = store.push_item(&queued[0]).unwrap().expect("due");
        assert_eq!(
            (item.sender.as_str(), item.seq, item.unread_total),
            ("alice", 1, 4)
        );
        let schema = store.db().get_cf(store.cf(cf::META), b"schema").unwrap();
        assert_eq!(schema.as_deref(), Some(&SCHEMA_VERSION.to_be_bytes()[..]));
        drop(store);
        let listed = DB::list_cf(&Options::default(), dir.path()).unwrap();
        assert!(listed.iter().any(|n| n == cf::PUSH_QUEUE), "{listed:?}");
    }

    /// A schema 2 data directory from before revocation (no `revoked` family) opens as it is:
    /// the family is created empty, data is kept, and revocations are stored in it.
    #[test]
    fn schema_2_directory_without_revoked_opens() {
        let dir = schema_2_dir_without(cf::REVOKED);
        let store = Store::open(dir.path(), Durability::Async).unwrap();
        assert_eq!(store.unread_total("bob").unwrap(), 3, "data kept");
        assert_eq!(store.revoked_through("bob").unwrap(), None);
        assert_eq!(store.revoke("bob", 1_000).wait().unwrap(), 1_000);
        assert_eq!(store.revoked_through("bob").unwrap(), Some(1_000));
        drop(store);
        let listed = DB::list_cf(&Options::default(), dir.path()).unwrap();
        assert!(listed.iter().any(|n| n == cf::REVOKED), "{listed:?}");
    }

    /// `in_memory` answers from memtables and the block cache and gives up (None) on a read
    /// that needs the disk, without a storage error; the same read then works normally and, its
    /// blocks now cached, in memory too. Reads elsewhere on the thread are normal again.
    #[test]
    fn in_memory_reads_give_up_on_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), Durability::Async).unwrap();
            let mut batch = rocksdb::WriteBatch::default();
            batch.put_cf(
                store.cf(cf::UNREAD),
                keys::unread_total("bob"),
                5u64.to_be_bytes(),
            );
            store.write_batch(batch, 1).unwrap();
            let fresh = store.in_memory(|| store.unread_total("bob"));
            assert_eq!(fresh.unwrap().unwrap(), 5, "in the memtable");
            store.flush().unwrap();
        }
        let store = Store::open(dir.path(), Durability::Async).unwrap();
        assert!(
            store.in_memory(|| store.unread_total("bob")).is_none(),
            "on disk only after reopening"
        );
        assert_eq!(store.unread_total("bob").unwrap(), 5, "a normal read");
        let cached = store.in_memory(|| store.unread_total("bob"));
        assert_eq!(cached.unwrap().unwrap(), 5, "in the block cache now");
        assert_eq!(
            store
                .in_memory(|| store.current_version("carol"))
                .unwrap()
                .unwrap(),
            0
        );
    }

    /// A schema 1 data directory (with its `contacts_by_time` family) opens as schema 2: the
    /// family is dropped, everything else is kept.
    #[test]
    fn schema_1_directory_is_upgraded_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut opts = Options::default();
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            let mut names: Vec<&str> = cf::ALL.to_vec();
            names.push(cf::DROPPED_IN_2);
            let db = DB::open_cf(&opts, dir.path(), &names).unwrap();
            let meta = db.cf_handle(cf::META).unwrap();
            db.put_cf(meta, b"schema", 1u32.to_be_bytes()).unwrap();
            let by_time = db.cf_handle(cf::DROPPED_IN_2).unwrap();
            db.put_cf(by_time, b"old index", b"").unwrap();
            let unread = db.cf_handle(cf::UNREAD).unwrap();
            db.put_cf(unread, keys::unread_total("bob"), 7u64.to_be_bytes())
                .unwrap();
        }
        let store = Store::open(dir.path(), Durability::Async).unwrap();
        assert_eq!(store.unread_total("bob").unwrap(), 7, "data kept");
        assert!(store.db().cf_handle(cf::DROPPED_IN_2).is_none());
        let schema = store.db().get_cf(store.cf(cf::META), b"schema").unwrap();
        assert_eq!(schema.as_deref(), Some(&SCHEMA_VERSION.to_be_bytes()[..]));
        drop(store);
        // And it opens again as it is now.
        let store = Store::open(dir.path(), Durability::Async).unwrap();
        assert_eq!(store.unread_total("bob").unwrap(), 7);
        let listed = DB::list_cf(&Options::default(), dir.path()).unwrap();
        assert!(!listed.iter().any(|n| n == cf::DROPPED_IN_2), "{listed:?}");
    }
}
