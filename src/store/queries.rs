//! Reads: inbox pages, recent contacts, unread counts.

use missive_protocol::pb::{self, inbox_entry::Body, Contact, InboxEntry};

use super::core::Core;
use super::error::{Result, StoreError};
use super::family::Family;
use super::keys::{self, ConvKey};
use super::mute::is_muted;
use super::read::Reader;
use crate::ids::Version;

/// A key and its value, as RocksDB's iterator returns them.
type KeyValue = (Box<[u8]>, Box<[u8]>);

/// One page of a user's inbox.
#[derive(Debug, Clone, Default)]
pub struct InboxPage {
    pub entries: Vec<InboxEntry>,
    pub has_more: bool,
    pub current_version: u64,
}

impl Core {
    pub(super) fn scan_prefix<'a>(
        &'a self,
        family: Family,
        prefix: &'a [u8],
        start: &[u8],
    ) -> impl Iterator<Item = Result<KeyValue>> + 'a {
        self.iter_from(family, start)
            .map(|r| r.map_err(StoreError::from))
            .take_while(move |r| match r {
                Ok((k, _)) => k.starts_with(prefix),
                Err(_) => true,
            })
    }

    /// Entries of `user`'s inbox with a version above `since`, in order, at most `limit` and
    /// (after the first) at most about `max_bytes` encoded, with message content filled in.
    pub fn inbox_after(
        &self,
        user: &str,
        since: Version,
        limit: usize,
        max_bytes: usize,
    ) -> Result<InboxPage> {
        let since = since.0;
        let current = self.current_version(user)?;
        let prefix = keys::user_prefix(user);
        let start = keys::inbox(user, since.saturating_add(1));
        let mut entries = Vec::with_capacity(limit.min(1024));
        let mut has_more = false;
        let mut bytes = 0;
        for item in self.scan_prefix(Family::Inbox, &prefix, &start) {
            let (_, v) = item?;
            if entries.len() == limit || (bytes >= max_bytes && !entries.is_empty()) {
                has_more = true;
                break;
            }
            let mut entry: InboxEntry = prost::Message::decode(&v[..])?;
            self.fill_message(&mut entry)?;
            bytes += prost::Message::encoded_len(&entry) + 4;
            entries.push(entry);
        }
        let last = entries.last().map(|e| e.version).unwrap_or(0);
        Ok(InboxPage {
            entries,
            has_more,
            current_version: current.max(last),
        })
    }

    /// Replaces an id-only message stub with the stored message, seen from the entry's side.
    fn fill_message(&self, entry: &mut InboxEntry) -> Result<()> {
        if let Some(Body::Message(stub)) = &entry.body {
            let mut msg = self.load_message(stub.msg_id)?;
            msg.conversation = entry.conversation.clone();
            entry.body = Some(Body::Message(msg));
        }
        Ok(())
    }

    fn load_message(&self, msg_id: u64) -> Result<pb::Message> {
        self.get_msg::<pb::Message>(Family::Content, &keys::content(msg_id))?
            .ok_or_else(|| StoreError::Corrupt(format!("message {msg_id} missing")))
    }

    /// Recent conversations of `user`, newest first, after `cursor` (empty: from the newest),
    /// at most `limit` and (after the first) about `max_bytes` encoded, each with the user's
    /// read position and, for a direct conversation, the other user's (point reads). Returns
    /// the page and the cursor of the next page (empty when there is none).
    ///
    /// The order is computed here from the user's contact entries (one per conversation), so a
    /// send writes one contact entry per side and no separate time index. The cursor is the
    /// sort key of the last contact returned: inverted last message id + conversation key.
    pub fn contacts(
        &self,
        user: &str,
        cursor: &[u8],
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Contact>, Vec<u8>)> {
        let limit = limit.max(1);
        let prefix = keys::user_prefix(user);
        // Read fan-out groups have no contact entry kept per message: their entry is made from
        // the group's last message (and an older entry from a write fan-out past is ignored).
        let read_groups = self.read_groups(user)?;
        let is_read_group = |conv: &ConvKey| match conv.view(user) {
            Some(v) if v.kind == pb::ConversationKind::Group as i32 => {
                read_groups.binary_search(&v.id).is_ok()
            }
            _ => false,
        };
        let mut order: Vec<(Vec<u8>, ConvKey)> = Vec::new();
        let mut keep = |last: u64, conv: ConvKey| {
            let mut sort = (u64::MAX - last).to_be_bytes().to_vec();
            sort.extend_from_slice(&conv.0);
            if cursor.is_empty() || sort.as_slice() > cursor {
                order.push((sort, conv));
            }
        };
        for item in self.scan_prefix(Family::Contacts, &prefix, &prefix) {
            let (k, v) = item?;
            let conv = ConvKey(k[prefix.len()..].to_vec());
            if is_read_group(&conv) {
                continue;
            }
            let contact: Contact = prost::Message::decode(&v[..])?;
            keep(contact.last_message.map(|m| m.msg_id).unwrap_or(0), conv);
        }
        for g in &read_groups {
            if let Some(last) = self.visible_last_message(user, g)? {
                keep(last, ConvKey::group(g));
            }
        }
        order.sort_unstable();
        let mut contacts = Vec::new();
        let mut next = Vec::new();
        let mut bytes = 0;
        for (i, (_, conv)) in order.iter().enumerate() {
            if contacts.len() == limit || (bytes >= max_bytes && !contacts.is_empty()) {
                next = order[i - 1].0.clone();
                break;
            }
            let mut contact = if is_read_group(conv) {
                self.read_group_contact(user, conv)?
            } else {
                self.contact(user, conv)?
            };
            contact.muted = is_muted(self, user, conv)?;
            bytes += prost::Message::encoded_len(&contact) + 4;
            contacts.push(contact);
        }
        Ok((contacts, next))
    }

    /// A read fan-out group as a contact: its last message and the user's computed count.
    fn read_group_contact(&self, user: &str, conv: &ConvKey) -> Result<Contact> {
        let view = conv.view(user).unwrap_or_default();
        let msg_id = self
            .visible_last_message(user, &view.id)?
            .ok_or_else(|| StoreError::Corrupt("group without its last message".into()))?;
        let mut msg = self.load_message(msg_id)?;
        msg.conversation = Some(view.clone());
        Ok(Contact {
            unread: self.group_unread(user, &view.id)?,
            updated_ms: msg.timestamp_ms,
            conversation: Some(view),
            last_message: Some(msg),
            read_seq: self.read_position(user, conv)?,
            peer_read_seq: 0,
            muted: false,
        })
    }

    fn contact(&self, user: &str, conv: &ConvKey) -> Result<Contact> {
        let mut c: Contact = self
            .get_msg(Family::Contacts, &keys::contact(user, conv))?
            .ok_or_else(|| StoreError::Corrupt("contact without entry".into()))?;
        if let Some(stub) = &c.last_message {
            let mut msg = self.load_message(stub.msg_id)?;
            msg.conversation = c.conversation.clone();
            c.last_message = Some(msg);
        }
        c.unread = match conv.view(user) {
            Some(v) if v.kind == pb::ConversationKind::Group as i32 => {
                self.group_unread(user, &v.id)?
            }
            Some(peer) => {
                c.peer_read_seq = self.read_position(&peer.id, conv)?;
                self.get_u64(Family::Unread, &keys::unread_conv(user, conv))?
            }
            None => self.get_u64(Family::Unread, &keys::unread_conv(user, conv))?,
        };
        c.read_seq = self.read_position(user, conv)?;
        Ok(c)
    }
}
