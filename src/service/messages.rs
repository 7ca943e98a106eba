//! Messages: send (from a socket or the HTTP API: one path), mark read, recall, delete. Each is
//! checked here and then handed to the store's writer; the answer comes once it is committed.

use std::future::Future;
use std::sync::Arc;

use missive_protocol::pb::{self, Conversation, ConversationKind};
use missive_protocol::ErrorCode;

use super::ids::{check_conv, check_id};
use super::refusal::Refusal;
use super::run::{outcome, unread_total};
use crate::clock::now_ms;
use crate::context::Shared;
use crate::ids::{MsgId, Seq, SessionId};
use crate::moderation::Verdict;
use crate::store::{self, Moderated, SendRequest};

/// Where a send came from (for the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Socket,
    Http,
}

/// Starts a send by `from`, the one path for SENDs from sockets and the HTTP API: checks it
/// and hands it to the store's writer at once (so sends are stored in the order they arrived);
/// the returned future resolves to the ack once it is committed. `session` (the sender's own
/// connection) gets no push of the message; every other online device of both sides does.
pub fn submit_send(
    shared: &Arc<Shared>,
    from: &str,
    session: Option<SessionId>,
    via: Via,
    req: pb::Send,
) -> impl Future<Output = Result<pb::SendAck, Refusal>> + Send + 'static {
    let started = start_send(shared, from, session, req);
    let shared = shared.clone();
    async move {
        let out = outcome(&shared, started?.await)?;
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
    session: Option<SessionId>,
    req: pb::Send,
) -> Result<store::Pending<store::SendOutcome>, Refusal> {
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
    let (content, moderated) = moderate(shared, req.content_type, req.content);
    let r = SendRequest {
        from: from.to_owned(),
        client_msg_id: req.client_msg_id,
        to,
        content_type: req.content_type,
        content,
        mentions,
        now_ms: now_ms(),
        moderated,
    };
    Ok(if r.to.kind == ConversationKind::Group as i32 {
        shared.store.send_group(r, session)
    } else {
        shared.store.send_direct(r, session)
    })
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
