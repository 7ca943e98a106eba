//! Groups: create, look at, add and remove members. Each change is the protocol's request
//! (GROUP_CREATE, GROUP_JOIN, GROUP_LEAVE) made as a user, by default the group's owner, so the
//! rules and the group events members receive are the same. The protocol has no rename, so
//! neither has the API.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use missive_protocol::pb::{self, FanoutMode, GroupRole, HistoryVisibility};
use missive_protocol::{ErrorCode, Packet};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, Body, Path, Query};
use super::AppState;
use crate::session::{blocking, group_limits, group_request};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// The owner; absent: the system account.
    owner: Option<String>,
    #[serde(default)]
    name: String,
    /// Members besides the owner.
    #[serde(default)]
    members: Vec<String>,
    /// `"full"` (default: members see the whole history) or `"from_join"`.
    #[serde(default)]
    history: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    users: Vec<String>,
    /// Who adds them (an owner or admin); absent: the owner.
    by: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByQuery {
    /// Who removes (an owner or admin, or the member itself); absent: the owner.
    by: Option<String>,
}

/// `POST /v1/groups`: 201 with the new group.
pub async fn create(
    State(shared): State<AppState>,
    Body(body): Body<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let owner = body
        .owner
        .unwrap_or_else(|| shared.config.system_user.clone());
    check_user("owner", &owner)?;
    let history = match body.history.as_deref() {
        None | Some("full") => HistoryVisibility::Full,
        Some("from_join") => HistoryVisibility::FromJoin,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "history: {other:?} is not \"full\" or \"from_join\""
            )))
        }
    };
    let req = Packet::GroupCreate(pb::GroupCreate {
        name: body.name,
        members: body.members,
        history: history as i32,
    });
    let group = group_ack(group_request(&shared, &owner, crate::now_ms(), req).await?)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "group": group_json(&group) })),
    ))
}

/// `GET /v1/groups/{group}`: the group and its members.
pub async fn get(
    State(shared): State<AppState>,
    Path(group_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let limits = group_limits(&shared);
    let (group, members) = blocking(&shared, move |s| {
        let info = s.store.group(&group_id, limits)?;
        s.store.group_members(&info.owner, &group_id, limits)
    })
    .await?;
    let members: Vec<Value> = members
        .iter()
        .map(|m| {
            json!({
                "user": m.user_id,
                "role": role_name(m.role),
                "joined_ms": m.joined_ms,
                "joined_seq": m.joined_seq,
            })
        })
        .collect();
    Ok(Json(
        json!({ "group": group_json(&group), "members": members }),
    ))
}

/// `POST /v1/groups/{group}/members`: adds `users` (GROUP_JOIN by `by`, default the owner).
pub async fn add_members(
    State(shared): State<AppState>,
    Path(group_id): Path<String>,
    Body(body): Body<AddBody>,
) -> Result<Json<Value>, ApiError> {
    if body.users.is_empty() {
        return Err(ApiError::invalid("users: at least one user to add"));
    }
    let by = acting_user(&shared, &group_id, body.by).await?;
    // A user adding only itself joins (as GROUP_JOIN without user ids does).
    let users = if body.users == [by.as_str()] {
        Vec::new()
    } else {
        body.users
    };
    let req = Packet::GroupJoin(pb::GroupJoin {
        group_id,
        user_ids: users,
    });
    let group = group_ack(group_request(&shared, &by, crate::now_ms(), req).await?)?;
    Ok(Json(json!({ "group": group_json(&group) })))
}

/// `DELETE /v1/groups/{group}/members/{user}`: GROUP_LEAVE by `by` (default the owner).
pub async fn remove_member(
    State(shared): State<AppState>,
    Path((group_id, user)): Path<(String, String)>,
    Query(query): Query<ByQuery>,
) -> Result<Json<Value>, ApiError> {
    check_user("user", &user)?;
    let by = acting_user(&shared, &group_id, query.by).await?;
    let req = Packet::GroupLeave(pb::GroupLeave {
        group_id,
        user_id: user,
    });
    let group = group_ack(group_request(&shared, &by, crate::now_ms(), req).await?)?;
    Ok(Json(json!({ "group": group_json(&group) })))
}

/// `by` if given (checked), else the group's owner (NOT_FOUND if there is no such group).
async fn acting_user(
    shared: &AppState,
    group_id: &str,
    by: Option<String>,
) -> Result<String, ApiError> {
    if let Some(by) = by {
        check_user("by", &by)?;
        return Ok(by);
    }
    crate::session::check_id("group_id", group_id)?;
    let limits = group_limits(shared);
    let id = group_id.to_owned();
    let info = blocking(shared, move |s| s.store.group(&id, limits)).await?;
    Ok(info.owner)
}

fn check_user(what: &str, id: &str) -> Result<(), ApiError> {
    missive_protocol::token::check_id(id).map_err(|e| ApiError::invalid(format!("{what}: {e}")))
}

fn group_ack(reply: Packet) -> Result<pb::GroupInfo, ApiError> {
    match reply {
        Packet::GroupCreateAck(a) | Packet::GroupJoinAck(a) | Packet::GroupLeaveAck(a) => a
            .group
            .ok_or_else(|| ApiError::new(ErrorCode::Internal, "group missing from the reply")),
        other => Err(ApiError::new(
            ErrorCode::Internal,
            format!("unexpected reply {}", other.command().name()),
        )),
    }
}

fn group_json(g: &pb::GroupInfo) -> Value {
    let history = match HistoryVisibility::try_from(g.history) {
        Ok(HistoryVisibility::FromJoin) => "from_join",
        _ => "full",
    };
    let fanout = match FanoutMode::try_from(g.fanout) {
        Ok(FanoutMode::Read) => "read",
        _ => "write",
    };
    json!({
        "group_id": g.group_id,
        "name": g.name,
        "owner": g.owner,
        "member_count": g.member_count,
        "history": history,
        "fanout": fanout,
        "last_seq": g.last_seq,
    })
}

fn role_name(role: i32) -> &'static str {
    match GroupRole::try_from(role) {
        Ok(GroupRole::Owner) => "owner",
        Ok(GroupRole::Admin) => "admin",
        _ => "member",
    }
}
