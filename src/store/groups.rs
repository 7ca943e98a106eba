//! Groups: lifecycle, write and read fan-out, history, computed unread counts.
//!
//! A group's messages are stored once (content and the group log, keyed by seq). Groups with at
//! most `fanout_threshold` members also get an inbox entry per member (write fan-out), so one
//! SYNC covers them; larger groups are written once and members pull the log (read fan-out).
//! Group unread counts are computed from read positions, so neither mode writes per-member
//! counters: unread = messages after the read position minus recalled ones (sending moves the
//! sender's read position, so one's own messages are never unread).

use missive_protocol::pb::{
    self, inbox_entry::Body, Conversation, ConversationKind, FanoutMode, GroupEvent,
    GroupEventKind, GroupInfo, GroupMember, GroupRole, HistoryVisibility, InboxEntry, SendAck,
};
use missive_protocol::ErrorCode;
use prost::Message as _;

use super::messages::touch_contact;
use super::{
    cf, keys, ConvKey, Delivery, Result, SendOutcome, SendRequest, Store, StoreError, Txn,
};

/// Group settings the store needs.
#[derive(Debug, Clone, Copy)]
pub struct GroupLimits {
    pub fanout_threshold: usize,
    pub max_group_size: usize,
}

/// Where a stored group change must go: inbox entries to push, and (read fan-out) members to
/// notify that the group's log reached `last_seq`.
#[derive(Debug, Clone, Default)]
pub struct GroupSend {
    pub entries: Vec<Delivery>,
    pub notify: Option<(Vec<String>, u64)>,
}

pub fn group_conv(id: &str) -> Conversation {
    Conversation {
        kind: ConversationKind::Group as i32,
        id: id.to_owned(),
    }
}

/// The lock key of a group: not a valid user id (control character), so it never collides.
fn lock_key(group_id: &str) -> String {
    format!("\u{1}{group_id}")
}

fn refused(code: ErrorCode, msg: &str) -> StoreError {
    StoreError::refused(code, msg)
}

impl GroupLimits {
    fn mode(&self, member_count: u32) -> FanoutMode {
        if member_count as usize > self.fanout_threshold {
            FanoutMode::Read
        } else {
            FanoutMode::Write
        }
    }
}

impl Store {
    fn group_info(&self, id: &str) -> Result<GroupInfo> {
        self.get_msg::<GroupInfo>(cf::GROUPS, &keys::group(id))?
            .ok_or_else(|| refused(ErrorCode::NotFound, "no such group"))
    }

    /// The group as clients see it: mode and last seq filled in.
    fn group_view(&self, mut info: GroupInfo, limits: GroupLimits) -> Result<GroupInfo> {
        info.fanout = limits.mode(info.member_count) as i32;
        info.last_seq = self.get_u64(cf::CONVS, &ConvKey::group(&info.group_id).0)?;
        Ok(info)
    }

    fn member_of(&self, group_id: &str, user: &str) -> Result<Option<GroupMember>> {
        self.get_msg(cf::MEMBERS, &keys::member(group_id, user))
    }

    /// The member record of `user`; NOT_FOUND if the group does not exist, FORBIDDEN if `user`
    /// is not a member.
    pub(crate) fn require_member(&self, group_id: &str, user: &str) -> Result<GroupMember> {
        if let Some(m) = self.member_of(group_id, user)? {
            return Ok(m);
        }
        self.group_info(group_id)?;
        Err(refused(ErrorCode::Forbidden, "not a member of this group"))
    }

    fn member_list(&self, group_id: &str) -> Result<Vec<GroupMember>> {
        let prefix = keys::member_prefix(group_id);
        let iter = self.db().iterator_cf(
            self.cf(cf::MEMBERS),
            rocksdb::IteratorMode::From(&prefix, rocksdb::Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(GroupMember::decode(&v[..])?);
        }
        Ok(out)
    }

    fn member_ids(&self, group_id: &str) -> Result<Vec<String>> {
        Ok(self
            .member_list(group_id)?
            .into_iter()
            .map(|m| m.user_id)
            .collect())
    }

    /// Locks the group and `users` plus (in write mode) every current member, retrying until the
    /// member list read before locking is still the list under the lock.
    fn lock_group<'a>(
        &'a self,
        group_id: &str,
        users: &[&str],
        with_members: bool,
    ) -> Result<(Txn<'a>, Vec<String>)> {
        loop {
            let members = self.member_ids(group_id)?;
            let lock = lock_key(group_id);
            let mut all: Vec<&str> = vec![&lock];
            all.extend_from_slice(users);
            if with_members {
                all.extend(members.iter().map(String::as_str));
            }
            let txn = self.begin(&all);
            if self.member_ids(group_id)? == members {
                return Ok((txn, members));
            }
        }
    }

