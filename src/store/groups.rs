//! Groups: create, join, leave, roles, messages (write and read fan-out), recall, and the reads
//! of members and lists (a group's history is read in `history.rs`, with every conversation's).
//!
//! A group's messages are stored once (content and the group log, keyed by seq). A group with
//! at most `fanout_threshold` members also gets an inbox entry per member for each message
//! (write fan-out), so one SYNC covers it and each member's unread count is stored. A larger
//! group is written once; its members are told with GROUP_NOTIFY and pull the log (read
//! fan-out), and their counts are computed (`super::unread`). The mode is stored with the
//! group and follows its size at each membership change.
//!
//! Every change is O(what it changes): lists from the client are deduplicated with a hash set
//! and checked against the limits before anything else; membership is checked with point reads;
//! the member list is read only where every member must be told.

use missive_protocol::pb::{
    self, inbox_entry::Body, FanoutMode, GroupEvent, GroupEventKind, GroupInfo, GroupMember,
    GroupRole, HistoryVisibility, InboxEntry, JoinPolicy, SendAck,
};
use missive_protocol::ErrorCode;
use prost::Message as _;
use serde_json::json;

use super::change::{version_of, Change};
use super::conversation::{
    group_conv, message_in, put_message, touch_contact, SendOutcome, SendRequest,
};
use super::core::Core;
use super::error::{Result, StoreError};
use super::events::{message_fields, stored_fields, EventKind};
use super::family::Family;
use super::keys::{self, ConvKey};
use super::membership::{
    add_member, check_group_caps, forget_count, group_info, group_view, is_open, member_of,
    mode_of, no_such_group, remove_member, require_manager, require_member, unique, GroupLimits,
    Joining,
};
use super::outbox::Delivery;
use super::pending::Pending;
use super::read::Reader;
use super::unread::group_unread_in;
use super::writer::Store;
use crate::ids::{MsgId, SessionId};

/// GROUP_NOTIFY carries a read fan-out message whose content is at most this long.
pub const NOTIFY_INLINE_MAX: usize = 4096;

fn refused(code: ErrorCode, msg: impl Into<String>) -> StoreError {
    StoreError::refused(code, msg)
}

/// A new group id: `g` and 128 random bits in hex, so ids cannot be guessed.
fn new_group_id() -> String {
    format!("g{:032x}", rand::random::<u128>())
}

/// A group change as requested (the caller has checked the ids and the list lengths).
#[derive(Debug, Clone)]
pub enum GroupChange {
    /// Create a group owned by `by` with these members.
    Create {
        name: String,
        members: Vec<String>,
        history: HistoryVisibility,
        join_policy: JoinPolicy,
    },
    /// `by` joins an open group (empty `users`) or adds `users` (owner or admin only).
    Join {
        group_id: String,
        users: Vec<String>,
    },
    /// `by` leaves (`user` None or `by`) or removes `user` (owner, or an admin for a member).
    Leave {
        group_id: String,
        user: Option<String>,
    },
    /// The owner makes `user` an admin or a member.
    SetRole {
        group_id: String,
        user: String,
        role: GroupRole,
    },
}

/// The id of the group's last message if `user` (a member) may see it, as `r` reads: none for a
/// group without messages, nor in a FROM_JOIN group whose last message is from before the
/// member's first join.
pub(crate) fn last_visible(r: &impl Reader, user: &str, group_id: &str) -> Result<Option<u64>> {
    let ck = ConvKey::group(group_id);
    let last = r.get_u64(Family::Convs, &ck.0)?;
    if last == 0 {
        return Ok(None);
    }
    let info = group_info(r, group_id)?;
    if info.history == HistoryVisibility::FromJoin as i32 {
        let joined = member_of(r, group_id, user)?.map_or(u64::MAX, |m| m.joined_seq);
        if joined >= last {
            return Ok(None);
        }
    }
    r.value(Family::ConvLog, &keys::conv_log(&ck, last), |v| {
        v.and_then(keys::u64_value)
    })
}

/// A page of reads: the items and the cursor of the next page (empty when none).
pub type Page<T> = (Vec<T>, Vec<u8>);

