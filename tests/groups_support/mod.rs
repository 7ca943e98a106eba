//! Helpers for the group end-to-end tests: [`Member`], one raw device connection that applies
//! the inbox version rules itself (so a test can tell pushed entries from synced ones, and catch
//! a push the server must not send), plus one-line wrappers for the group requests.
#![allow(dead_code)]

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use missive_client::{pb, ClientError, Connection};
use missive_protocol::pb::inbox_entry::Body;
use missive_protocol::{ErrorCode, Packet, DEFAULT_MAX_FRAME_LEN};

use crate::common::TestServer;

/// The longest any single expected frame or reply may take.
pub const WAIT: Duration = Duration::from_secs(5);

/// A GROUP conversation.
pub fn grp(id: &str) -> pb::Conversation {
    missive_client::group(id)
}

/// A DIRECT conversation.
pub fn dmc(id: &str) -> pb::Conversation {
    missive_client::direct(id)
}

/// One logged-in device on a raw connection.
///
/// Inbox rule (as in the reference client): `held` is the highest version applied with nothing
/// missing. A PUSH at or below `held` is a duplicate (acked, dropped); `prev_version == held` is
/// applied; a higher `prev_version` is a gap, filled by SYNC. Every applied entry is kept in
/// `entries`; the ones applied after login (except this device's own messages) also go to
/// `fresh`, which [`Member::next`] hands out in order. GROUP_NOTIFY frames are queued in
/// `notifies`. A PUSH of a version this device's own SEND created is a failure.
pub struct Member {
    pub user: String,
    pub device: String,
    pub conn: Connection,
    pub login: pb::LoginAck,
    pub held: u64,
    /// Every entry this device holds, in version order (login SYNC included).
    pub entries: Vec<pb::InboxEntry>,
    fresh: VecDeque<pb::InboxEntry>,
    pub notifies: VecDeque<pb::GroupNotify>,
    /// Versions that arrived as a PUSH (first copy).
    pub pushed: BTreeSet<u64>,
    /// Versions created by this device's own SENDs.
    pub own: BTreeSet<u64>,
}

impl Member {
    /// Wraps a logged-in connection without syncing anything (`held` = 0).
    pub fn attach(conn: Connection, login: pb::LoginAck, user: &str, device: &str) -> Member {
        Member {
            user: user.to_owned(),
            device: device.to_owned(),
            conn,
            login,
            held: 0,
            entries: Vec::new(),
            fresh: VecDeque::new(),
            notifies: VecDeque::new(),
            pushed: BTreeSet::new(),
            own: BTreeSet::new(),
        }
    }

    /// Logs in (last_version 0) and SYNCs the whole inbox into `entries`.
    pub async fn login(server: &TestServer, user: &str, device: &str) -> Member {
        let (conn, login) = server.login(user, device).await;
        let mut m = Member::attach(conn, login, user, device);
        m.sync_from_held(false).await;
        assert_eq!(
            m.held,
            m.login.current_version,
            "{}: SYNC after login reaches LOGIN_ACK.current_version",
            m.who()
        );
        m
    }

    pub fn who(&self) -> String {
        format!("{}/{}", self.user, self.device)
    }

    fn apply(&mut self, entry: pb::InboxEntry, fresh: bool) {
        assert_eq!(
            entry.version,
            self.held + 1,
            "{}: entries come without gaps",
            self.who()
        );
        self.held = entry.version;
        if fresh && !self.own.contains(&entry.version) {
            self.fresh.push_back(entry.clone());
        }
        self.entries.push(entry);
    }

