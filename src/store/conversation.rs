//! What direct and group conversations share: a send ([`SendRequest`], [`SendOutcome`]) and
//! putting its message in the conversation's log, a group's conversation, a stored message's
//! conversation, and the recent-contact entry.

use missive_protocol::pb::{self, Contact, Conversation, ConversationKind, SendAck};
use missive_protocol::ErrorCode;
use prost::Message as _;

use super::change::Change;
use super::error::{Result, StoreError};
use super::family::Family;
use super::keys::{self, ConvKey};
use super::read::Reader;

/// What moderation decided of a send before it reached the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Moderated {
    /// Nothing to say: stored as sent.
    #[default]
    Unchanged,
    /// The content was changed (masked words): stored so, and the ack carries it.
    Changed,
    /// Refused: nothing is stored. A client message id stored before still gets its ack (the
    /// message was delivered then; a resend must not be told otherwise). `remember`: the
    /// refusal is stored as the client message id's answer, so that a resend gets it again
    /// (the before-send hook's; a word-list refusal is judged again with the list in force).
    /// `reason`: the before-send hook's code for why (`Error.reason`), else empty.
    Refused {
        code: ErrorCode,
        message: String,
        reason: String,
        remember: bool,
    },
}

/// A refusal as the sender gets it: a remembered one, or one of moderation's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
    pub reason: String,
}

impl From<Rejection> for StoreError {
    fn from(r: Rejection) -> StoreError {
        StoreError::Refused {
            code: r.code,
            message: r.message,
            reason: r.reason,
        }
    }
}

/// What the dedup family holds for a sender's client message id.
#[derive(Debug, Clone)]
pub(crate) enum Dedup {
    /// The message was stored: its ack.
    Acked(SendAck),
    /// The message was refused, and the refusal remembered.
    Refused(Rejection),
}

/// First byte of a remembered refusal in `dedup` (then a `pb::Error`). An encoded SendAck never
/// starts with it: 0xFF would be field 31 with wire type 7, which does not exist.
const REFUSED: u8 = 0xFF;

/// The dedup record of `from`'s `client_msg_id`, if any.
pub(crate) fn dedup_record(
    txn: &Change<'_>,
    from: &str,
    client_msg_id: &str,
) -> Result<Option<Dedup>> {
    let key = keys::dedup(from, client_msg_id);
    let record = txn.value(Family::Dedup, &key, |v| {
        v.map(|v| match v.split_first() {
            Some((&REFUSED, rest)) => pb::Error::decode(rest).map(|e| {
                let code = ErrorCode::from_u32(e.code).unwrap_or(ErrorCode::ContentRejected);
                Dedup::Refused(Rejection {
                    code,
                    message: e.message,
                    reason: e.reason,
                })
            }),
            _ => SendAck::decode(v).map(Dedup::Acked),
        })
    })?;
    Ok(record.transpose()?)
}

impl super::core::Core {
    /// Whether `from`'s `client_msg_id` has its answer already, committed: a stored message or
    /// a remembered refusal, which its resend gets without asking moderation again.
    pub fn answered(&self, from: &str, client_msg_id: &str) -> Result<bool> {
        let key = keys::dedup(from, client_msg_id);
        let found = self
            .db()
            .get_pinned_cf_opt(self.cf(Family::Dedup), &key, &self.read_opts())?;
        Ok(found.is_some())
    }
}

/// A validated send.
#[derive(Debug, Clone, Default)]
pub struct SendRequest {
    pub from: String,
    pub client_msg_id: String,
    pub to: Conversation,
    pub content_type: u32,
    pub content: Vec<u8>,
    /// Group members @mentioned (checked ids, no duplicates; empty for direct messages).
    pub mentions: Vec<String>,
    /// Media ids the message carries (checked ids, no duplicates, at most
    /// [`MAX_MEDIA`](super::media::MAX_MEDIA)); resolved by the writer.
    pub media: Vec<String>,
    pub now_ms: i64,
    pub moderated: Moderated,
}

