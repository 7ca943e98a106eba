//! Group requests: create, join, leave, set a role (changes, through the writer) and members,
//! list, history (reads, off the connection threads).
//!
//! Lists from the client are checked by their length before anything else is looked at: at
//! most [`MAX_IDS_PER_REQUEST`] user ids, and no more than `max_group_size`.

use std::sync::Arc;

use missive_protocol::pb::{self, GroupRole, HistoryOrder, HistoryVisibility, JoinPolicy};
use missive_protocol::{ErrorCode, Packet};

use super::handlers::{check_id, group_limits, heavy, refusal, Answer};
use super::Refusal;
use crate::server::Shared;
use crate::store::GroupChange;

const HISTORY_DEFAULT: u32 = 50;
const HISTORY_MAX: u32 = 500;
const LIST_DEFAULT: u32 = 100;
const LIST_MAX: u32 = 500;
const MEMBERS_DEFAULT: u32 = 500;
const MEMBERS_MAX: u32 = 1000;
const MAX_NAME_LEN: usize = 128;
/// Most user ids one GROUP_CREATE or GROUP_JOIN may name (PROTOCOL.md 20).
pub const MAX_IDS_PER_REQUEST: usize = 1000;

/// Checks a list of user ids from a request: its length first, then each id.
fn check_users(shared: &Shared, what: &str, users: &[String]) -> Result<(), Refusal> {
    if users.len() > MAX_IDS_PER_REQUEST {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            format!("at most {MAX_IDS_PER_REQUEST} user ids per request"),
        ));
    }
    if users.len() >= shared.config.max_group_size {
        return Err(Refusal::new(
            ErrorCode::GroupFull,
            "more user ids than max_group_size",
        ));
    }
    for u in users {
        check_id(what, u)?;
    }
    Ok(())
}

/// What a group request costs against the connection's rate of changes: 1, plus 1 per user id
/// it names (each is a member record the writer adds), at most [`MAX_IDS_PER_REQUEST`] (a
/// longer list is refused unread). Reads cost nothing here.
pub fn cost(packet: &Packet) -> Option<u32> {
    let ids = |n: usize| n.min(MAX_IDS_PER_REQUEST) as u32;
    Some(match packet {
        Packet::GroupCreate(r) => 1 + ids(r.members.len()),
        Packet::GroupJoin(r) => 1 + ids(r.user_ids.len()),
        Packet::GroupLeave(_) | Packet::GroupSetRole(_) => 1,
        _ => return None,
    })
}

/// A group change from `user` (also the Server API's path): validated, then run by the writer.
pub async fn change(
    shared: &Arc<Shared>,
    user: &str,
    now: i64,
    packet: Packet,
) -> Result<Packet, Refusal> {
    let limits = group_limits(shared);
    let (change, reply): (GroupChange, fn(pb::GroupAck) -> Packet) = match packet {
        Packet::GroupCreate(req) => {
            if req.name.len() > MAX_NAME_LEN {
                return Err(Refusal::new(
                    ErrorCode::InvalidArgument,
                    format!("group name is limited to {MAX_NAME_LEN} bytes"),
                ));
            }
            check_users(shared, "member id", &req.members)?;
            let history = HistoryVisibility::try_from(req.history).map_err(|_| {
                Refusal::new(ErrorCode::InvalidArgument, "unknown history visibility")
            })?;
            let join_policy = JoinPolicy::try_from(req.join_policy)
                .map_err(|_| Refusal::new(ErrorCode::InvalidArgument, "unknown join policy"))?;
            let change = GroupChange::Create {
                name: req.name,
                members: req.members,
                history,
                join_policy,
            };
            (change, Packet::GroupCreateAck)
        }
        Packet::GroupJoin(req) => {
            check_id("group_id", &req.group_id)?;
            check_users(shared, "user id", &req.user_ids)?;
            let change = GroupChange::Join {
                group_id: req.group_id,
                users: req.user_ids,
            };
            (change, Packet::GroupJoinAck)
        }
        Packet::GroupLeave(req) => {
            check_id("group_id", &req.group_id)?;
            if !req.user_id.is_empty() {
                check_id("user_id", &req.user_id)?;
            }
            let change = GroupChange::Leave {
                group_id: req.group_id,
                user: (!req.user_id.is_empty()).then_some(req.user_id),
            };
            (change, Packet::GroupLeaveAck)
        }
        Packet::GroupSetRole(req) => {
            check_id("group_id", &req.group_id)?;
            check_id("user_id", &req.user_id)?;
            let role = match GroupRole::try_from(req.role) {
                Ok(r @ (GroupRole::Admin | GroupRole::Member)) => r,
                _ => {
                    return Err(Refusal::new(
                        ErrorCode::InvalidArgument,
                        "role must be ADMIN (1) or MEMBER (0)",
                    ))
                }
            };
            let change = GroupChange::SetRole {
                group_id: req.group_id,
                user: req.user_id,
                role,
            };
            (change, Packet::GroupSetRoleAck)
        }
        other => {
            return Err(Refusal::new(
                ErrorCode::UnknownCommand,
                format!("{} is not a group change", other.command().name()),
            ))
        }
    };
    let pending = shared.store.group_change(user, change, now, limits);
    let group = refusal(shared, pending.await)?;
    Ok(reply(pb::GroupAck { group: Some(group) }))
}

fn page_limit(asked: u32, default: u32, max: u32) -> usize {
    let n = match asked {
        0 => default,
        n => n.min(max),
    };
    n as usize
}

/// A group read by `user`, answered off the connection threads ([`heavy`]).
pub async fn read(shared: &Arc<Shared>, user: &str, packet: Packet) -> Result<Answer, Refusal> {
    let user = user.to_owned();
    let max_bytes = shared.config.max_frame_len / 2;
    match packet {
        Packet::GroupMembers(req) => {
            check_id("group_id", &req.group_id)?;
            let limit = page_limit(req.limit, MEMBERS_DEFAULT, MEMBERS_MAX);
            heavy(shared, move |s| {
                let (group, (members, next_cursor)) =
                    s.store
                        .group_members(Some(&user), &req.group_id, &req.cursor, limit)?;
                Ok(Packet::GroupMembersAck(pb::GroupMembersAck {
                    group: Some(group),
                    members,
                    next_cursor,
                }))
            })
            .await
        }
        Packet::GroupList(req) => {
            let limit = page_limit(req.limit, LIST_DEFAULT, LIST_MAX);
            heavy(shared, move |s| {
                let (groups, next_cursor) =
                    s.store.group_list(&user, &req.cursor, limit, max_bytes)?;
                Ok(Packet::GroupListAck(pb::GroupListAck {
                    groups,
                    next_cursor,
                }))
            })
            .await
        }
        Packet::GroupHistory(req) => {
            check_id("group_id", &req.group_id)?;
            let limit = page_limit(req.limit, HISTORY_DEFAULT, HISTORY_MAX);
            let order = HistoryOrder::try_from(req.order)
                .map_err(|_| Refusal::new(ErrorCode::InvalidArgument, "unknown history order"))?;
            heavy(shared, move |s| {
                let (messages, has_more) = s.store.group_history(
                    &user,
                    &req.group_id,
                    order,
                    req.before_seq,
                    req.after_seq,
                    limit,
                    max_bytes,
                )?;
                Ok(Packet::GroupHistoryAck(pb::GroupHistoryAck {
                    messages,
                    has_more,
                }))
            })
            .await
        }
        other => Err(Refusal::new(
            ErrorCode::UnknownCommand,
            format!("{} is not a request", other.command().name()),
        )),
    }
}
