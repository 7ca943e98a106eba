//! [`Change`]: one change, run by the writer against the pending group.
//!
//! Reads see what is committed plus every change before this one in the group (the overlay),
//! plus this change's own writes. Nothing is visible to readers outside the writer until the
//! group is committed. A change makes every check that can refuse it before its first write; a
//! change that fails after writing (a storage error) fails the store.

use std::sync::Arc;

use missive_protocol::pb::{self, inbox_entry::Body, Conversation, InboxEntry};
use prost::Message as _;

use super::commit::{is_counter_family, CommitGroup, Completion, Notify, Post};
use super::core::Core;
use super::error::{Result, StoreError};
use super::family::Family;
use super::keys;
use super::outbox::Delivery;
use super::read::Reader;
use crate::ids::SessionId;

/// The version of `user`'s entry among `deliveries` (0 if none).
pub fn version_of(deliveries: &[Delivery], user: &str) -> u64 {
    deliveries
        .iter()
        .find(|d| d.user == user)
        .map(|d| d.entry.version)
        .unwrap_or(0)
}

/// One change, on the writer thread.
pub struct Change<'a> {
    core: &'a Core,
    group: &'a mut CommitGroup,
    posts_mark: usize,
    writes: usize,
}

impl<'a> Change<'a> {
    pub(super) fn new(core: &'a Core, group: &'a mut CommitGroup) -> Self {
        let posts_mark = group.posts.len();
        Change {
            core,
            group,
            posts_mark,
            writes: 0,
        }
    }