impl Core {
    /// The ids of the group's current members (committed), in id order.
    pub(crate) fn member_ids(&self, group_id: &str) -> Result<Vec<String>> {
        Ok(self
            .member_page(group_id, &[], usize::MAX)?
            .0
            .into_iter()
            .map(|m| m.user_id)
            .collect())
    }

    /// Up to `limit` members after the member id `cursor` (empty: from the first), in id order.
    pub(crate) fn member_page(
        &self,
        group_id: &str,
        cursor: &[u8],
        limit: usize,
    ) -> Result<Page<GroupMember>> {
        let prefix = keys::member_prefix(group_id);
        let mut start = [prefix.as_slice(), cursor].concat();
        if !cursor.is_empty() {
            start.push(0);
        }
        let mut out = Vec::new();
        let mut next = Vec::new();
        for item in self.iter_from(Family::Members, &start) {
            let (k, v) = item?;
            let Some(id) = k.strip_prefix(prefix.as_slice()) else {
                break;
            };
            if out.len() == limit {
                next = out
                    .last()
                    .map(|m: &GroupMember| m.user_id.as_bytes().to_vec())
                    .unwrap_or_default();
                let _ = id;
                break;
            }
            out.push(GroupMember::decode(&v[..])?);
        }
        Ok((out, next))
    }

    /// The id of the group's last message if `user` may see it: a FROM_JOIN group shows a
    /// member nothing from before its first join, in CONTACTS as in GROUP_HISTORY.
    pub(crate) fn visible_last_message(&self, user: &str, group_id: &str) -> Result<Option<u64>> {
        last_visible(self, user, group_id)
    }

    /// The group as members see it; NOT_FOUND if there is none (for the app's backend, which
    /// may look at any group).
    pub fn group(&self, group_id: &str) -> Result<GroupInfo> {
        group_view(self, group_info(self, group_id)?)
    }

    /// The member record of `user` in `group_id` (NOT_FOUND unless a member).
    pub fn require_member(&self, group_id: &str, user: &str) -> Result<GroupMember> {
        require_member(self, group_id, user)
    }

    /// The group and a page of its members, for a member (NOT_FOUND for anyone else). Pass
    /// `as_member` None to read them as the app's backend.
    pub fn group_members(
        &self,
        as_member: Option<&str>,
        group_id: &str,
        cursor: &[u8],
        limit: usize,
    ) -> Result<(GroupInfo, Page<GroupMember>)> {
        if let Some(user) = as_member {
            require_member(self, group_id, user)?;
        }
        let info = group_view(self, group_info(self, group_id)?)?;
        Ok((info, self.member_page(group_id, cursor, limit)?))
    }

    /// Ids of the groups `user` belongs to, after the group id `cursor`, at most `limit`.
    fn groups_page(&self, user: &str, cursor: &[u8], limit: usize) -> Result<Page<String>> {
        let prefix = keys::user_prefix(user);
        let mut start = [prefix.as_slice(), cursor].concat();
        if !cursor.is_empty() {
            start.push(0);
        }
        let mut out = Vec::new();
        let mut next = Vec::new();
        for item in self.iter_from(Family::UserGroups, &start) {
            let (k, _) = item?;
            let Some(id) = k.strip_prefix(prefix.as_slice()) else {
                break;
            };
            if out.len() == limit {
                next = out
                    .last()
                    .map(|g: &String| g.as_bytes().to_vec())
                    .unwrap_or_default();
                break;
            }
            out.push(String::from_utf8_lossy(id).into_owned());
        }
        Ok((out, next))
    }

    /// Ids of every group `user` belongs to (for checks).
    pub fn group_ids_of(&self, user: &str) -> Result<Vec<String>> {
        Ok(self.groups_page(user, &[], usize::MAX)?.0)
    }

