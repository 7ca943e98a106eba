//! Pushes of messages to online users that no foreground device has acknowledged yet, and when
//! to announce them to the offline-push webhook all the same (a dead socket that sent no FIN
//! looks online until the heartbeat sweep closes it, minutes later for a phone with a long
//! heartbeat).
//!
//! The rule (docs/offline-push.md): a message the store found its recipient online for is
//! *watched*. A PUSH_ACK from one of the user's foreground devices covering its version ends the
//! watch; otherwise it is announced `push_unacked_ms` after it was delivered, or at once when
//! the user's last foreground connection closes first. Each watched message is announced at most
//! once: an entry leaves the table when it is acknowledged or taken to be announced.
//!
//! What it may hold is bounded: [`MAX_PER_USER`] entries per user and [`MAX_TOTAL`] in all; a
//! message past either bound is not watched (counted by the caller), since its user already has
//! older messages that will be announced if the device is dead.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

/// Watched messages per user at most.
pub const MAX_PER_USER: usize = 64;
/// Watched messages in all at most.
pub const MAX_TOTAL: usize = 1 << 18;
/// Shards of the table, so that acks on connection threads and deliveries on the committer do
/// not all meet on one lock.
const SHARDS: usize = 16;

/// One watched message of a user.
#[derive(Debug, Clone, Copy)]
struct Entry {
    version: u64,
    msg_id: u64,
    due_ms: i64,
}

#[derive(Debug, Default)]
struct Shard {
    /// Per user, in version order.
    users: HashMap<Arc<str>, VecDeque<Entry>>,
    /// When users have an entry falling due, in time order (entries were all given the same
    /// delay; a hurried user's item goes to the front). An item whose entries were acknowledged
    /// meanwhile finds nothing and is dropped.
    timeline: VecDeque<(i64, Arc<str>)>,
}

/// A message to announce: its recipient and id.
pub type Due = (Arc<str>, u64);

/// The table of watched messages.
#[derive(Debug)]
pub struct Unacked {
    delay_ms: i64,
    shards: Box<[Mutex<Shard>]>,
    len: AtomicUsize,
    /// Messages not watched because a bound was reached.
    refused: AtomicU64,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Unacked {
    /// Off: watches nothing.
    fn default() -> Unacked {
        Unacked::new(0)
    }
}

impl Unacked {
    /// A table that announces a message `delay_ms` after it was delivered; 0: watches nothing.
    pub fn new(delay_ms: u64) -> Unacked {
        Unacked {
            delay_ms: delay_ms.min(i64::MAX as u64) as i64,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            len: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            hasher: Default::default(),
        }
    }

    pub fn is_on(&self) -> bool {
        self.delay_ms > 0
    }

    /// Watched messages now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, user: &str) -> &Mutex<Shard> {
        &self.shards[self.hasher.hash_one(user) as usize % SHARDS]
    }

