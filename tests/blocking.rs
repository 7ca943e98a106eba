//! End to end: blocking (BLOCK, BLOCK_LIST, PROTOCOL.md 15.7). Direct messages between users one
//! of whom blocked the other are refused with BLOCKED, either way, and store nothing; history,
//! groups and earlier acks stay; typing is dropped; the list pages and is bounded; a block and a
//! send racing each other are ordered by the store, never half applied; the HTTP API does the
//! same on a user's behalf.

mod common;
mod e2e;

use std::time::Duration;

use common::observe::{account, check_store};
use common::*;
use e2e::*;
use missive_client::{pb, Connection};
use missive_protocol::{ErrorCode, Packet};
use serde_json::json;

async fn block(conn: &mut Connection, user: &str, blocked: bool) -> bool {
    let body = pb::Block {
        user_id: user.into(),
        blocked,
    };
    match request(conn, Packet::Block(body)).await {
        Packet::BlockAck(a) => a.blocked,
        other => panic!("expected BLOCK_ACK, got {other:?}"),
    }
}

async fn block_list(conn: &mut Connection, after: &str, limit: u32) -> pb::BlockListAck {
    let body = pb::BlockList {
        after: after.into(),
        limit,
    };
    match request(conn, Packet::BlockList(body)).await {
        Packet::BlockListAck(a) => a,
        other => panic!("expected BLOCK_LIST_ACK, got {other:?}"),
    }
}

/// A SEND that must be refused with BLOCKED (not fatal); returns the error's message.
async fn send_blocked(conn: &mut Connection, id: &str, to: &str, text: &str) -> String {
    let body = send_body(id, to, text.as_bytes());
    match conn
        .request_timeout(Packet::Send(body), Duration::from_secs(5))
        .await
    {
        Err(missive_client::ClientError::Server {
            code,
            fatal,
            message,
            ..
        }) => {
            assert_eq!(code, ErrorCode::Blocked as u32, "{message}");
            assert!(!fatal, "BLOCKED is not fatal");
            message
        }
        other => panic!("expected ERROR BLOCKED, got {other:?}"),
    }
}

#[tokio::test]
async fn a_block_refuses_direct_messages_both_ways_and_keeps_history() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.login("alice", "phone").await;
    let (mut bob, _) = server.login("bob", "phone").await;
    let before = send_body("bob-1", "alice", b"hi alice");
    let first = match request(&mut bob, Packet::Send(before.clone())).await {
        Packet::SendAck(a) => a,
        other => panic!("expected SEND_ACK, got {other:?}"),
    };
    raw_send(&mut alice, "bob", "hi bob").await;
    let group = create_group(&mut alice, &["bob"]).await;
    drop((alice, bob));
    let (alice_before, bob_before) = (
        account(&server, "alice").await,
        account(&server, "bob").await,
    );

    let (mut alice, _) = server.login("alice", "phone").await;
    let (mut bob, _) = server.login("bob", "phone").await;
    assert!(block(&mut alice, "bob", true).await);
    assert!(block(&mut alice, "bob", true).await, "idempotent");

    // Bob is told, and so is alice when she writes to the user she blocked.
    let msg = send_blocked(&mut bob, "bob-2", "alice", "are you there?").await;
    assert!(msg.contains("alice does not accept your messages"), "{msg}");
    let msg = send_blocked(&mut alice, "alice-2", "bob", "bye").await;
    assert!(msg.contains("you blocked bob"), "{msg}");
    // The message stored before the block keeps its answer.
    match request(&mut bob, Packet::Send(before)).await {
        Packet::SendAck(a) => {
            assert!(a.duplicate);
            assert_eq!((a.msg_id, a.version), (first.msg_id, first.version));
        }
        other => panic!("expected the first SEND_ACK again, got {other:?}"),
    }
    // Groups are not affected: bob's group message reaches alice.
    let to_group = pb::Send {
        client_msg_id: "bob-g".into(),
        to: Some(group),
        content_type: 1,
        content: b"in the group".to_vec(),
        ..Default::default()
    };
    assert!(matches!(
        request(&mut bob, Packet::Send(to_group)).await,
        Packet::SendAck(_)
    ));
    drop((alice, bob));

    // Nothing but the group message was stored; history is as it was.
    let (alice_now, bob_now) = (
        account(&server, "alice").await,
        account(&server, "bob").await,
    );
    assert_eq!(
        message_texts(&alice_now.entries)[..2],
        message_texts(&alice_before.entries)[..2]
    );
    assert_eq!(
        message_texts(&alice_now.entries),
        ["hi alice", "hi bob", "in the group"],
        "alice's inbox"
    );
    assert_eq!(
        message_texts(&bob_now.entries),
        ["hi alice", "hi bob", "in the group"],
        "bob's inbox"
    );
    assert_eq!(
        alice_now.unread_total,
        alice_before.unread_total + 1,
        "the group message"
    );
    assert_eq!(bob_now.unread_total, bob_before.unread_total);
    assert_eq!(alice_now.contacts.len(), 2, "the direct chat and the group");
    check_store(&server, &["alice", "bob"]);

    // Unblocked: messages go through again; the id refused while blocked is stored now.
    let (mut alice, _) = server.login("alice", "phone").await;
    let (mut bob, _) = server.login("bob", "phone").await;
    let list = block_list(&mut alice, "", 0).await;
    assert_eq!(
        (list.user_ids, list.total, list.has_more),
        (vec!["bob".to_owned()], 1, false)
    );
    assert!(!block(&mut alice, "bob", false).await);
    let again = send_body("bob-2", "alice", b"are you there?");
    match request(&mut bob, Packet::Send(again)).await {
        Packet::SendAck(a) => assert!(!a.duplicate, "nothing was stored for it while blocked"),
        other => panic!("expected SEND_ACK, got {other:?}"),
    }
    raw_send(&mut alice, "bob", "yes").await;
    assert_eq!(block_list(&mut alice, "", 0).await.total, 0);
    drop((alice, bob));
    let alice_after = account(&server, "alice").await;
    assert_eq!(
        message_texts(&alice_after.entries),
        [
            "hi alice",
            "hi bob",
            "in the group",
            "are you there?",
            "yes"
        ]
    );
    check_store(&server, &["alice", "bob"]);
}