    /// A page of the groups `user` belongs to, in group id order: at most `limit` and (after
    /// the first) about `max_bytes` encoded.
    pub fn group_list(
        &self,
        user: &str,
        cursor: &[u8],
        limit: usize,
        max_bytes: usize,
    ) -> Result<Page<GroupInfo>> {
        let (ids, mut next) = self.groups_page(user, cursor, limit)?;
        let mut out: Vec<GroupInfo> = Vec::with_capacity(ids.len());
        let mut bytes = 0;
        for id in &ids {
            if bytes >= max_bytes && !out.is_empty() {
                next = out
                    .last()
                    .map(|g| g.group_id.as_bytes().to_vec())
                    .unwrap_or_default();
                break;
            }
            let info = group_view(self, group_info(self, id)?)?;
            bytes += info.encoded_len() + 4;
            out.push(info);
        }
        Ok((out, next))
    }
}

impl Store {
    /// Creates, joins, leaves or changes a role in a group (as `by`); returns the group as it
    /// is afterwards. Group events reach the members once committed.
    pub fn group_change(
        &self,
        by: &str,
        change: GroupChange,
        now_ms: i64,
        limits: GroupLimits,
    ) -> Pending<GroupInfo> {
        let by = by.to_owned();
        self.change(false, move |txn| {
            // The event's part of the change, before it is consumed; nothing when events of
            // groups are off.
            let core = txn.core();
            let wanted = [EventKind::GroupCreated, EventKind::GroupChanged]
                .into_iter()
                .any(|k| core.events_on(k));
            let described = wanted.then(|| describe(&by, &change));
            let info = group_change(txn, &by, change, now_ms, limits)?;
            if let Some((kind, what, users)) = described {
                txn.event(kind, now_ms, || {
                    json!({
                        "group_id": info.group_id,
                        "change": what,
                        "by": by,
                        "users": users,
                        "member_count": info.member_count,
                    })
                });
            }
            Ok(info)
        })
    }

    /// Stores a group message. Write fan-out: an inbox entry per member, pushed, and each
    /// other member's unread count. Read fan-out: the content, the log and the sender's own
    /// entry; online members are notified.
    pub fn send_group(&self, req: SendRequest, exclude: Option<SessionId>) -> Pending<SendOutcome> {
        self.change(false, move |txn| send_group(txn, req, exclude))
    }

    /// Recalls a group message (its sender, or the owner or an admin, within the window).
    /// Returns the recaller's RECALL entry version (0 if already recalled).
    pub fn recall_group(
        &self,
        user: &str,
        group_id: &str,
        msg_id: MsgId,
        now_ms: i64,
        window_ms: i64,
    ) -> Pending<u64> {
        let (user, group_id) = (user.to_owned(), group_id.to_owned());
        self.change(false, move |txn| {
            recall_group(txn, &user, &group_id, msg_id.0, now_ms, window_ms)
        })
    }
}

fn group_change(
    txn: &mut Change<'_>,
    by: &str,
    change: GroupChange,
    now_ms: i64,
    limits: GroupLimits,
) -> Result<GroupInfo> {
    match change {
        GroupChange::Create {
            name,
            members,
            history,
            join_policy,
        } => group_create(
            txn,
            by,
            &name,
            members,
            (history, join_policy),
            now_ms,
            limits,
        ),
        GroupChange::Join { group_id, users } => {
            group_join(txn, by, &group_id, users, now_ms, limits)
        }
        GroupChange::Leave { group_id, user } => {
            group_leave(txn, by, &group_id, user.as_deref(), now_ms, limits)
        }
        GroupChange::SetRole {
            group_id,
            user,
            role,
        } => set_role(txn, by, &group_id, &user, role, now_ms),
    }
}

/// The event a group change makes: its kind, what changed, and the users it is about.
fn describe(by: &str, change: &GroupChange) -> (EventKind, &'static str, Vec<String>) {
    match change {
        GroupChange::Create { members, .. } => {
            (EventKind::GroupCreated, "created", members.clone())
        }
        GroupChange::Join { users, .. } => (EventKind::GroupChanged, "joined", users.clone()),
        GroupChange::Leave { user: Some(u), .. } if u != by => {
            (EventKind::GroupChanged, "removed", vec![u.clone()])
        }
        GroupChange::Leave { .. } => (EventKind::GroupChanged, "left", vec![by.to_owned()]),
        GroupChange::SetRole { user, .. } => {
            (EventKind::GroupChanged, "role_changed", vec![user.clone()])
        }
    }
}

