//! The before-send webhook (`send_hook_url`, PROTOCOL.md 15.9): each send is POSTed to the
//! app's moderation service as signed JSON (the offline push's signature scheme), which answers
//! allow, reject or replace. Connections are kept alive and pooled; at most
//! `send_hook_max_in_flight` requests are in flight server-wide, and a send waits for a slot
//! within its timeout. Calls run on their own tasks before the store's writer, which never
//! waits for HTTP.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use missive_protocol::pb::{Conversation, ConversationKind};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::config::{Config, HookFail};
use crate::metrics::Counter;
use crate::offline_push::payload::{signature, SIGNATURE_HEADER};
use crate::offline_push::worker::connector;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The send a hook is asked about.
pub struct HookRequest<'a> {
    pub sender: &'a str,
    /// The sending device (empty for the Server API's `POST /v1/messages`).
    pub device: &'a str,
    pub conversation: &'a Conversation,
    pub client_msg_id: &'a str,
    pub content_type: u32,
    pub content: &'a [u8],
    pub mentions: &'a [String],
    /// `socket` or `http`.
    pub via: &'static str,
}

/// What the hook said (or what its failure means, by `send_hook_fail`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookVerdict {
    Allow,
    /// Refused, with the text for the sender.
    Reject(String),
    /// Stored with this content instead.
    Replace(Vec<u8>),
    /// The hook failed and `send_hook_fail` is `closed`: refused for now (why, for the log).
    Unavailable(String),
}

/// The hook's client and its counters.
pub struct Hook {
    client: HttpClient,
    url: hyper::Uri,
    secret: Vec<u8>,
    timeout: Duration,
    fail: HookFail,
    slots: Semaphore,
    max_content_len: usize,
    pub allowed: Counter,
    pub rejected: Counter,
    pub replaced: Counter,
    pub failed: Counter,
    /// The second of the last failure logged.
    logged: AtomicU64,
}

impl Hook {
    /// The hook of `config`, if `send_hook_url` is set (validated by the config).
    pub fn new(config: &Config) -> Option<Hook> {
        let url = config.send_hook_url.parse().ok()?;
        let timeout = Duration::from_millis(config.send_hook_timeout_ms);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.send_hook_max_in_flight)
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector(timeout));
        Some(Hook {
            client,
            url,
            secret: config.send_hook_secret.as_bytes().to_vec(),
            timeout,
            fail: config.send_hook_fail,
            slots: Semaphore::new(config.send_hook_max_in_flight),
            max_content_len: config.max_content_len,
            allowed: Counter::default(),
            rejected: Counter::default(),
            replaced: Counter::default(),
            failed: Counter::default(),
            logged: AtomicU64::new(0),
        })
    }

    /// Requests in flight now.
    pub fn in_flight(&self, max: usize) -> usize {
        max.saturating_sub(self.slots.available_permits())
    }

    /// Asks the hook about `req`. A failure (no slot or no answer within the timeout, a
    /// refused connection, a status other than 2xx, an answer that is not one of the three)
    /// is logged and counted, and is `Allow` or `Unavailable` by `send_hook_fail`.
    pub async fn check(&self, req: &HookRequest<'_>) -> HookVerdict {
        let body = request_body(req, crate::clock::now_ms());
        let verdict = match tokio::time::timeout(self.timeout, self.exchange(body)).await {
            Ok(Ok(answer)) => parse_answer(&answer, self.max_content_len),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        };
        match verdict {
            Ok(v) => {
                match &v {
                    HookVerdict::Allow => self.allowed.inc(),
                    HookVerdict::Reject(_) => self.rejected.inc(),
                    HookVerdict::Replace(_) => self.replaced.inc(),
                    HookVerdict::Unavailable(_) => {}
                }
                v
            }
            Err(e) => {
                self.failed.inc();
                // At most one line a second: an outage must not flood the log at the send rate.
                let second = (crate::clock::now_ms() / 1000) as u64;
                if self.logged.swap(second, Ordering::Relaxed) != second {
                    tracing::warn!(
                        "before-send hook failed ({e}); send_hook_fail = {:?} ({} failures so far)",
                        self.fail,
                        self.failed.get()
                    );
                }
                match self.fail {
                    HookFail::Open => HookVerdict::Allow,
                    HookFail::Closed => HookVerdict::Unavailable(e),
                }
            }
        }
    }

    /// One request: a slot, the POST, the answer's body (bounded).
    async fn exchange(&self, body: Vec<u8>) -> Result<Bytes, String> {
        let _slot = self.slots.acquire().await.map_err(|e| e.to_string())?;
        let request = hyper::Request::post(self.url.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("missived/", env!("CARGO_PKG_VERSION")),
            )
            .header(SIGNATURE_HEADER, signature(&self.secret, &body))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let response = self.client.request(request).await.map_err(|e| {
            match std::error::Error::source(&e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            }
        })?;
        let status = response.status();
        // Room for a replacement of the largest content, base64-encoded, and the rest.
        let limit = self.max_content_len * 4 / 3 + 4096;
        let bytes = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        Ok(bytes)
    }
}

