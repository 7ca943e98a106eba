//! End to end: read positions and receipts (PROTOCOL.md 25) over real TCP and a real RocksDB.
//! A naive client marking 500 messages read one by one costs its peer a few coalesced RECEIPTs,
//! the last with the final position; CONTACTS, UNREAD and HISTORY show both sides' positions;
//! every online device gets the receipt, groups and no-op reads get none; READERS lists who read
//! a group message, paged.

mod common;

use std::time::{Duration, Instant};

use common::*;
use missive::store::SendRequest;
use missive_client::{direct, group, pb, ClientError, Connection};
use missive_protocol::{ErrorCode, Frame, Packet};

const WAIT: Duration = Duration::from_secs(10);

async fn request(conn: &mut Connection, packet: Packet) -> Packet {
    conn.request_timeout(packet, WAIT).await.expect("reply")
}

/// Stores `n` messages from `from` to `to` through the store (no device is online yet).
async fn send_many(server: &TestServer, from: &str, to: &str, n: u64) {
    let store = server.handle().store();
    let pending: Vec<_> = (1..=n)
        .map(|k| {
            store.send_direct(
                SendRequest {
                    from: from.into(),
                    client_msg_id: format!("{from}-{k}"),
                    to: direct(to),
                    content_type: 1,
                    content: format!("m{k}").into_bytes(),
                    mentions: Vec::new(),
                    now_ms: missive::now_ms(),
                    ..Default::default()
                },
                None,
            )
        })
        .collect();
    for p in pending {
        p.await.expect("stored");
    }
}

/// The RECEIPTs among the frames that arrive on `conn` within `wait` (other frames dropped).
async fn receipts_within(conn: &mut Connection, wait: Duration) -> Vec<pb::Receipt> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut out = Vec::new();
    while let Ok(frame) = tokio::time::timeout_at(deadline, conn.recv_frame()).await {
        let frame: Frame = frame.expect("frame").expect("open");
        if let Packet::Receipt(r) = frame.packet(1 << 20).expect("decodes") {
            assert_eq!(frame.request_id, 0, "server-initiated");
            out.push(r);
        }
    }
    out
}

fn contact_with<'a>(contacts: &'a [pb::Contact], conv: &pb::Conversation) -> &'a pb::Contact {
    contacts
        .iter()
        .find(|c| c.conversation.as_ref() == Some(conv))
        .expect("a contact for the conversation")
}

async fn contacts(conn: &mut Connection) -> Vec<pb::Contact> {
    match request(conn, Packet::Contacts(pb::Contacts::default())).await {
        Packet::ContactsAck(a) => a.contacts,
        other => panic!("{other:?}"),
    }
}

async fn unread(conn: &mut Connection) -> pb::UnreadAck {
    match request(conn, Packet::Unread(pb::Unread::default())).await {
        Packet::UnreadAck(a) => a,
        other => panic!("{other:?}"),
    }
}

