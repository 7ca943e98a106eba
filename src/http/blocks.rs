//! Blocks on behalf of a user (PROTOCOL.md 15.7): `GET /v1/users/{user}/blocks` lists whom the
//! user blocked, `PUT` and `DELETE /v1/users/{user}/blocks/{other}` block and unblock. The same
//! service functions as BLOCK and BLOCK_LIST, so the same rules and limits.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, Path, Query};
use super::state::AppState;
use crate::service::blocks::{self, LIST_DEFAULT, LIST_MAX};
use crate::service::groups::page_limit;
use crate::service::ids::check_id;
use crate::service::run::blocking;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Start after this user id.
    after: Option<String>,
    /// Users per page: default 200, at most 1000.
    limit: Option<u32>,
}

/// `GET /v1/users/{user}/blocks?after=&limit=`: `{"user", "blocked": [ids], "has_more",
/// "total"}`, in user id order.
pub async fn list(
    State(shared): State<AppState>,
    Path(user): Path<String>,
    Query(q): Query<ListParams>,
) -> Result<Json<Value>, ApiError> {
    check_id("user", &user)?;
    let limit = page_limit(q.limit.unwrap_or(0), LIST_DEFAULT, LIST_MAX);
    let read = blocks::list(&user, q.after.unwrap_or_default(), limit)?;
    let page = blocking(&shared, read).await?;
    Ok(Json(json!({
        "user": user,
        "blocked": page.user_ids,
        "has_more": page.has_more,
        "total": page.total,
    })))
}

/// `PUT /v1/users/{user}/blocks/{other}`: `user` blocks `other`. `{"blocked": true}`.
pub async fn block(
    State(shared): State<AppState>,
    Path((user, other)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    set(shared, user, other, true).await
}

/// `DELETE /v1/users/{user}/blocks/{other}`: `user` unblocks `other`. `{"blocked": false}`.
pub async fn unblock(
    State(shared): State<AppState>,
    Path((user, other)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    set(shared, user, other, false).await
}

async fn set(
    shared: AppState,
    user: String,
    other: String,
    blocked: bool,
) -> Result<Json<Value>, ApiError> {
    check_id("user", &user)?;
    let now = blocks::block(&shared, &user, &other, blocked).await?;
    Ok(Json(
        json!({ "user": user, "other": other, "blocked": now }),
    ))
}
