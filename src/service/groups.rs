//! Groups: the changes (create, join, leave, set a role: checked here, run by the store's
//! writer) and the reads (a group with a page of members, a user's groups, a group's history),
//! for the socket's GROUP_* requests and the HTTP API's `/v1/groups` alike.
//!
//! Lists of user ids are checked by their length before anything else is looked at
//! ([`check_users`]).

use std::sync::Arc;

use missive_protocol::pb::{
    self, GroupInfo, GroupMember, GroupRole, HistoryOrder, HistoryVisibility, JoinPolicy,
};
use missive_protocol::ErrorCode;

use super::ids::{check_id, check_users, MAX_IDS_PER_REQUEST};
use super::refusal::Refusal;
use super::run::{blocking, outcome};
use crate::clock::now_ms;
use crate::context::Shared;
use crate::ids::Seq;
use crate::store::{self, GroupChange, GroupLimits, Page};

/// Longest group name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// The store's view of the group settings.
pub fn limits(shared: &Shared) -> GroupLimits {
    GroupLimits {
        fanout_threshold: shared.config.fanout_threshold,
        max_group_size: shared.config.max_group_size,
        max_groups_per_user: shared.config.max_groups_per_user,
    }
}

/// What a change costs against a connection's rate of changes: 1, plus 1 per user id it names
/// (each is a member record the writer adds), at most [`MAX_IDS_PER_REQUEST`] (a longer list is
/// refused unread).
pub fn cost(change_ids: usize) -> u32 {
    1 + change_ids.min(MAX_IDS_PER_REQUEST) as u32
}

/// Checks a change by `by` (the lengths of its lists first, then its ids and its name).
pub fn check(shared: &Shared, by: &str, change: &GroupChange) -> Result<(), Refusal> {
    check_id("user", by)?;
    let max = shared.config.max_group_size;
    match change {
        GroupChange::Create { name, members, .. } => {
            if name.len() > MAX_NAME_LEN {
                return Err(Refusal::new(
                    ErrorCode::InvalidArgument,
                    format!("group name is limited to {MAX_NAME_LEN} bytes"),
                ));
            }
            check_users("member id", members, max)
        }
        GroupChange::Join { group_id, users } => {
            check_id("group_id", group_id)?;
            check_users("user id", users, max)
        }
        GroupChange::Leave { group_id, user } => {
            check_id("group_id", group_id)?;
            match user {
                Some(u) => check_id("user_id", u),
                None => Ok(()),
            }
        }
        GroupChange::SetRole {
            group_id,
            user,
            role,
        } => {
            check_id("group_id", group_id)?;
            check_id("user_id", user)?;
            match role {
                GroupRole::Admin | GroupRole::Member => Ok(()),
                _ => Err(Refusal::new(
                    ErrorCode::InvalidArgument,
                    "role must be ADMIN (1) or MEMBER (0)",
                )),
            }
        }
    }
}

/// A group change by `by`: checked, then run by the writer; the group as it is after it.
pub async fn change(
    shared: &Arc<Shared>,
    by: &str,
    change: GroupChange,
) -> Result<GroupInfo, Refusal> {
    check(shared, by, &change)?;
    run(shared, by, change).await
}

/// GROUP_CREATE by `by`, its settings as the protocol's enum values: the name and the member
/// list are checked before the settings (PROTOCOL.md 20: a list's length before anything else).
pub async fn create(
    shared: &Arc<Shared>,
    by: &str,
    name: String,
    members: Vec<String>,
    history: i32,
    join_policy: i32,
) -> Result<GroupInfo, Refusal> {
    let mut change = GroupChange::Create {
        name,
        members,
        history: HistoryVisibility::default(),
        join_policy: JoinPolicy::default(),
    };
    check(shared, by, &change)?;
    let invalid = |what| Refusal::new(ErrorCode::InvalidArgument, what);
    if let GroupChange::Create {
        history: h,
        join_policy: j,
        ..
    } = &mut change
    {
        *h = HistoryVisibility::try_from(history)
            .map_err(|_| invalid("unknown history visibility"))?;
        *j = JoinPolicy::try_from(join_policy).map_err(|_| invalid("unknown join policy"))?;
    }
    run(shared, by, change).await
}

/// Runs a checked change on the writer.
async fn run(shared: &Arc<Shared>, by: &str, change: GroupChange) -> Result<GroupInfo, Refusal> {
    let pending = shared
        .store
        .group_change(by, change, now_ms(), limits(shared));
    outcome(shared, pending.await)
}

/// The group `group_id` as the app's backend sees it (any group; NOT_FOUND if there is none).
pub async fn info(shared: &Arc<Shared>, group_id: &str) -> Result<GroupInfo, Refusal> {
    check_id("group_id", group_id)?;
    let id = group_id.to_owned();
    blocking(shared, move |s| s.store.core().group(&id)).await
}

/// A page size asked for: `default` for 0, at most `max`.
pub fn page_limit(asked: u32, default: u32, max: u32) -> usize {
    let n = match asked {
        0 => default,
        n => n.min(max),
    };
    n as usize
}

/// A group and a page of its members.
pub type MembersPage = (GroupInfo, Page<GroupMember>);

/// The group and a page of its members after `cursor`: for `viewer`, a member (NOT_FOUND for
/// anyone else), or for the app's backend (`None`). Checked here; the returned work reads.
pub fn members(
    viewer: Option<&str>,
    group_id: &str,
    cursor: Vec<u8>,
    limit: usize,
) -> Result<impl FnOnce(&Shared) -> store::Result<MembersPage> + Send + 'static, Refusal> {
    check_id("group_id", group_id)?;
    let viewer = viewer.map(str::to_owned);
    let group_id = group_id.to_owned();
    Ok(move |s: &Shared| {
        s.store
            .core()
            .group_members(viewer.as_deref(), &group_id, &cursor, limit)
    })
}

/// A page of `user`'s groups after `cursor`, at most `max_bytes` of them.
pub fn list(
    user: &str,
    cursor: Vec<u8>,
    limit: usize,
    max_bytes: usize,
) -> impl FnOnce(&Shared) -> store::Result<pb::GroupListAck> + Send + 'static {
    let user = user.to_owned();
    move |s: &Shared| {
        let (groups, next_cursor) = s
            .store
            .core()
            .group_list(&user, &cursor, limit, max_bytes)?;
        Ok(pb::GroupListAck {
            groups,
            next_cursor,
        })
    }
}

/// A page of a group's messages for `user`, a member, in `order` between the bounds of `req`.
pub fn history(
    user: &str,
    req: pb::GroupHistory,
    limit: usize,
    max_bytes: usize,
) -> Result<impl FnOnce(&Shared) -> store::Result<pb::GroupHistoryAck> + Send + 'static, Refusal> {
    check_id("group_id", &req.group_id)?;
    let order = HistoryOrder::try_from(req.order)
        .map_err(|_| Refusal::new(ErrorCode::InvalidArgument, "unknown history order"))?;
    let user = user.to_owned();
    Ok(move |s: &Shared| {
        let (messages, has_more) = s.store.core().group_history(
            &user,
            &req.group_id,
            order,
            Seq(req.before_seq),
            Seq(req.after_seq),
            limit,
            max_bytes,
        )?;
        Ok(pb::GroupHistoryAck { messages, has_more })
    })
}