    /// SYNC from `held` until `has_more` is false; applies every entry; acks.
    async fn sync_from_held(&mut self, fresh: bool) {
        for _ in 0..1000 {
            let page = match self
                .request(Packet::Sync(pb::Sync {
                    since_version: self.held,
                    limit: 0,
                }))
                .await
            {
                Packet::SyncAck(p) => p,
                other => panic!("{}: expected SYNC_ACK, got {other:?}", self.who()),
            };
            for e in page.entries {
                if e.version <= self.held {
                    panic!(
                        "{}: SYNC since {} returned version {}",
                        self.who(),
                        self.held,
                        e.version
                    );
                }
                self.apply(e, fresh);
            }
            if self.held > 0 {
                self.conn.push_ack(self.held).await.expect("PUSH_ACK");
            }
            if !page.has_more {
                return;
            }
        }
        panic!("{}: SYNC paging did not end", self.who());
    }

    /// SYNCs everything up to the user's current version (for entries this device's own
    /// requests created, which may not be pushed to it).
    pub async fn catch_up(&mut self) {
        self.sync_from_held(true).await;
    }

    /// Handles one frame from the server. Returns false on timeout.
    async fn pump(&mut self, deadline: tokio::time::Instant) -> bool {
        let frame = match tokio::time::timeout_at(deadline, self.conn.recv_frame()).await {
            Err(_) => return false,
            Ok(Ok(Some(f))) => f,
            Ok(Ok(None)) => panic!("{}: the server closed the connection", self.who()),
            Ok(Err(e)) => panic!("{}: connection failed: {e}", self.who()),
        };
        let packet = frame
            .packet(DEFAULT_MAX_FRAME_LEN)
            .unwrap_or_else(|e| panic!("{}: undecodable frame: {e}", self.who()));
        match packet {
            Packet::Push(p) => {
                assert_eq!(frame.request_id, 0, "PUSH carries request id 0");
                assert!(
                    !self.own.contains(&p.version),
                    "{}: the sending device got a PUSH of its own entry {}: {p:?}",
                    self.who(),
                    p.version
                );
                assert_eq!(
                    p.prev_version + 1,
                    p.version,
                    "{}: prev_version is version - 1",
                    self.who()
                );
                let entry = p.entry.clone().expect("PUSH carries an entry");
                assert_eq!(entry.version, p.version, "entry.version == push.version");
                if p.version <= self.held {
                    // Duplicate (already synced): ack and drop.
                    self.conn.push_ack(self.held).await.expect("PUSH_ACK");
                } else if p.prev_version == self.held {
                    self.pushed.insert(p.version);
                    self.apply(entry, true);
                    self.conn.push_ack(self.held).await.expect("PUSH_ACK");
                } else {
                    self.pushed.insert(p.version);
                    self.sync_from_held(true).await;
                    assert!(
                        self.held >= p.version,
                        "{}: SYNC after a gap did not reach pushed version {}",
                        self.who(),
                        p.version
                    );
                }
            }
            Packet::GroupNotify(n) => {
                assert_eq!(frame.request_id, 0, "GROUP_NOTIFY carries request id 0");
                self.notifies.push_back(n);
            }
            other => panic!(
                "{}: unexpected frame from the server: {other:?}",
                self.who()
            ),
        }
        true
    }

