//! Requests after login: validate, run the store change on the blocking pool, reply.

use std::sync::Arc;

use missive_protocol::pb::{self, Conversation, ConversationKind};
use missive_protocol::token::MAX_ID_LEN;
use missive_protocol::{ErrorCode, Packet};

use super::Refusal;
use crate::router::SessionHandle;
use crate::server::Shared;
use crate::store::{self, Delivery, GroupLimits, GroupSend, SendRequest, StoreError};

const SYNC_DEFAULT: u32 = 200;
const SYNC_MAX: u32 = 5000;
const CONTACTS_DEFAULT: u32 = 50;
const CONTACTS_MAX: u32 = 200;

/// Runs store work on the blocking pool and maps its errors to wire codes. A storage failure
/// (not a refusal) starts a clean shutdown: the server cannot go on safely.
pub(crate) async fn blocking<T, F>(shared: &Arc<Shared>, f: F) -> Result<T, Refusal>
where
    T: Send + 'static,
    F: FnOnce(&Shared) -> store::Result<T> + Send + 'static,
{
    let s = shared.clone();
    match tokio::task::spawn_blocking(move || f(&s)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(StoreError::Refused { code, message })) => Err(Refusal::new(code, message)),
        Ok(Err(e)) => {
            tracing::error!("store failure, shutting down: {e}");
            shared.shutdown.cancel();
            Err(Refusal::new(ErrorCode::Internal, "storage failure"))
        }
        Err(e) => {
            tracing::error!("store task failed: {e}");
            Err(Refusal::new(ErrorCode::Internal, "internal error"))
        }
    }
}

pub(crate) fn check_id(what: &str, id: &str) -> Result<(), Refusal> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            format!("{what} must be 1 to {MAX_ID_LEN} bytes"),
        ));
    }
    Ok(())
}

/// Checks a conversation named by the client (groups are checked by the store).
fn check_conv(user: &str, conv: Option<&Conversation>) -> Result<Conversation, Refusal> {
    let conv =
        conv.ok_or_else(|| Refusal::new(ErrorCode::InvalidArgument, "conversation missing"))?;
    check_id("conversation id", &conv.id)?;
    match ConversationKind::try_from(conv.kind) {
        Ok(ConversationKind::Direct) if conv.id == user => Err(Refusal::new(
            ErrorCode::InvalidArgument,
            "a direct conversation needs another user",
        )),
        Ok(ConversationKind::Direct) => Ok(conv.clone()),
        Ok(ConversationKind::Group) => Ok(conv.clone()),
        _ => Err(Refusal::new(
            ErrorCode::InvalidArgument,
            "conversation kind must be DIRECT or GROUP",
        )),
    }
}

