//! End to end: the built-in word filter (PROTOCOL.md 15.8, docs/moderation.md). Rejected
//! messages store nothing and get CONTENT_REJECTED; masked ones are stored and delivered masked,
//! with the stored content in the SEND_ACK; a message stored earlier keeps its ack whatever the
//! list says now; the list reloads while a pair chats (a changed file, SIGHUP on the real
//! binary), and a bad file leaves the list in force.

mod common;
mod e2e;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::observe::{account, check_store};
use common::*;
use e2e::*;
use missive_client::{pb, ClientError, Connection};
use missive_protocol::{ErrorCode, Packet};
use serde_json::json;

const LIST: &str = "# test list\n[reject]\nfree crypto\n[mask]\ndarn\n";

/// Writes `text` to `path` as an operator should: a temp file renamed over it.
fn install(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn with_list(text: &str, poll_ms: u64) -> (TestServer, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("words.txt");
    install(&path, text);
    let file = path.to_str().unwrap().to_owned();
    let server = TestServer::start_api(move |c| {
        c.word_filter = file;
        c.word_filter_poll_ms = poll_ms;
    })
    .await;
    (server, dir, path)
}

fn send(id: &str, to: pb::Conversation, content_type: u32, content: &[u8]) -> Packet {
    Packet::Send(pb::Send {
        client_msg_id: id.into(),
        to: Some(to),
        content_type,
        content: content.to_vec(),
        ..Default::default()
    })
}

async fn acked(conn: &mut Connection, packet: Packet) -> pb::SendAck {
    match request(conn, packet).await {
        Packet::SendAck(a) => a,
        other => panic!("expected SEND_ACK, got {other:?}"),
    }
}

async fn rejected(conn: &mut Connection, packet: Packet) {
    assert_eq!(
        request_err(conn, packet).await,
        (ErrorCode::ContentRejected, false)
    );
}

#[tokio::test]
async fn rejected_messages_store_nothing_and_masked_ones_arrive_masked() {
    let (server, _dir, _) = with_list(LIST, 0).await;
    let (mut alice, _) = server.login("alice", "phone").await;
    let (mut alice_tablet, _) = server.login("alice", "tablet").await;
    let (mut bob, _) = server.login("bob", "phone").await;

    rejected(&mut alice, send("a1", dm("bob"), 1, b"FREE   crypto here")).await;
    rejected(
        &mut alice,
        send("a1", dm("bob"), 1, "ｆｒｅｅ crypto".as_bytes()),
    )
    .await;
    // Not on a list, another content type, not UTF-8: stored as sent, no content in the ack.
    let plain = acked(
        &mut alice,
        send("a2", dm("bob"), 1, b"free cryptography class"),
    )
    .await;
    assert!(plain.content.is_empty());
    acked(&mut alice, send("a3", dm("bob"), 7, b"free crypto")).await;
    acked(&mut alice, send("a4", dm("bob"), 1, &[0xff, 0xfe, b'x'])).await;

    let masked = acked(
        &mut alice,
        send("a5", dm("bob"), 1, "oh DÁRN, see you".as_bytes()),
    )
    .await;
    assert_eq!(masked.content, b"oh ****, see you");
    // Bob and alice's tablet get it masked.
    for conn in [&mut bob, &mut alice_tablet] {
        let mut last = None;
        while last.as_deref() != Some("oh ****, see you") {
            let (_, push) = recv_push(conn).await;
            last = Some(String::from_utf8_lossy(&message(pushed(&push)).content).into_owned());
            conn.send_packet(Packet::PushAck(pb::PushAck {
                version: push.version,
            }))
            .await
            .unwrap();
        }
    }
    // The resend gets the first ack, with the stored content.
    let again = acked(&mut alice, send("a5", dm("bob"), 1, b"oh darn, see you")).await;
    assert!(again.duplicate);
    assert_eq!(
        (again.msg_id, again.content.clone()),
        (masked.msg_id, masked.content.clone())
    );

    // Groups too.
    let group = create_group(&mut alice, &["bob"]).await;
    rejected(&mut bob, send("b1", group.clone(), 1, b"free crypto!")).await;
    let g = acked(&mut bob, send("b2", group, 1, b"darn it")).await;
    assert_eq!(g.content, b"**** it");
    drop((alice, alice_tablet, bob));

    let bob_account = account(&server, "bob").await;
    let got = message_texts(&bob_account.entries);
    for refused in ["FREE   crypto here", "ｆｒｅｅ crypto", "free crypto!"] {
        assert!(
            !got.contains(&refused.to_owned()),
            "{refused} was stored: {got:?}"
        );
    }
    assert_eq!(
        got.iter().filter(|t| t.contains("****")).count(),
        2,
        "{got:?}"
    );
    assert!(
        got.contains(&"free crypto".to_owned()),
        "content type 7 is not filtered: {got:?}"
    );
    check_store(&server, &["alice", "bob"]);

    // The API: 422 CONTENT_REJECTED, and the stored content when masked.
    let api = server.api();
    let msg = |id: &str, text: &str| json!({"from": "carol", "to": {"user": "bob"}, "client_msg_id": id, "content": text});
    let refused = api.post("/v1/messages", msg("c1", "free crypto")).await;
    assert_eq!(
        (refused.status, refused.error_code()),
        (422, 25),
        "{}",
        refused.text()
    );
    let stored = api.post("/v1/messages", msg("c2", "darn")).await;
    assert_eq!(stored.status, 201, "{}", stored.text());
    assert_eq!(stored.json()["content"], "****");
    let m = api.metrics().await;
    assert_eq!(m.get("missive_word_filter_rejected_total"), 4.0);
    // The resend of a5 was masked again (and answered with the first ack).
    assert_eq!(m.get("missive_word_filter_masked_total"), 4.0);
    assert_eq!(m.get("missive_word_filter_entries"), 2.0);
}

/// The reference client shows its own masked message as stored, from the SEND_ACK.
#[tokio::test]
async fn the_reference_client_shows_its_own_message_as_stored() {
    let (server, _dir, _) = with_list(LIST, 0).await;
    let (dave, mut events) = server.client("dave", "phone").await;
    let ack = dave
        .send(dm("erin"), 1, "darn it".as_bytes().to_vec(), None)
        .await
        .unwrap();
    assert_eq!(ack.content, b"**** it");
    let own = next_entry(&mut events).await;
    assert_eq!(own.version, ack.version);
    assert_eq!(message(&own).content, b"**** it");
}

#[tokio::test]
async fn a_message_stored_before_a_list_change_keeps_its_ack() {
    let (server, _dir, path) = with_list(LIST, 0).await;
    let (mut alice, _) = server.login("alice", "phone").await;
    let first = acked(&mut alice, send("m1", dm("bob"), 1, b"meet at the pier")).await;
    install(&path, &format!("{LIST}[reject]\npier\n"));
    assert_eq!(server.handle().reload_words(), Ok(true));
    // The resend (say its SEND_ACK was lost) is answered as the message it was.
    let again = acked(&mut alice, send("m1", dm("bob"), 1, b"meet at the pier")).await;
    assert!(again.duplicate);
    assert_eq!(again.msg_id, first.msg_id);
    // A new message with the word is refused.
    rejected(&mut alice, send("m2", dm("bob"), 1, b"the pier then")).await;
    // Bob has the one message: the refusal stored nothing.
    assert_eq!(server.current_version("bob"), 1);
}

/// Bob writes to alice all along; the list changes under him twice (once to a file that does
/// not parse). Every message is acked or refused, each by the list in force when it arrived,
/// and alice has exactly the acked ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_reloads_while_a_pair_chats() {
    let (server, _dir, path) = with_list(LIST, 50).await;
    let api = server.api();
    let (mut bob, _) = server.login("bob", "phone").await;
    let (mut acks, mut refusals) = (Vec::new(), Vec::new());
    let mut phase = 0;
    let mut reloaded_at = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0.. {
        // Half the messages have the word the new list rejects.
        let text = if i % 2 == 0 {
            format!("hello {i}")
        } else {
            format!("secret plan {i}")
        };
        let body = send(&format!("m{i}"), dm("alice"), 1, text.as_bytes());
        match bob.request_timeout(body, Duration::from_secs(5)).await {
            Ok(Packet::SendAck(a)) => acks.push((i, text, a)),
            Err(ClientError::Server { code, .. }) if code == ErrorCode::ContentRejected as u32 => {
                refusals.push((i, text))
            }
            other => panic!("message {i}: {other:?}"),
        }
        if phase == 0 && i == 20 {
            install(&path, &format!("{LIST}[reject]\nsecret plan\n"));
            phase = 1;
        }
        if phase == 1 && refusals.iter().any(|(_, t)| t.starts_with("secret plan")) {
            reloaded_at = Some(i);
            // A broken file: logged, counted, the list in force stays.
            install(&path, "[reject]\nok\n[shout]\nNO\n");
            phase = 2;
        }
        if phase == 2
            && api
                .metrics()
                .await
                .get("missive_word_filter_reload_failures_total")
                >= 1.0
        {
            phase = 3;
        }
        if phase == 3 && i > reloaded_at.unwrap() + 20 {
            break;
        }
        assert!(Instant::now() < deadline, "phase {phase} not reached");
    }
    let at = reloaded_at.unwrap();
    // Before the change nothing was refused; after the first refusal every "secret plan" was.
    assert!(
        refusals
            .iter()
            .all(|(i, t)| *i > 20 && t.starts_with("secret plan")),
        "{refusals:?}"
    );
    assert!(acks
        .iter()
        .all(|(i, t, _)| *i <= at || t.starts_with("hello")));
    drop(bob);
    let alice = message_texts(&account(&server, "alice").await.entries);
    let sent: Vec<String> = acks.iter().map(|(_, t, _)| t.clone()).collect();
    assert_eq!(
        alice, sent,
        "alice has every acked message once, in order, and nothing else"
    );
    let m = api.metrics().await;
    assert_eq!(
        m.get("missive_word_filter_reloads_total"),
        2.0,
        "the first list and one reload"
    );
    assert_eq!(m.get("missive_word_filter_entries"), 3.0);
    check_store(&server, &["alice", "bob"]);
}

