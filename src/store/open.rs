//! Opening a data directory: RocksDB's tuning, the families, the schema check (upgrading an
//! older directory with [`migrate`](super::migrate)), and the writer's start.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

use super::core::{Core, Durability};
use super::error::{Result, StoreError};
use super::family::{Family, SCHEMA_VERSION};
use super::migrate;
use super::writer::{self, Store};

/// The fan-out threshold an upgrade assumes when the caller does not name one.
pub const DEFAULT_FANOUT_THRESHOLD: usize = 100;

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
}

/// Memtables of all families together.
const DB_WRITE_BUFFER: usize = 128 << 20;
/// One memtable of one family: small enough that inserts and lookups stay fast (a skiplist
/// insert walks cache-missing nodes), large enough not to flush too often (BENCHMARKS.md,
/// "Decisions").
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
    // late; with 2, writes stopped far more often at capacity (BENCHMARKS.md, "Decisions").
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
        let mut names: Vec<&str> = Family::ALL.map(Family::name).to_vec();
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
        let mut core = Core::with_db(db, opts, durability);
        core.check_schema(fanout_threshold)?;
        // Event ids come from the same counter: above every id stored, also after a restart.
        let last = core
            .last_key_u64(Family::Content)?
            .max(core.last_event_id()?);
        core.last_msg_id.store(last, Ordering::SeqCst);
        Ok(core)
    }

    /// Checks the schema version, upgrading an older directory; a new one gets the current.
    fn check_schema(&mut self, fanout_threshold: usize) -> Result<()> {
        let meta = self.cf(Family::Meta);
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
                let meta = self.cf(Family::Meta);
                self.db
                    .put_cf_opt(meta, b"schema", SCHEMA_VERSION.to_be_bytes(), &wo)?;
                Ok(())
            }
            Some(1) | Some(2) => {
                if self.db.cf_handle(Family::DROPPED_IN_2).is_some() {
                    self.db.drop_cf(Family::DROPPED_IN_2)?;
                }
                tracing::info!("upgrading the data directory to schema {SCHEMA_VERSION}");
                migrate::to_3(self, fanout_threshold)
            }
            Some(found) => Err(StoreError::Schema { found }),
        }
    }
}

impl Core {
    /// The log position of the last replicated group written here (0: none).
    pub fn log_seq(&self) -> Result<u64> {
        let stored = self
            .db
            .get_cf(self.cf(Family::Meta), super::replicate::LOG_SEQ_KEY)?;
        Ok(stored
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map_or(0, u64::from_be_bytes))
    }
}

impl Store {
    /// Marks the data directory `dir` (created if new) as following the log of the cluster
    /// named `id`. Refused ([`StoreError::NotThisCluster`]), with nothing changed: a directory
    /// marked for another cluster, and an unmarked one that holds messages no log brought (a
    /// single node's: replaying a log on top of it would mix two histories). An unmarked
    /// directory at a log position (from a version before the mark) is marked.
    pub fn claim_for_cluster(dir: &Path, id: &str) -> Result<()> {
        // Read-only first: a directory refused is not opened for writing (which could upgrade
        // an older schema's).
        if dir.join("CURRENT").exists() {
            let opts = Options::default();
            let names = DB::list_cf(&opts, dir)?;
            let db = DB::open_cf_for_read_only(&opts, dir, &names, false)?;
            let get = |family: Family, key: &[u8]| -> Result<Option<Vec<u8>>> {
                match db.cf_handle(family.name()) {
                    Some(cf) => Ok(db.get_cf(cf, key)?),
                    None => Ok(None),
                }
            };
            let marked = get(Family::Meta, super::replicate::CLUSTER_KEY)?;
            let log_seq = get(Family::Meta, super::replicate::LOG_SEQ_KEY)?;
            let holds_messages = db.cf_handle(Family::Content.name()).is_some_and(|cf| {
                let mut it = db.raw_iterator_cf(cf);
                it.seek_to_first();
                it.valid()
            });
            match marked {
                Some(v) if v == id.as_bytes() => return Ok(()),
                Some(v) => {
                    return Err(StoreError::NotThisCluster(format!(
                        "{} belongs to another cluster ({}, this one is {id}): give this node \
                         an empty data directory",
                        dir.display(),
                        String::from_utf8_lossy(&v)
                    )))
                }
                None => {}
            }
            if log_seq.is_none() && holds_messages {
                return Err(StoreError::NotThisCluster(format!(
                    "{} holds messages that are not in this cluster's log (a single node's data \
                     directory?): give this node an empty data directory (bringing a single \
                     node's data into a cluster is not supported yet)",
                    dir.display()
                )));
            }
        }
        let store = Store::open(dir, Durability::Async)?;
        let core = store.core();
        core.db.put_cf(
            core.cf(Family::Meta),
            super::replicate::CLUSTER_KEY,
            id.as_bytes(),
        )?;
        core.flush()?;
        Ok(())
    }

