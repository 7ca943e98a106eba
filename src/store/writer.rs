//! The writer: one thread applies every change to the store, one after another, and commits
//! them in groups.
//!
//! Changes arrive as operations on a channel. The writer runs each against the pending group (an
//! in-memory overlay of the keys written since the last commit, so a change sees the ones before
//! it), then hands the whole group to the committer thread, which writes it as one atomic
//! `WriteBatch`: in `sync` durability that is one fsync for every change that arrived while the
//! previous group was being written (group commit across users and connections). Only then are
//! the changes' results released and their pushes handed to the [`Outbox`], in the order the
//! changes ran, so a user's pushes leave in version order and nothing is acknowledged or pushed
//! before it is stored.
//!
//! The two threads overlap: while the committer writes (and fsyncs) one group, the writer runs
//! the changes of the next one, reading the keys of the group being written from its overlay
//! (they are not in RocksDB yet). One group at most is being written: the writer hands over the
//! next only when the committer is done with the one before. In `async` durability a group
//! sealed because no other change was waiting is written by the writer itself: at low load a
//! group holds a message or two, and waking the committer and sleeping again cost more than the
//! write (with fsyncs the overlap is worth it, so `sync` hands over, except for the commit
//! before a change that scans the store, which the writer waits for anyway).
//!
//! One writer means no locks: inbox versions and counters are allocated and read-modify-written
//! by a single thread. Reads that only look (SYNC, contacts, unread) run elsewhere against what
//! is committed.
//!
//! This file holds [`Store`], whose `change` queues a change, and the writer thread that runs
//! each as a [`Change`]; the pending group and the committer thread are in `commit.rs`.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;

use missive_protocol::ErrorCode;

use super::change::Change;
use super::commit::CommitGroup;
use super::core::{Core, Durability};
use super::error::{Result, StoreError};
use super::outbox::Outbox;
use super::pending::Pending;

/// The store: committed data to read ([`Core`], [`Store::core`]) and the writer that changes it.
pub struct Store {
    pub(super) core: Arc<Core>,
    pub(super) writer: Handle,
}

/// Most changes waiting for the writer; beyond it a change is refused with SERVER_BUSY.
const MAX_QUEUED: usize = 65_536;

impl Store {
    /// The committed data, to read: every query is a method of [`Core`] (the store's writes are
    /// methods of `Store`, each queued for the writer).
    pub fn core(&self) -> &Core {
        &self.core
    }
}

impl Store {
    /// Where every commit group is appended before it is written and acknowledged (a
    /// cluster's partition log). Set once, before the first change.
    pub fn set_replicator(&self, replicator: Arc<dyn super::replicate::Replicator>) {
        let _ = self.core.replicator.set(replicator);
    }

    /// Whether the store's groups go to a log ([`Store::set_replicator`]): a group that failed
    /// may then have reached the log, and another node replays it.
    pub fn is_replicated(&self) -> bool {
        self.core.replicator.get().is_some()
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
        F: FnOnce(&mut Change<'_>) -> Result<T> + Send + 'static,
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
        let op: Op = Box::new(move |txn: &mut Change<'_>| {
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

/// A change: runs on the writer thread against the pending group; returns whether it succeeded.
/// Changes check everything that can refuse them before they write; one that fails after it
/// wrote (a storage error) fails its whole group and the store.
pub(super) type Op = Box<dyn FnOnce(&mut Change<'_>) -> bool + Send>;

/// At most this many changes (or this many written bytes) per group, so one commit stays short.
const MAX_GROUP_OPS: usize = 4096;
const MAX_GROUP_BYTES: usize = 8 << 20;
/// With a replicator, a group is one record of the log, which NATS takes up to 1 MiB (its
/// `max_payload`): groups are sealed at half of that, counting a record's per-write overhead,
/// so one more change (a message is at most `max_content_len`, 64 KiB by default, plus its
/// keys) still fits.
const MAX_REPLICATED_GROUP_BYTES: usize = 512 << 10;
/// A record's bytes per write besides its key and value (family name, lengths, kind).
const RECORD_BYTES_PER_WRITE: usize = 24;

/// The sending side of the writer.
pub(super) struct Handle {
    tx: Option<mpsc::Sender<(bool, Op)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Handle {
    pub fn start(core: Arc<Core>) -> std::io::Result<Handle> {
        let (tx, rx) = mpsc::channel::<(bool, Op)>();
        let thread = std::thread::Builder::new()
            .name("missive-writer".into())
            .spawn(move || run(&core, rx))?;
        Ok(Handle {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues a change. `fresh`: commit what is pending first (for changes that scan the store).
    /// Returns the change back if the writer has stopped.
    pub fn submit(&self, fresh: bool, op: Op) -> std::result::Result<(), Op> {
        match &self.tx {
            Some(tx) => tx.send((fresh, op)).map_err(|e| e.0 .1),
            None => Err(op),
        }
    }
}

impl Drop for Handle {
    /// Lets the writer finish what is queued, then waits for it.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(core: &Arc<Core>, rx: mpsc::Receiver<(bool, Op)>) {
    let mut group = match CommitGroup::new(core.clone()) {
        Ok(g) => g,
        Err(e) => {
            tracing::error!("cannot start the committer thread: {e}");
            core.fail();
            // Every change queued or to come fails: its result sender is dropped unanswered.
            return;
        }
    };
    while let Ok(first) = rx.recv() {
        let replicated = core.replicator.get().is_some();
        let mut next = Some(first);
        let mut ops = 0;
        let mut drained = false;
        while let Some((fresh, op)) = next.take() {
            if fresh {
                group.flush(core);
            }
            apply(core, &mut group, op);
            ops += 1;
            if ops >= MAX_GROUP_OPS || group.bytes >= MAX_GROUP_BYTES {
                break;
            }
            if replicated
                && group.bytes + group.writes * RECORD_BYTES_PER_WRITE >= MAX_REPLICATED_GROUP_BYTES
            {
                break;
            }
            next = rx.try_recv().ok();
            drained = next.is_none();
        }
        // Not with fsyncs: the writer would sit out each sync instead of preparing the next
        // group meanwhile (sync durability at capacity took fewer messages).
        group.seal(core, drained && core.durability == Durability::Async);
    }
    group.settle();
}

/// Runs one change. If it failed after writing, its group cannot be committed: the store fails.
fn apply(core: &Core, group: &mut CommitGroup, op: Op) {
    let mut txn = Change::new(core, group);
    if !op(&mut txn) {
        txn.abandon(core);
    }
}
