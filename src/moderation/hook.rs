//! The before-send webhook (`send_hook_url`, PROTOCOL.md 15.9): each send is POSTed to the
//! app's moderation service as signed JSON (the offline push's signature scheme), which answers
//! allow, reject or replace. Connections are kept alive and pooled; at most
//! `send_hook_max_in_flight` requests are in flight server-wide, and a send waits for a slot
//! within its timeout. With `send_hook_batch_max` above 1, one dispatcher task takes the sends
//! that are waiting when a slot frees and asks about them in one request (the batch form), so
//! that under load the requests grow rather than multiply. Calls run on their own tasks before
//! the store's writer, which never waits for HTTP.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use missive_protocol::pb::{Conversation, ConversationKind};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

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
    /// Media ids the message carries (PROTOCOL.md section 28).
    pub media: &'a [String],
    /// `socket` or `http`.
    pub via: &'static str,
}

/// What the hook said (or what its failure means, by `send_hook_fail`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookVerdict {
    Allow,
    /// Refused, with the text for the sender and the hook's code for why (may be empty).
    Reject {
        message: String,
        reason: String,
    },
    /// Stored with this content instead.
    Replace(Vec<u8>),
    /// The hook failed and `send_hook_fail` is `closed`: refused for now (why, for the log).
    Unavailable(String),
}

/// The hook's answer about one message, or why there is none.
type Answer = Result<HookVerdict, String>;

/// A message waiting for the dispatcher of the batch form: its JSON object and where its
/// answer goes.
struct Queued {
    message: Vec<u8>,
    reply: oneshot::Sender<Answer>,
}

/// The HTTP side: the pooled client, the URL, the signing key and the request slots.
struct Endpoint {
    client: HttpClient,
    url: hyper::Uri,
    secret: Vec<u8>,
    timeout: Duration,
    slots: Arc<Semaphore>,
    max_content_len: usize,
    /// HTTP requests made (in the batch form, each asks about one or more messages).
    requests: Counter,
}

/// The hook's client and its counters.
pub struct Hook {
    endpoint: Arc<Endpoint>,
    fail: HookFail,
    batch_max: usize,
    /// `send_hook_max_in_flight_per_user`, and the turns of the senders asking now (an entry
    /// lives while one of its sends is asking or waiting).
    per_user: usize,
    users: parking_lot::Mutex<HashMap<String, Arc<Semaphore>>>,
    /// The batch form's queue to its dispatcher task, started by the first check.
    queue: OnceLock<mpsc::UnboundedSender<Queued>>,
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
            endpoint: Arc::new(Endpoint {
                client,
                url,
                secret: config.send_hook_secret.as_bytes().to_vec(),
                timeout,
                slots: Arc::new(Semaphore::new(config.send_hook_max_in_flight)),
                max_content_len: config.max_content_len,
                requests: Counter::default(),
            }),
            fail: config.send_hook_fail,
            batch_max: config.send_hook_batch_max.max(1),
            per_user: config.send_hook_max_in_flight_per_user.max(1),
            users: parking_lot::Mutex::new(HashMap::new()),
            queue: OnceLock::new(),
            allowed: Counter::default(),
            rejected: Counter::default(),
            replaced: Counter::default(),
            failed: Counter::default(),
            logged: AtomicU64::new(0),
        })
    }

    /// Requests in flight now.
    pub fn in_flight(&self, max: usize) -> usize {
        max.saturating_sub(self.endpoint.slots.available_permits())
    }

    /// HTTP requests made so far.
    pub fn requests(&self) -> u64 {
        self.endpoint.requests.get()
    }

    /// Asks the hook about `req`. A failure (no slot or no answer within the timeout, a
    /// refused connection, a status other than 2xx, an answer that is not one of the three)
    /// is logged and counted, and is `Allow` or `Unavailable` by `send_hook_fail`.
    pub async fn check(&self, req: &HookRequest<'_>) -> HookVerdict {
        let message = request_body(req, crate::clock::now_ms());
        let timeout = self.endpoint.timeout;
        let ask = async {
            let _turn = self.turn(req.sender).await;
            if self.batch_max == 1 {
                self.endpoint.ask_one(message).await
            } else {
                let (reply, answer) = oneshot::channel();
                // The dispatcher lives as long as the queue's sender, which is ours.
                let _ = self.queue().send(Queued { message, reply });
                answer
                    .await
                    .unwrap_or_else(|_| Err("the request was dropped".into()))
            }
        };
        let verdict = match tokio::time::timeout(timeout, ask).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        };
        match verdict {
            Ok(v) => {
                match &v {
                    HookVerdict::Allow => self.allowed.inc(),
                    HookVerdict::Reject { .. } => self.rejected.inc(),
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

    /// One of `sender`'s turns to ask (at most `per_user` at once), waiting for it.
    async fn turn<'a>(&'a self, sender: &'a str) -> Turn<'a> {
        let semaphore = {
            let mut users = self.users.lock();
            match users.get(sender) {
                Some(s) => s.clone(),
                None => {
                    let s = Arc::new(Semaphore::new(self.per_user));
                    users.insert(sender.to_owned(), s.clone());
                    s
                }
            }
        };
        let permit = semaphore.clone().acquire_owned().await.ok();
        Turn {
            hook: self,
            sender,
            semaphore,
            permit,
        }
    }

    /// Senders with a send asking or waiting now.
    pub fn senders_asking(&self) -> usize {
        self.users.lock().len()
    }

    /// The batch form's queue, its dispatcher started on first use (on the runtime that
    /// checks).
    fn queue(&self) -> &mpsc::UnboundedSender<Queued> {
        self.queue.get_or_init(|| {
            let (queue, waiting) = mpsc::unbounded_channel();
            tokio::spawn(dispatch(self.endpoint.clone(), self.batch_max, waiting));
            queue
        })
    }
}

/// A sender's turn to ask the hook; its entry goes when its last turn ends.
struct Turn<'a> {
    hook: &'a Hook,
    sender: &'a str,
    semaphore: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.permit.take();
        let mut users = self.hook.users.lock();
        // Clones are made under this lock: two are the map's and ours, so nobody else asks or
        // waits.
        if Arc::strong_count(&self.semaphore) == 2 {
            users.remove(self.sender);
        }
    }
}

