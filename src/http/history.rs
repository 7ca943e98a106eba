//! `GET /v1/users/{user}/history`: a page of one of a user's conversations, direct or group,
//! as the user's own devices read it with HISTORY (PROTOCOL.md 24): the same service function,
//! so the same rules (a group's members only, FROM_JOIN, messages the user deleted left out),
//! limits and read positions.

use axum::extract::State;
use axum::Json;
use missive_protocol::pb::{self, ConversationKind, HistoryOrder};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, Path, Query};
use super::state::AppState;
use crate::service::groups::page_limit;
use crate::service::history::{self, HISTORY_DEFAULT, HISTORY_MAX};
use crate::service::ids::check_id;
use crate::service::run::blocking;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    /// The other user of a direct conversation ...
    with: Option<String>,
    /// ... or a group id.
    group: Option<String>,
    /// `newest` (default: messages before `before`, newest first) or `oldest` (after `after`,
    /// oldest first).
    order: Option<String>,
    before: Option<u64>,
    after: Option<u64>,
    /// Messages per page: default 50, at most 500.
    limit: Option<u32>,
}

/// `GET /v1/users/{user}/history?with=bob` (or `?group=g...`): the page and the read positions.
pub async fn get(
    State(shared): State<AppState>,
    Path(user): Path<String>,
    Query(q): Query<HistoryParams>,
) -> Result<Json<Value>, ApiError> {
    check_id("user", &user)?;
    let (conversation, named) = match (q.with, q.group) {
        (Some(id), None) => (conv(ConversationKind::Direct, &id), json!({ "user": id })),
        (None, Some(id)) => (conv(ConversationKind::Group, &id), json!({ "group": id })),
        _ => {
            return Err(ApiError::invalid(
                "name one conversation: ?with=USER or ?group=GROUP",
            ))
        }
    };
    let order = match q.order.as_deref() {
        None | Some("newest") => HistoryOrder::NewestFirst,
        Some("oldest") => HistoryOrder::OldestFirst,
        Some(_) => return Err(ApiError::invalid("order: \"newest\" or \"oldest\"")),
    };
    let req = pb::History {
        conversation: Some(conversation),
        before_seq: q.before.unwrap_or(0),
        after_seq: q.after.unwrap_or(0),
        limit: 0,
        order: order as i32,
    };
    let limit = page_limit(q.limit.unwrap_or(0), HISTORY_DEFAULT, HISTORY_MAX);
    let read = history::history(&user, req, limit, shared.config.max_frame_len / 2)?;
    let page = blocking(&shared, read).await?;
    let messages: Vec<Value> = page.messages.iter().map(message_json).collect();
    Ok(Json(json!({
        "user": user,
        "conversation": named,
        "messages": messages,
        "has_more": page.has_more,
        "next_seq": page.next_seq,
        "last_seq": page.last_seq,
        "read_seq": page.read_seq,
        "peer_read_seq": page.peer_read_seq,
    })))
}

fn conv(kind: ConversationKind, id: &str) -> pb::Conversation {
    pb::Conversation {
        kind: kind as i32,
        id: id.to_owned(),
    }
}

/// A message as JSON: the id as a decimal string (ids pass 2^53), the content as base64, and
/// also as `content` when it is UTF-8 text.
fn message_json(m: &pb::Message) -> Value {
    let mut v = json!({
        "msg_id": m.msg_id.to_string(),
        "from": m.from_user,
        "seq": m.seq,
        "timestamp_ms": m.timestamp_ms,
        "content_type": m.content_type,
        "content_base64": missive_protocol::base64::encode(&m.content),
        "client_msg_id": m.client_msg_id,
        "recalled": m.recalled,
    });
    if let Ok(text) = std::str::from_utf8(&m.content) {
        v["content"] = text.into();
    }
    v
}
