//! The pending group of changes and its commit: the overlay the writer's changes read and
//! write through, the writer's caches, and the committer thread that writes a sealed group as
//! one batch, then releases its results and its pushes (the whole path: `writer.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use missive_protocol::pb;

use super::core::Core;
use super::error::{Result, StoreError};
use super::family::Family;
use super::keys;
use super::outbox::{Delivery, GroupNotice};
use crate::ids::SessionId;

/// A change's result, sent once its group is committed (or failed to commit).
pub(super) type Completion = Box<dyn FnOnce(Result<()>) + Send>;

/// What a committed change hands to the outbox. Small (the rare `Notify` is boxed): a group
/// holds one per change.
pub(super) enum Post {
    Deliver(Vec<Delivery>, Option<SessionId>),
    Notify(Box<Notify>),
}

pub(super) struct Notify {
    pub group_id: String,
    pub last_seq: u64,
    pub message: Option<pb::Message>,
    pub event: Option<pb::GroupEvent>,
    pub members: Arc<Vec<String>>,
    pub exclude: Option<SessionId>,
}

/// The changes run since the last commit, and the writer's caches.
pub(super) struct CommitGroup {
    /// Every key written since the last commit, by column family (index in `Family::ALL`):
    /// `Some(value)` put, `None` deleted. A hash map (every read of the group looks here and in
    /// `inflight` first); sorted when the group is sealed, so the batch reaches the memtables
    /// in key order (RocksDB's skiplist then reuses its search path from one insert to the
    /// next).
    pub overlay: Vec<Overlay>,
    /// Bytes of keys and values in the overlay (an estimate of the batch's size).
    pub bytes: usize,
    pub posts: Vec<Post>,
    pub done: Vec<Completion>,
    /// Puts and deletes since the last commit.
    pub writes: usize,
    /// Whether a change since the last commit queued an offline push.
    pub push_queued: bool,
    /// Whether a change since the last commit queued an event for the app.
    pub events_queued: bool,
    /// Each user's newest inbox version, committed or pending.
    pub versions: FastMap<String, u64>,
    /// Group members (current), as of the pending state: at most about `MEMBER_CACHE` ids in
    /// all (see [`CommitGroup::cache_members`]).
    pub members: FastMap<String, Arc<Vec<String>>>,
    /// Member ids in `members`.
    member_ids: usize,
    /// Committed counters (sequences, unread counts, read positions) recently used.
    pub counters: CounterCache,
    /// The overlay of the group handed to the committer last: until it is written, reads find
    /// its keys here (and after, the same values as in RocksDB).
    inflight: Vec<Overlay>,
    committer: Committer,
}

/// A group handed to the committer: its batch (none if it wrote nothing) and what to release
/// once it is written.
struct Sealed {
    batch: Option<rocksdb::WriteBatch>,
    /// The same writes as a log record, when the store is replicated.
    record: Option<Vec<u8>>,
    writes: usize,
    /// The store had failed when the group was sealed: nothing is written, every change fails.
    failed: bool,
    posts: Vec<Post>,
    done: Vec<Completion>,
    push_queued: bool,
    events_queued: bool,
}