#[tokio::test]
async fn the_block_list_pages_in_id_order_and_is_bounded() {
    let server = TestServer::start_with(|c| c.max_blocks_per_user = 5).await;
    let (mut alice, _) = server.login("alice", "phone").await;
    for u in ["u3", "u1", "u5", "u2", "u4"] {
        assert!(block(&mut alice, u, true).await);
    }
    let over = pb::Block {
        user_id: "u6".into(),
        blocked: true,
    };
    assert_eq!(
        request_err(&mut alice, Packet::Block(over.clone())).await,
        (ErrorCode::LimitExceeded, false)
    );
    // At the limit, blocking someone already blocked is still fine.
    assert!(block(&mut alice, "u2", true).await);

    let p1 = block_list(&mut alice, "", 2).await;
    assert_eq!(
        (p1.user_ids.clone(), p1.has_more, p1.total),
        (vec!["u1".into(), "u2".into()], true, 5)
    );
    let p2 = block_list(&mut alice, "u2", 2).await;
    assert_eq!(
        (p2.user_ids, p2.has_more),
        (vec!["u3".into(), "u4".into()], true)
    );
    let p3 = block_list(&mut alice, "u4", 2).await;
    assert_eq!((p3.user_ids, p3.has_more), (vec!["u5".to_owned()], false));

    // Unblocking someone never blocked changes nothing; unblocking one frees a place.
    assert!(!block(&mut alice, "nobody", false).await);
    assert_eq!(block_list(&mut alice, "", 0).await.total, 5);
    assert!(!block(&mut alice, "u3", false).await);
    assert!(block(&mut alice, "u6", true).await);
    let all = block_list(&mut alice, "", 0).await;
    assert_eq!(
        (all.user_ids, all.total),
        (
            vec!["u1", "u2", "u4", "u5", "u6"]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>(),
            5
        )
    );

    // Bad requests: oneself, an invalid id, an invalid cursor.
    for bad in ["alice", "", "bad\u{0}id"] {
        let body = pb::Block {
            user_id: bad.into(),
            blocked: true,
        };
        assert_eq!(
            request_err(&mut alice, Packet::Block(body)).await,
            (ErrorCode::InvalidArgument, false),
            "{bad:?}"
        );
    }
    let body = pb::BlockList {
        after: "x".repeat(65),
        limit: 0,
    };
    assert_eq!(
        request_err(&mut alice, Packet::BlockList(body)).await,
        (ErrorCode::InvalidArgument, false)
    );
    // The connection is fine after all of them.
    heartbeat_ok(&mut alice, 7).await;
}