    /// The committed store, for scans (which see only committed data: call [`Change::fresh`]
    /// first).
    pub fn core(&self) -> &'a Core {
        self.core
    }

    /// Commits the changes before this one, so that scans of the store see them. Only before
    /// this change has written anything.
    pub fn fresh(&mut self) -> Result<()> {
        if self.writes > 0 {
            return Err(StoreError::Corrupt(
                "internal: fresh() after the change wrote".into(),
            ));
        }
        if self.group.flush(self.core) {
            self.posts_mark = 0;
        }
        self.core.check_failed()
    }

    /// Calls `f` with the current value of a key (`None` if absent or deleted).
    pub fn read<T>(
        &self,
        family: Family,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> T,
    ) -> Result<T> {
        if let Some(v) = self.group.pending(family, key) {
            return Ok(f(v));
        }
        let v = self.core.db().get_pinned_cf(self.core.cf(family), key)?;
        Ok(f(v.as_deref()))
    }

    fn write(&mut self, family: Family, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.group.bytes += key.len() + value.as_ref().map_or(0, Vec::len);
        self.group.overlay[family.index()].insert(key, value);
        self.group.writes += 1;
        self.writes += 1;
    }

    /// A put.
    pub fn put(&mut self, family: Family, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.write(family, key.into(), Some(value.into()));
    }

    /// A delete.
    pub fn delete(&mut self, family: Family, key: impl Into<Vec<u8>>) {
        self.write(family, key.into(), None);
    }

    /// A counter (0 if absent), as of this change. Committed values come from the writer's
    /// cache when they are there.
    pub fn counter(&mut self, family: Family, key: &[u8]) -> Result<u64> {
        if let Some(v) = self.group.pending(family, key) {
            return match v.map(keys::u64_value) {
                None => Ok(0),
                Some(Some(n)) => Ok(n),
                Some(None) => Err(StoreError::Corrupt(format!(
                    "u64 value in {}",
                    family.name()
                ))),
            };
        }
        if let Some(n) = self.group.counters.get(family, key) {
            return Ok(n);
        }
        let n = self.core.get_u64(family, key)?;
        if is_counter_family(family) {
            self.group.counters.insert(family, key.to_vec(), n);
        }
        Ok(n)
    }

    /// Sets a counter; 0 deletes it (an absent counter reads as 0), so scans of counts meet
    /// only the ones that are not 0.
    pub fn set_counter(&mut self, family: Family, key: Vec<u8>, value: u64) {
        if value == 0 {
            self.delete(family, key);
        } else {
            self.put(family, key, value.to_be_bytes().to_vec());
        }
    }

    /// The number of keys of `family` in `start..end` as of this change: the committed ones
    /// that no pending change touched, plus the pending puts. Costs a seek, a step per key in
    /// the range, and a look at the family's pending keys (few, for the families it is used
    /// on: recalled messages).
    pub fn count_range(&self, family: Family, start: &[u8], end: &[u8]) -> Result<u64> {
        let mut n = 0;
        // A pending key is not counted from RocksDB: the committer may be writing it now.
        for item in self.core.iter_from(family, start) {
            let (k, _) = item?;
            if &*k >= end {
                break;
            }
            if self.group.pending(family, &k).is_none() {
                n += 1;
            }
        }
        n += self.group.pending_puts_in(family, start, end);
        Ok(n)
    }

    /// Adds `delta` to a counter, clamped at zero; returns the new value.
    pub fn add_counter(&mut self, family: Family, key: Vec<u8>, delta: i64) -> Result<u64> {
        let old = self.counter(family, &key)?;
        let new = (old as i64).saturating_add(delta).max(0) as u64;
        self.set_counter(family, key, new);
        Ok(new)
    }

    /// Puts and deletes this change made (for tests that check write amplification).
    pub fn writes(&self) -> usize {
        self.writes
    }

    /// The user's newest inbox version, including entries pending in the group.
    pub fn current_version(&mut self, user: &str) -> Result<u64> {
        if let Some(v) = self.group.versions.get(user) {
            return Ok(*v);
        }
        let v = self.core.stored_version(user)?;
        self.group.versions.insert(user.to_owned(), v);
        Ok(v)
    }

    /// Appends `entry` to `user`'s inbox with the next version; returns it with the version set.
    /// A message body is stored as an id-only stub (the content lives once in `content`).
    pub fn append(&mut self, user: &str, mut entry: InboxEntry) -> Result<InboxEntry> {
        let prev = self.current_version(user)?;
        let version = prev + 1;
        entry.version = version;
        let stored = match &entry.body {
            Some(Body::Message(m)) => InboxEntry {
                version,
                conversation: entry.conversation.clone(),
                timestamp_ms: entry.timestamp_ms,
                body: Some(Body::Message(pb::Message {
                    msg_id: m.msg_id,
                    ..Default::default()
                })),
            },
            _ => entry.clone(),
        };
        self.put(
            Family::Inbox,
            keys::inbox(user, version),
            stored.encode_to_vec(),
        );
        match self.group.versions.get_mut(user) {
            Some(v) => *v = version,
            None => {
                self.group.versions.insert(user.to_owned(), version);
            }
        }
        Ok(entry)
    }

    /// Appends an entry about `conversation` with `body` to `user`'s own inbox and pushes it
    /// to every device of the user once committed; returns its version.
    pub fn append_own(
        &mut self,
        user: &str,
        conversation: &Conversation,
        timestamp_ms: i64,
        body: Body,
    ) -> Result<u64> {
        let entry = self.append(
            user,
            InboxEntry {
                version: 0,
                conversation: Some(conversation.clone()),
                timestamp_ms,
                body: Some(body),
            },
        )?;
        let version = entry.version;
        self.deliver(
            vec![Delivery {
                user: user.to_owned(),
                entry,
                watch: false,
            }],
            None,
        );
        Ok(version)
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
                watch: false,
            });
        }
        Ok(out)
    }

    /// The current members of a group (empty if none), cached by the writer. Reading them
    /// the first time scans the committed store, which commits what is pending first: call it
    /// before the change writes anything.
    pub fn members(&mut self, group_id: &str) -> Result<Arc<Vec<String>>> {
        if let Some(m) = self.group.members.get(group_id) {
            return Ok(m.clone());
        }
        // A scan sees only committed data.
        self.fresh()?;
        let list = self.core.member_ids(group_id)?;
        Ok(self.set_members(group_id, list))
    }

    /// Caches the member list of a group this change created.
    pub fn set_members(&mut self, group_id: &str, list: Vec<String>) -> Arc<Vec<String>> {
        self.group.cache_members(group_id, Arc::new(list))
    }

    /// Adds `users` to the cached member list of `group_id` (read with [`Change::members`]
    /// first) and returns it.
    pub fn add_members(&mut self, group_id: &str, users: &[String]) -> Arc<Vec<String>> {
        let mut list = self.cached_members(group_id);
        Arc::make_mut(&mut list).extend(users.iter().cloned());
        self.group.cache_members(group_id, list)
    }

    /// Takes `user` out of the cached member list of `group_id` (read with [`Change::members`]
    /// first) and returns it.
    pub fn remove_member(&mut self, group_id: &str, user: &str) -> Arc<Vec<String>> {
        let mut list = self.cached_members(group_id);
        Arc::make_mut(&mut list).retain(|m| m != user);
        self.group.cache_members(group_id, list)
    }

    fn cached_members(&mut self, group_id: &str) -> Arc<Vec<String>> {
        self.group.members.remove(group_id).unwrap_or_default()
    }

    /// Pushes `deliveries` once the group is committed (to every online session of each user
    /// except session `exclude`).
    pub fn deliver(&mut self, deliveries: Vec<Delivery>, exclude: Option<SessionId>) {
        if !deliveries.is_empty() {
            self.group.posts.push(Post::Deliver(deliveries, exclude));
        }
    }

    /// Notifies the online `members` of a read fan-out group once the group is committed,
    /// with the message at `last_seq` or the membership event, if given.
    pub fn notify_group(
        &mut self,
        group_id: &str,
        last_seq: u64,
        message: Option<pb::Message>,
        event: Option<pb::GroupEvent>,
        members: Arc<Vec<String>>,
        exclude: Option<SessionId>,
    ) {
        self.group.posts.push(Post::Notify(Box::new(Notify {
            group_id: group_id.to_owned(),
            last_seq,
            message,
            event,
            members,
            exclude,
        })));
    }

    /// Queues an offline-push notification of message `msg_id` for each recipient of
    /// `deliveries` (every user but `from`) that has no online session in the foreground, in
    /// this change's batch; marks the others' deliveries to be watched for an ack
    /// (`crate::unacked`). Nothing when offline push is off.
    pub fn queue_offline_pushes(&mut self, msg_id: u64, from: &str, deliveries: &mut [Delivery]) {
        if !self.core.push_enabled() {
            return;
        }
        let users: Vec<&str> = deliveries
            .iter()
            .map(|d| d.user.as_str())
            .filter(|u| *u != from)
            .collect();
        if users.is_empty() {
            return;
        }
        let offline = match self.core.outbox.get() {
            Some(outbox) => outbox.offline(&users),
            None => users,
        };
        let offline: std::collections::HashSet<String> =
            offline.into_iter().map(str::to_owned).collect();
        for d in deliveries.iter_mut().filter(|d| d.user != from) {
            if offline.contains(&d.user) {
                self.put(Family::PushQueue, keys::push(msg_id, &d.user), Vec::new());
                self.group.push_queued = true;
            } else {
                d.watch = true;
            }
        }
    }

    /// Queues an offline-push notification of message `msg_id` for each of `users` that has no
    /// online session in the foreground (@mentioned members of a read fan-out group, whose
    /// pushes are not watched: GROUP_NOTIFY is not acknowledged).
    pub fn queue_offline_only(&mut self, msg_id: u64, users: &[&str]) {
        if !self.core.push_enabled() || users.is_empty() {
            return;
        }
        let offline = match self.core.outbox.get() {
            Some(outbox) => outbox.offline(users),
            None => users.to_vec(),
        };
        self.queue_pushes(msg_id, &offline);
    }

    /// Queues an offline-push notification of message `msg_id` for each of `users` whoever is
    /// online: watched messages whose time is up.
    pub fn queue_pushes(&mut self, msg_id: u64, users: &[&str]) {
        if !self.core.push_enabled() {
            return;
        }
        for user in users {
            self.put(Family::PushQueue, keys::push(msg_id, user), Vec::new());
            self.group.push_queued = true;
        }
    }

    /// Marks the group as one that queued events: the events worker is woken once it is
    /// committed.
    pub(super) fn events_queued(&mut self) {
        self.group.events_queued = true;
    }

    /// Runs `done` once the group is committed, with the commit's outcome.
    pub(super) fn on_commit(&mut self, done: Completion) {
        self.group.done.push(done);
    }

    /// The change failed. Nothing to take back if it wrote nothing (every refusal comes before
    /// the first write); otherwise its group is poisoned and the store fails.
    pub(super) fn abandon(self, core: &Core) {
        if self.writes > 0 {
            tracing::error!("a change failed after writing; the store stops taking changes");
            core.fail();
        }
        self.group.posts.truncate(self.posts_mark);
    }
}

impl Reader for Change<'_> {
    fn value<T>(
        &self,
        family: Family,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> T,
    ) -> Result<T> {
        self.read(family, key, f)
    }
}
