//! The lease table: what this node has seen of every partition's lease and of every node, and
//! what it should do about it. No IO here: `node.rs` feeds it what the bucket's watch delivers
//! and carries out the actions it returns, so every rule of docs/CLUSTER.md section 3 is tested
//! here in virtual time.
//!
//! The rules, in short:
//! - a lease this node holds is believed only until the time its last successful renewal was
//!   *sent*, plus the TTL, minus a margin ([`Table::owns`]);
//! - another node's lease is expired when its revision has not changed for a TTL by this node's
//!   own clock, counted from when this node first saw that revision (no clock is shared);
//! - a free or expired partition is tried first by its preferred live node (rendezvous
//!   hashing), by any live node after a further TTL;
//! - every write is revision-checked by the bucket, so of two takers one wins.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::assign::preferred;

/// A lease's value in the bucket (`lease.<p>`). An empty `node` is a released lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub node: String,
    /// Increases with every change of owner.
    pub epoch: u64,
    /// The writer's wall clock, for people reading `/v1/cluster`; no decision uses it.
    pub renewed_ms: i64,
}

/// The timing of leases.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub ttl: Duration,
    pub renew: Duration,
    pub margin: Duration,
}

/// One key as last seen through the watch.
#[derive(Debug, Clone)]
struct Seen<T> {
    revision: u64,
    value: Option<T>,
    since: Instant,
    /// When this node first saw the key change after first seeing it: for a node's key, the
    /// proof that it is alive now (a key first seen may be a dead node's, never deleted).
    changing_since: Option<Instant>,
}

/// A lease this node holds.
#[derive(Debug, Clone)]
struct Held {
    revision: u64,
    epoch: u64,
    /// Past this instant the node no longer believes it owns the partition.
    deadline: Instant,
}

/// What the node should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write `lease` over `revision` (a renewal, a takeover or a release).
    Update {
        partition: u32,
        revision: u64,
        lease: Lease,
    },
    /// Create the never-written lease of `partition`.
    Create { partition: u32, lease: Lease },
}

/// How a write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Written; the key's new revision.
    Written(u64),
    /// The revision had moved on (someone else wrote): certainly not ours.
    Conflict,
    /// No answer in time: unknown.
    Unknown,
}

/// One partition, as `/v1/cluster` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionView {
    pub partition: u32,
    pub owner: Option<String>,
    pub epoch: u64,
    /// Milliseconds since this node saw the lease's revision change.
    pub unchanged_ms: u64,
    /// This node holds it and believes it owns it now.
    pub here: bool,
}

/// One node, as `/v1/cluster` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeView {
    pub id: String,
    pub live: bool,
    pub unchanged_ms: u64,
    pub info: serde_json::Value,
}

pub struct Table {
    me: String,
    partitions: u32,
    timing: Timing,
    leases: BTreeMap<u32, Seen<Lease>>,
    nodes: BTreeMap<String, Seen<serde_json::Value>>,
    held: BTreeMap<u32, Held>,
    /// Partitions this node took because their preferred node did not: not handed over again
    /// before the instant given, so a node that cannot take them does not make them bounce.
    keep_until: BTreeMap<u32, Instant>,
    /// Partitions this node gives up (drain, shutdown, a better owner).
    releasing: bool,
    started: Instant,
    pub takeovers: u64,
    pub losses: u64,
}

impl Table {
    pub fn new(me: &str, partitions: u32, timing: Timing, now: Instant) -> Table {
        Table {
            me: me.to_owned(),
            partitions,
            timing,
            leases: BTreeMap::new(),
            nodes: BTreeMap::new(),
            held: BTreeMap::new(),
            keep_until: BTreeMap::new(),
            releasing: false,
            started: now,
            takeovers: 0,
            losses: 0,
        }
    }

