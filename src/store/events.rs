//! The app's event queue (`events`): changes the app's backend asked to hear about
//! (`event_webhook_url`, docs/events.md), written in the batch of the change they describe, so
//! that an event is queued if and only if its change is stored, read and emptied by the events
//! worker (`src/events`).
//!
//! A key is an event id (8 bytes: a message-id-like number, increasing) with the event's JSON,
//! or, for the coalesced `conversation.read` events, `0xFF` + user + conversation: a later read
//! of the same conversation overwrites the one not yet delivered. The value is the event's time
//! (8 bytes, ms) and its JSON.

use std::sync::Arc;

use serde_json::{json, Value};

use super::change::Change;
use super::core::Core;
use super::error::Result;
pub use super::event_kind::{EventKind, EventKinds};
use super::family::Family;
use super::keys::{self, ConvKey};
use super::pending::Pending;
use super::read::Reader;
use super::writer::Store;

/// Where a queued event is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventKey(Vec<u8>);

/// A queued event as stored.
#[derive(Debug, Clone)]
pub struct QueuedEvent {
    pub key: EventKey,
    pub time_ms: i64,
    /// The event's JSON, as it is POSTed.
    pub body: Vec<u8>,
}

const COALESCED: u8 = 0xFF;

impl Store {
    /// Turns the event queue on for `kinds`: from now on the changes of those kinds queue an
    /// event, and `wake` is notified after each commit that queued some. Set once, before the
    /// first change.
    pub fn enable_events(&self, kinds: EventKinds, wake: Arc<tokio::sync::Notify>) {
        let _ = self.core.events.set((kinds, wake));
    }

    /// Removes delivered (or expired) events: each only if it still holds what was delivered
    /// (a coalesced read may have been overwritten by a later one meanwhile, which stays).
    pub fn events_remove(&self, done: Vec<QueuedEvent>) -> Pending<()> {
        self.change(false, move |txn| {
            for e in done {
                let same = txn.value(Family::Events, &e.key.0, |v| {
                    v.is_some_and(|v| v.get(8..) == Some(&e.body[..]))
                })?;
                if same {
                    txn.delete(Family::Events, e.key.0);
                }
            }
            Ok(())
        })
    }

    /// Queues `user.first_seen` for `user` (logging in from `device`) the first time it is
    /// called for the user: a marker in `unread` says it was. Whether it was the first time.
    pub fn first_seen(&self, user: &str, device: &str, now_ms: i64) -> Pending<bool> {
        let (user, device) = (user.to_owned(), device.to_owned());
        self.change(false, move |txn| {
            let key = keys::seen(&user);
            if txn.exists(Family::Unread, &key)? {
                return Ok(false);
            }
            txn.put(Family::Unread, key, Vec::new());
            txn.event(
                EventKind::UserFirstSeen,
                now_ms,
                || json!({"user": user, "device": device}),
            );
            Ok(true)
        })
    }
}

impl Core {
    /// Whether events of `kind` are queued.
    pub fn events_on(&self, kind: EventKind) -> bool {
        self.events.get().is_some_and(|(k, _)| k.contains(kind))
    }

    /// Whether `user` was seen (`Store::first_seen`).
    pub fn seen(&self, user: &str) -> Result<bool> {
        self.exists(Family::Unread, &keys::seen(user))
    }

    /// Up to `limit` queued events after `after` (from the first if `None`), in key order:
    /// events by id (oldest first), then the coalesced reads.
    pub fn events_after(&self, after: Option<&EventKey>, limit: usize) -> Result<Vec<QueuedEvent>> {
        let after = after.map(|k| &k.0[..]);
        self.scan_after(Family::Events, after, limit, |k, v| {
            Some(QueuedEvent {
                key: EventKey(k.to_vec()),
                time_ms: i64::from_be_bytes(v.get(..8)?.try_into().ok()?),
                body: v[8..].to_vec(),
            })
        })
    }

    /// The largest event id queued (0 if none): ids continue above it after a restart.
    pub(super) fn last_event_id(&self) -> Result<u64> {
        let mut it = self.raw_iter(Family::Events);
        it.seek_for_prev([COALESCED]);
        it.status()?;
        Ok(it
            .key()
            .filter(|k| k.len() == 8)
            .and_then(keys::u64_value)
            .unwrap_or(0))
    }

    /// Events queued (for tests and operators).
    pub fn events_len(&self) -> Result<usize> {
        let mut it = self.raw_iter(Family::Events);
        it.seek_to_first();
        let mut n = 0;
        while it.valid() {
            n += 1;
            it.next();
        }
        it.status()?;
        Ok(n)
    }
}

