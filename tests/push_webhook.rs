//! End to end: offline push to a real webhook (an axum server on 127.0.0.1 that records every
//! request). One notification per message for a recipient with no online device, none for an
//! online one; signed bodies with the documented fields; retries through refused connections
//! and 500s until each notification is answered once; delivery after a restart; drops after
//! the last attempt; nothing announced for a recalled message.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use missive::config::Config;
use missive::config::Preview;
use missive_client::{direct, group, pb};
use serde_json::Value;

const HOOK_SECRET: &str = "hook-secret-0123456789";

/// One request the webhook received, and what it answered.
#[derive(Debug, Clone)]
struct Received {
    body: Value,
    raw: Vec<u8>,
    signature: String,
    delivery: String,
    answered: u16,
}

#[derive(Default)]
struct HookState {
    seen: Mutex<Vec<Received>>,
    /// Requests still to be answered 500 before the webhook answers 200.
    fail_next: AtomicU32,
}

/// A recording webhook on a fixed loopback port; it can be stopped and started again.
struct Hook {
    addr: SocketAddr,
    state: Arc<HookState>,
    server: Option<tokio::task::JoinHandle<()>>,
}

async fn record(
    State(state): State<Arc<HookState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let failing = state
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let status = if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    state.seen.lock().unwrap().push(Received {
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        raw: body.to_vec(),
        signature: header("x-missive-signature"),
        delivery: header("x-missive-delivery"),
        answered: status.as_u16(),
    });
    status
}

impl Hook {
    /// A port with nothing listening on it yet (connections are refused until `start`).
    async fn reserve() -> Hook {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        Hook {
            addr,
            state: Arc::default(),
            server: None,
        }
    }

    async fn running() -> Hook {
        let mut hook = Hook::reserve().await;
        hook.start().await;
        hook
    }

    async fn start(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(record))
            .with_state(self.state.clone());
        self.server = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn seen(&self) -> Vec<Received> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The requests answered 200.
    fn delivered(&self) -> Vec<Received> {
        self.seen()
            .into_iter()
            .filter(|r| r.answered == 200)
            .collect()
    }

