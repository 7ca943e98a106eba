//! End to end: HISTORY (PROTOCOL.md 24), a page of any conversation, direct or group, over real
//! TCP and a real RocksDB. A fresh device reads the newest 50 messages of a 100,000-message
//! chat in one round trip and pages back; deleted-for-me messages are left out (and a long run
//! of them costs a bounded walk per page); recalled ones show recalled; groups keep their
//! rules; a conversation with nobody is an empty page; the limits.

mod common;

use std::time::{Duration, Instant};

use common::*;
use missive::store::SendRequest;
use missive_client::{direct, group, pb, ClientError, Connection};
use missive_protocol::{ErrorCode, Packet};

const WAIT: Duration = Duration::from_secs(10);

/// Stores `n` messages between `a` and `b` straight through the store's writer (the same
/// change a SEND makes), many in flight at once so group commit batches them. Message `k`
/// (seq `k`) is from `b` when `k` is a multiple of 3, else from `a`, and says `m{k}`.
async fn chat(server: &TestServer, a: &str, b: &str, n: u64) {
    let store = server.handle().store().clone();
    let mut inflight = std::collections::VecDeque::new();
    for k in 1..=n {
        let (from, to) = if k.is_multiple_of(3) { (b, a) } else { (a, b) };
        let req = SendRequest {
            from: from.into(),
            client_msg_id: format!("c{k}"),
            to: direct(to),
            content_type: 1,
            content: format!("m{k}").into_bytes(),
            mentions: Vec::new(),
            now_ms: missive::now_ms(),
            ..Default::default()
        };
        inflight.push_back(store.send_direct(req, None));
        if inflight.len() >= 4096 {
            let ack = inflight.pop_front().unwrap().await.expect("stored").ack;
            assert!(!ack.duplicate);
        }
    }
    while let Some(p) = inflight.pop_front() {
        p.await.expect("stored");
    }
}

fn sender_of(seq: u64, a: &str, b: &str) -> String {
    if seq.is_multiple_of(3) { b } else { a }.to_string()
}

async fn history(conn: &mut Connection, body: pb::History) -> Result<pb::HistoryAck, ClientError> {
    match conn.request_timeout(Packet::History(body), WAIT).await? {
        Packet::HistoryAck(a) => Ok(a),
        other => panic!("expected HISTORY_ACK, got {other:?}"),
    }
}

fn newest(conv: pb::Conversation, before_seq: u64, limit: u32) -> pb::History {
    pb::History {
        conversation: Some(conv),
        before_seq,
        limit,
        order: pb::HistoryOrder::NewestFirst as i32,
        ..Default::default()
    }
}

fn oldest(conv: pb::Conversation, after_seq: u64, limit: u32) -> pb::History {
    pb::History {
        conversation: Some(conv),
        after_seq,
        limit,
        order: pb::HistoryOrder::OldestFirst as i32,
        ..Default::default()
    }
}

fn seqs(a: &pb::HistoryAck) -> Vec<u64> {
    a.messages.iter().map(|m| m.seq).collect()
}

