//! Invariant checks on a store and on what its clients were told, shared by the crash test
//! (`tests/crash.rs`) and the `session` fuzz target (`fuzz/fuzz_targets/session.rs`).
//!
//! - [`Ledger`]: the SEND_ACKs clients received, with what each send carried; its own
//!   consistency (one ack per send, distinct message ids, distinct sender versions).
//! - [`check_inbox`]: a user's inbox (from SYNC, an online client or the store) against the
//!   ledger: versions 1..=n, every acked message involving the user exactly once and as acked.
//! - [`check_store_user`]: what the store holds for one user: [`Core::check_user`] (gapless
//!   versions, unread counters against the conversation logs), the full inbox scan, and unread
//!   counts recounted from the inbox alone.
//! - [`check_group`]: a group's record, members, member index and log.
//! - [`check_replica`]: a cluster's replica against its owner (or a store rebuilt from the
//!   partition's log against the one that appended it): every family the same, key by key.
//!
//! Every check returns `Err` with a description of the first broken invariant; callers panic
//! with it. Not part of the server's interface.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use missive_protocol::pb::{self, inbox_entry::Body, ConversationKind, InboxEntry};

use crate::store::{ConvKey, Core};

/// A broken invariant, described.
pub type CheckResult<T = ()> = Result<T, String>;

/// A SEND_ACK received: a promise that the message is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    pub from: String,
    /// The recipient (direct) or the group id.
    pub to: String,
    pub group: bool,
    pub client_msg_id: String,
    /// The content sent.
    pub content: Vec<u8>,
    pub msg_id: u64,
    pub seq: u64,
    pub version: u64,
    /// Answered as a duplicate of an earlier send with the same client_msg_id.
    pub duplicate: bool,
}

impl Acked {
    /// `ack` received for a direct send of `content` from `from` to `to`.
    pub fn direct(from: &str, to: &str, content: &[u8], ack: &pb::SendAck) -> Acked {
        Acked::new(from, to, false, content, ack)
    }

    /// `ack` received for a send of `content` from `from` to group `group_id`.
    pub fn to_group(from: &str, group_id: &str, content: &[u8], ack: &pb::SendAck) -> Acked {
        Acked::new(from, group_id, true, content, ack)
    }

    fn new(from: &str, to: &str, group: bool, content: &[u8], ack: &pb::SendAck) -> Acked {
        Acked {
            from: from.to_owned(),
            to: to.to_owned(),
            group,
            client_msg_id: ack.client_msg_id.clone(),
            content: content.to_vec(),
            msg_id: ack.msg_id,
            seq: ack.seq,
            version: ack.version,
            duplicate: ack.duplicate,
        }
    }

    /// Whether `user` is a side of this (direct) send.
    fn involves(&self, user: &str) -> bool {
        !self.group && (self.from == user || self.to == user)
    }

    /// The direct conversation's canonical pair of users.
    fn pair(&self) -> (String, String) {
        if self.from < self.to {
            (self.from.clone(), self.to.clone())
        } else {
            (self.to.clone(), self.from.clone())
        }
    }
}

/// The acked sends, one per (sender, client_msg_id), indexed.
#[derive(Debug, Default)]
pub struct Ledger {
    sends: Vec<Acked>,
    by_msg_id: HashMap<u64, usize>,
    /// Sends whose reply never came (the connection died first): they may be stored, at most
    /// once, without an ack in the ledger.
    unanswered: HashSet<(String, String)>,
    /// Senders whose messages need no ack (a client the checks do not follow).
    unfollowed: HashSet<String>,
}