fn missived() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_missived"));
    cmd.env_remove("MISSIVE_CONFIG").stdin(Stdio::null());
    cmd
}

#[tokio::test]
async fn sighup_reloads_the_real_binary_and_check_words_validates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("words.txt");
    install(&path, LIST);
    let list = path.to_str().unwrap();

    let ok = missived().args(["--check-words", list]).output().unwrap();
    assert!(ok.status.success());
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        format!("{list}: 1 entries to reject, 1 to mask")
    );
    let bad_path = dir.path().join("bad.txt");
    std::fs::write(&bad_path, "fine\n[shout]\n").unwrap();
    let bad = missived()
        .arg("--check-words")
        .arg(&bad_path)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("line 2") && err.contains("[shout]"), "{err}");

    // A bad list keeps the server from starting, with the reason.
    let data = dir.path().join("data");
    let refused = missived()
        .args(["--listen", "127.0.0.1:0", "--secret", SECRET])
        .arg("--data-dir")
        .arg(&data)
        .env("MISSIVE_WORD_FILTER", &bad_path)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("word_filter") && err.contains("line 2"),
        "{err}"
    );

    // Polling off: only SIGHUP reloads.
    let addr = format!("127.0.0.1:{}", free_port());
    let child = missived()
        .args(["--listen", &addr, "--secret", SECRET, "--log", "warn"])
        .arg("--data-dir")
        .arg(&data)
        .env("MISSIVE_WORD_FILTER", list)
        .env("MISSIVE_WORD_FILTER_POLL_MS", "0")
        .spawn()
        .unwrap();
    let daemon = Daemon(child);
    let mut bob = connect_when_up(&addr, "bob").await;
    acked(&mut bob, send("s1", dm("alice"), 1, b"secret plan")).await;
    install(&path, &format!("{LIST}[reject]\nsecret plan\n"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Not picked up without SIGHUP.
    let before = acked(&mut bob, send("s2", dm("alice"), 1, b"secret plan")).await;
    assert!(before.content.is_empty());
    let pid = daemon.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 3;
    loop {
        let body = send(&format!("s{n}"), dm("alice"), 1, b"secret plan");
        match bob.request_timeout(body, Duration::from_secs(5)).await {
            Ok(Packet::SendAck(_)) => {}
            Err(e) if e.server_code() == Some(ErrorCode::ContentRejected) => break,
            other => panic!("{other:?}"),
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload the list");
        n += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Still serving.
    heartbeat_ok(&mut bob, 3).await;
    drop(daemon);
}