fn code(e: ClientError) -> u32 {
    match e {
        ClientError::Server { code, .. } => code,
        other => panic!("expected a server error, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_device_reads_the_last_50_of_100000_messages_in_one_round_trip() {
    let server = TestServer::start().await;
    let started = Instant::now();
    chat(&server, "alice", "bob", 100_000).await;
    eprintln!("100000 messages stored in {:?}", started.elapsed());

    // Bob's new phone: nothing held (last_version 0), and no SYNC of the 100,000 entries.
    let (mut phone, login) = server.login("bob", "new-phone").await;
    assert_eq!(
        login.current_version, 100_000,
        "every message is in bob's inbox"
    );
    let asked = Instant::now();
    let page = history(&mut phone, newest(direct("alice"), 0, 50))
        .await
        .unwrap_or_else(|e| panic!("HISTORY after {:?}: {e}", asked.elapsed()));
    eprintln!("one HISTORY page in {:?}", asked.elapsed());
    // One round trip: LOGIN was request 1, HISTORY request 2, nothing else was sent, and
    // nothing else arrived (no push: the device logged in at the newest version's level).
    assert_eq!(
        phone.next_request_id(),
        3,
        "exactly one request after LOGIN"
    );
    assert!(phone.buffered_frame().unwrap().is_none(), "no other frame");

    assert_eq!(seqs(&page), (99_951..=100_000).rev().collect::<Vec<_>>());
    for m in &page.messages {
        assert_eq!(m.content, format!("m{}", m.seq).into_bytes());
        assert_eq!(m.from_user, sender_of(m.seq, "alice", "bob"));
        assert_eq!(m.conversation, Some(direct("alice")), "as bob sees it");
        assert_eq!(m.client_msg_id, format!("c{}", m.seq));
        assert!(!m.recalled);
    }
    assert!(page.has_more);
    assert_eq!(page.next_seq, 99_951);
    assert_eq!(page.last_seq, 100_000);
    // Sending reads: bob last sent seq 99999, alice seq 100000.
    assert_eq!((page.read_seq, page.peer_read_seq), (99_999, 100_000));

    // Scrolling back: the next page starts below next_seq.
    let back = history(&mut phone, newest(direct("alice"), page.next_seq, 50))
        .await
        .unwrap();
    assert_eq!(seqs(&back), (99_901..=99_950).rev().collect::<Vec<_>>());
    assert!(back.has_more);
    // And from the very start, oldest first.
    let first = history(&mut phone, oldest(direct("alice"), 0, 3))
        .await
        .unwrap();
    assert_eq!(seqs(&first), [1, 2, 3]);
    assert_eq!(first.messages[2].from_user, "bob");
    assert_eq!((first.has_more, first.next_seq), (true, 3));
    // The last page going back ends with has_more false.
    let end = history(&mut phone, newest(direct("alice"), 3, 50))
        .await
        .unwrap();
    assert_eq!(seqs(&end), [2, 1]);
    assert_eq!((end.has_more, end.next_seq), (false, 0));

    // Alice sees the same log from her side.
    let (mut alice, _) = server.login("alice", "laptop").await;
    let hers = history(&mut alice, newest(direct("bob"), 0, 2))
        .await
        .unwrap();
    assert_eq!(seqs(&hers), [100_000, 99_999]);
    assert_eq!(hers.messages[0].conversation, Some(direct("bob")));
    assert_eq!((hers.read_seq, hers.peer_read_seq), (100_000, 99_999));
    server.stop().await;
}

#[tokio::test]
async fn deleted_messages_are_left_out_and_recalled_ones_shown_recalled() {
    let server = TestServer::start().await;
    let (alice, _ae) = server.client("alice", "phone").await;
    let (bob, _be) = server.client("bob", "phone").await;
    let mut acks = Vec::new();
    for i in 1..=10 {
        let ack = alice
            .send(direct("bob"), 1, format!("hello {i}"), None)
            .await
            .unwrap();
        acks.push(ack);
    }
    // Bob deletes seqs 8 and 9 for himself; alice recalls seq 10.
    for seq in [8, 9] {
        bob.delete(direct("alice"), acks[seq - 1].msg_id)
            .await
            .unwrap();
    }
    alice.recall(direct("bob"), acks[9].msg_id).await.unwrap();
    let (mut fresh, _) = server.login("bob", "tablet").await;
    let page = history(&mut fresh, newest(direct("alice"), 0, 5))
        .await
        .unwrap();
    assert_eq!(seqs(&page), [10, 7, 6, 5, 4], "8 and 9 deleted by bob");
    assert!(page.messages[0].recalled);
    assert!(page.messages[0].content.is_empty());
    assert_eq!(page.messages[1].content, b"hello 7");
    assert_eq!((page.has_more, page.next_seq), (true, 4));
    // Alice deleted nothing: she sees 9 and 8.
    let (mut hers, _) = server.login("alice", "tablet").await;
    let page = history(&mut hers, newest(direct("bob"), 0, 3))
        .await
        .unwrap();
    assert_eq!(seqs(&page), [10, 9, 8]);
    assert!(page.messages[0].recalled);

    // A long run of deleted messages: each page looks at no more than 4 x limit seqs, says
    // has_more and where to go on; the pages together give exactly what is left.
    for ack in &acks[2..7] {
        bob.delete(direct("alice"), ack.msg_id).await.unwrap();
    }
    let mut before = 0;
    let mut shown = Vec::new();
    let mut pages = 0;
    loop {
        let page = history(&mut fresh, newest(direct("alice"), before, 1))
            .await
            .unwrap();
        pages += 1;
        shown.extend(seqs(&page));
        if !page.has_more {
            break;
        }
        let from = if before == 0 { 11 } else { before };
        assert!(
            from - page.next_seq <= missive::store::SCAN_PER_MESSAGE as u64,
            "a page looked at seqs {}..{from}",
            page.next_seq
        );
        before = page.next_seq;
    }
    assert_eq!(shown, [10, 2, 1]);
    assert!(
        pages >= 3,
        "the deleted run took pages of its own ({pages})"
    );
    server.stop().await;
}

#[tokio::test]
async fn groups_through_history_keep_their_rules() {
    let server = TestServer::start().await;
    let (alice, _ae) = server.client("alice", "phone").await;
    let members = vec!["bob".to_string(), "carol".to_string()];
    let g = alice
        .group_create("trip", members, pb::HistoryVisibility::Full)
        .await
        .unwrap()
        .group
        .unwrap();
    for i in 1..=5 {
        alice
            .send(group(&g.group_id), 1, format!("g{i}"), None)
            .await
            .unwrap();
    }
    let (mut bob, _) = server.login("bob", "tablet").await;
    let page = history(&mut bob, newest(group(&g.group_id), 0, 0))
        .await
        .unwrap();
    assert_eq!(seqs(&page), [5, 4, 3, 2, 1]);
    assert!(page
        .messages
        .iter()
        .all(|m| m.conversation == Some(group(&g.group_id))));
    assert_eq!(
        (page.last_seq, page.read_seq, page.peer_read_seq),
        (5, 0, 0),
        "groups have no peer position"
    );
    // GROUP_HISTORY, deprecated, still answers the same messages.
    let old = bob
        .request_timeout(
            Packet::GroupHistory(pb::GroupHistory {
                group_id: g.group_id.clone(),
                order: pb::HistoryOrder::NewestFirst as i32,
                ..Default::default()
            }),
            WAIT,
        )
        .await
        .unwrap();
    let Packet::GroupHistoryAck(old) = old else {
        panic!("{old:?}")
    };
    assert_eq!(old.messages, page.messages);

    // A non-member, and a group that does not exist: the same NOT_FOUND.
    let (mut dave, _) = server.login("dave", "phone").await;
    for id in [g.group_id.as_str(), "g0000000000000000000000000000000a"] {
        let e = history(&mut dave, newest(group(id), 0, 0))
            .await
            .unwrap_err();
        assert_eq!(code(e), ErrorCode::NotFound as u32);
    }

    // FROM_JOIN: a member who joined later sees only what came after.
    let late = alice
        .group_create("news", vec![], pb::HistoryVisibility::FromJoin)
        .await
        .unwrap()
        .group
        .unwrap();
    for i in 1..=3 {
        alice
            .send(group(&late.group_id), 1, format!("n{i}"), None)
            .await
            .unwrap();
    }
    alice
        .group_join(&late.group_id, vec!["dave".into()])
        .await
        .unwrap();
    alice
        .send(group(&late.group_id), 1, "n4", None)
        .await
        .unwrap();
    let page = history(&mut dave, oldest(group(&late.group_id), 0, 0))
        .await
        .unwrap();
    assert_eq!(seqs(&page), [4]);
    let page = history(&mut dave, newest(group(&late.group_id), 0, 0))
        .await
        .unwrap();
    assert_eq!((seqs(&page), page.has_more), (vec![4], false));
    server.stop().await;
}

#[tokio::test]
async fn a_direct_conversation_with_nobody_is_an_empty_page_and_bad_requests_are_refused() {
    let server = TestServer::start().await;
    let (mut erin, _) = server.login("erin", "phone").await;
    let page = history(&mut erin, newest(direct("never-talked-to"), 0, 0))
        .await
        .unwrap();
    assert_eq!(page, pb::HistoryAck::default(), "empty, nothing learned");
    let page = history(&mut erin, oldest(direct("zed"), 7, 0))
        .await
        .unwrap();
    assert_eq!(page, pb::HistoryAck::default());

    let invalid = ErrorCode::InvalidArgument as u32;
    let to_self = history(&mut erin, newest(direct("erin"), 0, 0)).await;
    assert_eq!(
        code(to_self.unwrap_err()),
        invalid,
        "a direct chat needs another user"
    );
    let missing = history(&mut erin, pb::History::default()).await;
    assert_eq!(code(missing.unwrap_err()), invalid, "no conversation");
    let bad_order = pb::History {
        order: 9,
        ..newest(direct("zed"), 0, 0)
    };
    assert_eq!(
        code(history(&mut erin, bad_order).await.unwrap_err()),
        invalid
    );
    // The connection is still fine.
    erin.heartbeat().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn limit_zero_is_50_and_above_500_is_500() {
    let server = TestServer::start().await;
    chat(&server, "alice", "bob", 600).await;
    let (mut bob, _) = server.login("bob", "phone").await;
    let page = history(&mut bob, newest(direct("alice"), 0, 0))
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 50, "0 asks for the default");
    let page = history(&mut bob, newest(direct("alice"), 0, 100_000))
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 500, "capped at 500");
    assert_eq!((page.has_more, page.next_seq), (true, 101));
    let page = history(&mut bob, oldest(direct("alice"), 0, 0))
        .await
        .unwrap();
    assert_eq!(seqs(&page), (1..=50).collect::<Vec<_>>());
    // Bounds past the log are an empty page.
    let page = history(&mut bob, oldest(direct("alice"), u64::MAX, 0))
        .await
        .unwrap();
    assert!(page.messages.is_empty() && !page.has_more);
    let page = history(&mut bob, newest(direct("alice"), 1, 0))
        .await
        .unwrap();
    assert!(page.messages.is_empty() && !page.has_more);
    server.stop().await;
}

#[tokio::test]
async fn the_server_api_reads_a_users_history_as_its_devices_do() {
    let server = TestServer::start_api(|_| {}).await;
    chat(&server, "alice", "bob", 3).await;
    let api = server.api();
    let page = api.get("/v1/users/bob/history?with=alice&limit=2").await;
    assert_eq!(page.status, 200, "{}", page.text());
    let v = page.json();
    let seqs: Vec<u64> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 2]);
    let m3 = &v["messages"][0];
    assert_eq!(m3["from"], "bob");
    assert_eq!(m3["content"], "m3");
    assert_eq!(m3["content_base64"], "bTM=");
    assert!(m3["msg_id"].as_str().unwrap().parse::<u64>().is_ok());
    assert_eq!(v["conversation"], serde_json::json!({"user": "alice"}));
    assert_eq!(
        (v["has_more"].as_bool(), v["next_seq"].as_u64()),
        (Some(true), Some(2))
    );
    assert_eq!(
        (v["read_seq"].as_u64(), v["peer_read_seq"].as_u64()),
        (Some(3), Some(2))
    );
    let oldest = api
        .get("/v1/users/bob/history?with=alice&order=oldest&after=1")
        .await
        .json();
    assert_eq!(oldest["messages"][0]["seq"], 2);
    assert_eq!(oldest["has_more"], false);
    // A group the user is not in, and a request naming no conversation.
    let g = api
        .get("/v1/users/bob/history?group=g0000000000000000000000000000000a")
        .await;
    assert_eq!(
        (g.status, g.error_code()),
        (404, ErrorCode::NotFound as u64)
    );
    let none = api.get("/v1/users/bob/history").await;
    assert_eq!(
        (none.status, none.error_code()),
        (400, ErrorCode::InvalidArgument as u64)
    );
    server.stop().await;
}