impl Ledger {
    /// Indexes `acked` (every ack received, in any order). The acks of one (sender,
    /// client_msg_id) must agree (same message id, seq, version, recipient and content), and at
    /// most one of them may be a first send (not flagged duplicate); different sends must have
    /// different message ids, and one sender's sends different versions.
    pub fn new(acked: &[Acked]) -> CheckResult<Ledger> {
        let mut ledger = Ledger::default();
        let mut by_cmid: HashMap<(&str, &str), (usize, bool)> = HashMap::new();
        for a in acked {
            if a.msg_id == 0 || a.seq == 0 || a.version == 0 {
                return Err(format!("an ack with a zero id, seq or version: {a:?}"));
            }
            match by_cmid.get_mut(&(a.from.as_str(), a.client_msg_id.as_str())) {
                Some((i, first_seen)) => {
                    let b = &ledger.sends[*i];
                    let same = (b.msg_id, b.seq, b.version, &b.to, b.group, &b.content)
                        == (a.msg_id, a.seq, a.version, &a.to, a.group, &a.content);
                    if !same {
                        return Err(format!(
                            "{}/{} acked twice, differently: {b:?} and {a:?}",
                            a.from, a.client_msg_id
                        ));
                    }
                    if !a.duplicate {
                        if *first_seen {
                            return Err(format!(
                                "{}/{} stored twice (two acks not flagged duplicate): {a:?}",
                                a.from, a.client_msg_id
                            ));
                        }
                        *first_seen = true;
                    }
                }
                None => {
                    let i = ledger.sends.len();
                    if let Some(&j) = ledger.by_msg_id.get(&a.msg_id) {
                        return Err(format!(
                            "two sends acked with msg_id {}: {:?} and {a:?}",
                            a.msg_id, ledger.sends[j]
                        ));
                    }
                    ledger.by_msg_id.insert(a.msg_id, i);
                    by_cmid.insert(
                        (a.from.as_str(), a.client_msg_id.as_str()),
                        (i, !a.duplicate),
                    );
                    ledger.sends.push(Acked {
                        duplicate: false,
                        ..a.clone()
                    });
                }
            }
        }
        let mut versions = HashSet::new();
        for a in &ledger.sends {
            if !versions.insert((&a.from, a.version)) {
                return Err(format!(
                    "{} got version {} acked for two sends",
                    a.from, a.version
                ));
            }
        }
        Ok(ledger)
    }

    /// Allows a send whose reply never came to be found stored (at most once) unacked.
    pub fn allow_unanswered(&mut self, from: &str, client_msg_id: &str) {
        self.unanswered
            .insert((from.to_owned(), client_msg_id.to_owned()));
    }

    /// Allows any message from `sender` to be stored without an ack.
    pub fn allow_sender(&mut self, sender: &str) {
        self.unfollowed.insert(sender.to_owned());
    }

    /// The sends, one per (sender, client_msg_id).
    pub fn sends(&self) -> &[Acked] {
        &self.sends
    }

    /// The send acked with `msg_id`.
    pub fn by_msg_id(&self, msg_id: u64) -> Option<&Acked> {
        self.by_msg_id.get(&msg_id).map(|&i| &self.sends[i])
    }

    /// Per direct conversation, the acked seqs are 1..=n: holds when every stored message was
    /// acked (senders that never give up, as in the crash test).
    pub fn check_direct_seqs_complete(&self) -> CheckResult {
        let mut seqs: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
        for a in self.sends.iter().filter(|a| !a.group) {
            seqs.entry(a.pair()).or_default().push(a.seq);
        }
        for (pair, mut s) in seqs {
            s.sort_unstable();
            let want: Vec<u64> = (1..=s.len() as u64).collect();
            if s != want {
                return Err(format!(
                    "conversation {pair:?}: acked seqs are not 1..=n: {s:?}"
                ));
            }
        }
        Ok(())
    }
}

/// What [`check_inbox`] demands beyond its basic checks.
#[derive(Debug, Clone, Copy, Default)]
pub struct InboxRules {
    /// Every entry is a message (nothing but sends happened).
    pub only_messages: bool,
    /// Every message is in the ledger (no unacked send can be stored).
    pub all_acked: bool,
}