impl Change<'_> {
    /// Queues an event of `kind` (if events of that kind are on) in this change's batch: its
    /// id, type and time are added to the `fields` made. Nothing is made when they are off.
    pub fn event(&mut self, kind: EventKind, now_ms: i64, fields: impl FnOnce() -> Value) {
        if !self.core().events_on(kind) {
            return;
        }
        let id = self.core().next_msg_id(now_ms);
        let body = body(kind, &id.to_string(), now_ms, fields());
        self.put_event(id.to_be_bytes().to_vec(), now_ms, body);
    }

    /// Queues `conversation.read` of `user` in `conv` up to `seq`, replacing one not yet
    /// delivered (coalesced per user and conversation).
    pub fn read_event(&mut self, user: &str, conv: &ConvKey, seq: u64, now_ms: i64) {
        if !self.core().events_on(EventKind::ConversationRead) {
            return;
        }
        let Some(view) = conv.view(user) else {
            return;
        };
        let id = format!("read:{user}:{}:{}:{seq}", kind_name(view.kind), view.id);
        let fields = json!({"user": user, "conversation": conversation_json(&view), "seq": seq});
        let mut key = vec![COALESCED];
        key.extend_from_slice(&keys::user_prefix(user));
        key.extend_from_slice(&conv.0);
        let body = body(EventKind::ConversationRead, &id, now_ms, fields);
        self.put_event(key, now_ms, body);
    }

    fn put_event(&mut self, key: Vec<u8>, now_ms: i64, body: Vec<u8>) {
        let mut value = Vec::with_capacity(8 + body.len());
        value.extend_from_slice(&now_ms.to_be_bytes());
        value.extend_from_slice(&body);
        self.put(Family::Events, key, value);
        self.events_queued();
    }
}

/// `message.stored`'s fields: the message as stored, its conversation as the sender addressed
/// it (direct: the recipient; group: the group).
pub(super) fn stored_fields(
    client_msg_id: &str,
    to: &missive_protocol::pb::Conversation,
    msg: &missive_protocol::pb::Message,
) -> Value {
    let mut fields = json!({
        "msg_id": msg.msg_id.to_string(),
        "sender": msg.from_user,
        "conversation": conversation_json(to),
        "seq": msg.seq,
        "client_msg_id": client_msg_id,
        "content_type": msg.content_type,
        "content_base64": missive_protocol::base64::encode(&msg.content),
        "mentions": msg.mentions,
    });
    if let Ok(text) = std::str::from_utf8(&msg.content) {
        fields["text"] = text.into();
    }
    if !msg.media.is_empty() {
        let media: Vec<Value> = msg
            .media
            .iter()
            .map(|m| {
                json!({"media_id": m.media_id, "content_type": m.content_type, "size": m.size,
                       "sha256": m.sha256})
            })
            .collect();
        fields["media"] = media.into();
    }
    fields
}

/// The fields of a recall or a delete: the message, who did it, the conversation (as the
/// sender addressed it, for a recall; as the user sees it, for a delete).
pub(super) fn message_fields(
    msg_id: u64,
    who: (&str, &str),
    conversation: &missive_protocol::pb::Conversation,
) -> Value {
    json!({
        "msg_id": msg_id.to_string(),
        who.0: who.1,
        "conversation": conversation_json(conversation),
    })
}

fn body(kind: EventKind, id: &str, now_ms: i64, mut fields: Value) -> Vec<u8> {
    if let Value::Object(map) = &mut fields {
        map.insert("id".into(), id.into());
        map.insert("type".into(), kind.name().into());
        map.insert("time_ms".into(), now_ms.into());
    }
    fields.to_string().into_bytes()
}

fn kind_name(kind: i32) -> &'static str {
    if kind == missive_protocol::pb::ConversationKind::Group as i32 {
        "group"
    } else {
        "direct"
    }
}

/// A conversation in an event: `{"kind": "direct"|"group", "id": ...}`.
pub fn conversation_json(c: &missive_protocol::pb::Conversation) -> Value {
    json!({"kind": kind_name(c.kind), "id": c.id})
}

#[cfg(test)]
mod tests {
    use missive_protocol::pb;
    use serde_json::json;

    use super::stored_fields;

    #[test]
    fn a_stored_message_lists_its_media_only_when_it_has_some() {
        let to = pb::Conversation {
            kind: pb::ConversationKind::Direct as i32,
            id: "bob".into(),
        };
        let mut msg = pb::Message {
            msg_id: 7,
            from_user: "alice".into(),
            content_type: 2,
            content: b"look".to_vec(),
            ..Default::default()
        };
        assert!(stored_fields("c1", &to, &msg).get("media").is_none());
        msg.media.push(pb::MediaRef {
            media_id: "ab".repeat(16),
            content_type: "image/jpeg".into(),
            size: 52133,
            sha256: "cd".repeat(32),
            preview: vec![1, 2, 3],
            ..Default::default()
        });
        assert_eq!(
            stored_fields("c1", &to, &msg)["media"],
            json!([{"media_id": "ab".repeat(16), "content_type": "image/jpeg", "size": 52133,
                    "sha256": "cd".repeat(32)}])
        );
    }
}
