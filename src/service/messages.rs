//! Messages: send (from a socket or the HTTP API: one path), mark read, recall, delete. Each is
//! checked here and then handed to the store's writer; the answer comes once it is committed.

use std::future::Future;
use std::sync::Arc;

use missive_protocol::pb::{self, Conversation, ConversationKind};
use missive_protocol::ErrorCode;

use super::ids::{check_conv, check_id};
use super::refusal::Refusal;
use super::run::{outcome, small_read, unread_total};
use crate::clock::now_ms;
use crate::context::Shared;
use crate::ids::{MsgId, Seq, SessionId};
use crate::moderation::hook::{HookRequest, HookVerdict};
use crate::moderation::Verdict;
use crate::store::{self, Moderated, SendRequest};
use tokio::sync::oneshot;

/// Where a send came from (for the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Socket,
    Http,
}

/// Who sends.
#[derive(Debug, Clone, Copy)]
pub struct Sender<'a> {
    pub user: &'a str,
    /// The sending device ("" for the Server API's `POST /v1/messages`).
    pub device: &'a str,
    /// The sender's own connection: it gets no push of the message (every other online device
    /// of both sides does).
    pub session: Option<SessionId>,
    pub via: Via,
}

/// One connection's sends, in the order they reach the store when the before-send hook is on:
/// the hook answers them in any order, and each is queued for the writer only after the one
/// before it.
#[derive(Debug, Default)]
pub struct SendOrder(Option<oneshot::Receiver<()>>);

/// Starts a send, the one path for SENDs from sockets and the HTTP API: checks it and runs the
/// word filter at once, then hands it to the store's writer, at once too (so sends are stored in
/// the order they arrived) or, with the before-send hook on, once the hook answered, on a task
/// of its own, in `order`. The returned future resolves to the ack once it is committed.
pub fn submit_send(
    shared: &Arc<Shared>,
    sender: Sender<'_>,
    req: pb::Send,
    order: Option<&mut SendOrder>,
) -> impl Future<Output = Result<pb::SendAck, Refusal>> + Send + 'static {
    let started = prepare(shared, sender.user, req).map(|r| match &shared.hook {
        None => Started::Now(enqueue(shared, r, sender.session)),
        Some(_) => {
            let (done, before) = oneshot::channel();
            let before = order.and_then(|o| o.0.replace(before));
            let (s, device, via) = (shared.clone(), sender.device.to_owned(), sender.via);
            let session = sender.session;
            Started::Hooked(tokio::spawn(async move {
                let r = consult_hook(&s, r, &device, via).await;
                if let Some(before) = before {
                    // Queued (or given up) by the send before: an error only means it is gone.
                    let _ = before.await;
                }
                let pending = enqueue(&s, r, session);
                let _ = done.send(());
                pending.await
            }))
        }
    });
    let (shared, via) = (shared.clone(), sender.via);
    async move {
        let result = match started? {
            Started::Now(pending) => pending.await,
            Started::Hooked(task) => task.await.map_err(|e| {
                tracing::error!("send task failed: {e}");
                Refusal::new(ErrorCode::Internal, "internal error")
            })?,
        };
        let out = outcome(&shared, result)?;
        if let Some(r) = out.refused {
            let mut refusal = Refusal::new(r.code, r.message);
            refusal.reason = r.reason;
            return Err(refusal);
        }
        let counter = match (out.ack.duplicate, via) {
            (true, _) => &shared.metrics.sends_duplicate,
            (false, Via::Socket) => &shared.metrics.messages_in_socket,
            (false, Via::Http) => &shared.metrics.messages_in_http,
        };
        counter.inc();
        Ok(out.ack)
    }
}

/// A send handed to the store, or on its way there through the before-send hook.
enum Started {
    Now(store::Pending<store::SendOutcome>),
    Hooked(tokio::task::JoinHandle<store::Result<store::SendOutcome>>),
}

