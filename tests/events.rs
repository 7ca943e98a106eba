//! End to end: event webhooks (docs/events.md) against a real HTTP server (axum, in the test):
//! every kind of event, signed; reads coalesced while the backend is down; and, with the real
//! binary, events of acknowledged messages delivered after a SIGKILL of missived while the
//! backend was failing: nothing lost.

mod common;
mod e2e;

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use e2e::*;
use missive_client::pb;
use missive_protocol::Packet;
use serde_json::{json, Value};

const EVENTS_SECRET: &str = "events-secret-0123456789";

/// The app's backend: what it got, and whether it fails (500) for now.
#[derive(Default)]
struct Backend {
    got: Mutex<Vec<Value>>,
    bad_signatures: Mutex<u32>,
    failing: AtomicBool,
    tries: Mutex<u32>,
}

impl Backend {
    fn of_type(&self, t: &str) -> Vec<Value> {
        let got = self.got.lock().unwrap();
        got.iter().filter(|e| e["type"] == t).cloned().collect()
    }
}

async fn receive(State(b): State<Arc<Backend>>, headers: HeaderMap, body: String) -> StatusCode {
    *b.tries.lock().unwrap() += 1;
    if b.failing.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    if !common::http::signed(EVENTS_SECRET, &headers, body.as_bytes()) {
        *b.bad_signatures.lock().unwrap() += 1;
    }
    b.got
        .lock()
        .unwrap()
        .push(serde_json::from_str(&body).unwrap());
    StatusCode::NO_CONTENT
}

async fn start_backend(b: Arc<Backend>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/events", axum::routing::post(receive))
        .with_state(b);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/events")
}