    /// Replays log `records` (`(position, record)`, in order) into the data directory `dir`,
    /// which holds what the log held up to its `log_seq` (or is new): records at or before it
    /// are skipped, each later group is written with its position, as the committer wrote it
    /// on the node that appended it. Returns the directory's new `log_seq`. The store is
    /// opened and closed here: open it again to serve (its caches start from what it holds).
    pub fn replay<R: AsRef<[u8]>>(
        dir: &Path,
        records: impl IntoIterator<Item = (u64, R)>,
    ) -> Result<u64> {
        let store = Store::open(dir, Durability::Async)?;
        let core = store.core();
        let mut at = core.log_seq()?;
        for (seq, record) in records {
            if seq <= at {
                continue;
            }
            let writes = super::replicate::writes(record.as_ref())
                .map_err(|e| StoreError::Corrupt(format!("log record {seq}: {e}")))?;
            let mut batch = rocksdb::WriteBatch::default();
            for (family, key, value) in &writes {
                match value {
                    Some(v) => batch.put_cf(core.cf(*family), key, v),
                    None => batch.delete_cf(core.cf(*family), key),
                }
            }
            batch.put_cf(
                core.cf(Family::Meta),
                super::replicate::LOG_SEQ_KEY,
                seq.to_be_bytes(),
            );
            core.write_batch(batch, writes.len())?;
            at = seq;
        }
        core.flush()?;
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::super::conversation::SendRequest;
    use super::super::keys;
    use super::super::push_queue::PushKey;
    use super::*;

    #[test]
    fn a_directory_is_claimed_by_one_cluster_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        Store::claim_for_cluster(&db, "1-aaaa").unwrap();
        Store::claim_for_cluster(&db, "1-aaaa").unwrap();
        let other = Store::claim_for_cluster(&db, "2-bbbb").unwrap_err();
        assert!(
            matches!(&other, StoreError::NotThisCluster(m) if m.contains("another cluster")),
            "{other}"
        );
        // Still the first cluster's.
        Store::claim_for_cluster(&db, "1-aaaa").unwrap();
    }

