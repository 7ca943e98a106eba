//! The offline-push queue (`push_queue`): written by sends in the batch of their message (see
//! [`Change::queue_offline_pushes`]), read and emptied by the push worker (`src/offline_push`).
//!
//! An entry is only a key (message id + user): what the notification says is read from the
//! stored message when it is sent, so a message recalled, deleted or read in the meantime is not
//! announced, and the badge is the user's unread total at that moment.

use std::sync::Arc;

use missive_protocol::pb::{self, Conversation, ConversationKind};

use super::core::Core;
use super::error::Result;
use super::family::Family;
use super::keys::{self, ConvKey};
use super::mute::is_muted;
use super::pending::Pending;
use super::read::Reader;
use super::writer::Store;

/// The key of one queued notification: message id, then user.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PushKey(Vec<u8>);

impl PushKey {
    pub fn new(msg_id: u64, user: &str) -> PushKey {
        PushKey(keys::push(msg_id, user))
    }

    pub fn msg_id(&self) -> u64 {
        keys::push_parts(&self.0).map_or(0, |(id, _)| id)
    }

    pub fn user(&self) -> &str {
        keys::push_parts(&self.0).map_or("", |(_, u)| u)
    }
}

/// A queued notification that is still due, with what it announces.
#[derive(Debug, Clone)]
pub struct PushItem {
    pub user: String,
    pub sender: String,
    /// The conversation as `user` sees it: the sender (direct) or the group.
    pub conversation: Conversation,
    pub msg_id: u64,
    pub seq: u64,
    pub timestamp_ms: i64,
    pub content_type: u32,
    pub content: Vec<u8>,
    /// `user`'s unread total now (direct and groups), for the badge.
    pub unread_total: u64,
}

impl Store {
    /// Turns offline push on: from now on sends queue notifications for offline recipients, and
    /// `wake` is notified after each commit that queued some. Set once, before the first change.
    pub fn enable_push(&self, wake: Arc<tokio::sync::Notify>) {
        let _ = self.core.push_wake.set(wake);
    }

    /// Queues a notification for each (user, message id) whatever the user's presence: pushes
    /// that no foreground device acknowledged in time (`crate::unacked`). What is said, and
    /// whether it is still due, is decided when it is sent, as for any notification.
    pub fn queue_unacked(&self, due: Vec<(Arc<str>, u64)>) -> Pending<()> {
        self.change(false, move |txn| {
            for (user, msg_id) in &due {
                txn.queue_pushes(*msg_id, &[&**user]);
            }
            Ok(())
        })
    }

    /// Removes notifications from the queue (sent, expired or obsolete).
    pub fn push_remove(&self, done: Vec<PushKey>) -> Pending<()> {
        self.change(false, move |txn| {
            for key in done {
                txn.delete(Family::PushQueue, key.0);
            }
            Ok(())
        })
    }
}

impl Core {
    /// Up to `limit` queued notifications after `after` (from the start if `None`), oldest
    /// message first (committed data).
    pub fn push_queue_after(&self, after: Option<&PushKey>, limit: usize) -> Result<Vec<PushKey>> {
        let after = after.map(|k| &k.0[..]);
        self.scan_after(Family::PushQueue, after, limit, |k, _| {
            Some(PushKey(k.to_vec()))
        })
    }

    /// Queued notifications (for tests and operators).
    pub fn push_queue_len(&self) -> Result<usize> {
        Ok(self.push_queue_after(None, usize::MAX)?.len())
    }

    /// What the notification `key` announces, or `None` if it is obsolete: the message is gone,
    /// recalled, deleted by the user, or the user has read its conversation past it or muted
    /// it (unless the message @mentions the user).
    pub fn push_item(&self, key: &PushKey) -> Result<Option<PushItem>> {
        let Some((msg_id, user)) = keys::push_parts(&key.0) else {
            return Ok(None);
        };
        let Some(msg) = self.get_msg::<pb::Message>(Family::Content, &keys::content(msg_id))?
        else {
            return Ok(None);
        };
        if msg.recalled || self.exists(Family::Unread, &keys::hidden(user, msg_id))? {
            return Ok(None);
        }
        let addressed = msg.conversation.clone().unwrap_or_default();
        let conversation = if addressed.kind == ConversationKind::Group as i32 {
            addressed
        } else {
            Conversation {
                kind: ConversationKind::Direct as i32,
                id: msg.from_user.clone(),
            }
        };
        let ck = ConvKey::for_view(user, &conversation);
        if self.get_u64(Family::Unread, &keys::read_pos(user, &ck))? >= msg.seq {
            return Ok(None);
        }
        // A muted conversation is announced only for a message that @mentions the user.
        if is_muted(self, user, &ck)? && !msg.mentions.iter().any(|m| m == user) {
            return Ok(None);
        }
        Ok(Some(PushItem {
            user: user.to_owned(),
            sender: msg.from_user,
            conversation,
            msg_id,
            seq: msg.seq,
            timestamp_ms: msg.timestamp_ms,
            content_type: msg.content_type,
            content: msg.content,
            unread_total: self.unread_total(user)?,
        }))
    }
}