    /// The next new entry (pushed, or synced to fill a gap); panics after [`WAIT`].
    pub async fn next(&mut self) -> pb::InboxEntry {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(e) = self.fresh.pop_front() {
                return e;
            }
            if !self.pump(deadline).await {
                panic!(
                    "{}: no new inbox entry within {WAIT:?} (held {})",
                    self.who(),
                    self.held
                );
            }
        }
    }

    /// The next GROUP_NOTIFY; panics after [`WAIT`].
    pub async fn next_notify(&mut self) -> pb::GroupNotify {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(n) = self.notifies.pop_front() {
                return n;
            }
            if !self.pump(deadline).await {
                panic!("{}: no GROUP_NOTIFY within {WAIT:?}", self.who());
            }
        }
    }

    /// Every new entry that arrives within `within` (after the queued ones).
    pub async fn drain(&mut self, within: Duration) -> Vec<pb::InboxEntry> {
        let deadline = tokio::time::Instant::now() + within;
        while self.pump(deadline).await {}
        self.fresh.drain(..).collect()
    }

    /// Nothing new (no entry, no GROUP_NOTIFY) arrives for `quiet`; duplicates are fine.
    pub async fn quiet(&mut self, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + quiet;
        while self.pump(deadline).await {}
        assert!(
            self.fresh.is_empty(),
            "{}: expected nothing new, got entries {:?}",
            self.who(),
            self.fresh
        );
        assert!(
            self.notifies.is_empty(),
            "{}: expected nothing new, got GROUP_NOTIFY {:?}",
            self.who(),
            self.notifies
        );
    }

    /// Drops queued GROUP_NOTIFYs.
    pub fn clear_notifies(&mut self) -> Vec<pb::GroupNotify> {
        self.notifies.drain(..).collect()
    }

    /// The queued new entries (taken).
    pub fn take_fresh(&mut self) -> Vec<pb::InboxEntry> {
        self.fresh.drain(..).collect()
    }

    /// A request that must succeed; frames arriving meanwhile stay queued in the connection.
    pub async fn request(&mut self, packet: Packet) -> Packet {
        let what = packet.command().name();
        match self.conn.request_timeout(packet, WAIT).await {
            Ok(reply) => reply,
            Err(e) => panic!("{}: {what} failed: {e}", self.who()),
        }
    }

    /// A request that must be refused with a non-fatal error; returns its code.
    pub async fn refused(&mut self, packet: Packet) -> ErrorCode {
        let what = packet.command().name();
        match self.conn.request_timeout(packet, WAIT).await {
            Ok(reply) => panic!(
                "{}: {what} should have been refused, got {reply:?}",
                self.who()
            ),
            Err(ClientError::Server { code, fatal, .. }) => {
                let code = ErrorCode::from_u32(code)
                    .unwrap_or_else(|| panic!("unknown error code {code}"));
                assert!(
                    !fatal,
                    "{}: {what} refusal {code:?} is not fatal",
                    self.who()
                );
                code
            }
            Err(e) => panic!(
                "{}: {what} should have been refused by the server, failed with {e}",
                self.who()
            ),
        }
    }

    // ---- requests ----

    /// SEND to a conversation; records the version as this device's own.
    pub async fn send_to(&mut self, to: pb::Conversation, content: &str) -> pb::SendAck {
        let body = pb::Send {
            client_msg_id: missive_client::new_client_msg_id(),
            to: Some(to),
            content_type: 1,
            content: content.as_bytes().to_vec(),
            ..Default::default()
        };
        match self.request(Packet::Send(body)).await {
            Packet::SendAck(a) => {
                assert!(a.version > 0, "{}: SEND_ACK.version is set", self.who());
                assert!(!a.duplicate);
                self.own.insert(a.version);
                a
            }
            other => panic!("{}: expected SEND_ACK, got {other:?}", self.who()),
        }
    }

    /// SEND to a group.
    pub async fn send(&mut self, group_id: &str, content: &str) -> pb::SendAck {
        self.send_to(grp(group_id), content).await
    }

    pub fn send_packet(group_id: &str, content: &str) -> Packet {
        Packet::Send(pb::Send {
            client_msg_id: missive_client::new_client_msg_id(),
            to: Some(grp(group_id)),
            content_type: 1,
            content: content.as_bytes().to_vec(),
            ..Default::default()
        })
    }

    /// GROUP_CREATE of an invite-only group.
    pub async fn create(
        &mut self,
        name: &str,
        members: &[&str],
        history: pb::HistoryVisibility,
    ) -> pb::GroupInfo {
        self.create_with(name, members, history, pb::JoinPolicy::Invite)
            .await
    }

    /// GROUP_CREATE of an open group (anyone who knows the id may join).
    pub async fn create_open(
        &mut self,
        name: &str,
        members: &[&str],
        history: pb::HistoryVisibility,
    ) -> pb::GroupInfo {
        self.create_with(name, members, history, pb::JoinPolicy::Open)
            .await
    }

    pub async fn create_with(
        &mut self,
        name: &str,
        members: &[&str],
        history: pb::HistoryVisibility,
        join_policy: pb::JoinPolicy,
    ) -> pb::GroupInfo {
        let body = pb::GroupCreate {
            name: name.to_owned(),
            members: members.iter().map(|s| s.to_string()).collect(),
            history: history as i32,
            join_policy: join_policy as i32,
        };
        match self.request(Packet::GroupCreate(body)).await {
            Packet::GroupCreateAck(a) => a.group.expect("GROUP_CREATE_ACK carries the group"),
            other => panic!("{}: expected GROUP_CREATE_ACK, got {other:?}", self.who()),
        }
    }

    pub fn join_packet(group_id: &str, users: &[&str]) -> Packet {
        Packet::GroupJoin(pb::GroupJoin {
            group_id: group_id.to_owned(),
            user_ids: users.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// GROUP_JOIN: empty `users` joins oneself (an open group).
    pub async fn join(&mut self, group_id: &str, users: &[&str]) -> pb::GroupInfo {
        match self.request(Self::join_packet(group_id, users)).await {
            Packet::GroupJoinAck(a) => a.group.expect("GROUP_JOIN_ACK carries the group"),
            other => panic!("{}: expected GROUP_JOIN_ACK, got {other:?}", self.who()),
        }
    }

    pub fn leave_packet(group_id: &str, user: &str) -> Packet {
        Packet::GroupLeave(pb::GroupLeave {
            group_id: group_id.to_owned(),
            user_id: user.to_owned(),
        })
    }

    /// GROUP_LEAVE: empty `user` leaves oneself.
    pub async fn leave(&mut self, group_id: &str, user: &str) -> pb::GroupInfo {
        match self.request(Self::leave_packet(group_id, user)).await {
            Packet::GroupLeaveAck(a) => a.group.expect("GROUP_LEAVE_ACK carries the group"),
            other => panic!("{}: expected GROUP_LEAVE_ACK, got {other:?}", self.who()),
        }
    }

    pub fn members_packet(group_id: &str) -> Packet {
        Packet::GroupMembers(pb::GroupMembers {
            group_id: group_id.to_owned(),
            ..Default::default()
        })
    }

    pub async fn members(&mut self, group_id: &str) -> pb::GroupMembersAck {
        match self.request(Self::members_packet(group_id)).await {
            Packet::GroupMembersAck(a) => a,
            other => panic!("{}: expected GROUP_MEMBERS_ACK, got {other:?}", self.who()),
        }
    }

    pub async fn list(&mut self) -> Vec<pb::GroupInfo> {
        match self
            .request(Packet::GroupList(pb::GroupList::default()))
            .await
        {
            Packet::GroupListAck(a) => a.groups,
            other => panic!("{}: expected GROUP_LIST_ACK, got {other:?}", self.who()),
        }
    }

    /// GROUP_HISTORY oldest first after `after_seq` when it is above 0, else newest first
    /// before `before_seq` (with the order set explicitly).
    pub fn history_packet(group_id: &str, before_seq: u64, after_seq: u64, limit: u32) -> Packet {
        let order = if after_seq > 0 {
            pb::HistoryOrder::OldestFirst
        } else {
            pb::HistoryOrder::NewestFirst
        };
        Self::history_packet_ordered(group_id, order, before_seq, after_seq, limit)
    }

    pub fn history_packet_ordered(
        group_id: &str,
        order: pb::HistoryOrder,
        before_seq: u64,
        after_seq: u64,
        limit: u32,
    ) -> Packet {
        Packet::GroupHistory(pb::GroupHistory {
            group_id: group_id.to_owned(),
            before_seq,
            after_seq,
            limit,
            order: order as i32,
        })
    }

    pub async fn history(
        &mut self,
        group_id: &str,
        before_seq: u64,
        after_seq: u64,
        limit: u32,
    ) -> pb::GroupHistoryAck {
        match self
            .request(Self::history_packet(group_id, before_seq, after_seq, limit))
            .await
        {
            Packet::GroupHistoryAck(a) => a,
            other => panic!("{}: expected GROUP_HISTORY_ACK, got {other:?}", self.who()),
        }
    }

    /// Every message with seq > `after_seq`, oldest first, following `has_more` with pages of
    /// `limit`.
    pub async fn history_after_all(
        &mut self,
        group_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> Vec<pb::Message> {
        let mut out: Vec<pb::Message> = Vec::new();
        let mut after = after_seq;
        for _ in 0..1000 {
            let packet = Self::history_packet_ordered(
                group_id,
                pb::HistoryOrder::OldestFirst,
                0,
                after,
                limit,
            );
            let page = match self.request(packet).await {
                Packet::GroupHistoryAck(a) => a,
                other => panic!("{}: expected GROUP_HISTORY_ACK, got {other:?}", self.who()),
            };
            if page.has_more {
                assert!(!page.messages.is_empty(), "has_more with an empty page");
            }
            for m in &page.messages {
                assert!(m.seq > after, "after_seq {after} returned seq {}", m.seq);
                after = m.seq;
            }
            out.extend(page.messages);
            if !page.has_more {
                return out;
            }
        }
        panic!("GROUP_HISTORY paging did not end");
    }

    pub async fn unread(&mut self) -> pb::UnreadAck {
        match self.request(Packet::Unread(pb::Unread::default())).await {
            Packet::UnreadAck(a) => a,
            other => panic!("{}: expected UNREAD_ACK, got {other:?}", self.who()),
        }
    }

    pub async fn mark_read(&mut self, conv: pb::Conversation, up_to_seq: u64) -> pb::MarkReadAck {
        let body = pb::MarkRead {
            conversation: Some(conv),
            up_to_seq,
        };
        match self.request(Packet::MarkRead(body)).await {
            Packet::MarkReadAck(a) => a,
            other => panic!("{}: expected MARK_READ_ACK, got {other:?}", self.who()),
        }
    }

    pub fn recall_packet(conv: pb::Conversation, msg_id: u64) -> Packet {
        Packet::Recall(pb::RecallMessage {
            conversation: Some(conv),
            msg_id,
        })
    }

    pub async fn recall(&mut self, conv: pb::Conversation, msg_id: u64) -> pb::RecallAck {
        match self.request(Self::recall_packet(conv, msg_id)).await {
            Packet::RecallAck(a) => a,
            other => panic!("{}: expected RECALL_ACK, got {other:?}", self.who()),
        }
    }

    pub async fn contacts_all(&mut self) -> Vec<pb::Contact> {
        let mut out = Vec::new();
        let mut cursor = Vec::new();
        for _ in 0..100 {
            let page = match self
                .request(Packet::Contacts(pb::Contacts { cursor, limit: 0 }))
                .await
            {
                Packet::ContactsAck(a) => a,
                other => panic!("{}: expected CONTACTS_ACK, got {other:?}", self.who()),
            };
            out.extend(page.contacts);
            if page.next_cursor.is_empty() {
                return out;
            }
            cursor = page.next_cursor;
        }
        panic!("contacts paging did not end");
    }

    /// This user's unread count for one conversation (0 if UNREAD does not list it), checking
    /// that UNREAD's total is the sum of its conversations.
    pub async fn unread_of(&mut self, conv: &pb::Conversation) -> u64 {
        let u = self.unread().await;
        check_unread_sum(&u);
        unread_in(&u, conv)
    }

    /// Closes the connection.
    pub async fn close(mut self) {
        let _ = self.conn.shutdown().await;
    }
}

/// UNREAD_ACK.total == sum of the listed counts, and every listed count is > 0.
pub fn check_unread_sum(u: &pb::UnreadAck) {
    let sum: u64 = u.conversations.iter().map(|c| c.unread).sum();
    assert_eq!(
        u.total, sum,
        "UNREAD total is the sum of its conversations: {u:?}"
    );
    for c in &u.conversations {
        assert!(
            c.unread > 0,
            "UNREAD lists only conversations with unread > 0: {u:?}"
        );
    }
}

/// The unread count UNREAD lists for `conv` (0 if absent).
pub fn unread_in(u: &pb::UnreadAck, conv: &pb::Conversation) -> u64 {
    let found: Vec<_> = u
        .conversations
        .iter()
        .filter(|c| c.conversation.as_ref() == Some(conv))
        .collect();
    assert!(found.len() <= 1, "UNREAD lists {conv:?} once: {u:?}");
    found.first().map(|c| c.unread).unwrap_or(0)
}

/// The body of an entry.
pub fn body_of(entry: &pb::InboxEntry) -> &Body {
    entry.body.as_ref().expect("entry has a body")
}

/// The message of an entry, or a panic naming what it was.
pub fn msg_of(entry: &pb::InboxEntry) -> &pb::Message {
    match body_of(entry) {
        Body::Message(m) => m,
        other => panic!("expected a message entry, got {other:?} in {entry:?}"),
    }
}

/// The group event of an entry, or a panic.
pub fn event_of(entry: &pb::InboxEntry) -> &pb::GroupEvent {
    match body_of(entry) {
        Body::GroupEvent(g) => g,
        other => panic!("expected a GROUP_EVENT entry, got {other:?} in {entry:?}"),
    }
}

/// The recall of an entry, or a panic.
pub fn recall_of(entry: &pb::InboxEntry) -> &pb::Recall {
    match body_of(entry) {
        Body::Recall(r) => r,
        other => panic!("expected a RECALL entry, got {other:?} in {entry:?}"),
    }
}

/// The read-sync of an entry, or a panic.
pub fn read_sync_of(entry: &pb::InboxEntry) -> &pb::ReadSync {
    match body_of(entry) {
        Body::ReadSync(r) => r,
        other => panic!("expected a READ_SYNC entry, got {other:?} in {entry:?}"),
    }
}

pub fn is_message(entry: &pb::InboxEntry) -> bool {
    matches!(entry.body, Some(Body::Message(_)))
}

/// The entry's conversation.
pub fn conv_of(entry: &pb::InboxEntry) -> &pb::Conversation {
    entry
        .conversation
        .as_ref()
        .expect("entry has a conversation")
}

/// Asserts that `entry` is a GROUP_EVENT of `kind` about `user` by `by` in group `gid`.
pub fn assert_event(
    entry: &pb::InboxEntry,
    gid: &str,
    kind: pb::GroupEventKind,
    user: &str,
    by: &str,
) {
    assert_eq!(conv_of(entry), &grp(gid), "event conversation: {entry:?}");
    let ev = event_of(entry);
    assert_eq!(
        (ev.kind(), ev.user_id.as_str(), ev.by_user.as_str()),
        (kind, user, by),
        "group event {entry:?}"
    );
}

/// Asserts that `entry` is the group message `ack` (seq, msg id) from `from` with `content`.
pub fn assert_group_msg(
    entry: &pb::InboxEntry,
    gid: &str,
    ack: &pb::SendAck,
    from: &str,
    content: &str,
) {
    assert_eq!(conv_of(entry), &grp(gid), "entry conversation: {entry:?}");
    let m = msg_of(entry);
    assert_eq!(
        m.conversation.as_ref(),
        Some(&grp(gid)),
        "message conversation"
    );
    assert_eq!(
        (m.seq, m.msg_id, m.from_user.as_str()),
        (ack.seq, ack.msg_id, from),
        "message {entry:?}"
    );
    assert_eq!(m.content, content.as_bytes(), "content of seq {}", m.seq);
    assert!(!m.recalled);
}

/// The seqs of a list of messages.
pub fn seqs(msgs: &[pb::Message]) -> Vec<u64> {
    msgs.iter().map(|m| m.seq).collect()
}

/// The message entries of `gid` among `entries`.
pub fn group_msgs<'a>(entries: &'a [pb::InboxEntry], gid: &str) -> Vec<&'a pb::Message> {
    entries
        .iter()
        .filter(|e| e.conversation.as_ref() == Some(&grp(gid)) && is_message(e))
        .map(msg_of)
        .collect()
}
