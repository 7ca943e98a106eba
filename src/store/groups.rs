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

use super::messages::{message_in, put_message, touch_contact};
use super::{
    cf, keys, ConvKey, Core, Delivery, Pending, Reader, Result, SendOutcome, SendRequest, Store,
    StoreError, Txn,
};

/// Group settings the store needs.
#[derive(Debug, Clone, Copy)]
pub struct GroupLimits {
    pub fanout_threshold: usize,
    pub max_group_size: usize,
}

pub fn group_conv(id: &str) -> Conversation {
    Conversation {
        kind: ConversationKind::Group as i32,
        id: id.to_owned(),
    }
}

/// GROUP_NOTIFY carries a read fan-out message whose content is at most this long.
pub const NOTIFY_INLINE_MAX: usize = 4096;

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

/// The group's record; NOT_FOUND if there is none.
fn group_info(r: &impl Reader, id: &str) -> Result<GroupInfo> {
    r.get_msg::<GroupInfo>(cf::GROUPS, &keys::group(id))?
        .ok_or_else(|| refused(ErrorCode::NotFound, "no such group"))
}

/// The group as clients see it: mode and last seq filled in.
fn group_view(r: &impl Reader, mut info: GroupInfo, limits: GroupLimits) -> Result<GroupInfo> {
    info.fanout = limits.mode(info.member_count) as i32;
    info.last_seq = r.get_u64(cf::CONVS, &ConvKey::group(&info.group_id).0)?;
    Ok(info)
}

fn member_of(r: &impl Reader, group_id: &str, user: &str) -> Result<Option<GroupMember>> {
    r.get_msg(cf::MEMBERS, &keys::member(group_id, user))
}

/// The member record of `user`; NOT_FOUND if the group does not exist, FORBIDDEN if `user` is
/// not a member.
pub(crate) fn require_member(r: &impl Reader, group_id: &str, user: &str) -> Result<GroupMember> {
    if let Some(m) = member_of(r, group_id, user)? {
        return Ok(m);
    }
    group_info(r, group_id)?;
    Err(refused(ErrorCode::Forbidden, "not a member of this group"))
}

impl Core {
    pub(crate) fn member_list(&self, group_id: &str) -> Result<Vec<GroupMember>> {
        let prefix = keys::member_prefix(group_id);
        let iter = self.iter_from(cf::MEMBERS, &prefix);
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

    /// The ids of the group's current members (committed).
    pub(crate) fn member_ids(&self, group_id: &str) -> Result<Vec<String>> {
        Ok(self
            .member_list(group_id)?
            .into_iter()
            .map(|m| m.user_id)
            .collect())
    }

    /// The group as members see it; NOT_FOUND if there is none.
    pub fn group(&self, group_id: &str, limits: GroupLimits) -> Result<GroupInfo> {
        group_view(self, group_info(self, group_id)?, limits)
    }

    /// The member record of `user` in `group_id` (NOT_FOUND / FORBIDDEN as for requests).
    pub fn require_member(&self, group_id: &str, user: &str) -> Result<GroupMember> {
        require_member(self, group_id, user)
    }

    /// The group and its members, for a member.
    pub fn group_members(
        &self,
        user: &str,
        group_id: &str,
        limits: GroupLimits,
    ) -> Result<(GroupInfo, Vec<GroupMember>)> {
        let info = group_info(self, group_id)?;
        require_member(self, group_id, user)?;
        Ok((group_view(self, info, limits)?, self.member_list(group_id)?))
    }

    /// Ids of the groups `user` belongs to.
    pub(crate) fn groups_of(&self, user: &str) -> Result<Vec<String>> {
        let prefix = keys::user_prefix(user);
        let iter = self.iter_from(cf::USER_GROUPS, &prefix);
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
            .map(|g| group_info(self, g).and_then(|i| group_view(self, i, limits)))
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
        let info = group_info(self, group_id)?;
        let me = require_member(self, group_id, user)?;
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
            let Some(msg_id) = self.value(cf::CONV_LOG, &keys::conv_log(&ck, seq), |v| {
                v.map(keys::u64_value)
            })?
            else {
                continue;
            };
            let msg_id = msg_id.ok_or_else(|| StoreError::Corrupt("conv_log".into()))?;
            let mut msg = self
                .get_msg::<pb::Message>(cf::CONTENT, &keys::content(msg_id))?
                .ok_or_else(|| StoreError::Corrupt(format!("message {msg_id} missing")))?;
            msg.conversation = Some(group_conv(group_id));
            bytes += msg.encoded_len() + 4;
            out.push(msg);
        }
        Ok((out, has_more))
    }

