//! Storage on RocksDB: the column-family catalog, key codecs, a typed transaction, queries.
//!
//! Nothing outside this module names a RocksDB type; nothing in it knows of sockets.
//!
//! Every logical change (a send, a read, a recall, ...) is one [`Txn`]: it locks the users it
//! touches (so inbox versions are allocated in order and counters are read-modify-written
//! safely), collects every put into one `WriteBatch`, writes it atomically, and only then
//! publishes the new versions. In `sync` durability the batch's WAL write is fsynced; RocksDB
//! groups concurrent writers into one fsync (group commit), and transactions of different users
//! run concurrently on the blocking pool.

mod groups;
mod keys;
mod messages;
mod queries;
mod txn;

pub use groups::{GroupLimits, GroupSend};
pub use keys::ConvKey;
pub use messages::{Delivery, SendOutcome, SendRequest};
pub use txn::Txn;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use missive_protocol::ErrorCode;
use parking_lot::Mutex;
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
    /// user + conversation -> `Contact` (last message as an id-only stub).
    pub const CONTACTS: &str = "contacts";
    /// user + inverted last message id + conversation -> (): recent contacts, newest first.
    pub const CONTACTS_BY_TIME: &str = "contacts_by_time";
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

    pub const ALL: &[&str] = &[
        META,
        CONTENT,
        INBOX,
        CONTACTS,
        CONTACTS_BY_TIME,
        UNREAD,
        DEDUP,
        CONVS,
        CONV_LOG,
        GROUPS,
        MEMBERS,
        USER_GROUPS,
        RECALLED,
    ];
}

/// The schema this code reads and writes.
pub const SCHEMA_VERSION: u32 = 1;
const STRIPES: usize = 1024;

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

/// One user's cached inbox head, guarded by the user's stripe lock.
#[derive(Default)]
pub(crate) struct Stripe {
    versions: HashMap<String, u64>,
}

/// The message store.
pub struct Store {
    db: DB,
    /// Kept for its statistics (WAL syncs and writes), shared with the open DB.
    options: Options,
    stripes: Box<[Mutex<Stripe>]>,
    last_msg_id: AtomicU64,
    durability: Durability,
    writes: AtomicU64,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path, durability: Durability) -> Result<Store> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(4);
        opts.enable_statistics();
        let cfs = cf::ALL.iter().map(|name| {
            let mut o = Options::default();
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            ColumnFamilyDescriptor::new(*name, o)
        });
        let db = DB::open_cf_descriptors(&opts, dir, cfs)?;
        let store = Store {
            db,
            options: opts,
            stripes: (0..STRIPES)
                .map(|_| Mutex::new(Stripe::default()))
                .collect(),
            last_msg_id: AtomicU64::new(0),
            durability,
            writes: AtomicU64::new(0),
        };
        store.check_schema()?;
        let last = store.last_key_u64(cf::CONTENT)?;
        store.last_msg_id.store(last, Ordering::SeqCst);
        Ok(store)
    }

    fn check_schema(&self) -> Result<()> {
        let meta = self.cf(cf::META);
        match self.db.get_cf(meta, b"schema")? {
            None => {
                let mut wo = rocksdb::WriteOptions::default();
                wo.set_sync(true);
                self.db
                    .put_cf_opt(meta, b"schema", SCHEMA_VERSION.to_be_bytes(), &wo)?;
                Ok(())
            }
            Some(v) => {
                let found = u32::from_be_bytes(
                    v[..]
                        .try_into()
                        .map_err(|_| StoreError::Corrupt("schema version".into()))?,
                );
                if found == SCHEMA_VERSION {
                    Ok(())
                } else {
                    Err(StoreError::Schema { found })
                }
            }
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

    /// Keys written or deleted by this store's committed transactions.
    pub fn keys_written(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    pub(crate) fn count_writes(&self, n: usize) {
        self.writes.fetch_add(n as u64, Ordering::Relaxed);
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
        let mut it = self.db.raw_iterator_cf(self.cf(family));
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

    fn stripe_of(user: &str) -> usize {
        // FNV-1a: cheap, stable, good enough to spread users over stripes.
        let mut h: u64 = 0xcbf29ce484222325;
        for b in user.as_bytes() {
            h ^= *b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        (h % STRIPES as u64) as usize
    }

    /// Starts a transaction over `users` (locked in a fixed order, so no deadlock).
    pub fn begin<'a>(&'a self, users: &[&str]) -> Txn<'a> {
        let mut idx: Vec<usize> = users.iter().map(|u| Self::stripe_of(u)).collect();
        idx.sort_unstable();
        idx.dedup();
        let guards = idx
            .into_iter()
            .map(|i| (i, self.stripes[i].lock()))
            .collect();
        Txn::new(self, guards)
    }

    /// The user's newest inbox version (0 if the inbox is empty).
    pub fn current_version(&self, user: &str) -> Result<u64> {
        let txn = self.begin(&[user]);
        txn.current_version(user)
    }

    pub(crate) fn stored_version(&self, user: &str) -> Result<u64> {
        let mut it = self.db.raw_iterator_cf(self.cf(cf::INBOX));
        it.seek_for_prev(keys::inbox(user, u64::MAX));
        it.status()?;
        match it.key() {
            Some(k) if k.starts_with(&keys::user_prefix(user)) => {
                Ok(keys::inbox_version(k).unwrap_or(0))
            }
            _ => Ok(0),
        }
    }

    pub(crate) fn get_u64(&self, family: &str, key: &[u8]) -> Result<u64> {
        match self.db.get_pinned_cf(self.cf(family), key)? {
            None => Ok(0),
            Some(v) => keys::u64_value(&v)
                .ok_or_else(|| StoreError::Corrupt(format!("u64 value in {family}"))),
        }
    }

    pub(crate) fn get_msg<M: prost::Message + Default>(
        &self,
        family: &str,
        key: &[u8],
    ) -> Result<Option<M>> {
        match self.db.get_pinned_cf(self.cf(family), key)? {
            None => Ok(None),
            Some(v) => Ok(Some(M::decode(&v[..])?)),
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
