//! [`Txn`]: one logical change, written as one atomic batch under the touched users' locks.

use std::collections::HashMap;

use missive_protocol::pb::{self, inbox_entry::Body, Conversation, InboxEntry};
use parking_lot::MutexGuard;
use prost::Message as _;
use rocksdb::WriteBatch;

use super::{cf, keys, Delivery, Result, Store, Stripe};

/// The version of `user`'s entry among `deliveries` (0 if none).
pub fn version_of(deliveries: &[Delivery], user: &str) -> u64 {
    deliveries
        .iter()
        .find(|d| d.user == user)
        .map(|d| d.entry.version)
        .unwrap_or(0)
}

/// A transaction: holds the stripe locks of its users until it is committed or dropped.
///
/// Reads see committed data plus this transaction's own counter writes. Nothing is visible to
/// anyone else until [`Txn::commit`] has written the batch.
pub struct Txn<'a> {
    store: &'a Store,
    guards: Vec<(usize, MutexGuard<'a, Stripe>)>,
    batch: WriteBatch,
    versions: HashMap<String, u64>,
    counters: HashMap<(&'static str, Vec<u8>), u64>,
    writes: usize,
}

impl<'a> Txn<'a> {
    pub(super) fn new(store: &'a Store, guards: Vec<(usize, MutexGuard<'a, Stripe>)>) -> Self {
        Txn {
            store,
            guards,
            batch: WriteBatch::default(),
            versions: HashMap::new(),
            counters: HashMap::new(),
            writes: 0,
        }
    }

    pub fn store(&self) -> &'a Store {
        self.store
    }

    fn stripe(&mut self, user: &str) -> &mut Stripe {
        let i = Store::stripe_of(user);
        let pos = self
            .guards
            .iter()
            .position(|(idx, _)| *idx == i)
            .expect("transaction touches a user it did not lock");
        &mut self.guards[pos].1
    }

    /// The user's newest version, including entries appended in this transaction.
    pub fn current_version(&self, user: &str) -> Result<u64> {
        if let Some(v) = self.versions.get(user) {
            return Ok(*v);
        }
        let i = Store::stripe_of(user);
        if let Some((_, g)) = self.guards.iter().find(|(idx, _)| *idx == i) {
            if let Some(v) = g.versions.get(user) {
                return Ok(*v);
            }
        }
        self.store.stored_version(user)
    }

    /// Appends `entry` to `user`'s inbox with the next version; returns it with the version set.
    /// A message body is stored as an id-only stub (the content lives once in `content`).
    pub fn append(&mut self, user: &str, mut entry: InboxEntry) -> Result<InboxEntry> {
        let version = self.current_version(user)? + 1;
        entry.version = version;
        let stored = match &entry.body {
            Some(Body::Message(m)) => InboxEntry {
                body: Some(Body::Message(pb::Message {
                    msg_id: m.msg_id,
                    ..Default::default()
                })),
                ..entry.clone()
            },
            _ => entry.clone(),
        };
        self.put(
            cf::INBOX,
            keys::inbox(user, version),
            stored.encode_to_vec(),
        );
        self.versions.insert(user.to_owned(), version);
        Ok(entry)
    }

    /// Appends an entry with `body` at `timestamp_ms` to each user's inbox, each with that
    /// user's view of the conversation; returns the deliveries in the same order.
    pub fn append_each<'u>(
        &mut self,
        to: impl IntoIterator<Item = (&'u str, Conversation)>,
        timestamp_ms: i64,
        body: &Body,
    ) -> Result<Vec<Delivery>> {
        let mut out = Vec::new();
        for (user, conversation) in to {
            let entry = self.append(
                user,
                InboxEntry {
                    version: 0,
                    conversation: Some(conversation),
                    timestamp_ms,
                    body: Some(body.clone()),
                },
            )?;
            out.push(Delivery {
                user: user.to_owned(),
                entry,
            });
        }
        Ok(out)
    }

    /// A put into the batch.
    pub fn put(&mut self, family: &str, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.batch.put_cf(self.store.cf(family), key, value);
        self.writes += 1;
    }

    /// A delete in the batch.
    pub fn delete(&mut self, family: &str, key: impl AsRef<[u8]>) {
        self.batch.delete_cf(self.store.cf(family), key);
        self.writes += 1;
    }

    /// A counter: this transaction's value if it wrote one, else the stored value (0 if none).
    pub fn counter(&self, family: &'static str, key: &[u8]) -> Result<u64> {
        match self.counters.get(&(family, key.to_vec())) {
            Some(v) => Ok(*v),
            None => self.store.get_u64(family, key),
        }
    }

    /// Sets a counter.
    pub fn set_counter(&mut self, family: &'static str, key: Vec<u8>, value: u64) {
        self.put(family, &key, value.to_be_bytes());
        self.counters.insert((family, key), value);
    }

    /// Adds `delta` to a counter, clamped at zero; returns the new value.
    pub fn add_counter(&mut self, family: &'static str, key: Vec<u8>, delta: i64) -> Result<u64> {
        let old = self.counter(family, &key)?;
        let new = (old as i64).saturating_add(delta).max(0) as u64;
        self.set_counter(family, key, new);
        Ok(new)
    }

    /// Number of puts and deletes in the batch (for tests that check write amplification).
    pub fn writes(&self) -> usize {
        self.writes
    }

    /// Writes the batch atomically (fsynced in `sync` durability), then publishes the new
    /// versions. On error nothing was written and no version was used up.
    pub fn commit(&mut self) -> Result<()> {
        if self.writes == 0 {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(self.store.durability == super::Durability::Sync);
        self.store.db().write_opt(batch, &wo)?;
        crate::metrics::add_store_writes(self.writes as u64);
        self.store.count_writes(self.writes);
        let versions = std::mem::take(&mut self.versions);
        for (user, v) in versions {
            self.stripe(&user).versions.insert(user, v);
        }
        Ok(())
    }
}