/// Checks a user's inbox `entries` (all of it, from version 1) against the ledger: versions
/// 1..=n; no message twice; each message of a ledger send as acked (sender, client_msg_id,
/// seq, content unless recalled, conversation as the user sees it) and the user's own at its
/// acked version; every acked direct message involving the user and every acked group message
/// the user sent present (nothing acked lost). `source` names where the entries came from.
pub fn check_inbox(
    ledger: &Ledger,
    user: &str,
    entries: &[InboxEntry],
    source: &str,
    rules: InboxRules,
) -> CheckResult {
    for (i, e) in entries.iter().enumerate() {
        let want = i as u64 + 1;
        if e.version != want {
            return Err(format!(
                "{source}: {user}'s versions are not 1..={}: version {} where {want} was due",
                entries.len(),
                e.version
            ));
        }
    }
    let mut seen: HashMap<u64, u64> = HashMap::new();
    for e in entries {
        let m = match &e.body {
            Some(Body::Message(m)) => m,
            other if rules.only_messages => {
                return Err(format!(
                    "{source}: {user}'s version {}: only messages were sent, found {other:?}",
                    e.version
                ))
            }
            _ => continue,
        };
        if let Some(v) = seen.insert(m.msg_id, e.version) {
            return Err(format!(
                "{source}: DUPLICATED: {user}'s inbox has msg {} at versions {v} and {}",
                m.msg_id, e.version
            ));
        }
        let conv = e
            .conversation
            .as_ref()
            .ok_or_else(|| format!("{source}: {user}'s version {}: no conversation", e.version))?;
        let Some(a) = ledger.by_msg_id(m.msg_id) else {
            let key = (m.from_user.clone(), m.client_msg_id.clone());
            let excused =
                ledger.unanswered.contains(&key) || ledger.unfollowed.contains(&m.from_user);
            if rules.all_acked || !excused {
                return Err(format!(
                    "{source}: {user}'s inbox has msg {} ({} / {:?}) that no SEND_ACK announced",
                    m.msg_id, m.from_user, m.client_msg_id
                ));
            }
            continue;
        };
        if (m.from_user.as_str(), m.client_msg_id.as_str(), m.seq)
            != (a.from.as_str(), a.client_msg_id.as_str(), a.seq)
        {
            return Err(format!(
                "{source}: {user}'s msg {} differs from its SEND_ACK: {m:?} vs {a:?}",
                m.msg_id
            ));
        }
        if m.recalled {
            if !m.content.is_empty() {
                return Err(format!(
                    "{source}: {user}'s msg {} is recalled but keeps its content",
                    m.msg_id
                ));
            }
        } else if m.content != a.content {
            return Err(format!(
                "{source}: {user}'s msg {}: content differs from what was sent",
                m.msg_id
            ));
        }
        let (kind, id) = if a.group {
            (ConversationKind::Group, a.to.as_str())
        } else {
            if !a.involves(user) {
                return Err(format!(
                    "{source}: {user}'s inbox has msg {} between {} and {}",
                    m.msg_id, a.from, a.to
                ));
            }
            let peer = if a.from == user { &a.to } else { &a.from };
            (ConversationKind::Direct, peer.as_str())
        };
        if (conv.kind, conv.id.as_str()) != (kind as i32, id) {
            return Err(format!(
                "{source}: {user}'s entry for msg {} names conversation {conv:?}, not {kind:?} {id}",
                m.msg_id
            ));
        }
        if a.from == user && e.version != a.version {
            return Err(format!(
                "{source}: {user}'s own msg {} is at version {}, acked at {}",
                m.msg_id, e.version, a.version
            ));
        }
    }
    let lost: Vec<&Acked> = ledger
        .sends
        .iter()
        .filter(|a| a.involves(user) || (a.group && a.from == user))
        .filter(|a| !seen.contains_key(&a.msg_id))
        .collect();
    if !lost.is_empty() {
        let examples: Vec<&&Acked> = lost.iter().take(5).collect();
        return Err(format!(
            "{source}: LOST: {} acked messages missing from {user}'s inbox, e.g. {examples:?}",
            lost.len()
        ));
    }
    Ok(())
}