    /// A lease key's new revision, from the watch (`None`: deleted or purged).
    pub fn saw_lease(&mut self, partition: u32, revision: u64, value: Option<Lease>, now: Instant) {
        if partition >= self.partitions {
            return;
        }
        // One of this node's own writes whose answer was lost (it landed after all): the lease
        // is still ours, at the newer revision. The deadline stays the one of the last
        // confirmed write, which was sent earlier than this one.
        if let (Some(h), Some(l)) = (self.held.get_mut(&partition), value.as_ref()) {
            if l.node == self.me && l.epoch == h.epoch && revision > h.revision {
                h.revision = revision;
            }
        }
        see(self.leases.entry(partition), revision, value, now);
    }

    /// A node key's new revision, from the watch.
    pub fn saw_node(
        &mut self,
        id: &str,
        revision: u64,
        value: Option<serde_json::Value>,
        now: Instant,
    ) {
        see(self.nodes.entry(id.to_owned()), revision, value, now);
    }

    /// Give every partition up (drain, shutdown): stop renewing, write each lease released.
    pub fn release_all(&mut self) {
        self.releasing = true;
    }

    /// Whether this node owns `partition` at `now`.
    pub fn owns(&self, partition: u32, now: Instant) -> bool {
        !self.releasing && self.held.get(&partition).is_some_and(|h| now < h.deadline)
    }

    /// The epoch of `partition`'s lease if this node owns it at `now`.
    pub fn epoch(&self, partition: u32, now: Instant) -> Option<u64> {
        self.owns(partition, now)
            .then(|| self.held.get(&partition).map(|h| h.epoch))
            .flatten()
    }

    /// The partitions this node owns at `now`.
    pub fn owned(&self, now: Instant) -> Vec<u32> {
        if self.releasing {
            return Vec::new();
        }
        self.held
            .iter()
            .filter(|(_, h)| now < h.deadline)
            .map(|(&p, _)| p)
            .collect()
    }

    /// Nodes whose key this node has seen change, the last time within a TTL (this node
    /// always, unless it is leaving).
    pub fn live_nodes(&self, now: Instant) -> Vec<&str> {
        let mut live: Vec<&str> = self
            .nodes
            .iter()
            .filter(|(id, seen)| {
                *id != &self.me
                    && seen.value.is_some()
                    && seen.changing_since.is_some()
                    && now - seen.since < self.timing.ttl
            })
            .map(|(id, _)| id.as_str())
            .collect();
        if !self.releasing {
            live.push(&self.me);
        }
        live
    }