/// Tells the members of a membership change: write fan-out, an entry in each of `to`'s inboxes
/// (pushed); read fan-out, an entry in the inbox of the member concerned only, and a
/// GROUP_NOTIFY with the event to the online members (`notify`).
#[allow(clippy::too_many_arguments)]
fn announce(
    txn: &mut Change<'_>,
    group_id: &str,
    mode: FanoutMode,
    to: &[String],
    notify: Option<std::sync::Arc<Vec<String>>>,
    event: GroupEvent,
    now_ms: i64,
) -> Result<()> {
    let inboxes: Vec<&str> = match mode {
        FanoutMode::Write => to.iter().map(String::as_str).collect(),
        FanoutMode::Read => vec![event.user_id.as_str()],
    };
    let views = inboxes.into_iter().map(|u| (u, group_conv(group_id)));
    let deliveries = txn.append_each(views, now_ms, &Body::GroupEvent(event.clone()))?;
    txn.deliver(deliveries, None);
    if let (FanoutMode::Read, Some(members)) = (mode, notify) {
        let last_seq = txn.counter(Family::Convs, &ConvKey::group(group_id).0)?;
        txn.notify_group(group_id, last_seq, None, Some(event), members, None);
    }
    Ok(())
}

/// Switches a group's `members` from one fan-out to the other. Write to read: their stored
/// counts leave their totals (read fan-out counts are computed), and each gets a read-group
/// index entry. Read to write: each gets its computed count stored (and added to its total)
/// and a contact entry with the group's last message, since read fan-out touched none.
/// O(members): a switch happens at the fan-out threshold, so there are about that many.
fn switch_mode(
    txn: &mut Change<'_>,
    group_id: &str,
    members: &[String],
    to: FanoutMode,
) -> Result<()> {
    let ck = ConvKey::group(group_id);
    match to {
        FanoutMode::Read => {
            for m in members {
                forget_count(txn, m, &ck)?;
                txn.put(Family::Unread, keys::read_group(m, group_id), Vec::new());
            }
        }
        FanoutMode::Write => {
            for m in members {
                // Read fan-out kept no contact entry: each member gets one with the last
                // message it may see.
                let last_msg = last_visible(txn, m, group_id)?;
                let count = group_unread_in(txn, m, &ck)?;
                txn.delete(Family::Unread, keys::read_group(m, group_id));
                if count > 0 {
                    txn.set_counter(Family::Unread, keys::unread_conv(m, &ck), count);
                    txn.add_counter(Family::Unread, keys::unread_total(m), count as i64)?;
                }
                if let Some(msg_id) = last_msg {
                    // The contact's time is its last message's (the id's millisecond part).
                    let at = (msg_id >> 22) as i64;
                    let view = group_conv(group_id);
                    touch_contact(txn, m, &ck, view, msg_id, at)?;
                }
            }
        }
    }
    Ok(())
}

fn group_create(
    txn: &mut Change<'_>,
    owner: &str,
    name: &str,
    members: Vec<String>,
    (history, join_policy): (HistoryVisibility, JoinPolicy),
    now_ms: i64,
    limits: GroupLimits,
) -> Result<GroupInfo> {
    let all = unique(std::iter::once(owner.to_owned()).chain(members));
    if all.len() > limits.max_group_size {
        return Err(refused(
            ErrorCode::GroupFull,
            "more members than max_group_size",
        ));
    }
    check_group_caps(txn, &all, limits)?;
    let mut group_id = new_group_id();
    while txn.exists(Family::Groups, &keys::group(&group_id))? {
        group_id = new_group_id();
    }
    let mode = limits.mode(all.len());
    let info = GroupInfo {
        group_id: group_id.clone(),
        name: name.to_owned(),
        owner: owner.to_owned(),
        member_count: all.len() as u32,
        history: history as i32,
        fanout: mode as i32,
        last_seq: 0,
        join_policy: join_policy as i32,
    };
    txn.put(Family::Groups, keys::group(&group_id), info.encode_to_vec());
    for user in &all {
        let role = if user == owner {
            GroupRole::Owner
        } else {
            GroupRole::Member
        };
        add_member(txn, &group_id, user, role, Joining::new(0, now_ms, mode))?;
    }
    txn.set_members(&group_id, all.clone());
    let event = GroupEvent {
        kind: GroupEventKind::Created as i32,
        user_id: owner.to_owned(),
        by_user: owner.to_owned(),
        role: GroupRole::Owner as i32,
    };
    // Read fan-out: the owner's entry only; the members learn of the group from GROUP_LIST.
    announce(txn, &group_id, mode, &all, None, event, now_ms)?;
    Ok(info)
}