/// Checks that `replica` holds exactly what `primary` holds: every family, key by key and value
/// by value, the log position included. In a cluster, a standby that has followed the log to
/// the owner's position, or a directory rebuilt from the log alone (`Store::replay`), must be
/// the same state as the owner's: anything else is a divergence (a write that did not go
/// through the log, or a record applied twice or out of order). The first difference is the
/// error, with its family and key (hex).
pub fn check_replica(primary: &Core, replica: &Core) -> CheckResult {
    use crate::store::Family;
    for family in Family::ALL {
        let (mut a, mut b) = (primary.raw_iter(family), replica.raw_iter(family));
        a.seek_to_first();
        b.seek_to_first();
        let mut n = 0u64;
        loop {
            match (a.item(), b.item()) {
                (None, None) => break,
                (Some((k, _)), None) => {
                    return Err(format!(
                        "{}: key {} of the primary is missing from the replica ({n} keys agreed)",
                        family.name(),
                        hex(k)
                    ))
                }
                (None, Some((k, _))) => {
                    return Err(format!(
                        "{}: the replica has key {} the primary has not ({n} keys agreed)",
                        family.name(),
                        hex(k)
                    ))
                }
                (Some((ka, va)), Some((kb, vb))) => {
                    if ka != kb {
                        let (first, which) = if ka < kb {
                            (ka, "the replica lacks")
                        } else {
                            (kb, "the replica alone has")
                        };
                        return Err(format!(
                            "{}: {which} key {} ({n} keys agreed)",
                            family.name(),
                            hex(first)
                        ));
                    }
                    if va != vb {
                        return Err(format!(
                            "{}: key {}: the values differ ({} vs {} bytes)",
                            family.name(),
                            hex(ka),
                            va.len(),
                            vb.len()
                        ));
                    }
                }
            }
            n += 1;
            a.next();
            b.next();
        }
        for (which, it) in [("primary", &a), ("replica", &b)] {
            it.status()
                .map_err(|e| format!("{}: reading the {which}: {e}", family.name()))?;
        }
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The whole inbox of `user` as stored.
pub fn stored_inbox(store: &Core, user: &str) -> CheckResult<Vec<InboxEntry>> {
    let mut entries = Vec::new();
    let mut since = 0;
    loop {
        let page = store
            .inbox_after(user, crate::ids::Version(since), 1000, 1 << 20)
            .map_err(|e| format!("{user}: inbox page after {since}: {e}"))?;
        since = page.entries.last().map(|e| e.version).unwrap_or(since);
        entries.extend(page.entries);
        if !page.has_more {
            return Ok(entries);
        }
    }
}

/// Checks what the store holds for `user` and returns the user's whole inbox:
/// - [`Core::check_user`]: inbox versions 1..=n without gaps or repeats; the unread total is
///   the sum of the conversations' counts, each equal to a recount from the conversation log;
/// - a scan of the inbox finds those n entries, and `current_version` is n;
/// - every message entry's message is stored, and in its conversation's log at its seq;
/// - per direct conversation, the user's inbox holds each of its messages once: their seqs are
///   exactly 1..=last seq;
/// - the unread count of every direct conversation equals [`direct_unread_from_inbox`].
pub fn check_store_user(store: &Core, user: &str) -> CheckResult<Vec<InboxEntry>> {
    let n = store
        .check_user(user)
        .map_err(|e| format!("store invariant broken: {e}"))?;
    let entries = stored_inbox(store, user)?;
    if entries.len() as u64 != n {
        return Err(format!(
            "{user}: check_user counts {n} entries, the scan {}",
            entries.len()
        ));
    }
    let current = store.current_version(user).map_err(|e| e.to_string())?;
    if current != n {
        return Err(format!("{user}: current_version {current}, {n} entries"));
    }
    let unread = store.unread(user).map_err(|e| e.to_string())?;
    let mut counted: BTreeMap<String, u64> = BTreeMap::new();
    for c in &unread.conversations {
        let conv = c.conversation.clone().unwrap_or_default();
        if conv.kind == ConversationKind::Direct as i32 {
            counted.insert(conv.id, c.unread);
        }
    }
    let mut logs: HashMap<ConvKey, HashMap<u64, u64>> = HashMap::new();
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in &entries {
        let Some(conv) = &e.conversation else {
            return Err(format!("{user}: version {} has no conversation", e.version));
        };
        let Some(Body::Message(m)) = &e.body else {
            continue;
        };
        let ck = ConvKey::for_view(user, conv);
        let stored = store.message(m.msg_id).map_err(|e| e.to_string())?;
        if stored.is_none() {
            return Err(format!(
                "{user}: msg {} in the inbox is not stored",
                m.msg_id
            ));
        }
        if !logs.contains_key(&ck) {
            let log = store.conv_log(&ck).map_err(|e| e.to_string())?;
            logs.insert(ck.clone(), log.into_iter().collect());
        }
        if logs[&ck].get(&m.seq) != Some(&m.msg_id) {
            return Err(format!(
                "{user}: msg {} (seq {}) is not in its conversation's log at its seq",
                m.msg_id, m.seq
            ));
        }
        if conv.kind == ConversationKind::Direct as i32 {
            seqs.entry(conv.id.clone()).or_default().push(m.seq);
        }
    }
    for (peer, mut seqs) in seqs {
        seqs.sort_unstable();
        let last = store
            .last_seq(&ConvKey::direct(user, &peer))
            .map_err(|e| e.to_string())?;
        let want: Vec<u64> = (1..=last).collect();
        if seqs != want {
            return Err(format!(
                "{user}: conversation with {peer}: the inbox holds seqs {seqs:?}, the \
                 conversation has 1..={last}"
            ));
        }
    }
    let recounted = direct_unread_from_inbox(user, &entries);
    if counted != recounted {
        return Err(format!(
            "{user}: direct unread counts {counted:?}, recounted from the inbox {recounted:?}"
        ));
    }
    Ok(entries)
}

/// Each direct conversation's unread count recounted from the user's inbox alone (every entry,
/// from version 1): messages from the peer after the user's read position there, neither
/// recalled nor deleted by the user (a DELETE entry). The read position is the highest of the
/// READ_SYNC entries and of the user's own messages (replying reads the conversation).
/// Conversations with nothing unread are left out.
pub fn direct_unread_from_inbox(user: &str, entries: &[InboxEntry]) -> BTreeMap<String, u64> {
    #[derive(Default)]
    struct Direct {
        read: u64,
        candidates: Vec<(u64, u64)>,
        deleted: BTreeSet<u64>,
    }
    let mut direct: BTreeMap<String, Direct> = BTreeMap::new();
    for e in entries {
        let Some(conv) = &e.conversation else {
            continue;
        };
        if conv.kind != ConversationKind::Direct as i32 {
            continue;
        }
        let d = direct.entry(conv.id.clone()).or_default();
        match &e.body {
            Some(Body::Message(m)) if m.from_user == user => d.read = d.read.max(m.seq),
            Some(Body::Message(m)) if m.from_user == conv.id && !m.recalled => {
                d.candidates.push((m.seq, m.msg_id))
            }
            Some(Body::ReadSync(r)) => d.read = d.read.max(r.up_to_seq),
            Some(Body::Delete(del)) => {
                d.deleted.insert(del.msg_id);
            }
            _ => {}
        }
    }
    direct
        .into_iter()
        .filter_map(|(peer, d)| {
            let n = d
                .candidates
                .iter()
                .filter(|(seq, id)| *seq > d.read && !d.deleted.contains(id))
                .count() as u64;
            (n > 0).then_some((peer, n))
        })
        .collect()
}

/// Checks a group as stored: its member count is its number of members; each member's group
/// index names it and no former member's does (of `users`, the users to ask); its log holds
/// seqs 1..=last seq, each a stored message of the group at that seq. Returns the current
/// members. `Ok(None)` if there is no such group.
pub fn check_group(
    store: &Core,
    group_id: &str,
    users: &[String],
) -> CheckResult<Option<Vec<String>>> {
    let Some((info, members)) = store.group_record(group_id).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let ids: BTreeSet<String> = members.iter().map(|m| m.user_id.clone()).collect();
    if ids.len() != members.len() || info.member_count as usize != members.len() {
        return Err(format!(
            "group {group_id}: member_count {} but members {ids:?}",
            info.member_count
        ));
    }
    if !ids.contains(&info.owner) {
        return Err(format!(
            "group {group_id}: owner {} is not a member",
            info.owner
        ));
    }
    for u in ids.iter().chain(users) {
        let listed = store
            .group_ids_of(u)
            .map_err(|e| e.to_string())?
            .iter()
            .any(|g| g == group_id);
        if listed != ids.contains(u) {
            return Err(format!(
                "group {group_id}: {u} is a member: {}, but the user's group index says {listed}",
                ids.contains(u)
            ));
        }
    }
    let ck = ConvKey::group(group_id);
    let log = store.conv_log(&ck).map_err(|e| e.to_string())?;
    let last = store.last_seq(&ck).map_err(|e| e.to_string())?;
    let seqs: Vec<u64> = log.iter().map(|(s, _)| *s).collect();
    if seqs != (1..=last).collect::<Vec<u64>>() {
        return Err(format!(
            "group {group_id}: log seqs {seqs:?}, last seq {last}"
        ));
    }
    for (seq, msg_id) in log {
        let m = store
            .message(msg_id)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("group {group_id}: seq {seq}: msg {msg_id} not stored"))?;
        let conv = m.conversation.clone().unwrap_or_default();
        if m.seq != seq || conv.kind != ConversationKind::Group as i32 || conv.id != group_id {
            return Err(format!(
                "group {group_id}: seq {seq} names msg {msg_id}, which is {m:?}"
            ));
        }
    }
    Ok(Some(ids.into_iter().collect()))
}

/// Checks that every acked group send is in its group's log, at its acked seq.
pub fn check_group_sends(store: &Core, ledger: &Ledger) -> CheckResult {
    let mut logs: HashMap<&str, HashMap<u64, u64>> = HashMap::new();
    for a in ledger.sends().iter().filter(|a| a.group) {
        if !logs.contains_key(a.to.as_str()) {
            let log = store
                .conv_log(&ConvKey::group(&a.to))
                .map_err(|e| e.to_string())?;
            logs.insert(&a.to, log.into_iter().collect());
        }
        if logs[a.to.as_str()].get(&a.seq) != Some(&a.msg_id) {
            return Err(format!(
                "LOST: group {}: acked msg {} is not in the log at seq {}",
                a.to, a.msg_id, a.seq
            ));
        }
    }
    Ok(())
}