    /// The writes to make now. Drops held leases past their deadline first.
    pub fn actions(&mut self, now: Instant, wall_ms: i64) -> Vec<Action> {
        let expired: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, h)| now >= h.deadline)
            .map(|(&p, _)| p)
            .collect();
        for p in expired {
            self.held.remove(&p);
            self.losses += 1;
            tracing::warn!(
                partition = p,
                "lease not renewed in time: partition given up"
            );
        }
        let live: Vec<String> = self
            .live_nodes(now)
            .into_iter()
            .map(str::to_owned)
            .collect();
        // A node just started has not seen the others yet: it waits a TTL before it moves a
        // partition to a better owner.
        let settled = now - self.started >= self.timing.ttl;
        let mut out = Vec::new();
        for p in 0..self.partitions {
            let best = preferred(p, live.iter().map(String::as_str));
            if let Some(h) = self.held.get(&p) {
                // Hand a partition to its preferred node only once that node has been seen
                // alive for a TTL, and not one this node had to take because its preferred
                // node did not.
                let better = best.filter(|&b| {
                    b != self.me
                        && self
                            .nodes
                            .get(b)
                            .and_then(|n| n.changing_since)
                            .is_some_and(|t| now - t >= self.timing.ttl)
                });
                let kept = self.keep_until.get(&p).is_some_and(|&t| now < t);
                // With one partition there is nothing to balance: moving it to the node that
                // ranks first would only cost an outage (and the owner's stop), so the owner
                // keeps it until it stops or loses it.
                let balances = self.partitions > 1;
                let hand_over =
                    self.releasing || (balances && settled && better.is_some() && !kept);
                let (revision, epoch) = (h.revision, h.epoch);
                if hand_over {
                    // This node stops believing before the release is even sent: the taker
                    // may act as soon as the release lands.
                    self.held.remove(&p);
                    tracing::info!(partition = p, to = ?better, "partition released");
                }
                let node = if hand_over {
                    String::new()
                } else {
                    self.me.clone()
                };
                out.push(Action::Update {
                    partition: p,
                    revision,
                    lease: Lease {
                        node,
                        epoch,
                        renewed_ms: wall_ms,
                    },
                });
                continue;
            }
            let seen = self.leases.get(&p);
            if self.releasing {
                continue;
            }
            let mine_first = best == Some(self.me.as_str());
            match seen {
                None => {
                    // Never written: the preferred node creates it; anyone after a TTL.
                    if mine_first || now - self.started >= self.timing.ttl * 2 {
                        out.push(Action::Create {
                            partition: p,
                            lease: Lease {
                                node: self.me.clone(),
                                epoch: 1,
                                renewed_ms: wall_ms,
                            },
                        });
                    }
                }
                Some(seen) => {
                    let idle = now - seen.since;
                    let (free, epoch) = match &seen.value {
                        None => (true, 0),
                        Some(l) => (l.node.is_empty(), l.epoch),
                    };
                    // The holder of an expired lease is not renewing: whether it still
                    // looks live or not, it is not a candidate for its own partition.
                    let holder = seen.value.as_ref().map(|l| l.node.as_str());
                    let mine_first = if free {
                        mine_first
                    } else {
                        let others = live
                            .iter()
                            .map(String::as_str)
                            .filter(|n| Some(*n) != holder);
                        preferred(p, others) == Some(self.me.as_str())
                    };
                    // A node that is not the preferred one waits half a TTL more, so the
                    // preferred one usually wins; the bound stays at 1.5 TTL plus a round.
                    let wait = if mine_first {
                        Duration::ZERO
                    } else {
                        self.timing.ttl / 2
                    };
                    let ready = if free {
                        idle >= wait
                    } else {
                        idle >= self.timing.ttl + wait
                    };
                    if ready {
                        if !mine_first {
                            self.keep_until.insert(p, now + self.timing.ttl * 10);
                        }
                        out.push(Action::Update {
                            partition: p,
                            revision: seen.revision,
                            lease: Lease {
                                node: self.me.clone(),
                                epoch: epoch + 1,
                                renewed_ms: wall_ms,
                            },
                        });
                    }
                }
            }
        }
        out
    }

    /// How a write this node `sent` at `sent` ended.
    pub fn finished(&mut self, action: &Action, outcome: Outcome, sent: Instant) {
        let (partition, lease) = match action {
            Action::Update {
                partition, lease, ..
            }
            | Action::Create { partition, lease } => (*partition, lease),
        };
        let deadline = sent + self.timing.ttl.saturating_sub(self.timing.margin);
        match outcome {
            Outcome::Written(revision) if lease.node == self.me => {
                if !self.held.contains_key(&partition) {
                    self.takeovers += 1;
                    tracing::info!(partition, epoch = lease.epoch, "partition taken");
                }
                self.held.insert(
                    partition,
                    Held {
                        revision,
                        epoch: lease.epoch,
                        deadline,
                    },
                );
            }
            // A release: it stopped being ours when it was sent (`actions`).
            Outcome::Written(_) => {}
            Outcome::Conflict => {
                // Unless the bucket holds a write of ours whose answer was lost (`saw_lease`
                // adopted its revision, so it differs from the one this write expected),
                // someone else has the lease.
                let expected = match action {
                    Action::Update { revision, .. } => Some(*revision),
                    Action::Create { .. } => None,
                };
                let adopted = match (self.held.get(&partition), self.leases.get(&partition)) {
                    (Some(h), Some(seen)) => {
                        seen.revision == h.revision
                            && Some(h.revision) != expected
                            && seen
                                .value
                                .as_ref()
                                .is_some_and(|l| l.node == self.me && l.epoch == h.epoch)
                    }
                    _ => false,
                };
                if !adopted && self.held.remove(&partition).is_some() {
                    self.losses += 1;
                    tracing::warn!(partition, "lease taken by another node");
                }
            }
            // Kept until its deadline, which `actions` enforces.
            Outcome::Unknown => {}
        }
    }

    /// The node named in `partition`'s lease (`None`: never taken, or released).
    pub fn owner(&self, partition: u32) -> Option<&str> {
        self.leases
            .get(&partition)?
            .value
            .as_ref()
            .map(|l| l.node.as_str())
            .filter(|n| !n.is_empty())
    }

    /// What node `id` registered last (its addresses), if its key is there.
    pub fn node_info(&self, id: &str) -> Option<&serde_json::Value> {
        self.nodes.get(id)?.value.as_ref()
    }

    /// Every partition, for `/v1/cluster`.
    pub fn partitions_view(&self, now: Instant) -> Vec<PartitionView> {
        (0..self.partitions)
            .map(|p| {
                let seen = self.leases.get(&p);
                let lease = seen.and_then(|s| s.value.as_ref());
                PartitionView {
                    partition: p,
                    owner: lease.map(|l| l.node.clone()).filter(|n| !n.is_empty()),
                    epoch: lease.map_or(0, |l| l.epoch),
                    unchanged_ms: seen.map_or(0, |s| millis(now - s.since)),
                    here: self.owns(p, now),
                }
            })
            .collect()
    }

    /// Every node seen, for `/v1/cluster`.
    pub fn nodes_view(&self, now: Instant) -> Vec<NodeView> {
        self.nodes
            .iter()
            .filter_map(|(id, seen)| {
                let info = seen.value.clone()?;
                Some(NodeView {
                    id: id.clone(),
                    live: id == &self.me || now - seen.since < self.timing.ttl,
                    unchanged_ms: millis(now - seen.since),
                    info,
                })
            })
            .collect()
    }
}