/// Handles one request from a logged-in session.
pub async fn handle(
    shared: &Arc<Shared>,
    session: &Arc<SessionHandle>,
    packet: Packet,
) -> Result<Packet, Refusal> {
    let user = session.user.clone();
    let sid = session.id;
    let now = crate::now_ms();
    match packet {
        Packet::Send(req) => {
            check_id("client_msg_id", &req.client_msg_id)?;
            let to = check_conv(&user, req.to.as_ref())?;
            if req.content_type == 0 {
                return Err(Refusal::new(
                    ErrorCode::InvalidArgument,
                    "content_type 0 is invalid",
                ));
            }
            if req.content.len() > shared.config.max_content_len {
                return Err(Refusal::new(
                    ErrorCode::ContentTooLarge,
                    format!(
                        "content is limited to {} bytes",
                        shared.config.max_content_len
                    ),
                ));
            }
            let limits = group_limits(shared);
            let out = blocking(shared, move |s| {
                let r = SendRequest {
                    from: &user,
                    client_msg_id: &req.client_msg_id,
                    to: &to,
                    content_type: req.content_type,
                    content: &req.content,
                    now_ms: now,
                };
                if to.kind == ConversationKind::Group as i32 {
                    let (out, send) = s.store.send_group(&r, limits)?;
                    fan_out(s, &to.id, send, Some(sid));
                    Ok(out)
                } else {
                    s.store
                        .send_direct(&r, &|d: Vec<Delivery>| s.router.deliver(d, Some(sid)))
                }
            })
            .await?;
            Ok(Packet::SendAck(out.ack))
        }
        Packet::Sync(req) => {
            let limit = match req.limit {
                0 => SYNC_DEFAULT,
                n => n.min(SYNC_MAX),
            } as usize;
            // Half the frame limit leaves room for one maximal message past the budget.
            let max_bytes = shared.config.max_frame_len / 2;
            let page = blocking(shared, move |s| {
                s.store
                    .inbox_after(&user, req.since_version, limit, max_bytes)
            })
            .await?;
            let new_version = page
                .entries
                .last()
                .map(|e| e.version)
                .unwrap_or(req.since_version);
            Ok(Packet::SyncAck(pb::SyncAck {
                entries: page.entries,
                new_version,
                has_more: page.has_more,
                current_version: page.current_version,
            }))
        }
        Packet::Contacts(req) => {
            let limit = match req.limit {
                0 => CONTACTS_DEFAULT,
                n => n.min(CONTACTS_MAX),
            } as usize;
            let max_bytes = shared.config.max_frame_len / 2;
            let (contacts, next_cursor) = blocking(shared, move |s| {
                s.store.contacts(&user, &req.cursor, limit, max_bytes)
            })
            .await?;
            Ok(Packet::ContactsAck(pb::ContactsAck {
                contacts,
                next_cursor,
            }))
        }
        Packet::Unread(_) => {
            let ack = blocking(shared, move |s| s.store.unread(&user)).await?;
            Ok(Packet::UnreadAck(ack))
        }
        Packet::MarkRead(req) => {
            let conv = check_conv(&user, req.conversation.as_ref())?;
            let ack = blocking(shared, move |s| {
                s.store.mark_read(&user, &conv, req.up_to_seq, now, &|d| {
                    s.router.deliver(d, None)
                })
            })
            .await?;
            Ok(Packet::MarkReadAck(ack))
        }
        Packet::Recall(req) => {
            let conv = check_conv(&user, req.conversation.as_ref())?;
            let window = shared.config.recall_window_secs as i64 * 1000;
            let limits = group_limits(shared);
            let version = blocking(shared, move |s| {
                if conv.kind == ConversationKind::Group as i32 {
                    let (v, send) = s
                        .store
                        .recall_group(&user, &conv.id, req.msg_id, now, window, limits)?;
                    fan_out(s, &conv.id, send, None);
                    Ok(v)
                } else {
                    s.store.recall(&user, &conv, req.msg_id, now, window, &|d| {
                        s.router.deliver(d, None)
                    })
                }
            })
            .await?;
            Ok(Packet::RecallAck(pb::RecallAck { version }))
        }
        Packet::Delete(req) => {
            let conv = check_conv(&user, req.conversation.as_ref())?;
            let version = blocking(shared, move |s| {
                s.store.delete(&user, &conv, req.msg_id, now, &|d| {
                    s.router.deliver(d, None)
                })
            })
            .await?;
            Ok(Packet::DeleteAck(pb::DeleteAck { version }))
        }
        other => super::groups::handle(shared, &user, now, other).await,
    }
}

/// The store's view of the group settings.
pub fn group_limits(shared: &Shared) -> GroupLimits {
    GroupLimits {
        fanout_threshold: shared.config.fanout_threshold,
        max_group_size: shared.config.max_group_size,
    }
}

/// Pushes a group change's inbox entries and sends read-fan-out notifications.
pub fn fan_out(s: &Shared, group_id: &str, send: GroupSend, exclude: Option<u64>) {
    s.router.deliver(send.entries, exclude);
    if let Some((members, last_seq)) = send.notify {
        s.router.notify_group(group_id, last_seq, &members, exclude);
    }
}