    /// Appends a group event to each of `to`'s inboxes.
    fn group_events(
        txn: &mut Txn<'_>,
        group_id: &str,
        to: &[String],
        event: GroupEvent,
        now_ms: i64,
    ) -> Result<Vec<Delivery>> {
        let views = to.iter().map(|u| (u.as_str(), group_conv(group_id)));
        txn.append_each(views, now_ms, &Body::GroupEvent(event))
    }

    /// Adds `user` as a member in `txn` (first join position kept across rejoins).
    fn add_member(
        &self,
        txn: &mut Txn<'_>,
        group_id: &str,
        user: &str,
        role: GroupRole,
        last_seq: u64,
        now_ms: i64,
    ) -> Result<()> {
        let former: Option<GroupMember> =
            self.get_msg(cf::MEMBERS, &keys::former_member(group_id, user))?;
        let member = GroupMember {
            user_id: user.to_owned(),
            role: role as i32,
            joined_ms: now_ms,
            joined_seq: former.map(|f| f.joined_seq).unwrap_or(last_seq),
        };
        txn.delete(cf::MEMBERS, keys::former_member(group_id, user));
        txn.put(
            cf::MEMBERS,
            keys::member(group_id, user),
            member.encode_to_vec(),
        );
        txn.put(cf::USER_GROUPS, keys::user_group(user, group_id), []);
        let ck = ConvKey::group(group_id);
        txn.set_counter(cf::UNREAD, keys::read_pos(user, &ck), last_seq);
        Ok(())
    }

    /// Creates a group owned by `owner` with `members`; returns it.
    #[allow(clippy::too_many_arguments)]
    pub fn group_create(
        &self,
        owner: &str,
        name: &str,
        members: &[String],
        history: HistoryVisibility,
        now_ms: i64,
        limits: GroupLimits,
        deliver: &dyn Fn(Vec<Delivery>),
    ) -> Result<GroupInfo> {
        let group_id = format!("g{:x}", self.next_msg_id(now_ms));
        let mut all: Vec<String> = vec![owner.to_owned()];
        for m in members {
            if !all.contains(m) {
                all.push(m.clone());
            }
        }
        if all.len() > limits.max_group_size {
            return Err(refused(
                ErrorCode::GroupFull,
                "more members than max_group_size",
            ));
        }
        let lock = lock_key(&group_id);
        let mut locked: Vec<&str> = vec![&lock];
        locked.extend(all.iter().map(String::as_str));
        let mut txn = self.begin(&locked);
        let info = GroupInfo {
            group_id: group_id.clone(),
            name: name.to_owned(),
            owner: owner.to_owned(),
            member_count: all.len() as u32,
            history: history as i32,
            ..Default::default()
        };
        txn.put(cf::GROUPS, keys::group(&group_id), info.encode_to_vec());
        for user in &all {
            let role = if user == owner {
                GroupRole::Owner
            } else {
                GroupRole::Member
            };
            self.add_member(&mut txn, &group_id, user, role, 0, now_ms)?;
        }
        let notify: Vec<String> = match limits.mode(info.member_count) {
            FanoutMode::Write => all.clone(),
            FanoutMode::Read => vec![owner.to_owned()],
        };
        let event = GroupEvent {
            kind: GroupEventKind::Created as i32,
            user_id: owner.to_owned(),
            by_user: owner.to_owned(),
        };
        let deliveries = Self::group_events(&mut txn, &group_id, &notify, event, now_ms)?;
        txn.commit()?;
        deliver(deliveries);
        self.group_view(info, limits)
    }