async fn positions(conn: &mut Connection, conv: pb::Conversation) -> pb::HistoryAck {
    let body = pb::History {
        conversation: Some(conv),
        limit: 1,
        order: pb::HistoryOrder::NewestFirst as i32,
        ..Default::default()
    };
    match request(conn, Packet::History(body)).await {
        Packet::HistoryAck(a) => a,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_reads_become_a_few_receipts_ending_at_500() {
    const WINDOW_MS: u64 = 1000;
    let server = TestServer::start_api(|c| c.receipt_coalesce_ms = WINDOW_MS).await;
    send_many(&server, "alice", "bob", 500).await;
    let (mut alice, _) = server.login("alice", "phone").await;
    let (mut bob, _) = server.login("bob", "phone").await;
    // Before bob reads: alice has read all (she sent it), bob nothing.
    let c = contacts(&mut alice).await;
    let c = contact_with(&c, &direct("bob"));
    assert_eq!((c.read_seq, c.peer_read_seq), (500, 0));

    // Bob's naive client: one MARK_READ per message, pipelined.
    let started = Instant::now();
    let mut ids = Vec::new();
    for seq in 1..=500 {
        let body = pb::MarkRead {
            conversation: Some(direct("alice")),
            up_to_seq: seq,
        };
        ids.push(bob.feed_packet(Packet::MarkRead(body)).await.unwrap());
    }
    bob.flush().await.unwrap();
    let mut acked = 0;
    while acked < ids.len() {
        let frame = bob.recv_frame_timeout(WAIT).await.unwrap().unwrap();
        match frame.packet(1 << 20).unwrap() {
            Packet::MarkReadAck(a) => {
                assert_eq!(frame.request_id, ids[acked], "replies in order");
                assert_ne!(a.version, 0, "each read moved the position");
                acked += 1;
            }
            Packet::Push(_) => {} // bob's READ_SYNC entries
            other => panic!("{other:?}"),
        }
    }
    let elapsed = started.elapsed();
    // The last window's receipt leaves when the window ends; a margin for a slow machine.
    let got = receipts_within(&mut alice, Duration::from_millis(WINDOW_MS + 700)).await;
    let windows = elapsed.as_millis() as u64 / WINDOW_MS + 1;
    let most = 1 + windows as usize;
    eprintln!(
        "500 reads in {elapsed:?}: {} receipts (at most {most})",
        got.len()
    );
    assert!(
        !got.is_empty() && got.len() <= most,
        "{} receipts for 500 reads in {elapsed:?}",
        got.len()
    );
    let last = got.last().unwrap();
    assert_eq!(
        last.up_to_seq, 500,
        "the last receipt carries the final position"
    );
    assert_eq!(last.reader, "bob");
    assert_eq!(last.conversation, Some(direct("bob")), "as alice sees it");
    assert!(
        got.windows(2).all(|w| w[0].up_to_seq < w[1].up_to_seq),
        "positions only grow"
    );
    let m = server.api().metrics().await;
    assert_eq!(m.get("missive_receipts_sent_total") as usize, got.len());
    assert!(m.get("missive_receipts_coalesced_total") >= (500 - got.len()) as f64);
    assert_eq!(m.get("missive_receipts_dropped_total"), 0.0);

    // The durable truth, for both sides, in CONTACTS, UNREAD and HISTORY.
    let c = contacts(&mut alice).await;
    let c = contact_with(&c, &direct("bob"));
    assert_eq!((c.read_seq, c.peer_read_seq), (500, 500));
    let c = contacts(&mut bob).await;
    let c = contact_with(&c, &direct("alice"));
    assert_eq!((c.unread, c.read_seq, c.peer_read_seq), (0, 500, 500));
    // Bob answers: his own message reads it for him; alice has 1 unread.
    let reply = pb::Send {
        client_msg_id: "bob-reply".into(),
        to: Some(direct("alice")),
        content_type: 1,
        content: b"thanks".to_vec(),
        ..Default::default()
    };
    let Packet::SendAck(ack) = request(&mut bob, Packet::Send(reply)).await else {
        panic!("send")
    };
    assert_eq!(ack.seq, 501);
    let u = unread(&mut alice).await;
    let bob_unread = &u.conversations[0];
    assert_eq!(bob_unread.conversation, Some(direct("bob")));
    assert_eq!(
        (bob_unread.unread, bob_unread.last_seq, bob_unread.read_seq),
        (1, 501, 500)
    );
    let h = positions(&mut alice, direct("bob")).await;
    assert_eq!((h.last_seq, h.read_seq, h.peer_read_seq), (501, 500, 501));
    let h = positions(&mut bob, direct("alice")).await;
    assert_eq!((h.last_seq, h.read_seq, h.peer_read_seq), (501, 501, 500));
    assert!(unread(&mut bob).await.conversations.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn every_device_gets_the_receipt_and_groups_or_no_op_reads_send_none() {
    let server = TestServer::start_with(|c| c.receipt_coalesce_ms = 0).await;
    let (alice, _ae) = server.client("alice", "laptop").await;
    let sent = alice.send(direct("bob"), 1, "one", None).await.unwrap();
    alice.send(direct("bob"), 1, "two", None).await.unwrap();
    let (mut phone, _) = server.login("alice", "phone").await;
    let (mut tablet, _) = server.login("alice", "tablet").await;
    let (mut bob, _) = server.login("bob", "phone").await;
    let read = |seq| {
        Packet::MarkRead(pb::MarkRead {
            conversation: Some(direct("alice")),
            up_to_seq: seq,
        })
    };
    request(&mut bob, read(sent.seq)).await;
    for dev in [&mut phone, &mut tablet] {
        let got = receipts_within(dev, Duration::from_millis(500)).await;
        assert_eq!(got.len(), 1, "one receipt per device");
        assert_eq!((got[0].reader.as_str(), got[0].up_to_seq), ("bob", 1));
        assert!(got[0].read_ms > 0);
    }
    // Reading again at or below the position moves nothing: no receipt.
    request(&mut bob, read(1)).await;
    assert!(receipts_within(&mut phone, Duration::from_millis(300))
        .await
        .is_empty());
    // up_to_seq past the end is clamped to the last seq.
    request(&mut bob, read(99)).await;
    let got = receipts_within(&mut phone, Duration::from_millis(500)).await;
    assert_eq!(got.iter().map(|r| r.up_to_seq).collect::<Vec<_>>(), [2]);

    // A group read sends no receipt to anyone.
    let g = alice
        .group_create("g", vec!["bob".into()], pb::HistoryVisibility::Full)
        .await
        .unwrap()
        .group
        .unwrap();
    alice.send(group(&g.group_id), 1, "hi", None).await.unwrap();
    let body = pb::MarkRead {
        conversation: Some(group(&g.group_id)),
        up_to_seq: 1,
    };
    request(&mut bob, Packet::MarkRead(body)).await;
    assert!(receipts_within(&mut phone, Duration::from_millis(300))
        .await
        .is_empty());
    server.stop().await;
}

async fn readers(
    conn: &mut Connection,
    group_id: &str,
    seq: u64,
    cursor: Vec<u8>,
    limit: u32,
) -> Result<pb::ReadersAck, ClientError> {
    let body = pb::Readers {
        group_id: group_id.into(),
        seq,
        cursor,
        limit,
    };
    match conn.request_timeout(Packet::Readers(body), WAIT).await? {
        Packet::ReadersAck(a) => Ok(a),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn readers_lists_exactly_who_read_a_group_message_paged() {
    let server = TestServer::start().await;
    let (alice, _ae) = server.client("alice", "phone").await;
    let others: Vec<String> = ["bob", "carol", "dave", "erin", "frank"]
        .map(String::from)
        .to_vec();
    let g = alice
        .group_create("readers", others, pb::HistoryVisibility::Full)
        .await
        .unwrap()
        .group
        .unwrap();
    let gid = g.group_id.clone();
    for i in 1..=3 {
        alice
            .send(group(&gid), 1, format!("a{i}"), None)
            .await
            .unwrap();
    }
    // bob reads all, carol up to 2, dave up to 1, erin nothing, frank writes message 4.
    for (who, seq) in [("bob", 3), ("carol", 2), ("dave", 1)] {
        let (c, _e) = server.client(who, "phone").await;
        c.mark_read(group(&gid), seq).await.unwrap();
        c.close().await;
    }
    let (frank, _fe) = server.client("frank", "phone").await;
    frank.send(group(&gid), 1, "f4", None).await.unwrap();

    let (mut asker, _) = server.login("erin", "phone").await;
    // Pages of two members in id order: alice bob | carol dave | erin frank. Alice sent 2.
    let mut pages = Vec::new();
    let mut cursor = Vec::new();
    loop {
        let page = readers(&mut asker, &gid, 2, cursor, 2).await.unwrap();
        pages.push(page.read_by);
        cursor = page.next_cursor;
        if cursor.is_empty() {
            break;
        }
    }
    assert_eq!(pages, [vec!["bob"], vec!["carol"], vec!["frank"]]);
    // Seq 1 with the default page: everyone who read it but its sender.
    let all = readers(&mut asker, &gid, 1, Vec::new(), 0).await.unwrap();
    assert_eq!(all.read_by, ["bob", "carol", "dave", "frank"]);
    assert!(all.next_cursor.is_empty());
    // Frank's message 4: nobody else has read it (alice read up to her own 3).
    let four = readers(&mut asker, &gid, 4, Vec::new(), 0).await.unwrap();
    assert!(four.read_by.is_empty());
    // The client's paging helper agrees.
    let (erin, _ee) = server.client("erin", "tablet").await;
    assert_eq!(
        erin.readers(&gid, 2).await.unwrap(),
        ["bob", "carol", "frank"]
    );

    // A member added after the message does not count as its reader.
    alice.group_join(&gid, vec!["gina".into()]).await.unwrap();
    let three = readers(&mut asker, &gid, 3, Vec::new(), 0).await.unwrap();
    assert_eq!(three.read_by, ["bob", "frank"]);

    // Not a member, no such group, no such message: NOT_FOUND.
    let not_found = ErrorCode::NotFound as u32;
    let (mut zed, _) = server.login("zed", "phone").await;
    for (who, group_id, seq) in [
        ("zed", gid.as_str(), 1),
        ("erin", "g0000000000000000000000000000000a", 1),
        ("erin", gid.as_str(), 0),
        ("erin", gid.as_str(), 99),
    ] {
        let conn = if who == "zed" { &mut zed } else { &mut asker };
        match readers(conn, group_id, seq, Vec::new(), 0).await {
            Err(ClientError::Server { code, .. }) => assert_eq!(code, not_found),
            other => panic!("{group_id} seq {seq}: {other:?}"),
        }
    }
    // Groups have no peer position in CONTACTS; their own read position is there.
    let c = contacts(&mut asker).await;
    let c = contact_with(&c, &group(&gid));
    assert_eq!((c.read_seq, c.peer_read_seq), (0, 0));
    server.stop().await;
}
