//! Muted conversations (MUTE): per user and conversation, a key in `unread` that the offline
//! push reads when it is about to announce a message ([`super::push_queue`]). Muting changes
//! nothing else: messages, pushes and unread counts stay as they are.

use missive_protocol::pb::{Conversation, ConversationKind};

use super::error::Result;
use super::family::Family;
use super::keys::{self, ConvKey};
use super::membership::require_member;
use super::pending::Pending;
use super::read::Reader;
use super::writer::Store;

impl Store {
    /// Mutes (`muted`) or unmutes `conv` for `user`; returns the state now. A group must have
    /// the user as a member (else NOT_FOUND, as for every group request of a non-member); a
    /// direct conversation may be muted before its first message. Idempotent.
    pub fn set_muted(&self, user: &str, conv: &Conversation, muted: bool) -> Pending<bool> {
        let (user, conv) = (user.to_owned(), conv.clone());
        self.change(false, move |txn| {
            if conv.kind == ConversationKind::Group as i32 {
                require_member(txn, &conv.id, &user)?;
            }
            let key = keys::muted(&user, &ConvKey::for_view(&user, &conv));
            if muted {
                txn.put(Family::Unread, key, Vec::new());
            } else {
                txn.delete(Family::Unread, key);
            }
            Ok(muted)
        })
    }
}

/// Whether `user` muted the conversation `ck`.
pub(crate) fn is_muted(r: &impl Reader, user: &str, ck: &ConvKey) -> Result<bool> {
    r.exists(Family::Unread, &keys::muted(user, ck))
}
