//! `POST /v1/messages`: the app's backend sends a message as a user or as the system account.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use missive_protocol::pb::{self, Conversation, ConversationKind};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, Body};
use super::state::AppState;
use crate::service::messages::{submit_send, Sender, Via};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    /// The sender; absent: the system account (`system_user`).
    from: Option<String>,
    /// `{"user": "bob"}` or `{"group": "g..."}`.
    #[serde(default)]
    to: Target,
    /// The idempotency key: a repeat stores nothing and gets the first send's answer.
    #[serde(default)]
    client_msg_id: String,
    #[serde(default = "text")]
    content_type: u32,
    /// Content as UTF-8 text ...
    content: Option<String>,
    /// ... or as base64 (standard or URL-safe alphabet, padding optional).
    content_base64: Option<String>,
    /// Group messages: the members to @mention (user ids, at most 50).
    #[serde(default)]
    mentions: Vec<String>,
    /// Media the message carries, by id (PROTOCOL.md section 28), at most 10: uploaded by the
    /// sender or readable by it.
    #[serde(default)]
    media: Vec<String>,
}

fn text() -> u32 {
    1
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    user: Option<String>,
    group: Option<String>,
}

/// Stores the message exactly as a SEND from `from` would be (the same validation, dedup and
/// pushes: every online device of the recipients, and of the sender, gets it). 201 when stored,
/// 200 when `client_msg_id` had been stored before (`"duplicate": true`, the first answer).
pub async fn send(
    State(shared): State<AppState>,
    Body(body): Body<SendBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (from, req) = body.into_send()?;
    let from = from.unwrap_or_else(|| shared.config.system_user.clone());
    let sender = Sender {
        user: &from,
        device: "",
        session: None,
        via: Via::Http,
    };
    let ack = submit_send(&shared, sender, req, None).await?;
    Ok(answer(&from, &ack))
}

/// The answer to a send: 201 when stored, 200 for a duplicate (the first send's ack), with the
/// SEND_ACK's fields (also for a user's own send, `POST /v1/send` on the public ports).
pub fn answer(from: &str, ack: &pb::SendAck) -> (StatusCode, Json<Value>) {
    let status = if ack.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut body = json!({
        "from": from,
        "client_msg_id": ack.client_msg_id,
        // A decimal string: message ids pass 2^53, where JSON numbers stop being exact.
        "msg_id": ack.msg_id.to_string(),
        "seq": ack.seq,
        "timestamp_ms": ack.timestamp_ms,
        "version": ack.version,
        "duplicate": ack.duplicate,
    });
    // The content as stored, when moderation changed it (PROTOCOL.md 15.8).
    if !ack.content.is_empty() {
        body["content_base64"] = missive_protocol::base64::encode(&ack.content).into();
        if let Ok(text) = std::str::from_utf8(&ack.content) {
            body["content"] = text.into();
        }
    }
    (status, Json(body))
}

impl SendBody {
    /// The sender the body names (if any) and the SEND it asks for, checked as the API checks
    /// its JSON (the service checks the rest, as for a socket's SEND).
    pub fn into_send(self) -> Result<(Option<String>, pb::Send), ApiError> {
        let body = self;
        let to = match (body.to.user, body.to.group) {
            (Some(id), None) => Some(conversation(ConversationKind::Direct, id)),
            (None, Some(id)) => Some(conversation(ConversationKind::Group, id)),
            (None, None) => None,
            (Some(_), Some(_)) => return Err(ApiError::invalid("to: a user or a group, not both")),
        };
        let content = match (body.content, body.content_base64) {
            (Some(t), None) => t.into_bytes(),
            (None, Some(b)) => missive_protocol::base64::decode(&b)
                .ok_or_else(|| ApiError::invalid("content_base64: not valid base64"))?,
            (None, None) => Vec::new(),
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid("content or content_base64, not both"))
            }
        };
        let req = pb::Send {
            client_msg_id: body.client_msg_id,
            to,
            content_type: body.content_type,
            content,
            mentions: body.mentions,
            media: body
                .media
                .into_iter()
                .map(|media_id| pb::MediaRef {
                    media_id,
                    ..Default::default()
                })
                .collect(),
        };
        Ok((body.from, req))
    }
}

fn conversation(kind: ConversationKind, id: String) -> Conversation {
    Conversation {
        kind: kind as i32,
        id,
    }
}
