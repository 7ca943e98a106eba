//! Groups: create, look at, add and remove members, set roles. Each change is the one the
//! protocol's request (GROUP_CREATE, GROUP_JOIN, GROUP_LEAVE, GROUP_SET_ROLE) makes, made as a
//! user, by default the group's owner, through the same `service::groups` function as the
//! socket's, so the checks, the rules, the limits and the events members receive are the same.
//! The protocol has no rename, so neither has the API.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use missive_protocol::pb::{self, FanoutMode, GroupRole, HistoryVisibility, JoinPolicy};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, Body, Path, Query};
use super::state::AppState;
use crate::service::groups;
use crate::service::ids::check_id;
use crate::service::run::blocking;
use crate::store::GroupChange;

/// Members per page of `GET /v1/groups/{group}` (default and most).
const MEMBERS_DEFAULT: usize = 1000;
const MEMBERS_MAX: usize = 10_000;

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
    /// `"invite"` (default: members are added by the owner or an admin) or `"open"` (any user
    /// who knows the id may also join).
    #[serde(default)]
    join_policy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    users: Vec<String>,
    /// Who adds them (an owner or admin); absent: the owner.
    by: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    /// `"admin"` or `"member"`.
    role: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByQuery {
    /// Who removes (an owner or admin, or the member itself); absent: the owner.
    by: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// The last member id of the previous page.
    after: Option<String>,
    limit: Option<usize>,
}

/// `POST /v1/groups`: 201 with the new group.
pub async fn create(
    State(shared): State<AppState>,
    Body(body): Body<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let owner = body
        .owner
        .unwrap_or_else(|| shared.config.system_user.clone());
    check_id("owner", &owner)?;
    let history = match body.history.as_deref() {
        None | Some("full") => HistoryVisibility::Full,
        Some("from_join") => HistoryVisibility::FromJoin,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "history: {other:?} is not \"full\" or \"from_join\""
            )))
        }
    };
    let join_policy = match body.join_policy.as_deref() {
        None | Some("invite") => JoinPolicy::Invite,
        Some("open") => JoinPolicy::Open,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "join_policy: {other:?} is not \"invite\" or \"open\""
            )))
        }
    };
    let change = GroupChange::Create {
        name: body.name,
        members: body.members,
        history,
        join_policy,
    };
    let group = groups::change(&shared, &owner, change).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "group": group_json(&group) })),
    ))
}

/// `GET /v1/groups/{group}?after=&limit=`: the group and a page of its members (in id order;
/// `next_after` names the next page's `after`, absent on the last).
pub async fn get(
    State(shared): State<AppState>,
    Path(group_id): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = page.limit.unwrap_or(MEMBERS_DEFAULT).clamp(1, MEMBERS_MAX);
    let cursor = page.after.unwrap_or_default().into_bytes();
    let read = groups::members(None, &group_id, cursor, limit)?;
    let (group, (members, next)) = blocking(&shared, read).await?;
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
    let mut answer = json!({ "group": group_json(&group), "members": members });
    if !next.is_empty() {
        answer["next_after"] = String::from_utf8_lossy(&next).into_owned().into();
    }
    Ok(Json(answer))
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
    // A user adding only itself joins by itself (an open group), as GROUP_JOIN without ids.
    let users = if body.users == [by.as_str()] {
        Vec::new()
    } else {
        body.users
    };
    let change = GroupChange::Join { group_id, users };
    let group = groups::change(&shared, &by, change).await?;
    Ok(Json(json!({ "group": group_json(&group) })))
}

/// `DELETE /v1/groups/{group}/members/{user}`: GROUP_LEAVE by `by` (default the owner).
pub async fn remove_member(
    State(shared): State<AppState>,
    Path((group_id, user)): Path<(String, String)>,
    Query(query): Query<ByQuery>,
) -> Result<Json<Value>, ApiError> {
    check_id("user", &user)?;
    let by = acting_user(&shared, &group_id, query.by).await?;
    let change = GroupChange::Leave {
        group_id,
        user: Some(user),
    };
    let group = groups::change(&shared, &by, change).await?;
    Ok(Json(json!({ "group": group_json(&group) })))
}

/// `PUT /v1/groups/{group}/members/{user}` with `{"role": "admin" | "member"}`: GROUP_SET_ROLE
/// by the owner.
pub async fn set_role(
    State(shared): State<AppState>,
    Path((group_id, user)): Path<(String, String)>,
    Body(body): Body<RoleBody>,
) -> Result<Json<Value>, ApiError> {
    check_id("user", &user)?;
    let role = match body.role.as_str() {
        "admin" => GroupRole::Admin,
        "member" => GroupRole::Member,
        other => {
            return Err(ApiError::invalid(format!(
                "role: {other:?} is not \"admin\" or \"member\""
            )))
        }
    };
    let owner = acting_user(&shared, &group_id, None).await?;
    let change = GroupChange::SetRole {
        group_id,
        user,
        role,
    };
    let group = groups::change(&shared, &owner, change).await?;
    Ok(Json(json!({ "group": group_json(&group) })))
}

/// `by` if given (checked), else the group's owner (NOT_FOUND if there is no such group).
async fn acting_user(
    shared: &AppState,
    group_id: &str,
    by: Option<String>,
) -> Result<String, ApiError> {
    if let Some(by) = by {
        check_id("by", &by)?;
        return Ok(by);
    }
    Ok(groups::info(shared, group_id).await?.owner)
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
    let join_policy = match JoinPolicy::try_from(g.join_policy) {
        Ok(JoinPolicy::Open) => "open",
        _ => "invite",
    };
    json!({
        "group_id": g.group_id,
        "name": g.name,
        "owner": g.owner,
        "member_count": g.member_count,
        "history": history,
        "join_policy": join_policy,
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