/// The JSON the hook gets.
pub fn request_body(req: &HookRequest<'_>, now_ms: i64) -> Vec<u8> {
    let kind = if req.conversation.kind == ConversationKind::Group as i32 {
        "group"
    } else {
        "direct"
    };
    let mut body = json!({
        "sender": req.sender,
        "device": req.device,
        "conversation": {"kind": kind, "id": req.conversation.id},
        "client_msg_id": req.client_msg_id,
        "content_type": req.content_type,
        "content_base64": missive_protocol::base64::encode(req.content),
        "mentions": req.mentions,
        "via": req.via,
        "sent_ms": now_ms,
    });
    if let Ok(text) = std::str::from_utf8(req.content) {
        body["text"] = text.into();
    }
    body.to_string().into_bytes()
}

/// The hook's answer: `{"action": "allow"}`, `{"action": "reject", "message": "..."}` or
/// `{"action": "replace", "content": "..."}` (or `"content_base64"`).
pub fn parse_answer(answer: &[u8], max_content_len: usize) -> Result<HookVerdict, String> {
    let v: Value =
        serde_json::from_slice(answer).map_err(|e| format!("the answer is not JSON: {e}"))?;
    match v["action"].as_str() {
        Some("allow") => Ok(HookVerdict::Allow),
        Some("reject") => {
            let message = match &v["message"] {
                Value::Null => "the message was not accepted".to_owned(),
                Value::String(m) => m.chars().take(1000).collect(),
                _ => return Err("reject: message must be a string".into()),
            };
            Ok(HookVerdict::Reject(message))
        }
        Some("replace") => {
            let content = match (&v["content"], &v["content_base64"]) {
                (Value::String(t), Value::Null) => t.as_bytes().to_vec(),
                (Value::Null, Value::String(b)) => missive_protocol::base64::decode(b)
                    .ok_or("replace: content_base64 is not base64")?,
                _ => return Err("replace: give content or content_base64".into()),
            };
            if content.is_empty() || content.len() > max_content_len {
                return Err(format!(
                    "replace: the content must be 1 to {max_content_len} bytes"
                ));
            }
            Ok(HookVerdict::Replace(content))
        }
        _ => Err(r#"the answer's action must be "allow", "reject" or "replace""#.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_and_bad_ones_are_failures() {
        let p = |s: &str| parse_answer(s.as_bytes(), 10);
        assert_eq!(p(r#"{"action":"allow"}"#), Ok(HookVerdict::Allow));
        assert_eq!(
            p(r#"{"action":"reject","message":"no links"}"#),
            Ok(HookVerdict::Reject("no links".into()))
        );
        assert_eq!(
            p(r#"{"action":"reject"}"#),
            Ok(HookVerdict::Reject("the message was not accepted".into()))
        );
        assert_eq!(
            p(r#"{"action":"replace","content":"hi *"}"#),
            Ok(HookVerdict::Replace(b"hi *".to_vec()))
        );
        assert_eq!(
            p(r#"{"action":"replace","content_base64":"AAE="}"#),
            Ok(HookVerdict::Replace(vec![0, 1]))
        );
        for bad in [
            "",
            "null",
            r#"{"action":"maybe"}"#,
            r#"{"action":"replace"}"#,
            r#"{"action":"replace","content":""}"#,
            r#"{"action":"replace","content":"01234567890"}"#,
            r#"{"action":"replace","content":"a","content_base64":"YQ=="}"#,
            r#"{"action":"reject","message":7}"#,
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_request_has_text_only_for_utf8() {
        let conv = Conversation {
            kind: ConversationKind::Direct as i32,
            id: "bob".into(),
        };
        let req = |content: &'static [u8]| HookRequest {
            sender: "alice",
            device: "phone",
            conversation: &conv,
            client_msg_id: "c1",
            content_type: 1,
            content,
            mentions: &[],
            via: "socket",
        };
        let v: Value = serde_json::from_slice(&request_body(&req(b"hi"), 5)).unwrap();
        assert_eq!(
            v,
            json!({"sender": "alice", "device": "phone",
                   "conversation": {"kind": "direct", "id": "bob"}, "client_msg_id": "c1",
                   "content_type": 1, "content_base64": "aGk=", "mentions": [], "via": "socket",
                   "sent_ms": 5, "text": "hi"})
        );
        let v: Value = serde_json::from_slice(&request_body(&req(&[0xff]), 5)).unwrap();
        assert!(v.get("text").is_none());
    }
}