    /// Waits until `n` requests were answered 200 (10 s at most).
    async fn wait_delivered(&self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.delivered();
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {n} notifications delivered within 10 s: {:?}",
                got.len(),
                self.seen()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn push_config(c: &mut Config, hook: &Hook) {
    c.push_webhook_url = hook.url();
    c.push_webhook_secret = HOOK_SECRET.into();
    c.push_preview = Preview::Text;
    c.push_retry_initial_ms = 20;
    c.push_retry_max_ms = 200;
    c.push_max_attempts = 1000;
    c.push_timeout_ms = 2000;
}

fn signature_of(body: &[u8]) -> String {
    common::http::signature(HOOK_SECRET, body)
}

/// Waits until the server's push queue is empty (every notification sent or dropped).
async fn wait_queue_empty(server: &TestServer) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.handle().store().core().push_queue_len().unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "push queue not emptied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Each notification delivered (answered 200) exactly once, by id.
fn assert_once_each(delivered: &[Received], expected_ids: &[String]) {
    let mut ids: Vec<&str> = delivered.iter().map(|r| r.delivery.as_str()).collect();
    ids.sort();
    let mut want: Vec<&str> = expected_ids.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(ids, want, "each notification answered 200 exactly once");
}

#[tokio::test]
async fn offline_recipient_gets_one_signed_webhook_per_message_online_one_none() {
    let hook = Hook::running().await;
    let server = TestServer::start_with(|c| push_config(c, &hook)).await;
    let (alice, _a) = server.client("alice", "phone").await;
    let (_bob, _b) = server.client("bob", "phone").await; // online; carol is not

    let first = alice
        .send(direct("carol"), 7, "hello carol", None)
        .await
        .unwrap();
    let got = hook.wait_delivered(1).await;
    let r = &got[0];
    let b = &r.body;
    assert_eq!(
        r.signature,
        signature_of(&r.raw),
        "HMAC-SHA256 of the exact body"
    );
    assert_eq!(b["id"], format!("{}:carol", first.msg_id));
    assert_eq!(r.delivery, format!("{}:carol", first.msg_id));
    assert_eq!(
        (b["user"].as_str(), b["sender"].as_str()),
        (Some("carol"), Some("alice"))
    );
    assert_eq!(b["conversation"]["kind"], "direct");
    assert_eq!(b["conversation"]["id"], "alice");
    assert_eq!(b["msg_id"], first.msg_id.to_string());
    assert_eq!(b["seq"].as_u64(), Some(first.seq));
    assert_eq!(b["timestamp_ms"].as_i64(), Some(first.timestamp_ms));
    assert_eq!(b["content_type"].as_u64(), Some(7));
    assert_eq!(b["text"], "hello carol");
    assert_eq!(b["truncated"], false);
    assert_eq!(b["unread_total"].as_u64(), Some(1));
    assert_eq!(b["attempt"].as_u64(), Some(1));

    // The online recipient gets its push on the connection, no webhook.
    alice
        .send(direct("bob"), 1, "hello bob", None)
        .await
        .unwrap();
    let long = "x".repeat(300);
    let second = alice
        .send(direct("carol"), 1, long.as_str(), None)
        .await
        .unwrap();
    let got = hook.wait_delivered(2).await;
    let b = &got[1].body;
    assert_eq!(b["msg_id"], second.msg_id.to_string());
    assert_eq!(b["unread_total"].as_u64(), Some(2), "the badge counts both");
    assert_eq!(
        b["text"].as_str().unwrap().chars().count(),
        missive::config::PREVIEW_CHARS
    );
    assert_eq!(b["truncated"], true);

    // A (write fan-out) group: the offline member only.
    let g = alice
        .group_create(
            "trio",
            vec!["bob".into(), "carol".into()],
            pb::HistoryVisibility::Full,
        )
        .await
        .unwrap()
        .group
        .unwrap();
    let in_group = alice
        .send(group(&g.group_id), 1, "hi all", None)
        .await
        .unwrap();
    let got = hook.wait_delivered(3).await;
    let b = &got[2].body;
    assert_eq!(b["user"], "carol");
    assert_eq!(b["conversation"]["kind"], "group");
    assert_eq!(b["conversation"]["id"], g.group_id.as_str());
    assert_eq!(b["msg_id"], in_group.msg_id.to_string());
    assert_eq!(b["unread_total"].as_u64(), Some(3));

    wait_queue_empty(&server).await;
    let all = hook.seen();
    assert!(all.iter().all(|r| r.body["user"] == "carol"), "{all:?}");
    assert_once_each(
        &all,
        &[first.msg_id, second.msg_id, in_group.msg_id].map(|m| format!("{m}:carol")),
    );
    let stats = server.handle().push_stats();
    assert_eq!((stats.sent, stats.failed, stats.dropped), (3, 0, 0));
    server.stop().await;
}

#[tokio::test]
async fn webhook_down_then_up_every_notification_arrives_once() {
    // Refused connections first, then 500s, then 200s.
    let mut hook = Hook::reserve().await;
    let server = TestServer::start_api(|c| push_config(c, &hook)).await;
    let (alice, _a) = server.client("alice", "phone").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let ack = alice
            .send(direct("carol"), 1, format!("m{i}"), None)
            .await
            .unwrap();
        ids.push(format!("{}:carol", ack.msg_id));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.handle().push_stats().failed < 5 {
        assert!(tokio::time::Instant::now() < deadline, "no failed attempts");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        server.handle().store().core().push_queue_len().unwrap(),
        5,
        "kept while failing"
    );
    hook.state.fail_next.store(7, Ordering::SeqCst);
    hook.start().await;
    let got = hook.wait_delivered(5).await;
    wait_queue_empty(&server).await;
    assert_once_each(&got, &ids);
    assert!(hook.seen().len() >= 5 + 7, "the 500s were retried");
    assert!(
        got.iter().any(|r| r.body["attempt"].as_u64() > Some(2)),
        "tries while the webhook was down are counted: {got:?}"
    );
    let stats = server.handle().push_stats();
    assert_eq!((stats.sent, stats.dropped), (5, 0));
    // The same figures on /metrics, for an operator.
    let m = server.api().metrics().await;
    assert_eq!(m.get("missive_push_sent_total"), 5.0);
    assert_eq!(m.get("missive_push_dropped_total"), 0.0);
    assert_eq!(m.get("missive_push_failed_total"), stats.failed as f64);
    assert!(stats.failed >= 5 + 7, "refused and 500 attempts: {stats:?}");
    server.stop().await;
}

#[tokio::test]
async fn queued_notifications_are_delivered_after_a_restart() {
    let mut hook = Hook::reserve().await;
    let mut server = TestServer::start_with(|c| push_config(c, &hook)).await;
    let (alice, _a) = server.client("alice", "phone").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let ack = alice
            .send(direct("carol"), 1, format!("m{i}"), None)
            .await
            .unwrap();
        ids.push(format!("{}:carol", ack.msg_id));
    }
    // Stored with the messages: the queue holds them once the sends are acknowledged.
    assert_eq!(server.handle().store().core().push_queue_len().unwrap(), 3);
    alice.close().await;
    hook.start().await;
    server.restart().await;
    let got = hook.wait_delivered(3).await;
    wait_queue_empty(&server).await;
    assert_once_each(&got, &ids);
    let mut texts: Vec<&str> = got
        .iter()
        .map(|r| r.body["text"].as_str().unwrap())
        .collect();
    texts.sort();
    assert_eq!(
        texts,
        ["m0", "m1", "m2"],
        "content read from the store after the restart"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_notification_is_dropped_after_its_last_attempt() {
    let hook = Hook::running().await;
    hook.state.fail_next.store(u32::MAX, Ordering::SeqCst);
    let server = TestServer::start_with(|c| {
        push_config(c, &hook);
        c.push_max_attempts = 3;
    })
    .await;
    let (alice, _a) = server.client("alice", "phone").await;
    alice.send(direct("carol"), 1, "never", None).await.unwrap();
    wait_queue_empty(&server).await;
    let stats = server.handle().push_stats();
    assert_eq!((stats.sent, stats.failed, stats.dropped), (0, 3, 1));
    assert_eq!(hook.seen().len(), 3, "exactly push_max_attempts tries");
    server.stop().await;
}

#[tokio::test]
async fn a_message_recalled_before_its_notification_is_not_announced() {
    let mut hook = Hook::reserve().await;
    let server = TestServer::start_with(|c| push_config(c, &hook)).await;
    let (alice, _a) = server.client("alice", "phone").await;
    let gone = alice.send(direct("carol"), 1, "oops", None).await.unwrap();
    alice.recall(direct("carol"), gone.msg_id).await.unwrap();
    hook.start().await;
    let kept = alice
        .send(direct("carol"), 1, "this one", None)
        .await
        .unwrap();
    let got = hook.wait_delivered(1).await;
    wait_queue_empty(&server).await;
    assert_once_each(&hook.delivered(), &[format!("{}:carol", kept.msg_id)]);
    assert_eq!(got[0].body["text"], "this one");
    assert_eq!(server.handle().push_stats().obsolete, 1);
    server.stop().await;
}

#[tokio::test]
async fn without_a_webhook_nothing_is_queued() {
    let server = TestServer::start().await;
    let (alice, _a) = server.client("alice", "phone").await;
    alice.send(direct("carol"), 1, "hi", None).await.unwrap();
    assert_eq!(server.handle().store().core().push_queue_len().unwrap(), 0);
    server.stop().await;
}

#[tokio::test]
async fn bad_push_settings_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = test_config(&dir);
    c.push_webhook_url = "https://hooks.example/missive".into();
    c.push_webhook_secret = HOOK_SECRET.into();
    let err = missive::Server::start(c.clone()).await.err().unwrap();
    assert!(err.to_string().contains("push_webhook_url"), "{err}");
    c.push_webhook_url = "http://127.0.0.1:9/hook".into();
    c.push_webhook_secret = "short".into();
    let err = missive::Server::start(c).await.err().unwrap();
    assert!(err.to_string().contains("push_webhook_secret"), "{err}");
}

async fn spawn_missived(config: &std::path::Path, addr: &str) -> Daemon {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_missived"))
        .arg("--config")
        .arg(config)
        .env_remove("MISSIVE_LISTEN")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("missived starts");
    let daemon = Daemon(child);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "missived listens within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    daemon
}

#[tokio::test]
async fn notifications_of_acknowledged_sends_survive_sigkill() {
    let mut hook = Hook::reserve().await;
    let dir = tempfile::tempdir().unwrap();
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let config = dir.path().join("missive.toml");
    std::fs::write(
        &config,
        format!(
            "listen = [\"{addr}\"]\ndata_dir = \"{}\"\nsecret = \"{SECRET}\"\n\
             durability = \"async\"\nlog = \"warn\"\npush_webhook_url = \"{}\"\n\
             push_webhook_secret = \"{HOOK_SECRET}\"\npush_retry_initial_ms = 20\n\
             push_retry_max_ms = 200\npush_max_attempts = 1000\n",
            dir.path().join("data").display(),
            hook.url()
        ),
    )
    .unwrap();
    let mut daemon = spawn_missived(&config, &addr).await;
    let token = missive_protocol::token::mint(
        SECRET.as_bytes(),
        "alice",
        "phone",
        (missive::now_ms() / 1000) as u64 + 3600,
    );
    let mut conn = missive_client::Connection::connect(&addr).await.unwrap();
    conn.login(&token, "phone", 0).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        let send = pb::Send {
            client_msg_id: format!("c{i}"),
            to: Some(direct("carol")),
            content_type: 1,
            content: format!("m{i}").into_bytes(),
            ..Default::default()
        };
        match conn
            .request(missive_protocol::Packet::Send(send))
            .await
            .unwrap()
        {
            missive_protocol::Packet::SendAck(ack) => ids.push(format!("{}:carol", ack.msg_id)),
            other => panic!("{other:?}"),
        }
    }
    // Killed at once after the acks, while every notification is still queued (the webhook
    // refuses connections).
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();
    drop(conn);
    hook.start().await;
    let _daemon = spawn_missived(&config, &addr).await;
    let got = hook.wait_delivered(5).await;
    assert_once_each(&got, &ids);
}

/// The notifications delivered for `user`, by id.
fn delivered_for(hook: &Hook, user: &str) -> Vec<String> {
    hook.delivered()
        .into_iter()
        .filter(|r| r.body["user"] == user)
        .map(|r| r.delivery)
        .collect()
}

/// A client of the reference library, logged in as `user` on `device`, in the background or not.
async fn client_in(
    server: &TestServer,
    user: &str,
    device: &str,
    background: bool,
) -> (
    missive_client::Client,
    tokio::sync::mpsc::UnboundedReceiver<missive_client::ClientEvent>,
) {
    let mut cfg =
        missive_client::ClientConfig::new(&server.addr, server.token(user, device), device);
    cfg.auto_reconnect = false;
    cfg.background = background;
    let mut client = missive_client::Client::connect(cfg).await.unwrap();
    let events = client.events().unwrap();
    (client, events)
}

/// PROTOCOL.md 13.1, rule 2: a device whose socket is black-holed (it never reads, acks or
/// closes: no FIN) looks online, so its message is not notified when stored; it is notified
/// once `push_unacked_ms` after the push, and never again, also when the heartbeat sweep closes
/// the dead connection later with the push still unacknowledged. A device that acks in time
/// gets no notification.
#[tokio::test]
async fn a_black_holed_device_is_notified_once_in_time_and_an_acking_one_never() {
    let hook = Hook::running().await;
    let server = TestServer::start_with(|c| {
        push_config(c, &hook);
        c.push_unacked_ms = 1000;
        c.heartbeat_secs = 2;
    })
    .await;
    let (alice, _a) = server.client("alice", "phone").await;
    // Bob's connection: logged in, then nothing read, written or closed.
    let (_black_hole, _) = server.login("bob", "phone").await;
    let (_carol, mut carol_events) = server.client("carol", "phone").await;
    // Erin's too, but her app said it is in the background: rule 1, notified when stored.
    let mut erin_hole = server.connect().await;
    erin_hole
        .login_with(pb::Login {
            token: server.token("erin", "phone"),
            device_id: "phone".into(),
            background: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let to_erin = alice
        .send(direct("erin"), 1, "hi erin", None)
        .await
        .unwrap();
    let got = hook.wait_delivered(1).await;
    assert_eq!(got[0].delivery, format!("{}:erin", to_erin.msg_id));
    assert_eq!(server.handle().push_stats().unacked, 0, "erin's by rule 1");

    let sent = std::time::Instant::now();
    let to_bob = alice
        .send(direct("bob"), 1, "are you there?", None)
        .await
        .unwrap();
    let to_carol = alice
        .send(direct("carol"), 1, "hi carol", None)
        .await
        .unwrap();
    // Dave is offline: his notification is queued (and sent) at once, after bob's message; the
    // worker has read past bob's message id by the time bob's notification is queued.
    let to_dave = alice
        .send(direct("dave"), 1, "hi dave", None)
        .await
        .unwrap();
    assert_eq!(
        message(&next_entry(&mut carol_events).await).msg_id,
        to_carol.msg_id
    );
    assert!(
        delivered_for(&hook, "bob").is_empty(),
        "an online device is not notified when the message is stored"
    );
    let got = hook.wait_delivered(2).await;
    assert_eq!(got[1].delivery, format!("{}:dave", to_dave.msg_id));
    let got = hook.wait_delivered(3).await;
    let after = sent.elapsed();
    assert_eq!(got[2].delivery, format!("{}:bob", to_bob.msg_id));
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_millis(3000),
        "notified {after:?} after the push, push_unacked_ms is 1000"
    );
    // The sweep closes bob's dead connection after 2 × 2 s of silence; that notifies nothing
    // more, and carol, who acked, is never notified.
    let closed = tokio::time::Instant::now() + Duration::from_secs(6);
    while server.handle().online_sessions() > 2 {
        assert!(
            tokio::time::Instant::now() < closed,
            "the dead connections were never closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        delivered_for(&hook, "bob"),
        vec![format!("{}:bob", to_bob.msg_id)],
        "exactly one notification for the black-holed device"
    );
    assert!(delivered_for(&hook, "carol").is_empty(), "carol acked");
    let stats = server.handle().push_stats();
    assert_eq!(stats.unacked, 1);
    server.stop().await;
}

/// PROTOCOL.md 11.2: a device in the background still gets its pushes, and its user is notified
/// at once, as if offline; back in the foreground (HEARTBEAT app_state), acks count again and
/// nothing is notified; in the background again, notified again.
#[tokio::test]
async fn a_background_device_gets_the_push_and_its_user_the_notification() {
    let hook = Hook::running().await;
    let server = TestServer::start_with(|c| {
        push_config(c, &hook);
        c.push_unacked_ms = 500;
    })
    .await;
    let (alice, _a) = server.client("alice", "phone").await;
    let (dave, mut dave_events) = client_in(&server, "dave", "phone", true).await;

    let first = alice.send(direct("dave"), 1, "one", None).await.unwrap();
    assert_eq!(
        message(&next_entry(&mut dave_events).await).msg_id,
        first.msg_id
    );
    let got = hook.wait_delivered(1).await;
    assert_eq!(got[0].delivery, format!("{}:dave", first.msg_id));
    assert_eq!(
        server.handle().push_stats().unacked,
        0,
        "rule 1: when stored"
    );

    let ack = dave.set_background(false, 0).await.unwrap();
    assert_eq!(ack.app_state, pb::AppState::Foreground as i32);
    let second = alice.send(direct("dave"), 1, "two", None).await.unwrap();
    assert_eq!(
        message(&next_entry(&mut dave_events).await).msg_id,
        second.msg_id
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        delivered_for(&hook, "dave").len(),
        1,
        "acked in the foreground"
    );

    let ack = dave.set_background(true, 600).await.unwrap();
    assert_eq!(
        (ack.app_state, ack.interval_secs),
        (pb::AppState::Background as i32, 600)
    );
    let third = alice.send(direct("dave"), 1, "three", None).await.unwrap();
    assert_eq!(
        message(&next_entry(&mut dave_events).await).msg_id,
        third.msg_id
    );
    let got = hook.wait_delivered(2).await;
    assert_eq!(got[1].delivery, format!("{}:dave", third.msg_id));
    server.stop().await;
}

/// PROTOCOL.md 13.1: the user's last foreground connection closing with a push unacknowledged
/// notifies at once, long before `push_unacked_ms`; another device of the user in the
/// foreground that acks keeps it from being notified.
#[tokio::test]
async fn a_connection_closed_with_an_unacked_push_is_notified_at_once() {
    let hook = Hook::running().await;
    let server = TestServer::start_with(|c| {
        push_config(c, &hook);
        c.push_unacked_ms = 20_000;
    })
    .await;
    let (alice, _a) = server.client("alice", "phone").await;
    let (mut frank, _) = server.login("frank", "phone").await;
    let sent = alice.send(direct("frank"), 1, "hello", None).await.unwrap();
    let (_, push) = e2e_recv_push(&mut frank).await;
    assert_eq!(push.version, 1);
    let closed = std::time::Instant::now();
    drop(frank);
    let got = hook.wait_delivered(1).await;
    assert_eq!(got[0].delivery, format!("{}:frank", sent.msg_id));
    assert!(
        closed.elapsed() < Duration::from_secs(5),
        "{:?}",
        closed.elapsed()
    );

    // Grace has two devices: the phone goes away unacked, the tablet acks.
    let (mut phone, _) = server.login("grace", "phone").await;
    let (_tablet, mut tablet_events) = server.client("grace", "tablet").await;
    let to_grace = alice.send(direct("grace"), 1, "hi", None).await.unwrap();
    e2e_recv_push(&mut phone).await;
    assert_eq!(
        message(&next_entry(&mut tablet_events).await).msg_id,
        to_grace.msg_id
    );
    drop(phone);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(delivered_for(&hook, "grace").is_empty(), "the tablet acked");
    server.stop().await;
}

/// The next PUSH on a raw connection (other frames skipped), within 5 s.
async fn e2e_recv_push(conn: &mut missive_client::Connection) -> (u32, pb::Push) {
    let deadline = Duration::from_secs(5);
    loop {
        let (frame, packet) = conn
            .recv_packet_timeout(deadline)
            .await
            .unwrap()
            .expect("connection open");
        if let missive_protocol::Packet::Push(p) = packet {
            return (frame.request_id, p);
        }
    }
}

/// PROTOCOL.md 15.6: a muted conversation is not notified, except for a message that
/// @mentions the user; a read fan-out group notifies only the members it @mentions; unmuting
/// notifies again. CONTACTS shows the muted flag; bad mutes and mentions are refused.
#[tokio::test]
async fn muted_conversations_and_read_fanout_groups_notify_only_mentions() {
    let hook = Hook::running().await;
    let server = TestServer::start_with(|c| {
        push_config(c, &hook);
        c.fanout_threshold = 3;
    })
    .await;
    let (alice, _a) = server.client("alice", "phone").await;
    let small = alice
        .group_create(
            "small",
            vec!["bob".into(), "carol".into()],
            pb::HistoryVisibility::Full,
        )
        .await
        .unwrap()
        .group
        .unwrap();
    let big_members = ["bob", "carol", "dave", "erin"].map(String::from).to_vec();
    let big = alice
        .group_create("big", big_members, pb::HistoryVisibility::Full)
        .await
        .unwrap()
        .group
        .unwrap();
    assert_eq!(small.fanout, pb::FanoutMode::Write as i32);
    assert_eq!(big.fanout, pb::FanoutMode::Read as i32);
    {
        // Bob mutes his chat with alice and the small group, then goes offline.
        let (bob, _b) = server.client("bob", "phone").await;
        assert!(bob.mute(direct("alice"), true).await.unwrap());
        assert!(bob.mute(group(&small.group_id), true).await.unwrap());
        assert!(
            bob.mute(group(&small.group_id), true).await.unwrap(),
            "idempotent"
        );
        let refused = bob.mute(group("g-nobody-is-in"), true).await.unwrap_err();
        assert!(refused.to_string().contains("NOT_FOUND"), "{refused}");
        bob.close().await;
    }
    while server.handle().online_sessions() > 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let id = |ack: &pb::SendAck, user: &str| format!("{}:{user}", ack.msg_id);
    let mut want = Vec::new();
    alice
        .send(direct("bob"), 1, "muted chat", None)
        .await
        .unwrap();
    let plain = alice
        .send(group(&small.group_id), 1, "hi all", None)
        .await
        .unwrap();
    want.push(id(&plain, "carol"));
    let mention = alice
        .send_mentioning(&small.group_id, 1, "@bob look", vec!["bob".into()], None)
        .await
        .unwrap();
    want.extend([id(&mention, "bob"), id(&mention, "carol")]);
    alice
        .send(group(&big.group_id), 1, "to the big group", None)
        .await
        .unwrap();
    let in_big = alice
        .send_mentioning(
            &big.group_id,
            1,
            "@dave @stranger",
            vec!["dave".into(), "stranger".into(), "dave".into()],
            None,
        )
        .await
        .unwrap();
    want.push(id(&in_big, "dave"));
    let (bob, _b) = server.client("bob", "tablet").await;
    assert!(!bob.mute(direct("alice"), false).await.unwrap());
    bob.close().await;
    while server.handle().online_sessions() > 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let unmuted = alice.send(direct("bob"), 1, "unmuted", None).await.unwrap();
    want.push(id(&unmuted, "bob"));

    let got = hook.wait_delivered(want.len()).await;
    wait_queue_empty(&server).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_once_each(&hook.delivered(), &want);
    let mentioned = got
        .iter()
        .find(|r| r.delivery == id(&in_big, "dave"))
        .unwrap();
    assert_eq!(mentioned.body["conversation"]["kind"], "group");

    // What bob's devices see: the mentions, and muted in CONTACTS.
    let (bob, _b) = server.client("bob", "phone").await;
    let contacts = bob.contacts(Vec::new(), 50).await.unwrap().contacts;
    let muted = |conv: pb::Conversation| {
        contacts
            .iter()
            .find(|c| c.conversation.as_ref() == Some(&conv))
            .map(|c| c.muted)
    };
    assert_eq!(muted(direct("alice")), Some(false));
    assert_eq!(muted(group(&small.group_id)), Some(true));
    assert_eq!(muted(group(&big.group_id)), Some(false));
    let small_last = contacts
        .iter()
        .find(|c| c.conversation.as_ref() == Some(&group(&small.group_id)))
        .and_then(|c| c.last_message.clone())
        .unwrap();
    assert_eq!(small_last.mentions, vec!["bob".to_string()]);

    // Mentions belong to group messages, at most 50.
    let err = alice
        .request(missive_protocol::Packet::Send(pb::Send {
            client_msg_id: "m-direct".into(),
            to: Some(direct("bob")),
            content_type: 1,
            content: b"@bob".to_vec(),
            mentions: vec!["bob".into()],
            media: Vec::new(),
        }))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("INVALID_ARGUMENT"), "{err}");
    let many = (0..51).map(|i| format!("u{i}")).collect();
    let err = alice
        .send_mentioning(&small.group_id, 1, "all", many, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("at most 50"), "{err}");
    server.stop().await;
}

/// Mute and @mentions apply to rule 2 as to rule 1 (PROTOCOL.md 13.1, 15.6): a black-holed
/// device whose user muted the conversation is not notified when its push goes unacknowledged;
/// a message that @mentions the user in a muted group is, once.
#[tokio::test]
async fn a_black_holed_device_in_a_muted_conversation_is_notified_only_when_mentioned() {
    let hook = Hook::running().await;
    let server = TestServer::start_with(|c| {
        push_config(c, &hook);
        c.push_unacked_ms = 500;
    })
    .await;
    let (alice, _a) = server.client("alice", "phone").await;
    let g = alice
        .group_create("pair", vec!["bob".into()], pb::HistoryVisibility::Full)
        .await
        .unwrap()
        .group
        .unwrap();
    let (bob, _b) = server.client("bob", "tablet").await;
    bob.mute(direct("alice"), true).await.unwrap();
    bob.mute(group(&g.group_id), true).await.unwrap();
    bob.close().await;
    // Bob's phone: logged in, then nothing read, acked or closed.
    let (_black_hole, _) = server.login("bob", "phone").await;
    alice.send(direct("bob"), 1, "muted", None).await.unwrap();
    alice
        .send(group(&g.group_id), 1, "muted too", None)
        .await
        .unwrap();
    let mention = alice
        .send_mentioning(&g.group_id, 1, "@bob", vec!["bob".into()], None)
        .await
        .unwrap();
    let got = hook.wait_delivered(1).await;
    assert_eq!(got[0].delivery, format!("{}:bob", mention.msg_id));
    wait_queue_empty(&server).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        delivered_for(&hook, "bob").len(),
        1,
        "{:?}",
        hook.delivered()
    );
    // All three were watched and queued (rule 2); two were muted when sent.
    assert_eq!(server.handle().push_stats().unacked, 3);
    server.stop().await;
}