impl SendRequest {
    /// The start of every send's change: the answer already given to this client message id,
    /// if any (a duplicate's ack, or a remembered refusal), else moderation's refusal, if it
    /// refused (remembered if it asks to be). `None`: go on and store the message.
    pub(crate) fn settled(&self, txn: &mut Change<'_>) -> Result<Option<SendOutcome>> {
        match dedup_record(txn, &self.from, &self.client_msg_id)? {
            Some(Dedup::Acked(mut ack)) => {
                ack.duplicate = true;
                return Ok(Some(SendOutcome {
                    ack,
                    writes: 0,
                    refused: None,
                }));
            }
            Some(Dedup::Refused(rejection)) => return Err(rejection.into()),
            None => {}
        }
        match &self.moderated {
            Moderated::Refused {
                code,
                message,
                reason,
                remember,
            } => {
                let rejection = Rejection {
                    code: *code,
                    message: message.clone(),
                    reason: reason.clone(),
                };
                if !remember {
                    return Err(rejection.into());
                }
                let record = pb::Error {
                    code: *code as u32,
                    message: message.clone(),
                    reason: reason.clone(),
                    ..Default::default()
                };
                let mut value = vec![REFUSED];
                record.encode(&mut value).expect("a Vec grows");
                txn.put(
                    Family::Dedup,
                    keys::dedup(&self.from, &self.client_msg_id),
                    value,
                );
                Ok(Some(SendOutcome {
                    ack: SendAck::default(),
                    writes: txn.writes(),
                    refused: Some(rejection),
                }))
            }
            _ => Ok(None),
        }
    }

    /// What the ack says of the content: the stored content if moderation changed it, else
    /// nothing.
    pub(crate) fn ack_content(&self, stored: &[u8]) -> Vec<u8> {
        match self.moderated {
            Moderated::Changed => stored.to_vec(),
            _ => Vec::new(),
        }
    }
}

/// The result of a send.
#[derive(Debug, Clone)]
pub struct SendOutcome {
    pub ack: SendAck,
    /// Storage writes the send cost (0 for a duplicate).
    pub writes: usize,
    /// The send was refused, and the refusal remembered for its client message id (the
    /// before-send hook's): nothing else was stored, and `ack` is empty.
    pub refused: Option<Rejection>,
}

/// A group's conversation (as every member sees it).
pub(crate) fn group_conv(id: &str) -> Conversation {
    Conversation {
        kind: ConversationKind::Group as i32,
        id: id.to_owned(),
    }
}

/// The canonical key of a stored message's conversation.
pub(crate) fn msg_conv(msg: &pb::Message) -> ConvKey {
    let to = msg.conversation.clone().unwrap_or_default();
    ConvKey::for_view(&msg.from_user, &to)
}

/// Allocates the conversation's next seq and a message id, and puts the message (content) and
/// its entry in the conversation log. `to` is the conversation as the sender addressed it.
pub(crate) fn put_message(
    txn: &mut Change<'_>,
    req: &SendRequest,
    content: Vec<u8>,
    conv: &ConvKey,
    to: Conversation,
) -> Result<pb::Message> {
    let media = super::media::resolve(txn, &req.from, &req.media)?;
    let seq = txn.add_counter(Family::Convs, conv.0.clone(), 1)?;
    let msg_id = txn.core().next_msg_id(req.now_ms);
    super::media::add_refs(txn, msg_id, conv, &media);
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
        mentions: req.mentions.clone(),
        media,
    };
    txn.put(
        Family::Content,
        keys::content(msg_id).to_vec(),
        msg.encode_to_vec(),
    );
    txn.put(
        Family::ConvLog,
        keys::conv_log(conv, seq),
        msg_id.to_be_bytes().to_vec(),
    );
    Ok(msg)
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
        .get_msg::<pb::Message>(Family::Content, &keys::content(msg_id))?
        .ok_or_else(not_found)?;
    if msg_conv(&msg) != ConvKey::for_view(user, conv) {
        return Err(not_found());
    }
    Ok(msg)
}

/// Updates `user`'s recent-contact entry for `conv` to `msg_id` at `now_ms`.
pub(crate) fn touch_contact(
    txn: &mut Change<'_>,
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
        ..Contact::default()
    };
    txn.put(
        Family::Contacts,
        keys::contact(user, conv),
        contact.encode_to_vec(),
    );
    Ok(())
}
