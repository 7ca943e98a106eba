//! Changes: a direct send, a recall of a direct message, a delete (in any conversation). Each is
//! one [`Change`]. Mark read is in `unread.rs`, group sends and recalls are in `groups.rs`.

use missive_protocol::pb::{
    self, inbox_entry::Body, Conversation, ConversationKind, InboxEntry, SendAck,
};
use missive_protocol::ErrorCode;
use prost::Message as _;

use super::blocks::{blocked_between, blocked_refusal};
use super::change::{version_of, Change};
use super::conversation::{
    message_in, msg_conv, put_message, touch_contact, SendOutcome, SendRequest,
};
use super::error::{Result, StoreError};
use super::events::{message_fields, stored_fields, EventKind};
use super::family::Family;
use super::keys::{self, ConvKey};
use super::membership::{forget_count, require_member};
use super::outbox::Delivery;
use super::pending::Pending;
use super::read::Reader;
use super::writer::Store;
use crate::ids::{MsgId, SessionId};

fn direct(peer: &str) -> Conversation {
    Conversation {
        kind: ConversationKind::Direct as i32,
        id: peer.to_owned(),
    }
}

impl Store {
    /// Stores a one-to-one message: content, both inboxes, both contacts, the recipient's unread
    /// counts and the dedup record, in one change; pushes both inbox entries once committed
    /// (not to session `exclude`, the sender's). A repeated client message id gets the first
    /// send's ack, flagged duplicate, and stores nothing. Between users one of whom blocked the
    /// other it is BLOCKED and stores nothing.
    pub fn send_direct(
        &self,
        req: SendRequest,
        exclude: Option<SessionId>,
    ) -> Pending<SendOutcome> {
        self.change(false, move |txn| send_direct(txn, req, exclude))
    }

    /// Recalls `msg_id` (sent by `user` within `window_ms`): a RECALL entry in both inboxes, the
    /// content emptied, the recipient's unread count corrected. Returns the version of `user`'s
    /// own RECALL entry (0 if it was already recalled).
    pub fn recall(
        &self,
        user: &str,
        conv: &Conversation,
        msg_id: MsgId,
        now_ms: i64,
        window_ms: i64,
    ) -> Pending<u64> {
        let (user, conv) = (user.to_owned(), conv.clone());
        self.change(false, move |txn| {
            recall(txn, &user, &conv, msg_id.0, now_ms, window_ms)
        })
    }

    /// Deletes `msg_id` from `user`'s own view: a DELETE entry in `user`'s inbox, and the unread
    /// count lowered if it was unread. Returns the entry's version (0 if already deleted).
    pub fn delete(
        &self,
        user: &str,
        conv: &Conversation,
        msg_id: MsgId,
        now_ms: i64,
    ) -> Pending<u64> {
        let (user, conv) = (user.to_owned(), conv.clone());
        self.change(false, move |txn| {
            delete(txn, &user, &conv, msg_id.0, now_ms)
        })
    }
}

fn send_direct(
    txn: &mut Change<'_>,
    mut req: SendRequest,
    exclude: Option<SessionId>,
) -> Result<SendOutcome> {
    let content = std::mem::take(&mut req.content);
    let (from, to) = (req.from.as_str(), req.to.id.as_str());
    // First: a message stored before a refusal or a block keeps its answer.
    if let Some(settled) = req.settled(txn)? {
        return Ok(settled);
    }
    if let Some(by) = blocked_between(txn, from, to)? {
        return Err(blocked_refusal(to, by));
    }
    let conv = ConvKey::direct(from, to);
    let msg = put_message(txn, &req, content, &conv, direct(to))?;
    let (msg_id, seq) = (msg.msg_id, msg.seq);
    let mut deliveries = Vec::with_capacity(2);
    let mut sender_version = 0;
    for (user, view) in [(to, direct(from)), (from, direct(to))] {
        let entry = InboxEntry {
            version: 0,
            conversation: Some(view.clone()),
            timestamp_ms: req.now_ms,
            body: Some(Body::Message(pb::Message {
                conversation: Some(view.clone()),
                ..msg.clone()
            })),
        };
        let entry = txn.append(user, entry)?;
        touch_contact(txn, user, &conv, view, msg_id, req.now_ms)?;
        if user == from {
            sender_version = entry.version;
        }
        deliveries.push(Delivery {
            user: user.to_owned(),
            entry,
            watch: false,
        });
    }
    txn.add_counter(Family::Unread, keys::unread_conv(to, &conv), 1)?;
    txn.add_counter(Family::Unread, keys::unread_total(to), 1)?;
    // Replying means the sender has read the conversation up to here (as in groups).
    txn.set_counter(Family::Unread, keys::read_pos(from, &conv), seq);
    forget_count(txn, from, &conv)?;
    let ack = SendAck {
        client_msg_id: req.client_msg_id.clone(),
        msg_id,
        seq,
        timestamp_ms: req.now_ms,
        version: sender_version,
        duplicate: false,
        content: req.ack_content(&msg.content),
    };
    txn.put(
        Family::Dedup,
        keys::dedup(from, &req.client_msg_id),
        ack.encode_to_vec(),
    );
    txn.queue_offline_pushes(msg_id, from, &mut deliveries);
    txn.event(EventKind::MessageStored, req.now_ms, || {
        stored_fields(&req.client_msg_id, &req.to, &msg)
    });
    let writes = txn.writes();
    txn.deliver(deliveries, exclude);
    Ok(SendOutcome {
        ack,
        writes,
        refused: None,
    })
}

