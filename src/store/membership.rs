//! Group membership: the group record, member records, the rules that admit or refuse a
//! member, and the bookkeeping a member brings with it (the user's group index and count, its
//! read position and unread counter). The switch between write and read fan-out, which also
//! needs the unread counts and the contacts, is in `groups.rs`.
//!
//! A non-member learns nothing about a group: every request about a group it is not in is
//! answered as if the group did not exist (NOT_FOUND), so group ids cannot be probed. Only an
//! OPEN group can be joined by a user who is not in it.

use std::collections::HashSet;

use missive_protocol::pb::{FanoutMode, GroupInfo, GroupMember, GroupRole, JoinPolicy};
use missive_protocol::ErrorCode;
use prost::Message as _;

use super::change::Change;
use super::error::{Result, StoreError};
use super::family::Family;
use super::keys::{self, ConvKey};
use super::read::Reader;

/// Group settings the store needs.
#[derive(Debug, Clone, Copy)]
pub struct GroupLimits {
    /// Groups with more members use read fan-out.
    pub fanout_threshold: usize,
    pub max_group_size: usize,
    /// Most groups one user can belong to.
    pub max_groups_per_user: usize,
}

impl GroupLimits {
    /// The fan-out a group of `member_count` members gets at its next membership change.
    pub fn mode(&self, member_count: usize) -> FanoutMode {
        if member_count > self.fanout_threshold {
            FanoutMode::Read
        } else {
            FanoutMode::Write
        }
    }
}

/// The answer to a non-member, whether or not the group exists.
pub(crate) fn no_such_group() -> StoreError {
    StoreError::refused(ErrorCode::NotFound, "no such group")
}

/// The group's record; NOT_FOUND if there is none.
pub(crate) fn group_info(r: &impl Reader, id: &str) -> Result<GroupInfo> {
    r.get_msg::<GroupInfo>(Family::Groups, &keys::group(id))?
        .ok_or_else(no_such_group)
}

/// The group as clients see it: its last seq filled in.
pub(crate) fn group_view(r: &impl Reader, mut info: GroupInfo) -> Result<GroupInfo> {
    info.last_seq = r.get_u64(Family::Convs, &ConvKey::group(&info.group_id).0)?;
    Ok(info)
}

pub(crate) fn member_of(
    r: &impl Reader,
    group_id: &str,
    user: &str,
) -> Result<Option<GroupMember>> {
    r.get_msg(Family::Members, &keys::member(group_id, user))
}

/// The member record of `user`; NOT_FOUND if `user` is not a member, whether or not the group
/// exists (one point read either way, so not even the time taken tells them apart).
pub(crate) fn require_member(r: &impl Reader, group_id: &str, user: &str) -> Result<GroupMember> {
    member_of(r, group_id, user)?.ok_or_else(no_such_group)
}

/// The fan-out a group has now (stored with it at its last membership change).
pub(crate) fn mode_of(info: &GroupInfo) -> FanoutMode {
    FanoutMode::try_from(info.fanout).unwrap_or(FanoutMode::Write)
}

/// `by` may add members: the owner or an admin.
pub(crate) fn require_manager(member: &GroupMember, what: &str) -> Result<()> {
    if member.role == GroupRole::Member as i32 {
        return Err(StoreError::refused(
            ErrorCode::Forbidden,
            format!("only the owner or an admin {what}"),
        ));
    }
    Ok(())
}

/// Whether the group lets users join by themselves.
pub(crate) fn is_open(info: &GroupInfo) -> bool {
    info.join_policy == JoinPolicy::Open as i32
}

/// `users` without repeats, in their order (a hash set: the list may hold thousands).
pub(crate) fn unique(users: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut seen = HashSet::new();
    users
        .into_iter()
        .filter(|u| seen.insert(u.clone()))
        .collect()
}

