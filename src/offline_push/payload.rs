//! The webhook request body (JSON) and its signature.
//!
//! ```json
//! {"id":"7397423647432704:bob","user":"bob","sender":"alice",
//!  "conversation":{"kind":"direct","id":"alice"},"msg_id":"7397423647432704","seq":3,
//!  "timestamp_ms":1764000030000,"content_type":1,"text":"hello bob","truncated":false,
//!  "unread_total":4,"attempt":1,"sent_ms":1764000030012}
//! ```
//!
//! `msg_id` is a string: message ids exceed 2^53, beyond what a JSON number keeps exactly in
//! JavaScript. `content_type` is present with `push_preview` `type` or `text`; `text` and
//! `truncated` with `text` only. The header `X-Missive-Signature: sha256=<hex>` is the
//! HMAC-SHA256 of the body's exact bytes, keyed with `push_webhook_secret`.

use hmac::{Hmac, Mac};
use missive_protocol::pb::ConversationKind;
use serde::Serialize;
use sha2::Sha256;

use crate::config::{Preview, PREVIEW_CHARS};
use crate::store::PushItem;

/// The signature header's name.
pub const SIGNATURE_HEADER: &str = "x-missive-signature";
/// The header carrying the notification's stable id.
pub const DELIVERY_HEADER: &str = "x-missive-delivery";

#[derive(Serialize)]
struct Body<'a> {
    id: &'a str,
    user: &'a str,
    sender: &'a str,
    conversation: Conv<'a>,
    msg_id: String,
    seq: u64,
    timestamp_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    truncated: Option<bool>,
    unread_total: u64,
    attempt: u32,
    sent_ms: i64,
}

#[derive(Serialize)]
struct Conv<'a> {
    kind: &'static str,
    id: &'a str,
}

/// The stable id of the notification of `msg_id` for `user`.
pub fn delivery_id(msg_id: u64, user: &str) -> String {
    format!("{msg_id}:{user}")
}

/// The JSON body announcing `item` (try number `attempt`, sent at `now_ms`).
pub fn body(item: &PushItem, preview: Preview, attempt: u32, now_ms: i64) -> Vec<u8> {
    let id = delivery_id(item.msg_id, &item.user);
    let kind = if item.conversation.kind == ConversationKind::Group as i32 {
        "group"
    } else {
        "direct"
    };
    let (text, truncated) = match preview {
        Preview::Text => {
            let (t, cut) = preview_text(&item.content);
            (Some(t), Some(cut))
        }
        _ => (None, None),
    };
    let body = Body {
        id: &id,
        user: &item.user,
        sender: &item.sender,
        conversation: Conv {
            kind,
            id: &item.conversation.id,
        },
        msg_id: item.msg_id.to_string(),
        seq: item.seq,
        timestamp_ms: item.timestamp_ms,
        content_type: (preview != Preview::None).then_some(item.content_type),
        text,
        truncated,
        unread_total: item.unread_total,
        attempt,
        sent_ms: now_ms,
    };
    // Serializing plain strings and numbers cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The content as text (invalid UTF-8 replaced by U+FFFD), at most [`PREVIEW_CHARS`]
/// characters; whether it was cut.
pub fn preview_text(content: &[u8]) -> (String, bool) {
    let text = String::from_utf8_lossy(content);
    match text.char_indices().nth(PREVIEW_CHARS) {
        Some((end, _)) => (text[..end].to_owned(), true),
        None => (text.into_owned(), false),
    }
}

/// `sha256=` and the lowercase hex HMAC-SHA256 of `body` keyed with `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in tag {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use missive_protocol::pb::Conversation;

    fn item(content: &[u8]) -> PushItem {
        PushItem {
            user: "bob".into(),
            sender: "alice".into(),
            conversation: Conversation {
                kind: ConversationKind::Direct as i32,
                id: "alice".into(),
            },
            msg_id: 7_397_423_647_432_704_123,
            seq: 3,
            timestamp_ms: 1_764_000_030_000,
            content_type: 1,
            content: content.to_vec(),
            unread_total: 4,
        }
    }

    #[test]
    fn body_by_preview_mode() {
        let parse = |p| -> serde_json::Value {
            serde_json::from_slice(&body(&item(b"hello bob"), p, 2, 9)).unwrap()
        };
        let none = parse(Preview::None);
        assert_eq!(none["id"], "7397423647432704123:bob");
        assert_eq!(none["msg_id"], "7397423647432704123");
        assert_eq!(none["conversation"]["kind"], "direct");
        assert_eq!(none["conversation"]["id"], "alice");
        assert_eq!(
            (none["seq"].as_u64(), none["unread_total"].as_u64()),
            (Some(3), Some(4))
        );
        assert_eq!(
            (none["attempt"].as_u64(), none["sent_ms"].as_u64()),
            (Some(2), Some(9))
        );
        assert!(none.get("content_type").is_none() && none.get("text").is_none());
        let typed = parse(Preview::Type);
        assert_eq!(typed["content_type"], 1);
        assert!(typed.get("text").is_none());
        let text = parse(Preview::Text);
        assert_eq!(
            (text["text"].as_str(), text["truncated"].as_bool()),
            (Some("hello bob"), Some(false))
        );
    }

    #[test]
    fn preview_is_cut_at_a_character_boundary() {
        let long = "é".repeat(PREVIEW_CHARS + 5);
        let (t, cut) = preview_text(long.as_bytes());
        assert!(cut);
        assert_eq!(t.chars().count(), PREVIEW_CHARS);
        let (t, cut) = preview_text(&[b'h', 0xff, b'i']);
        assert_eq!((t.as_str(), cut), ("h\u{fffd}i", false));
    }

    /// RFC 4231 test case 2 (HMAC-SHA256 with key "Jefe").
    #[test]
    fn signature_is_hmac_sha256_hex() {
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