    /// `by` joins (empty `users`) or adds `users` (owner or admin only).
    pub fn group_join(
        &self,
        by: &str,
        group_id: &str,
        users: &[String],
        now_ms: i64,
        limits: GroupLimits,
        deliver: &dyn Fn(Vec<Delivery>),
    ) -> Result<GroupInfo> {
        let joining: Vec<String> = if users.is_empty() {
            vec![by.to_owned()]
        } else {
            let me = self.require_member(group_id, by)?;
            if me.role == GroupRole::Member as i32 {
                return Err(refused(
                    ErrorCode::Forbidden,
                    "only the owner or an admin adds members",
                ));
            }
            users.to_vec()
        };
        let mut info = self.group_info(group_id)?;
        let refs: Vec<&str> = joining.iter().map(String::as_str).collect();
        let (mut txn, members) = self.lock_group(group_id, &refs, true)?;
        let new: Vec<String> = joining
            .iter()
            .filter(|u| !members.contains(u))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if new.is_empty() {
            return self.group_view(info, limits);
        }
        if members.len() + new.len() > limits.max_group_size {
            return Err(refused(
                ErrorCode::GroupFull,
                "the group is at max_group_size",
            ));
        }
        let last_seq = txn.counter(cf::CONVS, &ConvKey::group(group_id).0)?;
        for user in &new {
            self.add_member(
                &mut txn,
                group_id,
                user,
                GroupRole::Member,
                last_seq,
                now_ms,
            )?;
        }
        info.member_count = (members.len() + new.len()) as u32;
        txn.put(cf::GROUPS, keys::group(group_id), info.encode_to_vec());
        let mut deliveries = Vec::new();
        for user in &new {
            let to: Vec<String> = match limits.mode(info.member_count) {
                FanoutMode::Write => members.iter().chain(new.iter()).cloned().collect(),
                FanoutMode::Read => vec![user.clone()],
            };
            let event = GroupEvent {
                kind: GroupEventKind::Joined as i32,
                user_id: user.clone(),
                by_user: by.to_owned(),
            };
            deliveries.extend(Self::group_events(&mut txn, group_id, &to, event, now_ms)?);
        }
        txn.commit()?;
        deliver(deliveries);
        self.group_view(info, limits)
    }

    /// `by` leaves (`user` None or `by`) or removes `user` (owner or admin only).
    pub fn group_leave(
        &self,
        by: &str,
        group_id: &str,
        user: Option<&str>,
        now_ms: i64,
        limits: GroupLimits,
        deliver: &dyn Fn(Vec<Delivery>),
    ) -> Result<GroupInfo> {
        let target = user.unwrap_or(by);
        let mut info = self.group_info(group_id)?;
        if target != by {
            let me = self.require_member(group_id, by)?;
            if me.role == GroupRole::Member as i32 {
                return Err(refused(
                    ErrorCode::Forbidden,
                    "only the owner or an admin removes members",
                ));
            }
        }
        if target == info.owner {
            return Err(refused(
                ErrorCode::Forbidden,
                "the owner cannot leave or be removed",
            ));
        }
        let (mut txn, members) = self.lock_group(group_id, &[target], true)?;
        let Some(member) = self.member_of(group_id, target)? else {
            return Err(refused(ErrorCode::NotFound, "not a member of this group"));
        };
        txn.delete(cf::MEMBERS, keys::member(group_id, target));
        txn.put(
            cf::MEMBERS,
            keys::former_member(group_id, target),
            member.encode_to_vec(),
        );
        txn.delete(cf::USER_GROUPS, keys::user_group(target, group_id));
        info.member_count = members.len().saturating_sub(1) as u32;
        txn.put(cf::GROUPS, keys::group(group_id), info.encode_to_vec());
        let to: Vec<String> = match limits.mode(members.len() as u32) {
            FanoutMode::Write => members.clone(),
            FanoutMode::Read => vec![target.to_owned()],
        };
        let kind = if target == by {
            GroupEventKind::Left
        } else {
            GroupEventKind::Removed
        };
        let event = GroupEvent {
            kind: kind as i32,
            user_id: target.to_owned(),
            by_user: by.to_owned(),
        };
        let deliveries = Self::group_events(&mut txn, group_id, &to, event, now_ms)?;
        txn.commit()?;
        deliver(deliveries);
        self.group_view(info, limits)
    }

    /// The group and its members, for a member.
    pub fn group_members(
        &self,
        user: &str,
        group_id: &str,
        limits: GroupLimits,
    ) -> Result<(GroupInfo, Vec<GroupMember>)> {
        let info = self.group_info(group_id)?;
        self.require_member(group_id, user)?;
        Ok((self.group_view(info, limits)?, self.member_list(group_id)?))
    }