fn recall(
    txn: &mut Change<'_>,
    user: &str,
    conv: &Conversation,
    msg_id: u64,
    now_ms: i64,
    window_ms: i64,
) -> Result<u64> {
    let before = message_in(txn, user, conv, msg_id)?;
    if before.from_user != user {
        return Err(StoreError::refused(
            ErrorCode::Forbidden,
            "only the sender can recall a message",
        ));
    }
    if before.recalled {
        return Ok(0);
    }
    if now_ms.saturating_sub(before.timestamp_ms) > window_ms {
        return Err(StoreError::refused(
            ErrorCode::RecallWindowExpired,
            format!("messages can be recalled for {} s", window_ms / 1000),
        ));
    }
    let peer = conv.id.as_str();
    let ck = msg_conv(&before);
    // Uncount while the message still counts as unread, then mark it recalled.
    uncount_if_unread(txn, peer, &ck, &before)?;
    super::media::drop_refs(txn, &before);
    let msg = pb::Message {
        recalled: true,
        content: Vec::new(),
        media: Vec::new(),
        ..before
    };
    txn.put(
        Family::Content,
        keys::content(msg_id).to_vec(),
        msg.encode_to_vec(),
    );
    let recall = Body::Recall(pb::Recall {
        msg_id,
        seq: msg.seq,
        by_user: user.to_owned(),
    });
    let to = [(peer, direct(user)), (user, direct(peer))];
    let deliveries = txn.append_each(to, now_ms, &recall)?;
    let own_version = version_of(&deliveries, user);
    txn.event(EventKind::MessageRecalled, now_ms, || {
        message_fields(msg_id, ("by", user), &direct(peer))
    });
    txn.deliver(deliveries, None);
    Ok(own_version)
}

fn delete(
    txn: &mut Change<'_>,
    user: &str,
    conv: &Conversation,
    msg_id: u64,
    now_ms: i64,
) -> Result<u64> {
    if conv.kind == ConversationKind::Group as i32 {
        require_member(txn, &conv.id, user)?;
    }
    let msg = message_in(txn, user, conv, msg_id)?;
    let hidden_key = keys::hidden(user, msg_id);
    if txn.exists(Family::Unread, &hidden_key)? {
        return Ok(0);
    }
    let ck = msg_conv(&msg);
    // A group message deleted from one's view still counts (PROTOCOL.md 16).
    if conv.kind != ConversationKind::Group as i32 {
        uncount_if_unread(txn, user, &ck, &msg)?;
    }
    txn.put(Family::Unread, hidden_key, Vec::new());
    // A direct message both users deleted is nobody's any more: it no longer keeps its media
    // alive (a group message's media stay until it is recalled).
    if conv.kind != ConversationKind::Group as i32
        && !msg.media.is_empty()
        && txn.exists(Family::Unread, &keys::hidden(&conv.id, msg_id))?
    {
        super::media::drop_refs(txn, &msg);
    }
    txn.event(EventKind::MessageDeleted, now_ms, || {
        message_fields(msg_id, ("user", user), conv)
    });
    txn.append_own(user, conv, now_ms, Body::Delete(pb::Delete { msg_id }))
}

/// Lowers `user`'s unread counts by one if `msg` currently counts as unread for them.
/// Must run before the change that stops it counting (recall flag, hidden mark) is written.
fn uncount_if_unread(
    txn: &mut Change<'_>,
    user: &str,
    conv: &ConvKey,
    msg: &pb::Message,
) -> Result<()> {
    if msg.from_user == user || msg.recalled {
        return Ok(());
    }
    if txn.exists(Family::Unread, &keys::hidden(user, msg.msg_id))? {
        return Ok(());
    }
    let pos = txn.counter(Family::Unread, &keys::read_pos(user, conv))?;
    let count = txn.counter(Family::Unread, &keys::unread_conv(user, conv))?;
    if msg.seq > pos && count > 0 {
        txn.set_counter(Family::Unread, keys::unread_conv(user, conv), count - 1);
        txn.add_counter(Family::Unread, keys::unread_total(user), -1)?;
    }
    Ok(())
}
