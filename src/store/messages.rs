//! Changes: send, mark read, recall, delete. Each is one [`Txn`].

use missive_protocol::pb::{
    self, inbox_entry::Body, Contact, Conversation, ConversationKind, InboxEntry, MarkReadAck,
    SendAck,
};
use missive_protocol::ErrorCode;
use prost::Message as _;

use super::membership::{forget_count, require_member};
use super::{cf, keys, ConvKey, Core, Pending, Reader, Result, Store, StoreError, Txn};

/// An inbox entry to push to every online device of `user`.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub user: String,
    pub entry: InboxEntry,
}

/// A validated send.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub from: String,
    pub client_msg_id: String,
    pub to: Conversation,
    pub content_type: u32,
    pub content: Vec<u8>,
    pub now_ms: i64,
}

/// The result of a send.
#[derive(Debug, Clone)]
pub struct SendOutcome {
    pub ack: SendAck,
    /// Storage writes the send cost (0 for a duplicate).
    pub writes: usize,
}

fn direct(peer: &str) -> Conversation {
    Conversation {
        kind: ConversationKind::Direct as i32,
        id: peer.to_owned(),
    }
}

/// The canonical key of a stored message's conversation.
fn msg_conv(msg: &pb::Message) -> ConvKey {
    let to = msg.conversation.clone().unwrap_or_default();
    ConvKey::for_view(&msg.from_user, &to)
}

impl Store {
    /// Stores a one-to-one message: content, both inboxes, both contacts, the recipient's unread
    /// counts and the dedup record, in one change; pushes both inbox entries once committed
    /// (not to session `exclude`, the sender's). A repeated client message id gets the first
    /// send's ack, flagged duplicate, and stores nothing.
    pub fn send_direct(&self, req: SendRequest, exclude: Option<u64>) -> Pending<SendOutcome> {
        self.change(false, move |txn| send_direct(txn, req, exclude))
    }

    /// Marks `conv` read up to `up_to_seq` (clamped) for `user`. Idempotent: a read at or below
    /// the previous read position changes nothing and returns version 0. The ack's `total` is
    /// 0: read it with [`Core::unread_total`] once this is committed.
    pub fn mark_read(
        &self,
        user: &str,
        conv: &Conversation,
        up_to_seq: u64,
        now_ms: i64,
    ) -> Pending<MarkReadAck> {
        let (user, conv) = (user.to_owned(), conv.clone());
        self.change(false, move |txn| {
            super::unread::mark_read(txn, &user, &conv, up_to_seq, now_ms)
        })
    }

    /// Recalls `msg_id` (sent by `user` within `window_ms`): a RECALL entry in both inboxes, the
    /// content emptied, the recipient's unread count corrected. Returns the version of `user`'s
    /// own RECALL entry (0 if it was already recalled).
    pub fn recall(
        &self,
        user: &str,
        conv: &Conversation,
        msg_id: u64,
        now_ms: i64,
        window_ms: i64,
    ) -> Pending<u64> {
        let (user, conv) = (user.to_owned(), conv.clone());
        self.change(false, move |txn| {
            recall(txn, &user, &conv, msg_id, now_ms, window_ms)
        })
    }

    /// Deletes `msg_id` from `user`'s own view: a DELETE entry in `user`'s inbox, and the unread
    /// count lowered if it was unread. Returns the entry's version (0 if already deleted).
    pub fn delete(
        &self,
        user: &str,
        conv: &Conversation,
        msg_id: u64,
        now_ms: i64,
    ) -> Pending<u64> {
        let (user, conv) = (user.to_owned(), conv.clone());
        self.change(false, move |txn| delete(txn, &user, &conv, msg_id, now_ms))
    }
}

fn send_direct(
    txn: &mut Txn<'_>,
    mut req: SendRequest,
    exclude: Option<u64>,
) -> Result<SendOutcome> {
    let content = std::mem::take(&mut req.content);
    let (from, to) = (req.from.as_str(), req.to.id.as_str());
    if let Some(mut ack) =
        txn.get_msg::<SendAck>(cf::DEDUP, &keys::dedup(from, &req.client_msg_id))?
    {
        ack.duplicate = true;
        return Ok(SendOutcome { ack, writes: 0 });
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
        });
    }
    txn.add_counter(cf::UNREAD, keys::unread_conv(to, &conv), 1)?;
    txn.add_counter(cf::UNREAD, keys::unread_total(to), 1)?;
    // Replying means the sender has read the conversation up to here (as in groups).
    txn.set_counter(cf::UNREAD, keys::read_pos(from, &conv), seq);
    forget_count(txn, from, &conv)?;
    let ack = SendAck {
        client_msg_id: req.client_msg_id.clone(),
        msg_id,
        seq,
        timestamp_ms: req.now_ms,
        version: sender_version,
        duplicate: false,
    };
    txn.put(
        cf::DEDUP,
        keys::dedup(from, &req.client_msg_id),
        ack.encode_to_vec(),
    );
    txn.queue_offline_pushes(msg_id, &[to]);
    let writes = txn.writes();
    txn.deliver(deliveries, exclude);
    Ok(SendOutcome { ack, writes })
}

