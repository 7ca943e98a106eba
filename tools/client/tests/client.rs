//! The reliable `Client` against a fake server on 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use common::{FakeServer, Peer, WAIT};
use missive_client::{
    direct, pb, Backoff, Client, ClientConfig, ClientError, ClientEvent, DisconnectReason,
};
use missive_protocol::{Command, Frame, Packet};
use tokio::sync::mpsc::UnboundedReceiver;

fn config(addr: &str) -> ClientConfig {
    let mut c = ClientConfig::new(addr, "tok", "phone");
    c.backoff = Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
        ..Default::default()
    };
    c.request_timeout = WAIT;
    c
}

/// Connects a client while the fake accepts it with `current_version` and heartbeat `hb`.
async fn start(
    server: &FakeServer,
    cfg: ClientConfig,
    current: u64,
    hb: u32,
) -> (Client, UnboundedReceiver<ClientEvent>, Peer) {
    let fake = async {
        let mut peer = server.accept().await;
        peer.accept_login(current, hb).await;
        peer
    };
    let (client, peer) = tokio::join!(Client::connect(cfg), fake);
    let mut client = client.unwrap();
    let mut events = client.events().unwrap();
    assert!(client.events().is_none());
    assert!(matches!(next(&mut events).await, ClientEvent::Connected(_)));
    (client, events, peer)
}

async fn next(events: &mut UnboundedReceiver<ClientEvent>) -> ClientEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("no event")
        .expect("event stream ended")
}

async fn next_entry(events: &mut UnboundedReceiver<ClientEvent>) -> u64 {
    match next(events).await {
        ClientEvent::Entry(e) => e.version,
        other => panic!("expected an entry, got {other:?}"),
    }
}

async fn expect_ack(peer: &mut Peer, version: u64) {
    let (_, packet) = peer.expect(Command::PushAck).await;
    assert_eq!(packet, Packet::PushAck(pb::PushAck { version }));
}

async fn expect_sync(peer: &mut Peer, since: u64) -> u32 {
    let (id, packet) = peer.expect(Command::Sync).await;
    let Packet::Sync(sync) = packet else {
        unreachable!()
    };
    assert_eq!(sync.since_version, since);
    id
}

/// The SEND_ACK of `send` as message 42, seq 1, at inbox `version`.
fn send_ack(send: &pb::Send, version: u64) -> Packet {
    Packet::SendAck(pb::SendAck {
        client_msg_id: send.client_msg_id.clone(),
        msg_id: 42,
        seq: 1,
        timestamp_ms: 5,
        version,
        duplicate: false,
        content: Vec::new(),
    })
}

async fn answer(peer: &mut Peer, id: u32, from: u64, to: u64, has_more: bool, current: u64) {
    let ack = pb::SyncAck {
        entries: (from..=to).map(common::entry).collect(),
        new_version: to,
        has_more,
        current_version: current,
    };
    peer.send(Packet::SyncAck(ack), id).await;
}

#[tokio::test]
async fn login_behind_syncs_every_page_and_acks() {
    let server = FakeServer::bind().await;
    let (client, mut events, mut peer) = start(&server, config(&server.addr()), 5, 30).await;
    let id = expect_sync(&mut peer, 0).await;
    answer(&mut peer, id, 1, 3, true, 5).await;
    expect_ack(&mut peer, 3).await;
    let id = expect_sync(&mut peer, 3).await;
    answer(&mut peer, id, 4, 5, false, 5).await;
    expect_ack(&mut peer, 5).await;
    for v in 1..=5 {
        assert_eq!(next_entry(&mut events).await, v);
    }
    assert_eq!(client.held_version(), 5);
}

#[tokio::test]
async fn pushes_follow_the_version_rules() {
    let server = FakeServer::bind().await;
    let (client, mut events, mut peer) = start(&server, config(&server.addr()), 0, 30).await;
    peer.push(1).await;
    expect_ack(&mut peer, 1).await;
    // A retransmitted duplicate is dropped but still acked.
    peer.send_frame(Frame::new(&common::push(1), 0).retransmitted())
        .await;
    expect_ack(&mut peer, 1).await;
    // A gap: 3 arrives while 2 is missing.
    peer.push(3).await;
    let id = expect_sync(&mut peer, 1).await;
    expect_ack(&mut peer, 1).await;
    answer(&mut peer, id, 2, 3, false, 3).await;
    expect_ack(&mut peer, 3).await;
    peer.push(4).await;
    expect_ack(&mut peer, 4).await;
    for v in 1..=4 {
        assert_eq!(next_entry(&mut events).await, v);
    }
    assert!(events.try_recv().is_err(), "nothing delivered twice");
    assert_eq!(client.held_version(), 4);
}

