//! End to end: the before-send webhook (PROTOCOL.md 15.9) against a real HTTP server (axum, in
//! the test). It sees every send, signed, after the word filter; it allows, rejects (nothing
//! stored; a resend gets the same rejection) or replaces; a slow or a down hook is allowed
//! through or refused for now, by `send_hook_fail`; pipelined sends are stored in the order
//! they were sent whatever order the hook answers them in.

mod common;
mod e2e;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use common::observe::{account, check_store};
use common::*;
use e2e::*;
use missive::config::HookFail;
use missive_client::{pb, Connection};
use missive_protocol::{ErrorCode, Packet};
use serde_json::{json, Value};

const HOOK_SECRET: &str = "hook-secret-0123456789";
const WORDS: &str = "[reject]\nfree crypto\n[mask]\ndarn\n";

/// What the hook saw, and how it answers: by the text of the message, `reject` in it rejects,
/// `replace` replaces, `slow` waits 1 s, `wait:N` waits N ms; unless `allow_all` is set.
#[derive(Default)]
struct Hook {
    seen: Mutex<Vec<Value>>,
    bad_signatures: Mutex<u32>,
    allow_all: AtomicBool,
}

async fn answer(State(hook): State<Arc<Hook>>, headers: HeaderMap, body: String) -> Json<Value> {
    if !common::http::signed(HOOK_SECRET, &headers, body.as_bytes()) {
        *hook.bad_signatures.lock().unwrap() += 1;
    }
    let v: Value = serde_json::from_str(&body).unwrap();
    hook.seen.lock().unwrap().push(v.clone());
    let text = v["text"].as_str().unwrap_or("").to_owned();
    if let Some(ms) = text.strip_prefix("wait:") {
        let ms: u64 = ms.split(' ').next().unwrap().parse().unwrap();
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if text.contains("slow") {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if hook.allow_all.load(Ordering::SeqCst) {
        return Json(json!({"action": "allow"}));
    }
    Json(if text.contains("reject") {
        json!({"action": "reject", "message": "no spam here", "code": "spam"})
    } else if text.contains("replace") {
        json!({"action": "replace", "content": "[removed by moderation]"})
    } else {
        json!({"action": "allow"})
    })
}

/// The hook server on a loopback port: its URL.
async fn start_hook(hook: Arc<Hook>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/check", axum::routing::post(answer))
        .with_state(hook);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/check")
}

/// A URL where nothing listens.
fn down_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/check")
}

async fn server(url: String, fail: HookFail, words: Option<&std::path::Path>) -> TestServer {
    let words = words.map(|p| p.to_str().unwrap().to_owned());
    TestServer::start_api(move |c| {
        c.send_hook_url = url;
        c.send_hook_secret = HOOK_SECRET.into();
        c.send_hook_timeout_ms = 300;
        c.send_hook_fail = fail;
        if let Some(w) = words {
            c.word_filter = w;
        }
    })
    .await
}

fn send(id: &str, to: pb::Conversation, text: &str) -> Packet {
    Packet::Send(pb::Send {
        client_msg_id: id.into(),
        to: Some(to),
        content_type: 1,
        content: text.as_bytes().to_vec(),
        ..Default::default()
    })
}

async fn acked(conn: &mut Connection, packet: Packet) -> pb::SendAck {
    match request(conn, packet).await {
        Packet::SendAck(a) => a,
        other => panic!("expected SEND_ACK, got {other:?}"),
    }
}

/// A SEND that must be refused with `code` (not fatal); the error's message.
async fn refused_with(conn: &mut Connection, packet: Packet, code: ErrorCode) -> String {
    match conn.request_timeout(packet, Duration::from_secs(5)).await {
        Err(missive_client::ClientError::Server {
            code: c,
            fatal,
            message,
            ..
        }) => {
            assert_eq!(c, code as u32, "{message}");
            assert!(!fatal);
            message
        }
        other => panic!("expected ERROR {code:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_allows_rejects_and_replaces_after_the_word_filter() {
    let hook = Arc::new(Hook::default());
    let url = start_hook(hook.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let words = dir.path().join("words.txt");
    std::fs::write(&words, WORDS).unwrap();
    let server = server(url, HookFail::Open, Some(&words)).await;
    let (mut alice, _) = server.login("alice", "phone").await;

    let ok = acked(&mut alice, send("m1", dm("bob"), "hello bob")).await;
    assert!(ok.content.is_empty());
    {
        let seen = hook.seen.lock().unwrap();
        let mut first = seen[0].clone();
        assert!(first["sent_ms"].as_i64().unwrap() > 0);
        first.as_object_mut().unwrap().remove("sent_ms");
        assert_eq!(
            first,
            json!({"sender": "alice", "device": "phone",
                   "conversation": {"kind": "direct", "id": "bob"}, "client_msg_id": "m1",
                   "content_type": 1, "content_base64": "aGVsbG8gYm9i", "text": "hello bob",
                   "mentions": [], "media": [], "via": "socket"})
        );
    }

    // Rejected: the hook's message and code reach the sender; nothing is stored. The resend
    // gets the same rejection, even once the hook would allow it, without the hook being asked
    // again.
    for allow_now in [false, true] {
        hook.allow_all.store(allow_now, Ordering::SeqCst);
        let asked = hook.seen.lock().unwrap().len();
        let resend = send("m2", dm("bob"), "please reject me");
        let e = alice
            .request_timeout(resend, Duration::from_secs(5))
            .await
            .expect_err("rejected");
        let missive_client::ClientError::Server {
            code,
            message,
            reason,
            fatal,
            ..
        } = e
        else {
            panic!("{e}")
        };
        assert_eq!(code, ErrorCode::ContentRejected as u32);
        assert!(!fatal);
        assert_eq!(message, "no spam here", "hook allowing now: {allow_now}");
        assert_eq!(reason, "spam", "hook allowing now: {allow_now}");
        let asked_now = hook.seen.lock().unwrap().len();
        assert_eq!(asked_now, asked + usize::from(!allow_now), "asked once");
    }
    hook.allow_all.store(false, Ordering::SeqCst);

    // Replaced: stored and delivered as the hook said; the ack says so.
    let r = acked(&mut alice, send("m3", dm("bob"), "please replace me")).await;
    assert_eq!(r.content, b"[removed by moderation]");

    // The word filter runs first: a rejected word never reaches the hook, a masked one reaches
    // it masked.
    let before = hook.seen.lock().unwrap().len();
    refused_with(
        &mut alice,
        send("m4", dm("bob"), "free crypto"),
        ErrorCode::ContentRejected,
    )
    .await;
    assert_eq!(hook.seen.lock().unwrap().len(), before);
    let masked = acked(&mut alice, send("m5", dm("bob"), "oh darn")).await;
    assert_eq!(masked.content, b"oh ****");
    assert_eq!(hook.seen.lock().unwrap().last().unwrap()["text"], "oh ****");

    // A group message, and the Server API.
    let group = create_group(&mut alice, &["bob"]).await;
    acked(&mut alice, send("m6", group.clone(), "hi all")).await;
    assert_eq!(
        hook.seen.lock().unwrap().last().unwrap()["conversation"],
        json!({"kind": "group", "id": group.id})
    );
    let api = server.api();
    let body = |id: &str, text: &str| json!({"from": "carol", "to": {"user": "bob"}, "client_msg_id": id, "content": text});
    let no = api.post("/v1/messages", body("c1", "reject this")).await;
    assert_eq!((no.status, no.error_code()), (422, 25), "{}", no.text());
    assert_eq!(no.json()["error"]["reason"], "spam", "{}", no.text());
    let yes = api.post("/v1/messages", body("c2", "replace this")).await;
    assert_eq!(yes.status, 201, "{}", yes.text());
    assert_eq!(yes.json()["content"], "[removed by moderation]");
    let last = hook.seen.lock().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["via"].clone(), last["device"].clone()),
        (json!("http"), json!(""))
    );
    assert_eq!(*hook.bad_signatures.lock().unwrap(), 0);
    drop(alice);

    let bob = account(&server, "bob").await;
    assert_eq!(
        message_texts(&bob.entries),
        [
            "hello bob",
            "[removed by moderation]",
            "oh ****",
            "hi all",
            "[removed by moderation]"
        ]
    );
    assert_eq!(bob.unread_total, 5, "nothing refused was counted");
    check_store(&server, &["alice", "bob", "carol"]);
    let m = api.metrics().await;
    assert_eq!(
        m.get("missive_send_hook_answers_total{result=\"reject\"}"),
        2.0
    );
    assert_eq!(
        m.get("missive_send_hook_answers_total{result=\"replace\"}"),
        2.0
    );
}

/// For each failure mode: a hook slower than the timeout, then no hook at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_down_hook_fails_open_or_closed() {
    for fail in [HookFail::Open, HookFail::Closed] {
        let hook = Arc::new(Hook::default());
        let slow = server(start_hook(hook).await, fail, None).await;
        let down = server(down_url(), fail, None).await;
        for (what, server) in [("slow", &slow), ("down", &down)] {
            let (mut alice, _) = server.login("alice", "phone").await;
            let stored_before = acked_or_none(&mut alice, "early", "fast one").await;
            let started = Instant::now();
            let id = format!("{what}-1");
            let text = "a slow message";
            match fail {
                HookFail::Open => {
                    acked(&mut alice, send(&id, dm("bob"), text)).await;
                }
                HookFail::Closed => {
                    let code = ErrorCode::ModerationUnavailable;
                    refused_with(&mut alice, send(&id, dm("bob"), text), code).await;
                }
            }
            // Decided at the timeout (300 ms), not at the hook's 1 s.
            assert!(
                started.elapsed() < Duration::from_millis(900),
                "{what} {fail:?}"
            );
            // A message stored earlier keeps its ack whatever the hook does now, at once (the
            // hook is not asked again).
            if let Some(first) = &stored_before {
                let started = Instant::now();
                let again = acked(&mut alice, send("early", dm("bob"), "slow, at once")).await;
                assert!(again.duplicate);
                assert_eq!(again.msg_id, first.msg_id);
                assert!(
                    started.elapsed() < Duration::from_millis(250),
                    "{what} {fail:?}"
                );
            }
            drop(alice);
            let bob = message_texts(&account(server, "bob").await.entries);
            let expect = usize::from(stored_before.is_some()) + usize::from(fail == HookFail::Open);
            assert_eq!(bob.len(), expect, "{what} {fail:?}: {bob:?}");
            let m = server.api().metrics().await;
            assert!(m.get("missive_send_hook_answers_total{result=\"failed\"}") >= 1.0);
        }
    }
}

/// A send the hook answers in time (the slow server answers "fast one" at once): its ack, or
/// `None` where no hook answers.
async fn acked_or_none(conn: &mut Connection, id: &str, text: &str) -> Option<pb::SendAck> {
    match conn
        .request_timeout(send(id, dm("bob"), text), Duration::from_secs(5))
        .await
    {
        Ok(Packet::SendAck(a)) => Some(a),
        Ok(other) => panic!("{other:?}"),
        Err(e) => {
            let code = e.server_code();
            assert!(code == Some(ErrorCode::ModerationUnavailable), "{e}");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_sends_are_stored_in_the_order_sent() {
    let hook = Arc::new(Hook::default());
    let server = server(start_hook(hook).await, HookFail::Closed, None).await;
    let (mut alice, _) = server.login("alice", "phone").await;
    // The first waits longest at the hook, the last not at all.
    const N: u64 = 8;
    let mut rids = Vec::new();
    for i in 0..N {
        let text = format!("wait:{} message {i}", (N - 1 - i) * 30);
        rids.push(
            alice
                .send_packet(send(&format!("p{i}"), dm("bob"), &text))
                .await
                .unwrap(),
        );
    }
    let mut seqs = Vec::new();
    for rid in rids {
        let (frame, packet) = recv(&mut alice).await;
        assert_eq!(frame.request_id, rid, "replies in request order");
        match packet {
            Packet::SendAck(a) => seqs.push(a.seq),
            other => panic!("expected SEND_ACK, got {other:?}"),
        }
    }
    assert_eq!(
        seqs,
        (1..=N).collect::<Vec<_>>(),
        "stored in the order sent"
    );
    drop(alice);
    let bob = message_texts(&account(&server, "bob").await.entries);
    let expect: Vec<String> = (0..N)
        .map(|i| format!("wait:{} message {i}", (N - 1 - i) * 30))
        .collect();
    assert_eq!(bob, expect);
}

/// A hook of the batch form: what it saw (each request's messages) and its answers, by each
/// message's text as in [`answer`]; a message whose text has `short` makes the answer one
/// result short (a malformed answer for the whole request). Each request takes 40 ms, so the
/// sends that arrive meanwhile queue for the next.
#[derive(Default)]
struct BatchHook {
    batches: Mutex<Vec<Vec<Value>>>,
    bad_signatures: Mutex<u32>,
}

async fn answer_batch(
    State(hook): State<Arc<BatchHook>>,
    headers: HeaderMap,
    body: String,
) -> Json<Value> {
    if !common::http::signed(HOOK_SECRET, &headers, body.as_bytes()) {
        *hook.bad_signatures.lock().unwrap() += 1;
    }
    let v: Value = serde_json::from_str(&body).unwrap();
    let messages = v["messages"].as_array().expect("the batch form").clone();
    hook.batches.lock().unwrap().push(messages.clone());
    tokio::time::sleep(Duration::from_millis(40)).await;
    let mut results: Vec<Value> = messages
        .iter()
        .map(|m| {
            let text = m["text"].as_str().unwrap_or("");
            if text.contains("reject") {
                json!({"action": "reject", "message": format!("no: {text}")})
            } else if text.contains("replace") {
                json!({"action": "replace", "content": format!("[{text} replaced]")})
            } else {
                json!({"action": "allow"})
            }
        })
        .collect();
    if messages
        .iter()
        .any(|m| m["text"].as_str().unwrap_or("").contains("short"))
    {
        results.pop();
    }
    Json(json!({ "results": results }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batch_form_asks_about_waiting_sends_together_and_answers_each() {
    let hook = Arc::new(BatchHook::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/check", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/check", axum::routing::post(answer_batch))
        .with_state(hook.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let server = TestServer::start_api(move |c| {
        c.send_hook_url = url;
        c.send_hook_secret = HOOK_SECRET.into();
        c.send_hook_timeout_ms = 5000;
        c.send_hook_fail = HookFail::Closed;
        c.send_hook_batch_max = 8;
        c.send_hook_max_in_flight = 1;
    })
    .await;
    let (mut alice, _) = server.login("alice", "phone").await;

    // 30 sends pipelined: every 5th rejected, every 7th replaced, the rest allowed.
    let text = |i: u32| match i {
        i if i % 5 == 4 => format!("reject {i}"),
        i if i % 7 == 6 => format!("replace {i}"),
        i => format!("fine {i}"),
    };
    let mut rids = Vec::new();
    for i in 0..30 {
        let packet = send(&format!("b{i}"), dm("bob"), &text(i));
        rids.push(alice.send_packet(packet).await.unwrap());
    }
    let mut stored = Vec::new();
    for (i, rid) in (0..30).zip(rids) {
        let (frame, packet) = recv(&mut alice).await;
        assert_eq!(frame.request_id, rid, "replies in request order");
        let t = text(i);
        match packet {
            Packet::SendAck(a) => {
                assert!(!t.starts_with("reject"), "{t} was stored");
                if t.starts_with("replace") {
                    assert_eq!(a.content, format!("[{t} replaced]").into_bytes());
                    stored.push(format!("[{t} replaced]"));
                } else {
                    assert!(a.content.is_empty());
                    stored.push(t);
                }
                assert_eq!(a.seq, stored.len() as u64, "stored in the order sent");
            }
            Packet::Error(e) => {
                assert_eq!(e.code, ErrorCode::ContentRejected as u32, "{t}: {e:?}");
                assert_eq!(e.message, format!("no: {t}"));
            }
            other => panic!("expected SEND_ACK or ERROR, got {other:?}"),
        }
    }
    {
        let batches = hook.batches.lock().unwrap();
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        let mut ids: Vec<String> = batches
            .iter()
            .flatten()
            .map(|m| m["client_msg_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        let mut expect: Vec<String> = (0..30).map(|i| format!("b{i}")).collect();
        expect.sort();
        assert_eq!(ids, expect, "each message asked about once");
        assert!(
            sizes.iter().all(|&n| n <= 8),
            "at most send_hook_batch_max: {sizes:?}"
        );
        assert!(
            sizes.len() < 30 && sizes.iter().any(|&n| n > 1),
            "sends waiting for the one slot went together: {sizes:?}"
        );
        assert_eq!(batches[0][0]["sender"], "alice");
        assert_eq!(
            batches[0][0]["conversation"],
            json!({"kind": "direct", "id": "bob"})
        );
    }
    assert_eq!(*hook.bad_signatures.lock().unwrap(), 0);

    // A resend of a rejected message gets the same refusal without asking the hook again.
    let asked = hook.batches.lock().unwrap().len();
    let message = refused_with(
        &mut alice,
        send("b4", dm("bob"), &text(4)),
        ErrorCode::ContentRejected,
    )
    .await;
    assert_eq!(message, "no: reject 4");
    assert_eq!(hook.batches.lock().unwrap().len(), asked);

    // An answer with a result missing fails every message of its request (fail closed:
    // MODERATION_UNAVAILABLE, nothing stored); the next request is answered again.
    refused_with(
        &mut alice,
        send("s1", dm("bob"), "short answer"),
        ErrorCode::ModerationUnavailable,
    )
    .await;
    let a = acked(&mut alice, send("s2", dm("bob"), "fine again")).await;
    stored.push("fine again".into());
    assert_eq!(a.seq, stored.len() as u64);
    drop(alice);

    let bob = message_texts(&account(&server, "bob").await.entries);
    assert_eq!(bob, stored);
    check_store(&server, &["alice", "bob"]);
}