/// Queues a send for the store's writer.
fn enqueue(
    shared: &Shared,
    r: SendRequest,
    session: Option<SessionId>,
) -> store::Pending<store::SendOutcome> {
    if r.to.kind == ConversationKind::Group as i32 {
        shared.store.send_group(r, session)
    } else {
        shared.store.send_direct(r, session)
    }
}

/// The before-send hook's verdict on `r` (which the word filter did not refuse): allowed as it
/// is, refused (remembered for its client message id), its content replaced, or refused for now
/// when the hook failed and `send_hook_fail` is `closed`.
async fn consult_hook(
    shared: &Arc<Shared>,
    mut r: SendRequest,
    device: &str,
    via: Via,
) -> SendRequest {
    let Some(hook) = &shared.hook else {
        return r;
    };
    if matches!(r.moderated, Moderated::Refused { .. }) {
        return r;
    }
    // A resend of a message stored or refused before: the writer answers it as it did then.
    let (from, id) = (r.from.clone(), r.client_msg_id.clone());
    if let Ok(true) = small_read(shared, move |s| s.store.core().answered(&from, &id)).await {
        return r;
    }
    let ask = HookRequest {
        sender: &r.from,
        device,
        conversation: &r.to,
        client_msg_id: &r.client_msg_id,
        content_type: r.content_type,
        content: &r.content,
        mentions: &r.mentions,
        media: &r.media,
        via: match via {
            Via::Socket => "socket",
            Via::Http => "http",
        },
    };
    match hook.check(&ask).await {
        HookVerdict::Allow => {}
        HookVerdict::Reject { message, reason } => {
            r.moderated = Moderated::Refused {
                code: ErrorCode::ContentRejected,
                message,
                reason,
                remember: true,
            }
        }
        HookVerdict::Replace(content) => {
            r.content = content;
            r.moderated = Moderated::Changed;
        }
        HookVerdict::Unavailable(_) => {
            r.moderated = Moderated::Refused {
                code: ErrorCode::ModerationUnavailable,
                message: "moderation is unavailable: send it again later".into(),
                reason: String::new(),
                remember: false,
            }
        }
    }
    r
}

/// A send checked and through the word filter, ready for the hook or the store.
fn prepare(shared: &Shared, from: &str, req: pb::Send) -> Result<SendRequest, Refusal> {
    check_id("from", from)?;
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
    let mentions = check_mentions(&to, req.mentions)?;
    let media = check_media(req.media)?;
    let (content, moderated) = moderate(shared, req.content_type, req.content);
    Ok(SendRequest {
        from: from.to_owned(),
        client_msg_id: req.client_msg_id,
        to,
        content_type: req.content_type,
        content,
        mentions,
        media,
        now_ms: now_ms(),
        moderated,
    })
}

/// A send's media ids: at most [`store::MAX_MEDIA`], each a media id (32 hex digits); repeats
/// are dropped (the first kept, in order). Whether each exists and the sender may send it is
/// the writer's to check.
fn check_media(media: Vec<pb::MediaRef>) -> Result<Vec<String>, Refusal> {
    if media.len() > store::MAX_MEDIA {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            format!("media: at most {} per message", store::MAX_MEDIA),
        ));
    }
    let mut ids: Vec<String> = Vec::with_capacity(media.len());
    for m in media {
        if !store::valid_media_id(&m.media_id) {
            return Err(Refusal::new(
                ErrorCode::InvalidArgument,
                "media: a media_id is 32 hex digits (from an upload's finish)",
            ));
        }
        if !ids.contains(&m.media_id) {
            ids.push(m.media_id);
        }
    }
    Ok(ids)
}

/// The word filter's verdict on a send's content (PROTOCOL.md 15.8): the content to store and
/// what moderation decided. A refusal still goes to the store, which answers a client message
/// id stored before with its ack and refuses the rest, in the order of the sends.
fn moderate(shared: &Shared, content_type: u32, content: Vec<u8>) -> (Vec<u8>, Moderated) {
    match shared.words.check(content_type, &content) {
        Verdict::Pass => (content, Moderated::Unchanged),
        Verdict::Mask(text) => (text.into_bytes(), Moderated::Changed),
        Verdict::Reject => (
            Vec::new(),
            Moderated::Refused {
                code: ErrorCode::ContentRejected,
                message: "the message has a word this server does not accept".into(),
                reason: String::new(),
                remember: false,
            },
        ),
    }
}

