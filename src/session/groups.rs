//! Group requests: create, join, leave, members, list, history.

use std::sync::Arc;

use missive_protocol::pb::{self, HistoryVisibility};
use missive_protocol::{ErrorCode, Packet};

use super::handlers::{blocking, check_id, group_limits, refusal};
use super::Refusal;
use crate::server::Shared;
use crate::store::GroupChange;

const HISTORY_DEFAULT: u32 = 50;
const HISTORY_MAX: u32 = 500;
const MAX_NAME_LEN: usize = 128;

/// Handles a group request from `user`.
pub async fn handle(
    shared: &Arc<Shared>,
    user: &str,
    now: i64,
    packet: Packet,
) -> Result<Packet, Refusal> {
    let user = user.to_owned();
    let limits = group_limits(shared);
    match packet {
        Packet::GroupCreate(req) => {
            if req.name.len() > MAX_NAME_LEN {
                return Err(Refusal::new(
                    ErrorCode::InvalidArgument,
                    format!("group name is limited to {MAX_NAME_LEN} bytes"),
                ));
            }
            for m in &req.members {
                check_id("member id", m)?;
            }
            let history = HistoryVisibility::try_from(req.history).map_err(|_| {
                Refusal::new(ErrorCode::InvalidArgument, "unknown history visibility")
            })?;
            let change = GroupChange::Create {
                name: req.name,
                members: req.members,
                history,
            };
            let group = refusal(
                shared,
                shared.store.group_change(&user, change, now, limits).await,
            )?;
            Ok(Packet::GroupCreateAck(pb::GroupAck { group: Some(group) }))
        }
        Packet::GroupJoin(req) => {
            check_id("group_id", &req.group_id)?;
            for m in &req.user_ids {
                check_id("user id", m)?;
            }
            let change = GroupChange::Join {
                group_id: req.group_id,
                users: req.user_ids,
            };
            let group = refusal(
                shared,
                shared.store.group_change(&user, change, now, limits).await,
            )?;
            Ok(Packet::GroupJoinAck(pb::GroupAck { group: Some(group) }))
        }
        Packet::GroupLeave(req) => {
            check_id("group_id", &req.group_id)?;
            let change = GroupChange::Leave {
                group_id: req.group_id,
                user: (!req.user_id.is_empty()).then_some(req.user_id),
            };
            let group = refusal(
                shared,
                shared.store.group_change(&user, change, now, limits).await,
            )?;
            Ok(Packet::GroupLeaveAck(pb::GroupAck { group: Some(group) }))
        }
        Packet::GroupMembers(req) => {
            check_id("group_id", &req.group_id)?;
            let (group, members) = blocking(shared, move |s| {
                s.store.group_members(&user, &req.group_id, limits)
            })
            .await?;
            Ok(Packet::GroupMembersAck(pb::GroupMembersAck {
                group: Some(group),
                members,
            }))
        }
        Packet::GroupList(_) => {
            let groups = blocking(shared, move |s| s.store.group_list(&user, limits)).await?;
            Ok(Packet::GroupListAck(pb::GroupListAck { groups }))
        }
        Packet::GroupHistory(req) => {
            check_id("group_id", &req.group_id)?;
            let limit = match req.limit {
                0 => HISTORY_DEFAULT,
                n => n.min(HISTORY_MAX),
            } as usize;
            let max_bytes = shared.config.max_frame_len / 2;
            let (messages, has_more) = blocking(shared, move |s| {
                let (before, after) = (req.before_seq, req.after_seq);
                s.store
                    .group_history(&user, &req.group_id, before, after, limit, max_bytes)
            })
            .await?;
            Ok(Packet::GroupHistoryAck(pb::GroupHistoryAck {
                messages,
                has_more,
            }))
        }
        other => Err(Refusal::new(
            ErrorCode::UnknownCommand,
            format!("{} is not a request", other.command().name()),
        )),
    }
}