/// Bob sends while alice blocks him, over and over, on two connections at once. Whichever the
/// store takes first wins, and nothing is half done: an acked message is in both inboxes once,
/// a refused one in neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_and_a_send_racing_are_never_both_half_applied() {
    const ROUNDS: usize = 60;
    let server = TestServer::start().await;
    let (mut alice, _) = server.login("alice", "phone").await;
    let (mut bob, _) = server.login("bob", "phone").await;
    let (mut acked, mut refused) = (Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        let text = format!("race {i}");
        let body = send_body(&format!("race-{i}"), "alice", text.as_bytes());
        // A different head start each round, for one side or the other, so both orders come
        // up and some rounds are close calls.
        let offset = (i % 9) as i64 - 4;
        let wait = |us: i64| tokio::time::sleep(Duration::from_micros(us.max(0) as u64 * 300));
        let send = async {
            wait(offset).await;
            bob.request_timeout(Packet::Send(body), Duration::from_secs(5))
                .await
        };
        let blocking = async {
            wait(-offset).await;
            block(&mut alice, "bob", true).await
        };
        let (sent, blocked) = tokio::join!(send, blocking);
        assert!(blocked);
        match sent {
            Ok(Packet::SendAck(a)) => acked.push((text, a)),
            Err(missive_client::ClientError::Server { code, .. })
                if code == ErrorCode::Blocked as u32 =>
            {
                refused.push(text)
            }
            other => panic!("round {i}: expected SEND_ACK or BLOCKED, got {other:?}"),
        }
        // Once BLOCK_ACK is in, a send is refused.
        send_blocked(&mut bob, &format!("after-{i}"), "alice", "too late").await;
        assert!(!block(&mut alice, "bob", false).await);
    }
    println!("{} acked, {} refused", acked.len(), refused.len());
    // Both orders came up: the checks below looked at both outcomes.
    assert!(
        !acked.is_empty() && !refused.is_empty(),
        "{} acked, {} refused",
        acked.len(),
        refused.len()
    );
    drop((alice, bob));

    let alice_inbox = message_texts(&account(&server, "alice").await.entries);
    let bob_account = account(&server, "bob").await;
    let bob_inbox = message_texts(&bob_account.entries);
    for (text, ack) in &acked {
        assert_eq!(
            alice_inbox.iter().filter(|t| *t == text).count(),
            1,
            "{text} in alice's inbox"
        );
        let own = bob_account
            .entries
            .iter()
            .find(|e| e.version == ack.version)
            .unwrap_or_else(|| panic!("{text}: bob's entry {} missing", ack.version));
        assert_eq!(message(own).msg_id, ack.msg_id, "{text}");
    }
    for text in &refused {
        assert!(!alice_inbox.contains(text), "refused {text} reached alice");
        assert!(
            !bob_inbox.contains(text),
            "refused {text} is in bob's inbox"
        );
    }
    assert!(!alice_inbox.iter().any(|t| t == "too late"));
    assert_eq!(
        alice_inbox.len(),
        acked.len(),
        "alice's inbox holds the acked messages only"
    );
    assert_eq!(bob_inbox.len(), acked.len());
    check_store(&server, &["alice", "bob"]);
}

#[tokio::test]
async fn typing_between_blocked_users_is_dropped() {
    let server = TestServer::start().await;
    let (mut alice, _) = server.login("alice", "phone").await;
    let (mut bob, _) = server.login("bob", "phone").await;
    let typing = |to: &str| {
        Packet::Signal(pb::Signal {
            to: Some(dm(to)),
            kind: pb::SignalKind::Typing as i32,
            payload: Vec::new(),
        })
    };
    assert!(block(&mut alice, "bob", true).await);
    bob.send_packet(typing("alice")).await.unwrap();
    // No ERROR for bob: the next reply is his heartbeat's.
    heartbeat_ok(&mut bob, 1).await;
    expect_silence(&mut alice, Duration::from_millis(500)).await;

    assert!(!block(&mut alice, "bob", false).await);
    bob.send_packet(typing("alice")).await.unwrap();
    let (_, packet) = recv(&mut alice).await;
    match packet {
        Packet::SignalNotify(n) => assert_eq!(n.from_user, "bob"),
        other => panic!("expected SIGNAL_NOTIFY, got {other:?}"),
    }
}

#[tokio::test]
async fn the_api_blocks_on_a_users_behalf() {
    let server = TestServer::start_api(|_| {}).await;
    let api = server.api();
    let put = api.put("/v1/users/alice/blocks/bob", json!(null)).await;
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(put.json()["blocked"], true);

    let msg = |id: &str| json!({"from": "bob", "to": {"user": "alice"}, "client_msg_id": id, "content": "hi"});
    let refused = api.post("/v1/messages", msg("m1")).await;
    assert_eq!(
        (refused.status, refused.error_code()),
        (403, 24),
        "{}",
        refused.text()
    );
    let list = api.get("/v1/users/alice/blocks").await;
    assert_eq!(
        list.json(),
        json!({"user": "alice", "blocked": ["bob"], "has_more": false, "total": 1})
    );
    let paged = api.get("/v1/users/alice/blocks?after=bob&limit=10").await;
    assert_eq!(paged.json()["blocked"], json!([]));

    // The user's own device sees the same list.
    let (mut alice, _) = server.login("alice", "phone").await;
    assert_eq!(block_list(&mut alice, "", 0).await.user_ids, ["bob"]);

    let del = api.delete("/v1/users/alice/blocks/bob").await;
    assert_eq!(
        (del.status, del.json()["blocked"].clone()),
        (200, json!(false))
    );
    let sent = api.post("/v1/messages", msg("m1")).await;
    assert_eq!(sent.status, 201, "{}", sent.text());

    let own = api.put("/v1/users/alice/blocks/alice", json!(null)).await;
    assert_eq!((own.status, own.error_code()), (400, 11));
    let bad = api.get("/v1/users/alice/blocks?limit=x").await;
    assert_eq!(bad.status, 400, "{}", bad.text());
}