fn group_join(
    txn: &mut Change<'_>,
    by: &str,
    group_id: &str,
    users: Vec<String>,
    now_ms: i64,
    limits: GroupLimits,
) -> Result<GroupInfo> {
    let joining = if users.is_empty() {
        if member_of(txn, group_id, by)?.is_some() {
            return group_view(txn, group_info(txn, group_id)?);
        }
        // Only an open group can be joined by a user who is not in it; to everyone else an
        // invite-only group does not exist.
        match group_info(txn, group_id) {
            Ok(info) if is_open(&info) => vec![by.to_owned()],
            Ok(_) | Err(_) => return Err(no_such_group()),
        }
    } else {
        let me = require_member(txn, group_id, by)?;
        require_manager(&me, "adds members")?;
        unique(users)
    };
    let mut info = group_info(txn, group_id)?;
    let mut new = Vec::with_capacity(joining.len());
    for u in joining {
        if member_of(txn, group_id, &u)?.is_none() {
            new.push(u);
        }
    }
    if new.is_empty() {
        return group_view(txn, info);
    }
    let count = info.member_count as usize + new.len();
    if count > limits.max_group_size {
        return Err(refused(
            ErrorCode::GroupFull,
            "the group is at max_group_size",
        ));
    }
    check_group_caps(txn, &new, limits)?;
    let (old_mode, mode) = (mode_of(&info), limits.mode(count));
    // Read everything that needs the committed store before the first write.
    let members = txn.members(group_id)?;
    let last_seq = txn.counter(Family::Convs, &ConvKey::group(group_id).0)?;
    if old_mode != mode {
        switch_mode(txn, group_id, &members, mode)?;
    }
    let joining = Joining {
        rejoin: true,
        ..Joining::new(last_seq, now_ms, mode)
    };
    for user in &new {
        add_member(txn, group_id, user, GroupRole::Member, joining)?;
    }
    info.member_count = count as u32;
    info.fanout = mode as i32;
    txn.put(Family::Groups, keys::group(group_id), info.encode_to_vec());
    let everyone = txn.add_members(group_id, &new);
    for user in &new {
        let event = GroupEvent {
            kind: GroupEventKind::Joined as i32,
            user_id: user.clone(),
            by_user: by.to_owned(),
            role: GroupRole::Member as i32,
        };
        announce(
            txn,
            group_id,
            mode,
            &everyone,
            Some(everyone.clone()),
            event,
            now_ms,
        )?;
    }
    group_view(txn, info)
}