/// Allocates the conversation's next seq and a message id, and puts the message (content) and
/// its entry in the conversation log. `to` is the conversation as the sender addressed it.
pub(crate) fn put_message(
    txn: &mut Txn<'_>,
    req: &SendRequest,
    content: Vec<u8>,
    conv: &ConvKey,
    to: Conversation,
) -> Result<pb::Message> {
    let seq = txn.add_counter(cf::CONVS, conv.0.clone(), 1)?;
    let msg_id = txn.core().next_msg_id(req.now_ms);
    let msg = pb::Message {
        msg_id,
        from_user: req.from.clone(),
        conversation: Some(to),
        seq,
        timestamp_ms: req.now_ms,
        content_type: req.content_type,
        content,
        client_msg_id: req.client_msg_id.clone(),
        recalled: false,
    };
    txn.put(
        cf::CONTENT,
        keys::content(msg_id).to_vec(),
        msg.encode_to_vec(),
    );
    txn.put(
        cf::CONV_LOG,
        keys::conv_log(conv, seq),
        msg_id.to_be_bytes().to_vec(),
    );
    Ok(msg)
}

impl Core {
    /// Messages from others in `conv` after `after_seq` that `user` still sees (not recalled,
    /// not deleted by `user`).
    pub(crate) fn count_unread_after(
        &self,
        user: &str,
        conv: &ConvKey,
        after_seq: u64,
    ) -> Result<u64> {
        let mut n = 0;
        // Group counts are computed from read positions and ignore deletes (see groups.rs).
        let respect_hidden = conv.0.first() != Some(&b'g');
        for msg_id in self.conv_log_after(conv, after_seq)? {
            if self.counts_as_unread(user, msg_id, respect_hidden)? {
                n += 1;
            }
        }
        Ok(n)
    }

    fn counts_as_unread(&self, user: &str, msg_id: u64, respect_hidden: bool) -> Result<bool> {
        let Some(msg) = self.get_msg::<pb::Message>(cf::CONTENT, &keys::content(msg_id))? else {
            return Ok(false);
        };
        let hidden = respect_hidden && self.exists(cf::UNREAD, &keys::hidden(user, msg_id))?;
        Ok(msg.from_user != user && !msg.recalled && !hidden)
    }

    /// Message ids in `conv` with seq > `after_seq`, in seq order.
    pub(crate) fn conv_log_after(&self, conv: &ConvKey, after_seq: u64) -> Result<Vec<u64>> {
        let start = keys::conv_log(conv, after_seq.saturating_add(1));
        let mut out = Vec::new();
        let iter = self.iter_from(cf::CONV_LOG, &start);
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(&conv.0) || k.len() != conv.0.len() + 8 {
                break;
            }
            out.push(keys::u64_value(&v).ok_or_else(|| StoreError::Corrupt("conv_log".into()))?);
        }
        Ok(out)
    }
}

/// Loads message `msg_id` and checks it belongs to `conv` as `user` sees it.
pub(crate) fn message_in(
    r: &impl Reader,
    user: &str,
    conv: &Conversation,
    msg_id: u64,
) -> Result<pb::Message> {
    let not_found = || StoreError::refused(ErrorCode::NotFound, "no such message");
    let msg = r
        .get_msg::<pb::Message>(cf::CONTENT, &keys::content(msg_id))?
        .ok_or_else(not_found)?;
    if msg_conv(&msg) != ConvKey::for_view(user, conv) {
        return Err(not_found());
    }
    Ok(msg)
}

fn recall(
    txn: &mut Txn<'_>,
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
    let msg = pb::Message {
        recalled: true,
        content: Vec::new(),
        ..before
    };
    txn.put(
        cf::CONTENT,
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
    let own_version = super::txn::version_of(&deliveries, user);
    txn.deliver(deliveries, None);
    Ok(own_version)
}

fn delete(
    txn: &mut Txn<'_>,
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
    if txn.exists(cf::UNREAD, &hidden_key)? {
        return Ok(0);
    }
    let ck = msg_conv(&msg);
    // A group message deleted from one's view still counts (PROTOCOL.md 16).
    if conv.kind != ConversationKind::Group as i32 {
        uncount_if_unread(txn, user, &ck, &msg)?;
    }
    txn.put(cf::UNREAD, hidden_key, Vec::new());
    txn.append_own(user, conv, now_ms, Body::Delete(pb::Delete { msg_id }))
}

/// Lowers `user`'s unread counts by one if `msg` currently counts as unread for them.
/// Must run before the change that stops it counting (recall flag, hidden mark) is written.
fn uncount_if_unread(
    txn: &mut Txn<'_>,
    user: &str,
    conv: &ConvKey,
    msg: &pb::Message,
) -> Result<()> {
    if msg.from_user == user || msg.recalled {
        return Ok(());
    }
    if txn.exists(cf::UNREAD, &keys::hidden(user, msg.msg_id))? {
        return Ok(());
    }
    let pos = txn.counter(cf::UNREAD, &keys::read_pos(user, conv))?;
    let count = txn.counter(cf::UNREAD, &keys::unread_conv(user, conv))?;
    if msg.seq > pos && count > 0 {
        txn.set_counter(cf::UNREAD, keys::unread_conv(user, conv), count - 1);
        txn.add_counter(cf::UNREAD, keys::unread_total(user), -1)?;
    }
    Ok(())
}

/// Updates `user`'s recent-contact entry for `conv` to `msg_id` at `now_ms`.
pub(crate) fn touch_contact(
    txn: &mut Txn<'_>,
    user: &str,
    conv: &ConvKey,
    view: Conversation,
    msg_id: u64,
    now_ms: i64,
) -> Result<()> {
    let contact = Contact {
        conversation: Some(view),
        last_message: Some(pb::Message {
            msg_id,
            ..Default::default()
        }),
        unread: 0,
        updated_ms: now_ms,
    };
    txn.put(
        cf::CONTACTS,
        keys::contact(user, conv),
        contact.encode_to_vec(),
    );
    Ok(())
}