    /// A schema 2 data directory with every column family but `missing` (one added later),
    /// and bob's unread total of 3 in it.
    fn schema_2_dir_without(missing: Family) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let names: Vec<&str> = Family::ALL
            .into_iter()
            .filter(|f| *f != missing)
            .map(Family::name)
            .collect();
        let db = DB::open_cf(&opts, dir.path(), &names).unwrap();
        let meta = db.cf_handle(Family::Meta.name()).unwrap();
        db.put_cf(meta, b"schema", 2u32.to_be_bytes()).unwrap();
        let unread = db.cf_handle(Family::Unread.name()).unwrap();
        db.put_cf(unread, keys::unread_total("bob"), 3u64.to_be_bytes())
            .unwrap();
        dir
    }

    /// A schema 2 data directory from before offline push (no `push_queue` family) opens as it
    /// is: the family is created empty, data and schema version are kept, and a send queues a
    /// notification in it once push is on.
    #[test]
    fn schema_2_directory_without_push_queue_opens() {
        let dir = schema_2_dir_without(Family::PushQueue);
        let store = Store::open(dir.path(), Durability::Async).unwrap();
        assert_eq!(store.core().unread_total("bob").unwrap(), 3, "data kept");
        assert_eq!(store.core().push_queue_len().unwrap(), 0);
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
            mentions: Vec::new(),
            now_ms: 1_764_000_000_000,
            ..Default::default()
        };
        let ack = store.send_direct(req, None).wait().unwrap().ack;
        let queued = store.core().push_queue_after(None, 10).unwrap();
        assert_eq!(
            queued,
            vec![PushKey::new(ack.msg_id, "bob")],
            "no outbox: offline"
        );
        let item = store.core().push_item(&queued[0]).unwrap().expect("due");
        assert_eq!(
            (item.sender.as_str(), item.seq, item.unread_total),
            ("alice", 1, 4)
        );
        let schema = store
            .core()
            .db()
            .get_cf(store.core().cf(Family::Meta), b"schema")
            .unwrap();
        assert_eq!(schema.as_deref(), Some(&SCHEMA_VERSION.to_be_bytes()[..]));
        drop(store);
        let listed = DB::list_cf(&Options::default(), dir.path()).unwrap();
        assert!(
            listed.iter().any(|n| n == Family::PushQueue.name()),
            "{listed:?}"
        );
    }

    /// A schema 2 data directory from before revocation (no `revoked` family) opens as it is:
    /// the family is created empty, data is kept, and revocations are stored in it.
    #[test]
    fn schema_2_directory_without_revoked_opens() {
        let dir = schema_2_dir_without(Family::Revoked);
        let store = Store::open(dir.path(), Durability::Async).unwrap();
        assert_eq!(store.core().unread_total("bob").unwrap(), 3, "data kept");
        assert_eq!(store.core().revoked_through("bob").unwrap(), None);
        assert_eq!(store.revoke("bob", 1_000).wait().unwrap(), 1_000);
        assert_eq!(store.core().revoked_through("bob").unwrap(), Some(1_000));
        drop(store);
        let listed = DB::list_cf(&Options::default(), dir.path()).unwrap();
        assert!(
            listed.iter().any(|n| n == Family::Revoked.name()),
            "{listed:?}"
        );
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
                store.core().cf(Family::Unread),
                keys::unread_total("bob"),
                5u64.to_be_bytes(),
            );
            store.core().write_batch(batch, 1).unwrap();
            let fresh = store.core().in_memory(|| store.core().unread_total("bob"));
            assert_eq!(fresh.unwrap().unwrap(), 5, "in the memtable");
            store.core().flush().unwrap();
        }
        let store = Store::open(dir.path(), Durability::Async).unwrap();
        assert!(
            store
                .core()
                .in_memory(|| store.core().unread_total("bob"))
                .is_none(),
            "on disk only after reopening"
        );
        assert_eq!(
            store.core().unread_total("bob").unwrap(),
            5,
            "a normal read"
        );
        let cached = store.core().in_memory(|| store.core().unread_total("bob"));
        assert_eq!(cached.unwrap().unwrap(), 5, "in the block cache now");
        assert_eq!(
            store
                .core()
                .in_memory(|| store.core().current_version("carol"))
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
            let mut names: Vec<&str> = Family::ALL.map(Family::name).to_vec();
            names.push(Family::DROPPED_IN_2);
            let db = DB::open_cf(&opts, dir.path(), &names).unwrap();
            let meta = db.cf_handle(Family::Meta.name()).unwrap();
            db.put_cf(meta, b"schema", 1u32.to_be_bytes()).unwrap();
            let by_time = db.cf_handle(Family::DROPPED_IN_2).unwrap();
            db.put_cf(by_time, b"old index", b"").unwrap();
            let unread = db.cf_handle(Family::Unread.name()).unwrap();
            db.put_cf(unread, keys::unread_total("bob"), 7u64.to_be_bytes())
                .unwrap();
        }
        let store = Store::open(dir.path(), Durability::Async).unwrap();
        assert_eq!(store.core().unread_total("bob").unwrap(), 7, "data kept");
        assert!(store.core().db().cf_handle(Family::DROPPED_IN_2).is_none());
        let schema = store
            .core()
            .db()
            .get_cf(store.core().cf(Family::Meta), b"schema")
            .unwrap();
        assert_eq!(schema.as_deref(), Some(&SCHEMA_VERSION.to_be_bytes()[..]));
        drop(store);
        // And it opens again as it is now.
        let store = Store::open(dir.path(), Durability::Async).unwrap();
        assert_eq!(store.core().unread_total("bob").unwrap(), 7);
        let listed = DB::list_cf(&Options::default(), dir.path()).unwrap();
        assert!(
            !listed.iter().any(|n| n == Family::DROPPED_IN_2),
            "{listed:?}"
        );
    }
}