fn group_leave(
    txn: &mut Change<'_>,
    by: &str,
    group_id: &str,
    user: Option<&str>,
    now_ms: i64,
    limits: GroupLimits,
) -> Result<GroupInfo> {
    let target = user.unwrap_or(by);
    let me = require_member(txn, group_id, by)?;
    let member = if target == by {
        me.clone()
    } else {
        require_manager(&me, "removes members")?;
        member_of(txn, group_id, target)?
            .ok_or_else(|| refused(ErrorCode::NotFound, "not a member of this group"))?
    };
    let mut info = group_info(txn, group_id)?;
    if target == info.owner {
        return Err(refused(
            ErrorCode::Forbidden,
            "the owner cannot leave or be removed",
        ));
    }
    if target != by && me.role == GroupRole::Admin as i32 && member.role != GroupRole::Member as i32
    {
        return Err(refused(
            ErrorCode::Forbidden,
            "an admin removes members, not other admins",
        ));
    }
    let count = (info.member_count as usize).saturating_sub(1);
    let (old_mode, mode) = (mode_of(&info), limits.mode(count));
    // The member list needs the committed store: read it before the first write.
    txn.members(group_id)?;
    remove_member(txn, group_id, &member, old_mode)?;
    let everyone = txn.remove_member(group_id, target);
    if old_mode != mode {
        switch_mode(txn, group_id, &everyone, mode)?;
    }
    info.member_count = count as u32;
    info.fanout = mode as i32;
    txn.put(Family::Groups, keys::group(group_id), info.encode_to_vec());
    let kind = if target == by {
        GroupEventKind::Left
    } else {
        GroupEventKind::Removed
    };
    let event = GroupEvent {
        kind: kind as i32,
        user_id: target.to_owned(),
        by_user: by.to_owned(),
        role: member.role,
    };
    // The leaver is told as well as those who stay.
    let mut to: Vec<String> = everyone.to_vec();
    to.push(target.to_owned());
    announce(
        txn,
        group_id,
        mode,
        &to,
        Some(everyone.clone()),
        event,
        now_ms,
    )?;
    group_view(txn, info)
}

fn set_role(
    txn: &mut Change<'_>,
    by: &str,
    group_id: &str,
    user: &str,
    role: GroupRole,
    now_ms: i64,
) -> Result<GroupInfo> {
    let me = require_member(txn, group_id, by)?;
    if me.role != GroupRole::Owner as i32 {
        return Err(refused(ErrorCode::Forbidden, "only the owner sets roles"));
    }
    if role == GroupRole::Owner {
        return Err(refused(
            ErrorCode::InvalidArgument,
            "role must be ADMIN or MEMBER (ownership cannot be given away)",
        ));
    }
    let mut member = member_of(txn, group_id, user)?
        .ok_or_else(|| refused(ErrorCode::NotFound, "not a member of this group"))?;
    let info = group_info(txn, group_id)?;
    if member.role == GroupRole::Owner as i32 {
        return Err(refused(
            ErrorCode::Forbidden,
            "the owner's role cannot change",
        ));
    }
    if member.role == role as i32 {
        return group_view(txn, info);
    }
    let members = txn.members(group_id)?;
    member.role = role as i32;
    txn.put(
        Family::Members,
        keys::member(group_id, user),
        member.encode_to_vec(),
    );
    let event = GroupEvent {
        kind: GroupEventKind::RoleChanged as i32,
        user_id: user.to_owned(),
        by_user: by.to_owned(),
        role: role as i32,
    };
    announce(
        txn,
        group_id,
        mode_of(&info),
        &members,
        Some(members.clone()),
        event,
        now_ms,
    )?;
    group_view(txn, info)
}