    /// Messages not watched so far because a bound was reached (counted, not announced).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Watches message `msg_id`, pushed to `user` as inbox version `version` at `now_ms`.
    /// `false`: not watched (a bound was reached; counted in [`Unacked::refused`]).
    pub fn watch(&self, user: &Arc<str>, version: u64, msg_id: u64, now_ms: i64) -> bool {
        if !self.is_on() {
            return false;
        }
        let watched = self.try_watch(user, version, msg_id, now_ms);
        if !watched {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        watched
    }

    fn try_watch(&self, user: &Arc<str>, version: u64, msg_id: u64, now_ms: i64) -> bool {
        if self.len() >= MAX_TOTAL {
            return false;
        }
        let due_ms = now_ms.saturating_add(self.delay_ms);
        let mut shard = self.shard(user).lock();
        if shard.timeline.len() >= 4 * MAX_TOTAL / SHARDS {
            return false;
        }
        let key = match shard.users.get_key_value(&**user) {
            Some((k, _)) => k.clone(),
            None => user.clone(),
        };
        let list = shard.users.entry(key.clone()).or_default();
        if list.len() >= MAX_PER_USER || list.back().is_some_and(|e| e.version >= version) {
            return false;
        }
        list.push_back(Entry {
            version,
            msg_id,
            due_ms,
        });
        shard.timeline.push_back((due_ms, key));
        self.len.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// A foreground device of `user` acknowledged (or, logging in, was told to sync) every
    /// version up to `version`: those messages are delivered.
    pub fn acked(&self, user: &str, version: u64) {
        if !self.is_on() || self.is_empty() {
            return;
        }
        let mut shard = self.shard(user).lock();
        let Some(list) = shard.users.get_mut(user) else {
            return;
        };
        let before = list.len();
        while list.front().is_some_and(|e| e.version <= version) {
            list.pop_front();
        }
        let removed = before - list.len();
        if list.is_empty() {
            shard.users.remove(user);
        }
        self.len.fetch_sub(removed, Ordering::Relaxed);
    }

    /// The last foreground connection of `user` closed at `now_ms`: what is watched for the
    /// user now is due at the next [`Unacked::take_due`] (what is watched later, after a
    /// reconnect, keeps its own time).
    pub fn hurry(&self, user: &Arc<str>, now_ms: i64) {
        if !self.is_on() || self.is_empty() {
            return;
        }
        let mut shard = self.shard(user).lock();
        let Some(list) = shard.users.get_mut(&**user) else {
            return;
        };
        for e in list.iter_mut() {
            e.due_ms = e.due_ms.min(now_ms);
        }
        shard.timeline.push_front((now_ms, user.clone()));
    }

    /// Takes out the messages due at `now_ms`, in each user's version order: each is announced
    /// once.
    pub fn take_due(&self, now_ms: i64) -> Vec<Due> {
        let mut out = Vec::new();
        if self.is_empty() {
            return out;
        }
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            let shard = &mut *shard;
            while shard
                .timeline
                .front()
                .is_some_and(|(due, _)| *due <= now_ms)
            {
                let (_, user) = shard.timeline.pop_front().expect("front checked");
                let Some(list) = shard.users.get_mut(&user) else {
                    continue;
                };
                let before = list.len();
                while list.front().is_some_and(|e| e.due_ms <= now_ms) {
                    let e = list.pop_front().expect("front checked");
                    out.push((user.clone(), e.msg_id));
                }
                self.len.fetch_sub(before - list.len(), Ordering::Relaxed);
                if list.is_empty() {
                    shard.users.remove(&user);
                }
            }
            if shard.users.is_empty() && shard.users.capacity() > 1024 {
                shard.users.shrink_to_fit();
            }
            if shard.timeline.is_empty() && shard.timeline.capacity() > 1024 {
                shard.timeline.shrink_to_fit();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn an_acked_message_is_never_announced_and_an_unacked_one_once_when_due() {
        let t = Unacked::new(4000);
        let (alice, bob) = (user("alice"), user("bob"));
        assert!(t.watch(&alice, 1, 101, 0));
        assert!(t.watch(&alice, 2, 102, 10));
        assert!(t.watch(&bob, 7, 201, 20));
        t.acked("alice", 1);
        assert_eq!(t.len(), 2);
        assert!(
            t.take_due(3999).is_empty(),
            "nothing is due before the delay"
        );
        assert_eq!(t.take_due(4010), vec![(alice.clone(), 102)]);
        assert_eq!(t.take_due(4020), vec![(bob.clone(), 201)]);
        assert!(t.take_due(100_000).is_empty(), "each is announced once");
        assert!(t.is_empty());
        // An ack after it was taken changes nothing.
        t.acked("bob", 7);
        assert!(t.is_empty());
    }

    #[test]
    fn a_closed_last_connection_makes_its_unacked_messages_due_at_once() {
        let t = Unacked::new(4000);
        let alice = user("alice");
        t.watch(&alice, 1, 101, 0);
        t.watch(&alice, 2, 102, 0);
        t.acked("alice", 1);
        t.hurry(&alice, 1);
        // Watched after the close (the user reconnected): not hurried.
        t.watch(&alice, 3, 103, 2);
        assert_eq!(t.take_due(2), vec![(alice.clone(), 102)]);
        assert!(t.take_due(4001).is_empty());
        assert_eq!(t.take_due(4002), vec![(alice.clone(), 103)]);
        // Hurrying a user with nothing watched remembers nothing.
        t.hurry(&alice, 5000);
        t.watch(&alice, 4, 104, 10_000);
        assert!(t.take_due(10_001).is_empty());
        assert_eq!(t.take_due(14_000), vec![(alice, 104)]);
    }

    #[test]
    fn the_table_is_bounded_per_user_and_off_with_a_zero_delay() {
        let t = Unacked::new(1000);
        let alice = user("alice");
        for v in 1..=(MAX_PER_USER as u64 + 10) {
            let watched = t.watch(&alice, v, 1000 + v, 0);
            assert_eq!(watched, v <= MAX_PER_USER as u64, "version {v}");
        }
        assert_eq!(t.len(), MAX_PER_USER);
        assert_eq!(t.refused(), 10);
        assert!(!t.watch(&alice, 1, 1, 0), "versions only grow");
        let off = Unacked::new(0);
        assert!(!off.watch(&alice, 1, 1, 0));
        assert!(off.take_due(i64::MAX).is_empty());
    }
}