    /// Ids of the groups `user` belongs to.
    pub(crate) fn groups_of(&self, user: &str) -> Result<Vec<String>> {
        let prefix = keys::user_prefix(user);
        let iter = self.db().iterator_cf(
            self.cf(cf::USER_GROUPS),
            rocksdb::IteratorMode::From(&prefix, rocksdb::Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (k, _) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
        }
        Ok(out)
    }

    /// The groups `user` belongs to.
    pub fn group_list(&self, user: &str, limits: GroupLimits) -> Result<Vec<GroupInfo>> {
        self.groups_of(user)?
            .iter()
            .map(|g| self.group_info(g).and_then(|i| self.group_view(i, limits)))
            .collect()
    }

    /// A page of the group's log visible to `user`: after `after_seq` oldest first, else before
    /// `before_seq` (0: the newest) newest first; at most `limit` messages and (after the first)
    /// about `max_bytes` encoded.
    pub fn group_history(
        &self,
        user: &str,
        group_id: &str,
        before_seq: u64,
        after_seq: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<pb::Message>, bool)> {
        let info = self.group_info(group_id)?;
        let me = self.require_member(group_id, user)?;
        let floor = if info.history == HistoryVisibility::FromJoin as i32 {
            me.joined_seq
        } else {
            0
        };
        let ck = ConvKey::group(group_id);
        let last = self.get_u64(cf::CONVS, &ck.0)?;
        let seqs: Vec<u64> = if after_seq > 0 {
            (after_seq.max(floor) + 1..=last).take(limit + 1).collect()
        } else {
            let top = if before_seq == 0 {
                last
            } else {
                before_seq - 1
            }
            .min(last);
            (floor + 1..=top).rev().take(limit + 1).collect()
        };
        let mut has_more = seqs.len() > limit;
        let mut out = Vec::with_capacity(limit.min(seqs.len()));
        let mut bytes = 0;
        for seq in seqs.into_iter().take(limit) {
            if bytes >= max_bytes && !out.is_empty() {
                has_more = true;
                break;
            }
            let Some(id) = self
                .db()
                .get_pinned_cf(self.cf(cf::CONV_LOG), keys::conv_log(&ck, seq))?
            else {
                continue;
            };
            let msg_id =
                keys::u64_value(&id).ok_or_else(|| StoreError::Corrupt("conv_log".into()))?;
            let mut msg = self
                .get_msg::<pb::Message>(cf::CONTENT, &keys::content(msg_id))?
                .ok_or_else(|| StoreError::Corrupt(format!("message {msg_id} missing")))?;
            msg.conversation = Some(group_conv(group_id));
            bytes += msg.encoded_len() + 4;
            out.push(msg);
        }
        Ok((out, has_more))
    }

    /// `user`'s unread count in a group: messages after the read position, minus recalled ones.
    pub(crate) fn group_unread(&self, user: &str, group_id: &str) -> Result<u64> {
        let ck = ConvKey::group(group_id);
        let last = self.get_u64(cf::CONVS, &ck.0)?;
        let pos = self.get_u64(cf::UNREAD, &keys::read_pos(user, &ck))?;
        self.group_unread_after(&ck, pos, last)
    }

    /// Messages in (`pos`, `last`] of a group, minus recalled ones.
    pub(crate) fn group_unread_after(&self, ck: &ConvKey, pos: u64, last: u64) -> Result<u64> {
        if last <= pos {
            return Ok(0);
        }
        let start = keys::recalled(ck, pos + 1);
        let iter = self.db().iterator_cf(
            self.cf(cf::RECALLED),
            rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward),
        );
        let mut recalled = 0;
        for item in iter {
            let (k, _) = item?;
            if !k.starts_with(&ck.0) || k.len() != ck.0.len() + 8 {
                break;
            }
            recalled += 1;
        }
        Ok((last - pos).saturating_sub(recalled))
    }