/// @mentions a message may carry.
pub const MAX_MENTIONS: usize = 50;

/// A send's @mentions: group messages only, at most [`MAX_MENTIONS`] valid user ids; repeats
/// are dropped (the first kept, in order). Non-members may be named: they are never notified.
fn check_mentions(to: &Conversation, mentions: Vec<String>) -> Result<Vec<String>, Refusal> {
    if mentions.is_empty() {
        return Ok(mentions);
    }
    if to.kind != ConversationKind::Group as i32 {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            "mentions: only group messages @mention members",
        ));
    }
    if mentions.len() > MAX_MENTIONS {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            format!("mentions: at most {MAX_MENTIONS} user ids"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(mentions.len());
    for m in mentions {
        check_id("mentions", &m)?;
        if !out.contains(&m) {
            out.push(m);
        }
    }
    Ok(out)
}

/// `user` mutes (`muted`) or unmutes `conv` on every device; the answer is the state now.
pub async fn mute(
    shared: &Arc<Shared>,
    user: &str,
    conv: Option<&Conversation>,
    muted: bool,
) -> Result<bool, Refusal> {
    let conv = check_conv(user, conv)?;
    outcome(shared, shared.store.set_muted(user, &conv, muted).await)
}

/// `user` has read `conv` up to `up_to_seq`; the ack carries the user's new unread total.
/// Once the read is stored, if it moved the read position in a direct conversation, the other
/// user's online devices are told with a RECEIPT (coalesced: `crate::receipts`).
pub async fn mark_read(
    shared: &Arc<Shared>,
    user: &str,
    conv: Option<&Conversation>,
    up_to_seq: u64,
) -> Result<pb::MarkReadAck, Refusal> {
    let conv = check_conv(user, conv)?;
    let read_ms = now_ms();
    let pending = shared
        .store
        .mark_read_to(user, &conv, Seq(up_to_seq), read_ms);
    let marked = outcome(shared, pending.await)?;
    if marked.moved_to > 0 && conv.kind == ConversationKind::Direct as i32 {
        let now = tokio::time::Instant::now();
        let (router, to) = (&shared.router, marked.moved_to);
        shared
            .receipts
            .offer(router, user, &conv.id, to, read_ms, now);
    }
    let mut ack = marked.ack;
    // The total over every conversation is read once the change is stored, here rather than on
    // the writer (it visits each read fan-out group of the user).
    ack.total = unread_total(shared, user).await?;
    Ok(ack)
}

/// `user` recalls message `msg_id` of `conv` (within `recall_window_secs`); the answer is the
/// user's version of the change.
pub async fn recall(
    shared: &Arc<Shared>,
    user: &str,
    conv: Option<&Conversation>,
    msg_id: u64,
) -> Result<u64, Refusal> {
    let conv = check_conv(user, conv)?;
    let window = shared.config.recall_window_secs as i64 * 1000;
    let now = now_ms();
    let pending = if conv.kind == ConversationKind::Group as i32 {
        shared
            .store
            .recall_group(user, &conv.id, MsgId(msg_id), now, window)
    } else {
        shared.store.recall(user, &conv, MsgId(msg_id), now, window)
    };
    outcome(shared, pending.await)
}

/// `user` deletes message `msg_id` of `conv` for itself; the answer is the version of the
/// change.
pub async fn delete(
    shared: &Arc<Shared>,
    user: &str,
    conv: Option<&Conversation>,
    msg_id: u64,
) -> Result<u64, Refusal> {
    let conv = check_conv(user, conv)?;
    let pending = shared.store.delete(user, &conv, MsgId(msg_id), now_ms());
    outcome(shared, pending.await)
}