/// The committer thread, and whether it is writing a group now.
struct Committer {
    tx: Option<mpsc::Sender<Sealed>>,
    /// Per group: whether it was stored.
    rx: mpsc::Receiver<bool>,
    busy: bool,
    /// Set while the committer writes or releases a group. It tells the writer it is stored
    /// before it releases the results and pushes, so a group the writer commits itself must
    /// wait until this is clear, or its pushes could overtake the earlier group's.
    releasing: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Committer {
    /// Lets the committer finish the group it has, then waits for it.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Committed u64 values of the counter families, so a send reads none of its counters from
/// RocksDB. Written through at commit (the writer is the only one changing them). Two
/// generations: when the newer fills up, the older is dropped and the newer takes its place.
pub(super) struct CounterCache {
    /// By family index; `new` holds `len` entries.
    new: Vec<FastMap<Vec<u8>, u64>>,
    old: Vec<FastMap<Vec<u8>, u64>>,
    len: usize,
}

/// Counters per generation.
const COUNTER_CACHE: usize = 100_000;
/// The families whose values are counters.
const COUNTER_FAMILIES: [Family; 2] = [Family::Convs, Family::Unread];

impl Default for CounterCache {
    fn default() -> Self {
        let maps = || Family::ALL.iter().map(|_| FastMap::default()).collect();
        CounterCache {
            new: maps(),
            old: maps(),
            len: 0,
        }
    }
}

impl CounterCache {
    pub fn get(&mut self, family: Family, key: &[u8]) -> Option<u64> {
        let f = family.index();
        if let Some(v) = self.new[f].get(key) {
            return Some(*v);
        }
        let v = self.old[f].remove(key)?;
        self.insert(family, key.to_vec(), v);
        Some(v)
    }

    pub fn insert(&mut self, family: Family, key: Vec<u8>, value: u64) {
        if self.len >= COUNTER_CACHE {
            self.old = std::mem::replace(
                &mut self.new,
                Family::ALL.iter().map(|_| FastMap::default()).collect(),
            );
            self.len = 0;
        }
        if self.new[family.index()].insert(key, value).is_none() {
            self.len += 1;
        }
    }

    /// What a commit wrote in `family`: u64 values are kept, anything else is forgotten.
    fn committed(&mut self, family: Family, map: &Overlay) {
        let f = family.index();
        for (key, value) in map {
            self.old[f].remove(key);
            match value.as_deref().and_then(keys::u64_value) {
                Some(v) => match self.new[f].get_mut(key) {
                    Some(slot) => *slot = v,
                    None => self.insert(family, key.clone(), v),
                },
                None => {
                    if self.new[f].remove(key).is_some() {
                        self.len -= 1;
                    }
                }
            }
        }
    }
}

/// Whether `family` holds counters.
pub(super) fn is_counter_family(family: Family) -> bool {
    COUNTER_FAMILIES.contains(&family)
}

/// FNV-1a: the writer's maps are keyed by short ids and keys it made itself, so a fast hash
/// without flooding resistance is enough.
#[derive(Default, Clone, Copy)]
pub(super) struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map with the [`Fnv`] hash.
pub(super) type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fnv>>;

/// One column family's keys written by a group: `Some(value)` put, `None` deleted.
pub(super) type Overlay = FastMap<Vec<u8>, Option<Vec<u8>>>;

/// Member ids the writer keeps cached (a few MB).
const MEMBER_CACHE: usize = 200_000;

impl CommitGroup {
    /// A group with its committer thread.
    pub fn new(core: Arc<Core>) -> std::io::Result<CommitGroup> {
        let (tx, commit_rx) = mpsc::channel::<Sealed>();
        let (done_tx, rx) = mpsc::channel::<bool>();
        let releasing = Arc::new(AtomicBool::new(false));
        let flag = releasing.clone();
        let thread = std::thread::Builder::new()
            .name("missive-commit".into())
            .spawn(move || commit_loop(&core, commit_rx, done_tx, &flag))?;
        let maps = || Family::ALL.iter().map(|_| Overlay::default()).collect();
        Ok(CommitGroup {
            overlay: maps(),
            bytes: 0,
            posts: Vec::new(),
            done: Vec::new(),
            writes: 0,
            push_queued: false,
            events_queued: false,
            versions: FastMap::default(),
            members: FastMap::default(),
            member_ids: 0,
            counters: CounterCache::default(),
            inflight: maps(),
            committer: Committer {
                tx: Some(tx),
                rx,
                busy: false,
                releasing,
                thread: Some(thread),
            },
        })
    }

    pub fn is_empty(&self) -> bool {
        self.writes == 0 && self.done.is_empty() && self.posts.is_empty()
    }

    /// The value of a key as the changes so far left it, if one of the pending group or of the
    /// group being written wrote it: `Some(None)` deleted.
    pub fn pending(&self, family: Family, key: &[u8]) -> Option<Option<&[u8]>> {
        let f = family.index();
        self.overlay[f]
            .get(key)
            .or_else(|| self.inflight[f].get(key))
            .map(|v| v.as_deref())
    }

    /// Caches a group's member list and returns it. The cache holds at most about
    /// `MEMBER_CACHE` member ids: past that it starts again empty (lists are read again from
    /// the store when needed), so groups touched once do not hold the writer's memory.
    pub fn cache_members(&mut self, group_id: &str, list: Arc<Vec<String>>) -> Arc<Vec<String>> {
        if let Some(old) = self.members.remove(group_id) {
            self.member_ids -= old.len();
        }
        if self.member_ids + list.len() > MEMBER_CACHE {
            self.members.clear();
            self.member_ids = 0;
        }
        self.member_ids += list.len();
        self.members.insert(group_id.to_owned(), list.clone());
        list
    }

    /// How many keys in `start..end` of `family` the pending groups put (the group being
    /// written included; the pending group's writes win over its).
    pub fn pending_puts_in(&self, family: Family, start: &[u8], end: &[u8]) -> u64 {
        let f = family.index();
        let within = |k: &&Vec<u8>| k.as_slice() >= start && k.as_slice() < end;
        let newer = self.overlay[f]
            .iter()
            .filter(|(k, v)| within(k) && v.is_some())
            .count();
        let older = self.inflight[f]
            .iter()
            .filter(|(k, v)| within(k) && v.is_some() && !self.overlay[f].contains_key(*k))
            .count();
        (newer + older) as u64
    }

    /// Writes the group and waits until it is written (and its results released).
    pub fn commit(&mut self, core: &Core) {
        self.seal(core, true);
        self.settle();
    }

    /// Makes everything run so far visible in RocksDB (for changes that scan it): commits the
    /// pending group, if any, and waits for the one being written. Returns whether it committed.
    pub fn flush(&mut self, core: &Core) -> bool {
        if self.is_empty() {
            self.settle();
            false
        } else {
            self.commit(core);
            true
        }
    }

    /// Hands the group to the committer, once it is done with the one before, and starts the
    /// next. The committer writes it as one batch, then releases results and pushes in order. A
    /// failed write fails every change in the group; the store then refuses all further changes.
    /// `inline`: nothing else is waiting to run, so the writer commits the group itself rather
    /// than wake the committer's thread and go to sleep (at low load a group holds a message
    /// or two, and the two thread switches per group cost more than the write).
    pub fn seal(&mut self, core: &Core, inline: bool) {
        self.settle();
        let failed = core.check_failed().is_err();
        let mut batch = None;
        let mut record = None;
        if !failed && self.writes > 0 {
            for (&family, map) in Family::ALL.iter().zip(&self.overlay) {
                if is_counter_family(family) {
                    self.counters.committed(family, map);
                }
            }
            // Each record: tag, family id, two length varints, key, value.
            let size = self.bytes + self.writes * 16 + 64;
            let mut b = rocksdb::WriteBatch::with_capacity_bytes(size);
            let mut r = core
                .replicator
                .get()
                .map(|_| super::replicate::RecordBuilder::with_capacity(size));
            let mut sorted = Vec::new();
            for (&family, map) in Family::ALL.iter().zip(&self.overlay) {
                if map.is_empty() {
                    continue;
                }
                let handle = core.cf(family);
                sorted.clear();
                sorted.extend(map.iter());
                sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
                for &(key, value) in &sorted {
                    match value {
                        Some(v) => b.put_cf(handle, key, v),
                        None => b.delete_cf(handle, key),
                    }
                    if let Some(r) = &mut r {
                        r.write(family, key, value.as_deref());
                    }
                }
            }
            batch = Some(b);
            record = r.map(super::replicate::RecordBuilder::finish);
        }
        // The sealed overlay is read until the committer is done; the one before is stored.
        std::mem::swap(&mut self.overlay, &mut self.inflight);
        for map in &mut self.overlay {
            map.clear();
        }
        let (posts, done) = (self.posts.len(), self.done.len());
        let sealed = Sealed {
            batch,
            record,
            writes: std::mem::take(&mut self.writes),
            failed,
            // The next group gets room for as many (growing a long vector costs copies).
            posts: std::mem::replace(&mut self.posts, Vec::with_capacity(posts)),
            done: std::mem::replace(&mut self.done, Vec::with_capacity(done)),
            push_queued: std::mem::take(&mut self.push_queued),
            events_queued: std::mem::take(&mut self.events_queued),
        };
        self.bytes = 0;
        // After `settle` the committer has stored the group before; it may still be releasing
        // that group's results and pushes, which must go out first.
        if inline && !self.committer.releasing.load(Ordering::Acquire) {
            let mut stored = true;
            commit(core, sealed, |ok| stored = ok);
            if !stored {
                self.forget();
            }
            return;
        }
        match &self.committer.tx {
            Some(tx) => match tx.send(sealed) {
                Ok(()) => self.committer.busy = true,
                Err(mpsc::SendError(sealed)) => {
                    core.fail();
                    fail_all(sealed.done, "the committer thread stopped");
                    self.forget();
                }
            },
            None => fail_all(sealed.done, "the committer thread stopped"),
        }
    }

    /// Waits until the committer is done with the group handed to it (if any). If it could not
    /// write it, what the writer built on it is forgotten.
    pub fn settle(&mut self) {
        if !std::mem::take(&mut self.committer.busy) {
            return;
        }
        if !self.committer.rx.recv().unwrap_or(false) {
            self.forget();
        }
    }

    /// What was pending is not stored: forget the overlays and the cached heads built on them.
    fn forget(&mut self) {
        for map in self.overlay.iter_mut().chain(self.inflight.iter_mut()) {
            map.clear();
        }
        self.versions.clear();
        self.members.clear();
        self.member_ids = 0;
        self.counters = CounterCache::default();
    }
}

/// With a replicator, appends the group's record to the log first (the group is written, and
/// acknowledged, only once it is there) and adds the log position to the batch.
fn replicate(
    core: &Core,
    mut batch: rocksdb::WriteBatch,
    record: Option<Vec<u8>>,
) -> Result<rocksdb::WriteBatch, StoreError> {
    let (Some(replicator), Some(record)) = (core.replicator.get(), record) else {
        return Ok(batch);
    };
    let seq = replicator
        .append(record)
        .map_err(|e| StoreError::Failed(format!("the log did not take the group: {e}")))?;
    batch.put_cf(
        core.cf(Family::Meta),
        super::replicate::LOG_SEQ_KEY,
        seq.to_be_bytes(),
    );
    Ok(batch)
}

fn fail_all(done: Vec<Completion>, why: &str) {
    for d in done {
        d(Err(StoreError::Failed(why.into())));
    }
}

/// The committer thread: writes each sealed group, tells the writer, then releases the group's
/// results, then its pushes.
fn commit_loop(
    core: &Core,
    rx: mpsc::Receiver<Sealed>,
    done: mpsc::Sender<bool>,
    releasing: &AtomicBool,
) {
    while let Ok(sealed) = rx.recv() {
        releasing.store(true, Ordering::Release);
        commit(core, sealed, |ok| {
            let _ = done.send(ok);
        });
        releasing.store(false, Ordering::Release);
    }
}

/// Writes one sealed group, tells `stored` whether it is stored (the writer may then go on with
/// the next group while this one's results go out), then releases its results, then its pushes.
/// Run by the committer thread, or by the writer itself when nothing else is waiting.
fn commit(core: &Core, sealed: Sealed, stored: impl FnOnce(bool)) {
    let result = if sealed.failed {
        Err(StoreError::Failed(
            "a change failed after it had written".into(),
        ))
    } else {
        match sealed.batch {
            Some(batch) => replicate(core, batch, sealed.record)
                .and_then(|batch| core.write_batch(batch, sealed.writes)),
            None => Ok(()),
        }
    };
    if let Err(e) = &result {
        if !sealed.failed {
            tracing::error!("store write failed, refusing all further changes: {e}");
        }
        core.fail();
    }
    stored(result.is_ok());
    match result {
        Ok(()) => {
            // Replies first: a session woken by one of these pushes then finds the replies
            // of the same group (and of every earlier one) ready and writes them before
            // the push. A SEND_ACK whose version comes before a pushed entry's is then in
            // front of that PUSH on the connection, and the client sees no gap (which
            // would make it SYNC; PROTOCOL.md 12.3).
            for d in sealed.done {
                d(Ok(()));
            }
            if let Some(outbox) = core.outbox.get() {
                for post in sealed.posts {
                    match post {
                        Post::Deliver(d, exclude) => outbox.deliver(d, exclude),
                        Post::Notify(n) => outbox.notify_group(GroupNotice {
                            group_id: &n.group_id,
                            last_seq: n.last_seq,
                            message: n.message,
                            event: n.event,
                            members: &n.members,
                            exclude: n.exclude,
                        }),
                    }
                }
            }
            if sealed.push_queued {
                if let Some(wake) = core.push_wake.get() {
                    wake.notify_one();
                }
            }
            if sealed.events_queued {
                if let Some((_, wake)) = core.events.get() {
                    wake.notify_one();
                }
            }
        }
        Err(e) => fail_all(sealed.done, &e.to_string()),
    }
}