fn see<K: Ord, T>(
    entry: std::collections::btree_map::Entry<'_, K, Seen<T>>,
    revision: u64,
    value: Option<T>,
    now: Instant,
) {
    use std::collections::btree_map::Entry;
    match entry {
        Entry::Vacant(v) => {
            v.insert(Seen {
                revision,
                value,
                since: now,
                changing_since: None,
            });
        }
        Entry::Occupied(mut o) => {
            // The watch may repeat a revision after a reconnect: only a newer one restarts
            // the clock.
            if revision > o.get().revision {
                let changing_since = match &value {
                    Some(_) => o.get().changing_since.or(Some(now)),
                    None => None,
                };
                *o.get_mut() = Seen {
                    revision,
                    value,
                    since: now,
                    changing_since,
                };
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: Timing = Timing {
        ttl: Duration::from_secs(5),
        renew: Duration::from_secs(1),
        margin: Duration::from_millis(500),
    };

    fn node(t: &mut Table, id: &str, rev: u64, now: Instant) {
        t.saw_node(id, rev, Some(serde_json::json!({})), now);
    }

    /// Carries out `t`'s actions against a shared bucket (`bucket`: partition -> (revision,
    /// lease)) as the real bucket would: a write at a stale revision is a conflict.
    fn run(
        t: &mut Table,
        bucket: &mut BTreeMap<u32, (u64, Lease)>,
        next_rev: &mut u64,
        now: Instant,
    ) {
        for a in t.actions(now, 0) {
            let outcome = match &a {
                Action::Create { partition, lease } => {
                    if bucket.contains_key(partition) {
                        Outcome::Conflict
                    } else {
                        *next_rev += 1;
                        bucket.insert(*partition, (*next_rev, lease.clone()));
                        Outcome::Written(*next_rev)
                    }
                }
                Action::Update {
                    partition,
                    revision,
                    lease,
                } => match bucket.get(partition) {
                    Some((r, _)) if r == revision => {
                        *next_rev += 1;
                        bucket.insert(*partition, (*next_rev, lease.clone()));
                        Outcome::Written(*next_rev)
                    }
                    _ => Outcome::Conflict,
                },
            };
            t.finished(&a, outcome, now);
        }
    }

    /// Every table sees the whole bucket (the watch) at `now`.
    fn watch(tables: &mut [&mut Table], bucket: &BTreeMap<u32, (u64, Lease)>, now: Instant) {
        for t in tables.iter_mut() {
            for (&p, (rev, lease)) in bucket {
                t.saw_lease(p, *rev, Some(lease.clone()), now);
            }
        }
    }

    #[test]
    fn two_nodes_split_the_partitions_and_never_both_own_one() {
        let t0 = Instant::now();
        let mut a = Table::new("n1", 16, TIMING, t0);
        let mut b = Table::new("n2", 16, TIMING, t0);
        let mut bucket = BTreeMap::new();
        let mut rev = 0;
        let step = Duration::from_millis(250);
        let mut now = t0;
        for i in 0..200u64 {
            node(&mut a, "n1", i + 1, now);
            node(&mut a, "n2", i + 1, now);
            node(&mut b, "n1", i + 1, now);
            node(&mut b, "n2", i + 1, now);
            if i % 4 == 0 {
                run(&mut a, &mut bucket, &mut rev, now);
                run(&mut b, &mut bucket, &mut rev, now);
            }
            watch(&mut [&mut a, &mut b], &bucket, now);
            for p in 0..16 {
                assert!(
                    !(a.owns(p, now) && b.owns(p, now)),
                    "both own {p} at step {i}"
                );
            }
            now += step;
        }
        let (oa, ob) = (a.owned(now - step), b.owned(now - step));
        assert_eq!(oa.len() + ob.len(), 16, "{oa:?} {ob:?}");
        assert!(!oa.is_empty() && !ob.is_empty(), "{oa:?} {ob:?}");
        for p in 0..16u32 {
            let best = preferred(p, ["n1", "n2"]).unwrap();
            let holder = if oa.contains(&p) { "n1" } else { "n2" };
            assert_eq!(holder, best, "partition {p} settled at its preferred node");
        }
    }

    #[test]
    fn a_silent_owner_loses_its_partitions_within_the_bound_and_stops_believing_first() {
        let t0 = Instant::now();
        let mut a = Table::new("n1", 8, TIMING, t0);
        let mut b = Table::new("n2", 8, TIMING, t0);
        let mut bucket = BTreeMap::new();
        let mut rev = 0;
        let mut now = t0;
        // n1 alone owns everything.
        for i in 0..4u64 {
            node(&mut a, "n1", i + 1, now);
            run(&mut a, &mut bucket, &mut rev, now);
            watch(&mut [&mut a], &bucket, now);
            now += TIMING.renew;
        }
        assert_eq!(a.owned(now).len(), 8);
        // n2 arrives and watches; n1 goes silent (paused, cut off) at `silent`.
        let silent = now;
        let mut taken_all = None;
        for i in 0..60u64 {
            node(&mut b, "n2", 100 + i, now);
            watch(&mut [&mut b], &bucket, now);
            run(&mut b, &mut bucket, &mut rev, now);
            watch(&mut [&mut b], &bucket, now);
            for p in 0..8 {
                // n1's belief, had it woken now without renewing:
                assert!(
                    !(a.owns(p, now) && b.owns(p, now)),
                    "both own {p} at {:?}",
                    now - silent
                );
            }
            if taken_all.is_none() && b.owned(now).len() == 8 {
                taken_all = Some(now - silent);
            }
            now += Duration::from_millis(250);
        }
        let took = taken_all.expect("n2 took every partition");
        assert!(took <= Duration::from_secs(10), "took {took:?}");
        // n1 wakes: its actions first drop what it no longer owns, then its renewals conflict.
        run(&mut a, &mut bucket, &mut rev, now);
        assert!(a.owned(now).is_empty());
        assert_eq!(b.owned(now).len(), 8);
    }

    #[test]
    fn a_lost_renewal_keeps_the_lease_only_until_the_deadline() {
        let t0 = Instant::now();
        let mut a = Table::new("n1", 1, TIMING, t0);
        let create = a.actions(t0, 0);
        assert_eq!(create.len(), 1);
        a.finished(&create[0], Outcome::Written(1), t0);
        assert!(a.owns(0, t0 + Duration::from_secs(4)));
        let renew = a.actions(t0 + Duration::from_secs(1), 0);
        a.finished(&renew[0], Outcome::Unknown, t0 + Duration::from_secs(1));
        assert!(a.owns(0, t0 + Duration::from_millis(4_400)));
        assert!(
            !a.owns(0, t0 + Duration::from_millis(4_500)),
            "ttl - margin"
        );
        a.actions(t0 + Duration::from_millis(4_600), 0);
        assert_eq!(a.losses, 1);
    }

    #[test]
    fn a_released_lease_is_never_owned_by_the_releaser_and_the_taker_at_once() {
        let t0 = Instant::now();
        let (mut a, mut b) = (
            Table::new("n1", 1, TIMING, t0),
            Table::new("n2", 1, TIMING, t0),
        );
        let (mut bucket, mut rev) = (BTreeMap::new(), 0);
        node(&mut a, "n1", 1, t0);
        run(&mut a, &mut bucket, &mut rev, t0);
        let now = t0 + Duration::from_secs(1);
        a.release_all();
        let release = a.actions(now, 0);
        let Action::Update { lease, .. } = &release[0] else {
            panic!("{release:?}")
        };
        // The release lands, its answer is lost.
        rev += 1;
        bucket.insert(0, (rev, lease.clone()));
        assert!(
            !a.owns(0, now),
            "the releaser stops believing when it sends"
        );
        a.finished(&release[0], Outcome::Unknown, now);
        let now = now + Duration::from_millis(100);
        node(&mut b, "n2", 1, now);
        watch(&mut [&mut b], &bucket, now);
        run(&mut b, &mut bucket, &mut rev, now);
        assert!(b.owns(0, now));
        assert!(!a.owns(0, now), "n1 and n2 both own partition 0");
    }

    #[test]
    fn a_stored_renewal_whose_answer_was_lost_keeps_the_partition() {
        let t0 = Instant::now();
        let mut a = Table::new("n1", 1, TIMING, t0);
        let (mut bucket, mut rev) = (BTreeMap::new(), 0);
        node(&mut a, "n1", 1, t0);
        run(&mut a, &mut bucket, &mut rev, t0);
        watch(&mut [&mut a], &bucket, t0);
        let now = t0 + Duration::from_secs(1);
        let renew = a.actions(now, 0);
        let Action::Update { lease, .. } = &renew[0] else {
            panic!("{renew:?}")
        };
        rev += 1;
        bucket.insert(0, (rev, lease.clone()));
        a.finished(&renew[0], Outcome::Unknown, now);
        // The next renewal expects the old revision and conflicts with our own write; the key
        // as read then (node.rs does so on a conflict) shows it is ours.
        let now = now + Duration::from_secs(1);
        let next = a.actions(now, 0);
        a.saw_lease(0, rev, Some(bucket[&0].1.clone()), now);
        a.finished(&next[0], Outcome::Conflict, now);
        assert!(a.owns(0, now), "losses {}", a.losses);
        run(&mut a, &mut bucket, &mut rev, now);
        assert!(
            a.owns(0, now + Duration::from_secs(4)),
            "renewed at the adopted revision"
        );
        assert_eq!(a.losses, 0);
    }

    #[test]
    fn a_partition_goes_only_to_a_node_seen_alive_for_a_ttl_and_does_not_bounce() {
        let t0 = Instant::now();
        let mut a = Table::new("n1", 32, TIMING, t0);
        let (mut bucket, mut rev) = (BTreeMap::new(), 0);
        node(&mut a, "n1", 1, t0);
        run(&mut a, &mut bucket, &mut rev, t0);
        assert_eq!(a.owned(t0).len(), 32);
        // A dead node's key, never deleted, seen once: not live, nothing goes to it.
        let mut now = t0;
        node(&mut a, "ghost", 1, now);
        for _ in 0..6 {
            now += Duration::from_secs(1);
            run(&mut a, &mut bucket, &mut rev, now);
            watch(&mut [&mut a], &bucket, now);
            assert_eq!(a.owned(now).len(), 32);
        }
        // A live node (its key changes every second): after a TTL of that, its share goes.
        for i in 0..7u64 {
            now += Duration::from_secs(1);
            node(&mut a, "n2", i + 1, now);
            run(&mut a, &mut bucket, &mut rev, now);
            watch(&mut [&mut a], &bucket, now);
            if i < 4 {
                assert_eq!(a.owned(now).len(), 32, "handed over after {i} s");
            }
        }
        let mine = a.owned(now).len();
        assert!((8..28).contains(&mine), "n1 kept {mine} of 32");
        // n2 never takes them: after they have been free for half a TTL, n1 takes them back
        // and keeps them (no release, take, release ... loop).
        let released: Vec<u32> = (0..32).filter(|p| !a.owns(*p, now)).collect();
        watch(&mut [&mut a], &bucket, now);
        for i in 0..20u64 {
            now += Duration::from_secs(1);
            node(&mut a, "n2", 100 + i, now);
            run(&mut a, &mut bucket, &mut rev, now);
            watch(&mut [&mut a], &bucket, now);
        }
        for p in released {
            assert!(a.owns(p, now), "partition {p} taken back and kept");
        }
    }

    #[test]
    fn the_one_partition_stays_with_its_owner_when_the_node_it_prefers_comes() {
        let t0 = Instant::now();
        let ids = ["n1", "n2"];
        // The node the partition prefers is the one that arrives later.
        let (first, later) = match preferred(0, ids) {
            Some("n1") => ("n2", "n1"),
            _ => ("n1", "n2"),
        };
        let mut a = Table::new(first, 1, TIMING, t0);
        let (mut bucket, mut rev) = (BTreeMap::new(), 0);
        let mut now = t0;
        // Alone for two TTLs: it creates the lease.
        for i in 0..11u64 {
            node(&mut a, first, i + 1, now);
            run(&mut a, &mut bucket, &mut rev, now);
            watch(&mut [&mut a], &bucket, now);
            now += Duration::from_secs(1);
        }
        assert!(a.owns(0, now - Duration::from_secs(1)));
        // The preferred node lives for a minute: the owner keeps the partition all along.
        for i in 0..60u64 {
            node(&mut a, first, 100 + i, now);
            node(&mut a, later, i + 1, now);
            run(&mut a, &mut bucket, &mut rev, now);
            watch(&mut [&mut a], &bucket, now);
            assert!(a.owns(0, now), "handed over after {i} s");
            now += Duration::from_secs(1);
        }
        // A stop still releases it.
        a.release_all();
        run(&mut a, &mut bucket, &mut rev, now);
        assert!(!a.owns(0, now));
        assert_eq!(bucket[&0].1.node, "");
    }

    #[test]
    fn releasing_writes_every_lease_free_and_the_preferred_node_takes_it_at_once() {
        let t0 = Instant::now();
        let mut a = Table::new("n1", 4, TIMING, t0);
        let mut b = Table::new("n2", 4, TIMING, t0);
        let mut bucket = BTreeMap::new();
        let mut rev = 0;
        node(&mut a, "n1", 1, t0);
        run(&mut a, &mut bucket, &mut rev, t0);
        assert_eq!(a.owned(t0).len(), 4);
        a.release_all();
        run(&mut a, &mut bucket, &mut rev, t0);
        assert!(a.owned(t0).is_empty());
        assert!(bucket.values().all(|(_, l)| l.node.is_empty()));
        let now = t0 + Duration::from_millis(10);
        node(&mut b, "n2", 1, now);
        watch(&mut [&mut b], &bucket, now);
        run(&mut b, &mut bucket, &mut rev, now);
        assert_eq!(b.owned(now).len(), 4, "no TTL wait after a release");
        assert!(bucket.values().all(|(_, l)| l.epoch == 2));
    }
}