/// The batch form's dispatcher: takes the first waiting message, waits for a request slot,
/// then takes every message that queued meanwhile (up to `batch_max`) and asks about them all
/// in one request, on a task of its own. Messages whose sender stopped waiting (timed out) are
/// left out. Ends when the hook is dropped.
async fn dispatch(
    endpoint: Arc<Endpoint>,
    batch_max: usize,
    mut waiting: mpsc::UnboundedReceiver<Queued>,
) {
    let mut batch = Vec::new();
    while let Some(first) = waiting.recv().await {
        if first.reply.is_closed() {
            continue;
        }
        batch.push(first);
        let Ok(slot) = endpoint.slots.clone().acquire_owned().await else {
            return;
        };
        while batch.len() < batch_max {
            match waiting.try_recv() {
                Ok(q) if q.reply.is_closed() => {}
                Ok(q) => batch.push(q),
                Err(_) => break,
            }
        }
        batch.retain(|q| !q.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let next = Vec::with_capacity(batch.len());
        tokio::spawn(
            endpoint
                .clone()
                .ask_batch(std::mem::replace(&mut batch, next), slot),
        );
    }
}

impl Endpoint {
    /// The single form: one message, one request, once a slot is free.
    async fn ask_one(&self, message: Vec<u8>) -> Answer {
        let _slot = self.slots.acquire().await.map_err(|e| e.to_string())?;
        let answer = self.exchange(message, 1).await?;
        parse_answer(&answer, self.max_content_len)
    }

    /// The batch form: the messages of `batch` in one request (holding `slot`), each answered
    /// by its result, or all by the request's failure.
    async fn ask_batch(self: Arc<Self>, batch: Vec<Queued>, slot: OwnedSemaphorePermit) {
        let mut body =
            Vec::with_capacity(16 + batch.iter().map(|q| q.message.len() + 1).sum::<usize>());
        body.extend_from_slice(b"{\"messages\":[");
        for (i, q) in batch.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&q.message);
        }
        body.extend_from_slice(b"]}");
        let answers =
            match tokio::time::timeout(self.timeout, self.exchange(body, batch.len())).await {
                Ok(Ok(answer)) => parse_batch_answer(&answer, batch.len(), self.max_content_len),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
            };
        drop(slot);
        match answers {
            Ok(answers) => {
                for (q, answer) in batch.into_iter().zip(answers) {
                    let _ = q.reply.send(answer);
                }
            }
            Err(e) => {
                for q in batch {
                    let _ = q.reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// One request about `messages` messages: the POST, the answer's body (bounded).
    async fn exchange(&self, body: Vec<u8>, messages: usize) -> Result<Bytes, String> {
        self.requests.inc();
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
        // Room for a replacement of the largest content per message, base64-encoded, and the
        // rest.
        let limit = messages * (self.max_content_len * 4 / 3 + 4096);
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
        "media": req.media,
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
pub fn parse_answer(answer: &[u8], max_content_len: usize) -> Answer {
    let v: Value =
        serde_json::from_slice(answer).map_err(|e| format!("the answer is not JSON: {e}"))?;
    verdict(&v, max_content_len)
}

/// The batch form's answer, `{"results": [answer, ...]}` with one answer per message in the
/// request's order: each message's verdict (a malformed one fails only its message), or the
/// failure of the whole answer when it is not that shape or has another number of results.
pub fn parse_batch_answer(
    answer: &[u8],
    messages: usize,
    max_content_len: usize,
) -> Result<Vec<Answer>, String> {
    let v: Value =
        serde_json::from_slice(answer).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let Some(results) = v["results"].as_array() else {
        return Err(r#"the answer of the batch form must be {"results": [...]}"#.into());
    };
    if results.len() != messages {
        return Err(format!(
            "the answer has {} results for {messages} messages",
            results.len()
        ));
    }
    Ok(results
        .iter()
        .map(|r| verdict(r, max_content_len))
        .collect())
}

/// Whether `code` may be a rejection's reason: 1 to 64 characters of `A-Z a-z 0-9 _ . : -`.
fn reason_ok(code: &str) -> bool {
    (1..=64).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
}

/// One answer's verdict.
fn verdict(v: &Value, max_content_len: usize) -> Answer {
    match v["action"].as_str() {
        Some("allow") => Ok(HookVerdict::Allow),
        Some("reject") => {
            let message = match &v["message"] {
                Value::Null => "the message was not accepted".to_owned(),
                Value::String(m) => m.chars().take(1000).collect(),
                _ => return Err("reject: message must be a string".into()),
            };
            let reason = match &v["code"] {
                Value::Null => String::new(),
                Value::String(c) if reason_ok(c) => c.clone(),
                _ => {
                    return Err(
                        "reject: code must be 1 to 64 characters of A-Z a-z 0-9 _ . : -".into(),
                    )
                }
            };
            Ok(HookVerdict::Reject { message, reason })
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
            Ok(HookVerdict::Reject {
                message: "no links".into(),
                reason: String::new()
            })
        );
        assert_eq!(
            p(r#"{"action":"reject"}"#),
            Ok(HookVerdict::Reject {
                message: "the message was not accepted".into(),
                reason: String::new()
            })
        );
        assert_eq!(
            p(r#"{"action":"reject","message":"no","code":"link_not_allowed"}"#),
            Ok(HookVerdict::Reject {
                message: "no".into(),
                reason: "link_not_allowed".into()
            })
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
            r#"{"action":"reject","code":""}"#,
            r#"{"action":"reject","code":"no spaces"}"#,
            r#"{"action":"reject","code":7}"#,
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_sender_has_at_most_its_turns_and_its_entry_goes_with_the_last() {
        let config = Config {
            send_hook_url: "http://127.0.0.1:9/check".into(),
            send_hook_max_in_flight_per_user: 2,
            ..Config::default()
        };
        let hook = Hook::new(&config).unwrap();
        let a1 = hook.turn("alice").await;
        let a2 = hook.turn("alice").await;
        let b1 = hook.turn("bob").await;
        assert_eq!(hook.senders_asking(), 2);
        // Alice's third waits for one of hers, not for Bob's.
        let third = tokio::time::timeout(Duration::from_millis(50), hook.turn("alice")).await;
        assert!(third.is_err(), "a third turn while two are out");
        drop(b1);
        assert_eq!(hook.senders_asking(), 1);
        drop(a1);
        let a3 = tokio::time::timeout(Duration::from_millis(50), hook.turn("alice"))
            .await
            .expect("a turn once one ended");
        drop((a2, a3));
        assert_eq!(hook.senders_asking(), 0, "no entry outlives its turns");
    }

    #[test]
    fn batch_answers_parse_per_message_and_a_wrong_shape_fails_them_all() {
        let p = |s: &str, n| parse_batch_answer(s.as_bytes(), n, 10);
        assert_eq!(
            p(
                r#"{"results":[{"action":"allow"},{"action":"maybe"},{"action":"reject","message":"no"}]}"#,
                3
            ),
            Ok(vec![
                Ok(HookVerdict::Allow),
                Err(r#"the answer's action must be "allow", "reject" or "replace""#.into()),
                Ok(HookVerdict::Reject {
                    message: "no".into(),
                    reason: String::new()
                }),
            ])
        );
        assert!(p(r#"{"results":[{"action":"allow"}]}"#, 2).is_err());
        assert!(p(r#"{"action":"allow"}"#, 1).is_err());
        assert!(p(r#"[{"action":"allow"}]"#, 1).is_err());
        assert!(p("", 1).is_err());
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
            media: &[],
            via: "socket",
        };
        let v: Value = serde_json::from_slice(&request_body(&req(b"hi"), 5)).unwrap();
        assert_eq!(
            v,
            json!({"sender": "alice", "device": "phone",
                   "conversation": {"kind": "direct", "id": "bob"}, "client_msg_id": "c1",
                   "content_type": 1, "content_base64": "aGk=", "mentions": [], "media": [],
                   "via": "socket",
                   "sent_ms": 5, "text": "hi"})
        );
        let v: Value = serde_json::from_slice(&request_body(&req(&[0xff]), 5)).unwrap();
        assert!(v.get("text").is_none());
    }
}