    /// Stores a group message. Write fan-out: an inbox entry per member. Read fan-out: the
    /// content, the log, and the sender's own entry only.
    pub fn send_group(
        &self,
        req: &SendRequest<'_>,
        limits: GroupLimits,
    ) -> Result<(SendOutcome, GroupSend)> {
        let group_id = req.to.id.as_str();
        let info = self.group_info(group_id)?;
        let write_mode = limits.mode(info.member_count) == FanoutMode::Write;
        let (mut txn, members) = self.lock_group(group_id, &[req.from], write_mode)?;
        if let Some(mut ack) =
            self.get_msg::<SendAck>(cf::DEDUP, &keys::dedup(req.from, req.client_msg_id))?
        {
            ack.duplicate = true;
            return Ok((SendOutcome { ack, writes: 0 }, GroupSend::default()));
        }
        if !members.iter().any(|m| m == req.from) {
            return Err(refused(ErrorCode::Forbidden, "not a member of this group"));
        }
        let ck = ConvKey::group(group_id);
        let conv = group_conv(group_id);
        let msg = self.put_message(&mut txn, req, &ck, conv.clone())?;
        let (msg_id, seq) = (msg.msg_id, msg.seq);
        let recipients: Vec<String> = if write_mode {
            members.clone()
        } else {
            vec![req.from.to_owned()]
        };
        let mut deliveries = Vec::with_capacity(recipients.len());
        let mut version = 0;
        for user in &recipients {
            let entry = txn.append(
                user,
                InboxEntry {
                    version: 0,
                    conversation: Some(conv.clone()),
                    timestamp_ms: req.now_ms,
                    body: Some(Body::Message(msg.clone())),
                },
            )?;
            touch_contact(&mut txn, user, &ck, conv.clone(), msg_id, req.now_ms)?;
            if user == req.from {
                version = entry.version;
            }
            deliveries.push(Delivery {
                user: user.clone(),
                entry,
            });
        }
        // Sending means the sender has seen the group up to here.
        txn.set_counter(cf::UNREAD, keys::read_pos(req.from, &ck), seq);
        let ack = SendAck {
            client_msg_id: req.client_msg_id.to_owned(),
            msg_id,
            seq,
            timestamp_ms: req.now_ms,
            version,
            duplicate: false,
        };
        txn.put(
            cf::DEDUP,
            keys::dedup(req.from, req.client_msg_id),
            ack.encode_to_vec(),
        );
        let writes = txn.writes();
        txn.commit()?;
        let send = GroupSend {
            entries: deliveries,
            notify: (!write_mode).then_some((members, seq)),
        };
        Ok((SendOutcome { ack, writes }, send))
    }

    /// Recalls a group message (its sender, or the owner or an admin, within the window).
    /// Returns the recaller's RECALL entry version (0 if already recalled) and what to push or
    /// notify.
    pub fn recall_group(
        &self,
        user: &str,
        group_id: &str,
        msg_id: u64,
        now_ms: i64,
        window_ms: i64,
        limits: GroupLimits,
    ) -> Result<(u64, GroupSend)> {
        let info = self.group_info(group_id)?;
        let msg = self.message_in(user, &group_conv(group_id), msg_id)?;
        if !msg.recalled && now_ms - msg.timestamp_ms > window_ms {
            return Err(refused(
                ErrorCode::RecallWindowExpired,
                "the recall window of this message has passed",
            ));
        }
        let group_id = group_id.to_owned();
        let me = self.require_member(&group_id, user)?;
        if msg.from_user != user && me.role == GroupRole::Member as i32 {
            return Err(refused(
                ErrorCode::Forbidden,
                "only the sender, the owner or an admin recalls",
            ));
        }
        let write_mode = limits.mode(info.member_count) == FanoutMode::Write;
        let (mut txn, members) = self.lock_group(&group_id, &[user], write_mode)?;
        let current = self
            .get_msg::<pb::Message>(cf::CONTENT, &keys::content(msg.msg_id))?
            .ok_or_else(|| refused(ErrorCode::NotFound, "no such message"))?;
        if current.recalled {
            return Ok((0, GroupSend::default()));
        }
        let ck = ConvKey::group(&group_id);
        let recalled = pb::Message {
            recalled: true,
            content: Vec::new(),
            ..current
        };
        txn.put(
            cf::CONTENT,
            keys::content(msg.msg_id),
            recalled.encode_to_vec(),
        );
        txn.put(cf::RECALLED, keys::recalled(&ck, recalled.seq), []);
        let to: Vec<String> = if write_mode {
            members.clone()
        } else {
            vec![user.to_owned()]
        };
        let body = Body::Recall(pb::Recall {
            msg_id: recalled.msg_id,
            seq: recalled.seq,
            by_user: user.to_owned(),
        });
        let views = to.iter().map(|m| (m.as_str(), group_conv(&group_id)));
        let deliveries = txn.append_each(views, now_ms, &body)?;
        let version = super::txn::version_of(&deliveries, user);
        txn.commit()?;
        let last_seq = self.get_u64(cf::CONVS, &ck.0)?;
        let send = GroupSend {
            entries: deliveries,
            notify: (!write_mode).then_some((members, last_seq)),
        };
        Ok((version, send))
    }
}