/// LIMIT_EXCEEDED naming the first of `users` already in `limits.max_groups_per_user` groups.
pub(crate) fn check_group_caps(
    txn: &mut Change<'_>,
    users: &[String],
    limits: GroupLimits,
) -> Result<()> {
    for u in users {
        if txn.counter(Family::Unread, &keys::group_count(u))? >= limits.max_groups_per_user as u64
        {
            return Err(StoreError::refused(
                ErrorCode::LimitExceeded,
                format!(
                    "{u} is in {} groups, the most a user can be in (max_groups_per_user)",
                    limits.max_groups_per_user
                ),
            ));
        }
    }
    Ok(())
}

/// How a user joins: at the group's `last_seq`, at `now_ms`, into a group in `mode`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Joining {
    pub last_seq: u64,
    pub now_ms: i64,
    pub mode: FanoutMode,
    /// The user may be a former member, whose first join position is kept.
    pub rejoin: bool,
}

impl Joining {
    pub fn new(last_seq: u64, now_ms: i64, mode: FanoutMode) -> Joining {
        Joining {
            last_seq,
            now_ms,
            mode,
            rejoin: false,
        }
    }
}

/// Adds `user` to the group, reading from the join's last seq on.
pub(crate) fn add_member(
    txn: &mut Change<'_>,
    group_id: &str,
    user: &str,
    role: GroupRole,
    join: Joining,
) -> Result<()> {
    let Joining {
        last_seq,
        now_ms,
        mode,
        rejoin,
    } = join;
    let mut joined_seq = last_seq;
    if rejoin {
        let former: Option<GroupMember> =
            txn.get_msg(Family::Members, &keys::former_member(group_id, user))?;
        if let Some(f) = former {
            joined_seq = f.joined_seq;
            txn.delete(Family::Members, keys::former_member(group_id, user));
        }
    }
    let member = GroupMember {
        user_id: user.to_owned(),
        role: role as i32,
        joined_ms: now_ms,
        joined_seq,
    };
    txn.put(
        Family::Members,
        keys::member(group_id, user),
        member.encode_to_vec(),
    );
    txn.put(
        Family::UserGroups,
        keys::user_group(user, group_id),
        Vec::new(),
    );
    txn.add_counter(Family::Unread, keys::group_count(user), 1)?;
    // Older history is not unread: the member has read up to the group's last seq.
    let ck = ConvKey::group(group_id);
    txn.set_counter(Family::Unread, keys::read_pos(user, &ck), last_seq);
    if mode == FanoutMode::Read {
        txn.put(Family::Unread, keys::read_group(user, group_id), Vec::new());
    }
    Ok(())
}

/// Removes `member` from the group (in `mode`): its record moves to the former members, its
/// unread count leaves its total, its read position and indexes go.
pub(crate) fn remove_member(
    txn: &mut Change<'_>,
    group_id: &str,
    member: &GroupMember,
    mode: FanoutMode,
) -> Result<()> {
    let user = member.user_id.as_str();
    txn.delete(Family::Members, keys::member(group_id, user));
    txn.put(
        Family::Members,
        keys::former_member(group_id, user),
        member.encode_to_vec(),
    );
    txn.delete(Family::UserGroups, keys::user_group(user, group_id));
    txn.add_counter(Family::Unread, keys::group_count(user), -1)?;
    let ck = ConvKey::group(group_id);
    if mode == FanoutMode::Write {
        forget_count(txn, user, &ck)?;
    } else {
        txn.delete(Family::Unread, keys::read_group(user, group_id));
    }
    txn.delete(Family::Unread, keys::read_pos(user, &ck));
    Ok(())
}

/// Drops `user`'s stored count of `ck` (and takes it out of the user's total).
pub(crate) fn forget_count(txn: &mut Change<'_>, user: &str, ck: &ConvKey) -> Result<u64> {
    let count = txn.counter(Family::Unread, &keys::unread_conv(user, ck))?;
    if count > 0 {
        txn.set_counter(Family::Unread, keys::unread_conv(user, ck), 0);
        txn.add_counter(Family::Unread, keys::unread_total(user), -(count as i64))?;
    }
    Ok(count)
}