    /// `user`'s unread count in a group as `r` sees it: messages after the read position, minus
    /// recalled ones.
    pub(crate) fn group_unread_as_of(
        &self,
        r: &impl Reader,
        user: &str,
        group_id: &str,
    ) -> Result<u64> {
        let ck = ConvKey::group(group_id);
        let last = r.get_u64(cf::CONVS, &ck.0)?;
        let pos = r.get_u64(cf::UNREAD, &keys::read_pos(user, &ck))?;
        self.group_unread_after(&ck, pos, last)
    }

    /// Messages in (`pos`, `last`] of a group, minus recalled ones (committed).
    pub(crate) fn group_unread_after(&self, ck: &ConvKey, pos: u64, last: u64) -> Result<u64> {
        if last <= pos {
            return Ok(0);
        }
        let start = keys::recalled(ck, pos + 1);
        let iter = self.iter_from(cf::RECALLED, &start);
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
}

/// A group change as requested.
#[derive(Debug, Clone)]
pub enum GroupChange {
    /// Create a group owned by `by` with these members.
    Create {
        name: String,
        members: Vec<String>,
        history: HistoryVisibility,
    },
    /// `by` joins (empty `users`) or adds `users` (owner or admin only).
    Join {
        group_id: String,
        users: Vec<String>,
    },
    /// `by` leaves (`user` None or `by`) or removes `user` (owner or admin only).
    Leave {
        group_id: String,
        user: Option<String>,
    },
}

impl Store {
    /// Creates, joins or leaves a group (as `by`); returns the group as it is afterwards. Group
    /// events are pushed to the members once committed.
    pub fn group_change(
        &self,
        by: &str,
        change: GroupChange,
        now_ms: i64,
        limits: GroupLimits,
    ) -> Pending<GroupInfo> {
        let by = by.to_owned();
        self.change(false, move |txn| match change {
            GroupChange::Create {
                name,
                members,
                history,
            } => group_create(txn, &by, &name, &members, history, now_ms, limits),
            GroupChange::Join { group_id, users } => {
                group_join(txn, &by, &group_id, &users, now_ms, limits)
            }
            GroupChange::Leave { group_id, user } => {
                group_leave(txn, &by, &group_id, user.as_deref(), now_ms, limits)
            }
        })
    }

    /// Stores a group message. Write fan-out: an inbox entry per member, pushed. Read fan-out:
    /// the content, the log and the sender's own entry; online members are notified.
    pub fn send_group(
        &self,
        req: SendRequest,
        limits: GroupLimits,
        exclude: Option<u64>,
    ) -> Pending<SendOutcome> {
        self.change(false, move |txn| send_group(txn, req, limits, exclude))
    }

