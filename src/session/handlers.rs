//! Requests after login: validate, run the store change on the blocking pool, reply.

use std::sync::Arc;

use missive_protocol::pb::{self, Conversation, ConversationKind};
use missive_protocol::token::MAX_ID_LEN;
use missive_protocol::{ErrorCode, Packet};

use super::Refusal;
use crate::router::SessionHandle;
use crate::server::Shared;
use crate::store::{self, GroupLimits, SendRequest, StoreError};

const SYNC_DEFAULT: u32 = 200;
const SYNC_MAX: u32 = 5000;
const CONTACTS_DEFAULT: u32 = 50;
const CONTACTS_MAX: u32 = 200;

/// Runs store reads on the blocking pool and maps their errors to wire codes.
pub(crate) async fn blocking<T, F>(shared: &Arc<Shared>, f: F) -> Result<T, Refusal>
where
    T: Send + 'static,
    F: FnOnce(&Shared) -> store::Result<T> + Send + 'static,
{
    let s = shared.clone();
    match tokio::task::spawn_blocking(move || f(&s)).await {
        Ok(r) => refusal(shared, r),
        Err(e) => {
            tracing::error!("store task failed: {e}");
            Err(Refusal::new(ErrorCode::Internal, "internal error"))
        }
    }
}

/// Runs a small store read (a few keys) at once on this task when what it reads is in memory
/// (memtables, block cache), which is the usual case; only a read that needs the disk goes to
/// the blocking pool. Saves a thread handoff per LOGIN and per UNREAD.
pub(crate) async fn small_read<T, F>(shared: &Arc<Shared>, f: F) -> Result<T, Refusal>
where
    T: Send + 'static,
    F: Fn(&Shared) -> store::Result<T> + Send + 'static,
{
    match shared.store.in_memory(|| f(shared)) {
        Some(r) => refusal(shared, r),
        None => blocking(shared, f).await,
    }
}

/// Maps a store result to the reply: a refusal keeps its code; a storage failure starts a clean
/// shutdown, since the server cannot go on safely.
pub(crate) fn refusal<T>(shared: &Shared, r: store::Result<T>) -> Result<T, Refusal> {
    match r {
        Ok(v) => Ok(v),
        Err(StoreError::Refused { code, message }) => {
            let mut r = Refusal::new(code, message);
            if code == ErrorCode::ServerBusy {
                r.retry_after_ms = 1000 + rand::random_range(0..2000);
            }
            Err(r)
        }
        Err(e) => {
            tracing::error!("store failure, shutting down: {e}");
            shared.shutdown.cancel();
            Err(Refusal::new(ErrorCode::Internal, "storage failure"))
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

/// Where a send came from (for the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Socket,
    Http,
}

/// A SEND from a logged-in session; resolves to the reply once it is committed.
pub fn send(
    shared: &Arc<Shared>,
    session: &SessionHandle,
    req: pb::Send,
) -> impl std::future::Future<Output = Result<Packet, Refusal>> + Send + 'static {
    let ack = submit_send(shared, &session.user, Some(session.id), Via::Socket, req);
    async move { Ok(Packet::SendAck(ack.await?)) }
}

/// Starts a send by `from`, the one path for SENDs from sockets and the HTTP API: validates it
/// and hands it to the store's writer at once (so sends are stored in the order they arrived);
/// the returned future resolves to the ack once it is committed. `session` (the sender's own
/// connection) gets no push of the message; every other online device of both sides does.
pub fn submit_send(
    shared: &Arc<Shared>,
    from: &str,
    session: Option<u64>,
    via: Via,
    req: pb::Send,
) -> impl std::future::Future<Output = Result<pb::SendAck, Refusal>> + Send + 'static {
    let started = start_send(shared, from, session, req);
    let shared = shared.clone();
    async move {
        let out = refusal(&shared, started?.await)?;
        let counter = match (out.ack.duplicate, via) {
            (true, _) => &shared.metrics.sends_duplicate,
            (false, Via::Socket) => &shared.metrics.messages_in_socket,
            (false, Via::Http) => &shared.metrics.messages_in_http,
        };
        counter.inc();
        Ok(out.ack)
    }
}

fn start_send(
    shared: &Shared,
    from: &str,
    session: Option<u64>,
    req: pb::Send,
) -> Result<store::Pending<store::SendOutcome>, Refusal> {
    check_id("client_msg_id", &req.client_msg_id)?;
    let to = check_conv(from, req.to.as_ref())?;
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
    let r = SendRequest {
        from: from.to_owned(),
        client_msg_id: req.client_msg_id,
        to,
        content_type: req.content_type,
        content: req.content,
        now_ms: crate::now_ms(),
    };
    Ok(if r.to.kind == ConversationKind::Group as i32 {
        shared.store.send_group(r, group_limits(shared), session)
    } else {
        shared.store.send_direct(r, session)
    })
}

/// Handles one request from a logged-in session.
pub async fn handle(
    shared: &Arc<Shared>,
    session: &Arc<SessionHandle>,
    packet: Packet,
) -> Result<Packet, Refusal> {
    let user = session.user.to_string();
    let now = crate::now_ms();
    match packet {
        Packet::Send(req) => send(shared, session, req).await,
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
            shared.metrics.sync_pages.inc();
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
            let ack = small_read(shared, move |s| s.store.unread(&user)).await?;
            Ok(Packet::UnreadAck(ack))
        }
        Packet::MarkRead(req) => {
            let conv = check_conv(&user, req.conversation.as_ref())?;
            let pending = shared.store.mark_read(&user, &conv, req.up_to_seq, now);
            let ack = refusal(shared, pending.await)?;
            Ok(Packet::MarkReadAck(ack))
        }
        Packet::Recall(req) => {
            let conv = check_conv(&user, req.conversation.as_ref())?;
            let window = shared.config.recall_window_secs as i64 * 1000;
            let pending = if conv.kind == ConversationKind::Group as i32 {
                let limits = group_limits(shared);
                shared
                    .store
                    .recall_group(&user, &conv.id, req.msg_id, now, window, limits)
            } else {
                shared.store.recall(&user, &conv, req.msg_id, now, window)
            };
            let version = refusal(shared, pending.await)?;
            Ok(Packet::RecallAck(pb::RecallAck { version }))
        }
        Packet::Delete(req) => {
            let conv = check_conv(&user, req.conversation.as_ref())?;
            let pending = shared.store.delete(&user, &conv, req.msg_id, now);
            let version = refusal(shared, pending.await)?;
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