#[tokio::test]
async fn silent_server_is_declared_dead_and_the_client_resumes_from_held() {
    let server = FakeServer::bind().await;
    let mut cfg = config(&server.addr());
    cfg.last_version = 7;
    let (_client, mut events, mut peer) = start(&server, cfg, 7, 1).await;
    let started = Instant::now();
    let (_, hb) = peer.recv().await.unwrap();
    assert_eq!(hb.command(), Command::Heartbeat);
    // Not answered: dead about one interval later.
    match next(&mut events).await {
        ClientEvent::Disconnected {
            reason: DisconnectReason::HeartbeatTimeout,
            reconnecting: true,
        } => {}
        other => panic!("{other:?}"),
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(800), "{elapsed:?}");
    let mut peer2 = server.accept().await;
    let login = peer2.accept_login(7, 30).await;
    assert_eq!(login.last_version, 7);
    assert!(matches!(next(&mut events).await, ClientEvent::Connected(_)));
}

#[tokio::test]
async fn send_is_retried_with_the_same_client_msg_id_after_a_drop() {
    let server = FakeServer::bind().await;
    let (client, mut events, mut peer) = start(&server, config(&server.addr()), 0, 30).await;
    let fake = async {
        let (_, first) = peer.expect(Command::Send).await;
        drop(peer);
        let mut peer2 = server.accept().await;
        peer2.accept_login(0, 30).await;
        let (id, again) = peer2.expect(Command::Send).await;
        assert_eq!(
            first, again,
            "the resend is identical, client_msg_id included"
        );
        let Packet::Send(send) = again else {
            unreachable!()
        };
        peer2.send(send_ack(&send, 1), id).await;
        (send.client_msg_id, peer2)
    };
    let (ack, (cmid, _peer2)) = tokio::join!(client.send(direct("bob"), 1, "hi", None), fake);
    let ack = ack.unwrap();
    assert_eq!(ack.client_msg_id, cmid);
    assert_eq!(cmid.len(), 32);
    assert!(matches!(
        next(&mut events).await,
        ClientEvent::Disconnected { .. }
    ));
    assert!(matches!(next(&mut events).await, ClientEvent::Connected(_)));
    // The sender's own entry is built from SEND + SEND_ACK (the server does not push it here).
    match next(&mut events).await {
        ClientEvent::Entry(e) => {
            assert_eq!(e.version, 1);
            let Some(pb::inbox_entry::Body::Message(m)) = e.body else {
                panic!("{e:?}")
            };
            assert_eq!((m.msg_id, m.seq, m.from_user.as_str()), (42, 1, "alice"));
            assert_eq!(m.content, b"hi");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(client.held_version(), 1);
}

#[tokio::test]
async fn redirect_kick_waits_and_goes_to_the_new_address() {
    let a = FakeServer::bind().await;
    let b = FakeServer::bind().await;
    let (_client, mut events, mut peer) = start(&a, config(&a.addr()), 0, 30).await;
    let port: u32 = b.addr().rsplit_once(':').unwrap().1.parse().unwrap();
    let kick = pb::Kick {
        reason: pb::KickReason::Redirect as i32,
        message: "drain".into(),
        redirect_host: "127.0.0.1".into(),
        redirect_port: port,
        reconnect_after_ms: 300,
    };
    let kicked_at = Instant::now();
    peer.send(Packet::Kick(kick.clone()), 0).await;
    drop(peer);
    assert_eq!(next(&mut events).await, ClientEvent::Kicked(kick));
    match next(&mut events).await {
        ClientEvent::Disconnected {
            reason: DisconnectReason::Kicked(pb::KickReason::Redirect),
            reconnecting: true,
        } => {}
        other => panic!("{other:?}"),
    }
    let mut peer_b = b.accept().await;
    assert!(kicked_at.elapsed() >= Duration::from_millis(300));
    peer_b.accept_login(0, 30).await;
    assert!(matches!(next(&mut events).await, ClientEvent::Connected(_)));
}

#[tokio::test]
async fn replaced_kick_stops_the_client() {
    let server = FakeServer::bind().await;
    let (client, mut events, mut peer) = start(&server, config(&server.addr()), 0, 30).await;
    let kick = pb::Kick {
        reason: pb::KickReason::Replaced as i32,
        ..Default::default()
    };
    peer.send(Packet::Kick(kick), 0).await;
    assert!(matches!(next(&mut events).await, ClientEvent::Kicked(_)));
    match next(&mut events).await {
        ClientEvent::Disconnected {
            reconnecting: false,
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(client.unread().await, Err(ClientError::Closed)));
}

#[tokio::test]
async fn errors_ping_and_close() {
    let server = FakeServer::bind().await;
    let (client, mut events, mut peer) = start(&server, config(&server.addr()), 0, 30).await;
    let fake = async {
        let (id, _) = peer.expect(Command::Recall).await;
        let err = pb::Error {
            code: 15,
            message: "too late".into(),
            fatal: false,
            retry_after_ms: 0,
            reason: String::new(),
        };
        peer.send(Packet::Error(err), id).await;
        // expect() answers the HEARTBEAT of ping() on the way.
        let (id, _) = peer.expect(Command::Unread).await;
        let ack = pb::UnreadAck {
            total: 3,
            conversations: vec![],
            next_cursor: vec![],
        };
        peer.send(Packet::UnreadAck(ack), id).await;
        peer
    };
    let requests = async {
        let recall = client.recall(direct("bob"), 9).await;
        let rtt = client.ping().await.unwrap();
        (recall, rtt, client.unread().await)
    };
    let ((recall, rtt, unread), mut peer) = tokio::join!(requests, fake);
    match recall {
        Err(ClientError::Server { code, name, .. }) => {
            assert_eq!((code, name.as_str()), (15, "RECALL_WINDOW_EXPIRED"))
        }
        other => panic!("{other:?}"),
    }
    assert!(rtt < WAIT);
    assert_eq!(unread.unwrap().total, 3);
    client.close().await;
    match next(&mut events).await {
        ClientEvent::Disconnected {
            reason: DisconnectReason::ClientClosed,
            reconnecting: false,
        } => {}
        other => panic!("{other:?}"),
    }
    assert!(peer.recv_skip_heartbeats().await.is_none());
}

#[tokio::test]
async fn own_entry_that_is_not_pushed_is_fetched_by_sync() {
    let server = FakeServer::bind().await;
    let (client, mut events, mut peer) = start(&server, config(&server.addr()), 0, 30).await;
    let fake = async {
        let (id, _) = peer.expect(Command::MarkRead).await;
        let ack = pb::MarkReadAck {
            unread: 0,
            total: 0,
            version: 1,
        };
        peer.send(Packet::MarkReadAck(ack), id).await;
        // No push comes: about a second later the client SYNCs.
        let id = expect_sync(&mut peer, 0).await;
        answer(&mut peer, id, 1, 1, false, 1).await;
        peer
    };
    let (read, _peer) = tokio::join!(client.mark_read(direct("bob"), 3), fake);
    assert_eq!(read.unwrap().version, 1);
    assert_eq!(next_entry(&mut events).await, 1);
}

#[test]
fn backoff_is_capped_and_jittered() {
    let b = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
        ..Default::default()
    };
    assert_eq!(b.cap(0), Duration::from_millis(100));
    assert_eq!(b.cap(3), Duration::from_millis(800));
    assert_eq!(b.cap(4), Duration::from_secs(1));
    assert_eq!(b.cap(200), Duration::from_secs(1));
    for attempt in 0..10 {
        assert!(b.delay(attempt) <= b.cap(attempt));
    }
}

/// The SEND_ACK of our own message (version 2) comes before the PUSH of version 1 (the server
/// writes the replies of a commit before its pushes): the own entry waits and follows entry 1,
/// with no SYNC; one PUSH_ACK covers both.
#[tokio::test]
async fn own_entry_acked_before_the_push_below_it_follows_that_push_without_a_sync() {
    let server = FakeServer::bind().await;
    let (client, mut events, mut peer) = start(&server, config(&server.addr()), 0, 30).await;
    let fake = async {
        let (id, packet) = peer.expect(Command::Send).await;
        let Packet::Send(send) = packet else {
            unreachable!()
        };
        peer.send(send_ack(&send, 2), id).await;
        peer.push(1).await;
        expect_ack(&mut peer, 2).await;
        peer
    };
    let (sent, mut peer) = tokio::join!(client.send(direct("bob"), 1, "hi", None), fake);
    assert_eq!(sent.unwrap().version, 2);
    assert_eq!(next_entry(&mut events).await, 1);
    match next(&mut events).await {
        ClientEvent::Entry(e) => {
            assert_eq!(e.version, 2);
            let Some(pb::inbox_entry::Body::Message(m)) = e.body else {
                panic!("{e:?}")
            };
            assert_eq!((m.msg_id, m.content.as_slice()), (42, &b"hi"[..]));
        }
        other => panic!("expected our own entry, got {other:?}"),
    }
    // Past the own-entry grace (1 s): still no SYNC, the gap was filled.
    match peer.recv_within(Duration::from_millis(1300)).await {
        Err(()) => {}
        Ok(other) => panic!("nothing more expected, got {other:?}"),
    }
    peer.push(3).await;
    expect_ack(&mut peer, 3).await;
    assert_eq!(next_entry(&mut events).await, 3);
    assert_eq!(client.held_version(), 3);
}

#[tokio::test]
async fn push_ack_rides_with_the_next_request_or_goes_alone_after_the_ack_delay() {
    let server = FakeServer::bind().await;
    let mut cfg = config(&server.addr());
    cfg.ack_delay = Duration::from_millis(400);
    let (client, mut events, mut peer) = start(&server, cfg, 0, 30).await;
    peer.push(1).await;
    assert_eq!(next_entry(&mut events).await, 1);
    // Within the delay nothing is sent...
    match peer.recv_within(Duration::from_millis(150)).await {
        Err(()) => {}
        Ok(other) => panic!("the ack should wait, got {other:?}"),
    }
    // ...and the next request takes the ack along, ahead of itself.
    let fake = async {
        let (frame, packet) = peer.recv().await.expect("a frame");
        assert_eq!(
            packet,
            Packet::PushAck(pb::PushAck { version: 1 }),
            "{frame:?}"
        );
        let (id, packet) = peer.expect(Command::Send).await;
        let Packet::Send(send) = packet else {
            unreachable!()
        };
        peer.send(send_ack(&send, 2), id).await;
        peer
    };
    let (sent, mut peer) = tokio::join!(client.send(direct("bob"), 1, "hi", None), fake);
    assert_eq!(sent.unwrap().version, 2);
    assert_eq!(next_entry(&mut events).await, 2);
    // With no request to ride on, the ack goes alone once the delay has passed.
    let pushed = Instant::now();
    peer.push(3).await;
    expect_ack(&mut peer, 3).await;
    let waited = pushed.elapsed();
    assert!(
        waited >= Duration::from_millis(350),
        "acked after {waited:?}, before the 400 ms delay"
    );
    assert_eq!(client.held_version(), 3);
}

#[tokio::test]
async fn with_no_ack_delay_each_burst_is_acked_at_once() {
    let server = FakeServer::bind().await;
    let mut cfg = config(&server.addr());
    cfg.ack_delay = Duration::ZERO;
    let (_client, mut events, mut peer) = start(&server, cfg, 0, 30).await;
    peer.push(1).await;
    let (_, packet) = peer
        .recv_within(Duration::from_millis(300))
        .await
        .expect("an ack at once")
        .expect("a frame");
    assert_eq!(packet, Packet::PushAck(pb::PushAck { version: 1 }));
    assert_eq!(next_entry(&mut events).await, 1);
}

/// A signal is written without waiting for a reply (none comes), a SIGNAL_NOTIFY becomes an
/// event, and a refusal of the signal (an ERROR nobody waits for) leaves the connection up.
#[tokio::test]
async fn typing_is_written_at_once_and_signals_become_events() {
    let server = FakeServer::bind().await;
    let (client, mut events, mut peer) = start(&server, config(&server.addr()), 0, 30).await;
    client.typing(common::bob(), true).await.unwrap();
    let (rid, packet) = peer.expect(Command::Signal).await;
    let Packet::Signal(s) = packet else {
        panic!("expected SIGNAL, got {packet:?}");
    };
    assert_eq!(
        (s.to, s.kind),
        (Some(common::bob()), pb::SignalKind::Typing as i32)
    );
    // Refused: nothing waits for it, the client carries on.
    let refusal = pb::Error {
        code: 11,
        message: "no".into(),
        fatal: false,
        retry_after_ms: 0,
        reason: String::new(),
    };
    peer.send(Packet::Error(refusal), rid).await;
    let notify = pb::SignalNotify {
        conversation: Some(common::bob()),
        from_user: "bob".into(),
        kind: pb::SignalKind::TypingStopped as i32,
        payload: Vec::new(),
    };
    peer.send(Packet::SignalNotify(notify.clone()), 0).await;
    assert_eq!(next(&mut events).await, ClientEvent::Signal(notify));
    client.typing(common::bob(), false).await.unwrap();
    let (_, packet) = peer.expect(Command::Signal).await;
    assert!(matches!(packet, Packet::Signal(s) if s.kind == pb::SignalKind::TypingStopped as i32));
}

#[tokio::test]
async fn receipts_become_events_and_history_and_readers_page() {
    let server = FakeServer::bind().await;
    let (client, mut events, mut peer) = start(&server, config(&server.addr()), 0, 30).await;
    let receipt = pb::Receipt {
        conversation: Some(direct("bob")),
        reader: "bob".into(),
        up_to_seq: 12,
        read_ms: 5,
    };
    peer.send(Packet::Receipt(receipt.clone()), 0).await;
    match next(&mut events).await {
        ClientEvent::Receipt(r) => assert_eq!(r, receipt),
        other => panic!("{other:?}"),
    }
    let fake = async {
        let (id, packet) = peer.expect(Command::History).await;
        let Packet::History(h) = packet else {
            unreachable!()
        };
        assert_eq!(h.conversation, Some(direct("bob")));
        assert_eq!(h.order, pb::HistoryOrder::NewestFirst as i32);
        assert_eq!((h.before_seq, h.after_seq, h.limit), (40, 0, 20));
        let ack = pb::HistoryAck {
            has_more: true,
            next_seq: 20,
            last_seq: 99,
            ..Default::default()
        };
        peer.send(Packet::HistoryAck(ack), id).await;
        // READERS, two pages.
        for (cursor, read_by, next) in [
            (Vec::new(), vec!["ann"], b"ann".to_vec()),
            (b"ann".to_vec(), vec!["zoe"], Vec::new()),
        ] {
            let (id, packet) = peer.expect(Command::Readers).await;
            let Packet::Readers(r) = packet else {
                unreachable!()
            };
            assert_eq!((r.group_id.as_str(), r.seq, r.cursor), ("g1", 3, cursor));
            let ack = pb::ReadersAck {
                read_by: read_by.into_iter().map(String::from).collect(),
                next_cursor: next,
            };
            peer.send(Packet::ReadersAck(ack), id).await;
        }
        peer
    };
    let requests = async {
        let page = client.history_before(direct("bob"), 40, 20).await.unwrap();
        (page, client.readers("g1", 3).await.unwrap())
    };
    let ((page, readers), _peer) = tokio::join!(requests, fake);
    assert_eq!(
        (page.has_more, page.next_seq, page.last_seq),
        (true, 20, 99)
    );
    assert_eq!(readers, ["ann", "zoe"]);
    client.close().await;
}

/// A server that accepts the login and drops the connection at once is backed off from more and
/// more (PROTOCOL.md 21): the attempt count restarts only after a connection stayed logged in
/// for `reset_after`, not at each LOGIN_ACK.
#[tokio::test]
async fn a_server_that_drops_after_login_is_backed_off_from_more_and_more() {
    let server = FakeServer::bind().await;
    let mut cfg = config(&server.addr());
    cfg.backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_secs(60),
        reset_after: Duration::from_secs(60),
    };
    let (_client, _events, peer) = start(&server, cfg, 0, 30).await;
    drop(peer);
    let mut closed = std::time::Instant::now();
    let mut waits = Vec::new();
    for _ in 0..7 {
        let mut p = server.accept().await;
        waits.push(closed.elapsed());
        p.accept_login(0, 30).await;
        drop(p);
        closed = std::time::Instant::now();
    }
    // Wait k is at most 50 ms * 2^k (plus scheduling) ...
    for (k, w) in waits.iter().enumerate() {
        assert!(
            *w <= Duration::from_millis(50 << k) + Duration::from_millis(100),
            "{waits:?}"
        );
    }
    // ... and one of waits 2..6 (caps 200 ms to 3.2 s) is over 60 ms. A client that started
    // again at each login would wait at most 50 ms every time; a correct one has all five
    // under 60 ms with a chance of 0.3 * 0.15 * 0.075 * 0.0375 * 0.019, about 1 in 400,000.
    let longest = waits[2..].iter().max().unwrap();
    assert!(*longest > Duration::from_millis(60), "{waits:?}");
}