/// Waits until `done` holds, for at most `secs`.
async fn until(secs: u64, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "not within {secs} s: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn without_volatile(mut e: Value) -> Value {
    let m = e.as_object_mut().unwrap();
    for k in ["id", "time_ms", "msg_id", "group_id"] {
        m.remove(k);
    }
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_event_reaches_the_backend_signed() {
    let backend = Arc::new(Backend::default());
    let url = start_backend(backend.clone()).await;
    let server = TestServer::start_with(move |c| {
        c.event_webhook_url = url;
        c.event_webhook_secret = EVENTS_SECRET.into();
    })
    .await;
    let (mut alice, _) = server.login("alice", "phone").await;
    let (mut bob, _) = server.login("bob", "phone").await;
    let (_alice_tablet, _) = server.login("alice", "tablet").await;
    let hi = raw_send(&mut alice, "bob", "hi bob").await;
    raw_mark_read(&mut bob, "alice", hi.seq).await;
    let recall = pb::RecallMessage {
        conversation: Some(dm("bob")),
        msg_id: hi.msg_id,
    };
    request(&mut alice, Packet::Recall(recall)).await;
    let delete = pb::DeleteMessage {
        conversation: Some(dm("alice")),
        msg_id: hi.msg_id,
    };
    request(&mut bob, Packet::Delete(delete)).await;
    let group = create_group(&mut alice, &["bob"]).await;
    let leave = pb::GroupLeave {
        group_id: group.id.clone(),
        ..Default::default()
    };
    request(&mut bob, Packet::GroupLeave(leave)).await;

    until(10, "seven events", || {
        backend.got.lock().unwrap().len() >= 8
    })
    .await;
    // Nothing more comes (a second login of alice is not a first).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = backend.got.lock().unwrap().clone();
    assert_eq!(got.len(), 8, "{got:#?}");
    assert_eq!(*backend.bad_signatures.lock().unwrap(), 0);
    let ids: HashSet<&str> = got.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), got.len(), "every event has its own id");
    let mut seen: Vec<String> = backend
        .of_type("user.first_seen")
        .iter()
        .map(|e| e["user"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    assert_eq!(seen, ["alice", "bob"]);

    let stored = &backend.of_type("message.stored")[0];
    assert_eq!(stored["msg_id"], hi.msg_id.to_string());
    assert_eq!(
        without_volatile(stored.clone()),
        json!({"type": "message.stored", "sender": "alice",
               "conversation": {"kind": "direct", "id": "bob"}, "seq": 1,
               "client_msg_id": stored["client_msg_id"], "content_type": 1,
               "content_base64": "aGkgYm9i", "text": "hi bob", "mentions": []})
    );
    let read = &backend.of_type("conversation.read")[0];
    assert_eq!(
        without_volatile(read.clone()),
        json!({"type": "conversation.read", "user": "bob",
               "conversation": {"kind": "direct", "id": "alice"}, "seq": 1})
    );
    let recalled = &backend.of_type("message.recalled")[0];
    assert_eq!(
        without_volatile(recalled.clone()),
        json!({"type": "message.recalled", "by": "alice",
               "conversation": {"kind": "direct", "id": "bob"}})
    );
    let deleted = &backend.of_type("message.deleted")[0];
    assert_eq!(
        without_volatile(deleted.clone()),
        json!({"type": "message.deleted", "user": "bob",
               "conversation": {"kind": "direct", "id": "alice"}})
    );
    let created = &backend.of_type("group.created")[0];
    assert_eq!(created["group_id"], group.id);
    assert_eq!(
        without_volatile(created.clone()),
        json!({"type": "group.created", "change": "created", "by": "alice", "users": ["bob"],
               "member_count": 2})
    );
    let left = &backend.of_type("group.changed")[0];
    assert_eq!(
        without_volatile(left.clone()),
        json!({"type": "group.changed", "change": "left", "by": "bob", "users": ["bob"],
               "member_count": 1})
    );
    // Delivered events leave the queue.
    let store = server.handle().store().clone();
    until(5, "an empty queue", || {
        store.core().events_len().unwrap() == 0
    })
    .await;
}

/// While the backend fails, bob reads a conversation three times: one event is delivered once
/// it is back, with the last position; and only the kinds configured are queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_coalesced_while_the_backend_is_down() {
    let backend = Arc::new(Backend::default());
    backend.failing.store(true, Ordering::SeqCst);
    let url = start_backend(backend.clone()).await;
    let server = TestServer::start_with(move |c| {
        c.event_webhook_url = url;
        c.event_webhook_secret = EVENTS_SECRET.into();
        c.event_webhook_events = vec!["conversation.read".into()];
    })
    .await;
    let (mut alice, _) = server.login("alice", "phone").await;
    let (mut bob, _) = server.login("bob", "phone").await;
    let mut last = 0;
    for i in 0..3 {
        last = raw_send(&mut alice, "bob", &format!("m{i}")).await.seq;
        raw_mark_read(&mut bob, "alice", last).await;
    }
    until(5, "a failed try", || *backend.tries.lock().unwrap() >= 1).await;
    assert_eq!(server.handle().store().core().events_len().unwrap(), 1);
    backend.failing.store(false, Ordering::SeqCst);
    until(10, "the read after the backend is back", || {
        !backend.got.lock().unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = backend.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(
        (got[0]["type"].clone(), got[0]["seq"].clone()),
        (json!("conversation.read"), json!(last))
    );
}

fn missived(data: &std::path::Path, addr: &str, url: &str) -> Daemon {
    let child = Command::new(env!("CARGO_BIN_EXE_missived"))
        .args(["--listen", addr, "--secret", SECRET, "--log", "warn"])
        .arg("--data-dir")
        .arg(data)
        .env_remove("MISSIVE_CONFIG")
        .env("MISSIVE_EVENT_WEBHOOK_URL", url)
        .env("MISSIVE_EVENT_WEBHOOK_SECRET", EVENTS_SECRET)
        .env("MISSIVE_EVENT_WEBHOOK_EVENTS", "message.stored")
        .stdin(Stdio::null())
        .spawn()
        .expect("missived starts");
    Daemon(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_acked_messages_survive_a_sigkill() {
    let backend = Arc::new(Backend::default());
    backend.failing.store(true, Ordering::SeqCst);
    let url = start_backend(backend.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut acked = HashMap::new();
    {
        let mut daemon = missived(dir.path(), &addr, &url);
        let mut alice = connect_when_up(&addr, "alice").await;
        for i in 0..30 {
            let ack = raw_send(&mut alice, "bob", &format!("before the crash {i}")).await;
            acked.insert(ack.msg_id.to_string(), i);
        }
        until(10, "a failed try", || *backend.tries.lock().unwrap() >= 1).await;
        daemon.0.kill().unwrap(); // SIGKILL
        daemon.0.wait().unwrap();
    }
    backend.failing.store(false, Ordering::SeqCst);
    let _daemon = missived(dir.path(), &addr, &url);
    let mut alice = connect_when_up(&addr, "alice").await;
    let after = raw_send(&mut alice, "bob", "after the restart").await;
    acked.insert(after.msg_id.to_string(), 30);
    let got_all = || {
        let ids: HashSet<String> = backend
            .of_type("message.stored")
            .iter()
            .map(|e| e["msg_id"].as_str().unwrap().to_owned())
            .collect();
        acked.keys().all(|k| ids.contains(k))
    };
    until(20, "every acked message's event", got_all).await;
    assert_eq!(*backend.bad_signatures.lock().unwrap(), 0);
}