    /// Recalls a group message (its sender, or the owner or an admin, within the window).
    /// Returns the recaller's RECALL entry version (0 if already recalled).
    pub fn recall_group(
        &self,
        user: &str,
        group_id: &str,
        msg_id: u64,
        now_ms: i64,
        window_ms: i64,
        limits: GroupLimits,
    ) -> Pending<u64> {
        let (user, group_id) = (user.to_owned(), group_id.to_owned());
        self.change(false, move |txn| {
            recall_group(txn, &user, &group_id, msg_id, now_ms, window_ms, limits)
        })
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
    txn: &mut Txn<'_>,
    group_id: &str,
    user: &str,
    role: GroupRole,
    last_seq: u64,
    now_ms: i64,
) -> Result<()> {
    let former: Option<GroupMember> =
        txn.get_msg(cf::MEMBERS, &keys::former_member(group_id, user))?;
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
    txn.put(
        cf::USER_GROUPS,
        keys::user_group(user, group_id),
        Vec::new(),
    );
    let ck = ConvKey::group(group_id);
    txn.set_counter(cf::UNREAD, keys::read_pos(user, &ck), last_seq);
    Ok(())
}

fn group_create(
    txn: &mut Txn<'_>,
    owner: &str,
    name: &str,
    members: &[String],
    history: HistoryVisibility,
    now_ms: i64,
    limits: GroupLimits,
) -> Result<GroupInfo> {
    let group_id = format!("g{:x}", txn.core().next_msg_id(now_ms));
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
    let info = GroupInfo {
        group_id: group_id.clone(),
        name: name.to_owned(),
        owner: owner.to_owned(),
        member_count: all.len() as u32,
        history: history as i32,
        ..Default::default()
    };
    txn.forget_members(&group_id);
    txn.put(cf::GROUPS, keys::group(&group_id), info.encode_to_vec());
    for user in &all {
        let role = if user == owner {
            GroupRole::Owner
        } else {
            GroupRole::Member
        };
        add_member(txn, &group_id, user, role, 0, now_ms)?;
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
    let deliveries = group_events(txn, &group_id, &notify, event, now_ms)?;
    txn.deliver(deliveries, None);
    group_view(txn, info, limits)
}

fn group_join(
    txn: &mut Txn<'_>,
    by: &str,
    group_id: &str,
    users: &[String],
    now_ms: i64,
    limits: GroupLimits,
) -> Result<GroupInfo> {
    let joining: Vec<String> = if users.is_empty() {
        vec![by.to_owned()]
    } else {
        let me = require_member(txn, group_id, by)?;
        if me.role == GroupRole::Member as i32 {
            return Err(refused(
                ErrorCode::Forbidden,
                "only the owner or an admin adds members",
            ));
        }
        users.to_vec()
    };
    let mut info = group_info(txn, group_id)?;
    let members = txn.members(group_id)?;
    let new: Vec<String> = joining
        .iter()
        .filter(|u| !members.contains(u))
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if new.is_empty() {
        return group_view(txn, info, limits);
    }
    if members.len() + new.len() > limits.max_group_size {
        return Err(refused(
            ErrorCode::GroupFull,
            "the group is at max_group_size",
        ));
    }
    let last_seq = txn.counter(cf::CONVS, &ConvKey::group(group_id).0)?;
    txn.forget_members(group_id);
    for user in &new {
        add_member(txn, group_id, user, GroupRole::Member, last_seq, now_ms)?;
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
        deliveries.extend(group_events(txn, group_id, &to, event, now_ms)?);
    }
    txn.deliver(deliveries, None);
    group_view(txn, info, limits)
}

fn group_leave(
    txn: &mut Txn<'_>,
    by: &str,
    group_id: &str,
    user: Option<&str>,
    now_ms: i64,
    limits: GroupLimits,
) -> Result<GroupInfo> {
    let target = user.unwrap_or(by);
    let mut info = group_info(txn, group_id)?;
    if target != by {
        let me = require_member(txn, group_id, by)?;
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
    let members = txn.members(group_id)?;
    let Some(member) = member_of(txn, group_id, target)? else {
        return Err(refused(ErrorCode::NotFound, "not a member of this group"));
    };
    txn.forget_members(group_id);
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
        FanoutMode::Write => members.to_vec(),
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
    let deliveries = group_events(txn, group_id, &to, event, now_ms)?;
    txn.deliver(deliveries, None);
    group_view(txn, info, limits)
}

fn send_group(
    txn: &mut Txn<'_>,
    mut req: SendRequest,
    limits: GroupLimits,
    exclude: Option<u64>,
) -> Result<SendOutcome> {
    let content = std::mem::take(&mut req.content);
    let group_id = req.to.id.as_str();
    let info = group_info(txn, group_id)?;
    let write_mode = limits.mode(info.member_count) == FanoutMode::Write;
    let members = txn.members(group_id)?;
    if let Some(mut ack) =
        txn.get_msg::<SendAck>(cf::DEDUP, &keys::dedup(&req.from, &req.client_msg_id))?
    {
        ack.duplicate = true;
        return Ok(SendOutcome { ack, writes: 0 });
    }
    if !members.contains(&req.from) {
        return Err(refused(ErrorCode::Forbidden, "not a member of this group"));
    }
    let ck = ConvKey::group(group_id);
    let conv = group_conv(group_id);
    let msg = put_message(txn, &req, content, &ck, conv.clone())?;
    let (msg_id, seq) = (msg.msg_id, msg.seq);
    let own = [req.from.clone()];
    let recipients: &[String] = if write_mode { &members } else { &own };
    let mut deliveries = Vec::with_capacity(recipients.len());
    let mut version = 0;
    for user in recipients {
        let entry = txn.append(
            user,
            InboxEntry {
                version: 0,
                conversation: Some(conv.clone()),
                timestamp_ms: req.now_ms,
                body: Some(Body::Message(msg.clone())),
            },
        )?;
        touch_contact(txn, user, &ck, conv.clone(), msg_id, req.now_ms)?;
        if *user == req.from {
            version = entry.version;
        }
        deliveries.push(Delivery {
            user: user.clone(),
            entry,
        });
    }
    // Sending means the sender has seen the group up to here.
    txn.set_counter(cf::UNREAD, keys::read_pos(&req.from, &ck), seq);
    let ack = SendAck {
        client_msg_id: req.client_msg_id.clone(),
        msg_id,
        seq,
        timestamp_ms: req.now_ms,
        version,
        duplicate: false,
    };
    txn.put(
        cf::DEDUP,
        keys::dedup(&req.from, &req.client_msg_id),
        ack.encode_to_vec(),
    );
    if write_mode {
        // Read fan-out groups get no offline push: it would cost a write per member.
        let others: Vec<&str> = members
            .iter()
            .map(String::as_str)
            .filter(|m| *m != req.from)
            .collect();
        txn.queue_offline_pushes(msg_id, &others);
    }
    let writes = txn.writes();
    txn.deliver(deliveries, exclude);
    if !write_mode {
        // Online members get the message itself when it is small (they pull only after a gap).
        let inline = (msg.content.len() <= NOTIFY_INLINE_MAX).then_some(msg);
        txn.notify_group(group_id, seq, inline, members, exclude);
    }
    Ok(SendOutcome { ack, writes })
}

#[allow(clippy::too_many_arguments)]
fn recall_group(
    txn: &mut Txn<'_>,
    user: &str,
    group_id: &str,
    msg_id: u64,
    now_ms: i64,
    window_ms: i64,
    limits: GroupLimits,
) -> Result<u64> {
    let info = group_info(txn, group_id)?;
    // Membership first: a non-member learns nothing about the group's messages (whether an id
    // exists, how old it is).
    let me = require_member(txn, group_id, user)?;
    let msg = message_in(txn, user, &group_conv(group_id), msg_id)?;
    if msg.from_user != user && me.role == GroupRole::Member as i32 {
        return Err(refused(
            ErrorCode::Forbidden,
            "only the sender, the owner or an admin recalls",
        ));
    }
    if msg.recalled {
        return Ok(0);
    }
    if now_ms - msg.timestamp_ms > window_ms {
        return Err(refused(
            ErrorCode::RecallWindowExpired,
            "the recall window of this message has passed",
        ));
    }
    let write_mode = limits.mode(info.member_count) == FanoutMode::Write;
    let members = txn.members(group_id)?;
    let ck = ConvKey::group(group_id);
    let recalled = pb::Message {
        recalled: true,
        content: Vec::new(),
        ..msg
    };
    txn.put(
        cf::CONTENT,
        keys::content(recalled.msg_id).to_vec(),
        recalled.encode_to_vec(),
    );
    txn.put(cf::RECALLED, keys::recalled(&ck, recalled.seq), Vec::new());
    let own = [user.to_owned()];
    let to: &[String] = if write_mode { &members } else { &own };
    let body = Body::Recall(pb::Recall {
        msg_id: recalled.msg_id,
        seq: recalled.seq,
        by_user: user.to_owned(),
    });
    let views = to.iter().map(|m| (m.as_str(), group_conv(group_id)));
    let deliveries = txn.append_each(views, now_ms, &body)?;
    let version = super::txn::version_of(&deliveries, user);
    txn.deliver(deliveries, None);
    if !write_mode {
        let last_seq = txn.counter(cf::CONVS, &ck.0)?;
        txn.notify_group(group_id, last_seq, None, members, None);
    }
    Ok(version)
}