fn send_group(
    txn: &mut Change<'_>,
    mut req: SendRequest,
    exclude: Option<SessionId>,
) -> Result<SendOutcome> {
    let content = std::mem::take(&mut req.content);
    let group_id = req.to.id.clone();
    if let Some(settled) = req.settled(txn)? {
        return Ok(settled);
    }
    require_member(txn, &group_id, &req.from)?;
    let info = group_info(txn, &group_id)?;
    let write_mode = mode_of(&info) == FanoutMode::Write;
    let members = txn.members(&group_id)?;
    let ck = ConvKey::group(&group_id);
    let conv = group_conv(&group_id);
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
        } else {
            txn.add_counter(Family::Unread, keys::unread_conv(user, &ck), 1)?;
            txn.add_counter(Family::Unread, keys::unread_total(user), 1)?;
        }
        deliveries.push(Delivery {
            user: user.clone(),
            entry,
            watch: false,
        });
    }
    // Sending means the sender has seen the group up to here.
    txn.set_counter(Family::Unread, keys::read_pos(&req.from, &ck), seq);
    if write_mode {
        forget_count(txn, &req.from, &ck)?;
    }
    let ack = SendAck {
        client_msg_id: req.client_msg_id.clone(),
        msg_id,
        seq,
        timestamp_ms: req.now_ms,
        version,
        duplicate: false,
        content: req.ack_content(&msg.content),
    };
    txn.put(
        Family::Dedup,
        keys::dedup(&req.from, &req.client_msg_id),
        ack.encode_to_vec(),
    );
    if write_mode {
        // Read fan-out groups get no offline push: it would cost a write per member.
        txn.queue_offline_pushes(msg_id, &req.from, &mut deliveries);
    }
    txn.event(EventKind::MessageStored, req.now_ms, || {
        stored_fields(&req.client_msg_id, &conv, &msg)
    });
    if !write_mode && !req.mentions.is_empty() {
        // Read fan-out groups notify nobody offline, except the members @mentioned: a point
        // read per mention (at most 50), not a write per member.
        let mut mentioned = Vec::with_capacity(req.mentions.len());
        for m in &req.mentions {
            if *m != req.from && member_of(txn, &group_id, m)?.is_some() {
                mentioned.push(m.as_str());
            }
        }
        txn.queue_offline_only(msg_id, &mentioned);
    }
    let writes = txn.writes();
    txn.deliver(deliveries, exclude);
    if !write_mode {
        // Online members get the message itself when it is small (they pull only after a gap).
        let inline = (msg.content.len() <= NOTIFY_INLINE_MAX).then_some(msg);
        txn.notify_group(&group_id, seq, inline, None, members, exclude);
    }
    Ok(SendOutcome {
        ack,
        writes,
        refused: None,
    })
}

fn recall_group(
    txn: &mut Change<'_>,
    user: &str,
    group_id: &str,
    msg_id: u64,
    now_ms: i64,
    window_ms: i64,
) -> Result<u64> {
    // Membership first: a non-member learns nothing about the group or its messages.
    let me = require_member(txn, group_id, user)?;
    let info = group_info(txn, group_id)?;
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
    if now_ms.saturating_sub(msg.timestamp_ms) > window_ms {
        return Err(refused(
            ErrorCode::RecallWindowExpired,
            "the recall window of this message has passed",
        ));
    }
    let write_mode = mode_of(&info) == FanoutMode::Write;
    let members = txn.members(group_id)?;
    let ck = ConvKey::group(group_id);
    if write_mode {
        // Each member who had not read it counts one unread message fewer.
        for m in members.iter().filter(|m| **m != msg.from_user) {
            let pos = txn.counter(Family::Unread, &keys::read_pos(m, &ck))?;
            let count = txn.counter(Family::Unread, &keys::unread_conv(m, &ck))?;
            if msg.seq > pos && count > 0 {
                txn.set_counter(Family::Unread, keys::unread_conv(m, &ck), count - 1);
                txn.add_counter(Family::Unread, keys::unread_total(m), -1)?;
            }
        }
    }
    super::media::drop_refs(txn, &msg);
    let recalled = pb::Message {
        recalled: true,
        content: Vec::new(),
        media: Vec::new(),
        ..msg
    };
    txn.put(
        Family::Content,
        keys::content(recalled.msg_id).to_vec(),
        recalled.encode_to_vec(),
    );
    txn.put(
        Family::Recalled,
        keys::recalled(&ck, recalled.seq),
        Vec::new(),
    );
    let own = [user.to_owned()];
    let to: &[String] = if write_mode { &members } else { &own };
    let body = Body::Recall(pb::Recall {
        msg_id: recalled.msg_id,
        seq: recalled.seq,
        by_user: user.to_owned(),
    });
    let views = to.iter().map(|m| (m.as_str(), group_conv(group_id)));
    let deliveries = txn.append_each(views, now_ms, &body)?;
    let version = version_of(&deliveries, user);
    txn.event(EventKind::MessageRecalled, now_ms, || {
        message_fields(recalled.msg_id, ("by", user), &group_conv(group_id))
    });
    txn.deliver(deliveries, None);
    if !write_mode {
        let last_seq = txn.counter(Family::Convs, &ck.0)?;
        txn.notify_group(group_id, last_seq, None, None, members, None);
    }
    Ok(version)
}
