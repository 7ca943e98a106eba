//! Reads that cost the server more than they cost the client: UNREAD and MARK_READ for a user
//! in many groups, and large replies pipelined by a client that never reads them.

use std::time::{Duration, Instant};

use missive_client::{pb, Connection};
use missive_protocol::{Frame, Packet};
use tokio::io::AsyncWriteExt;

use crate::common::TestServer;
use crate::honest::{ms, HonestPair};

/// The honest pair's delivery and heartbeat bound under attack (a debug build on a loaded
/// 2-core box).
const HONEST_BOUND: Duration = Duration::from_millis(1000);

/// The test process's resident memory (the server runs in it), in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// `user` is put in `groups` read fan-out groups (fan-out threshold 1), each with one message
/// from someone else, so each counts one unread message.
async fn many_groups(server: &TestServer, user: &str, groups: usize) -> Vec<String> {
    let (mut owner, _) = server.login("owner", "phone").await;
    let mut ids = Vec::with_capacity(groups);
    for i in 0..groups {
        let reply = owner
            .request(Packet::GroupCreate(pb::GroupCreate {
                name: format!("g{i}"),
                members: vec![user.into()],
                ..Default::default()
            }))
            .await
            .expect("GROUP_CREATE");
        let Packet::GroupCreateAck(a) = reply else {
            panic!("{reply:?}")
        };
        let gid = a.group.expect("group").group_id;
        owner
            .request(Packet::Send(pb::Send {
                client_msg_id: format!("m{i}"),
                to: Some(missive_client::group(&gid)),
                content_type: 1,
                content: b"hello".to_vec(),
                ..Default::default()
            }))
            .await
            .expect("SEND");
        ids.push(gid);
    }
    ids
}

/// Writes `count` copies of `packet` in one go and reads nothing back.
async fn pipeline(conn: &mut Connection, packet: &Packet, count: usize) {
    let mut bytes = Vec::new();
    for i in 0..count {
        bytes.extend_from_slice(&Frame::new(packet, 1000 + i as u32).to_bytes());
    }
    conn.write_raw(&bytes).await.expect("write");
}

/// A user in 1000 read fan-out groups (`max_groups_per_user`) pipelines UNREADs and MARK_READs.
/// UNREAD's total visits each read fan-out group (bounded by the cap), off the connection
/// threads; MARK_READ is O(1) on the writer. The honest pair's heartbeats and messages are not
/// held up (before: 150 UNREADs for a user in 10,000 groups took 5 s of the only connection
/// thread, and every heartbeat waited as long).
#[tokio::test]
async fn unread_and_mark_read_stay_cheap_for_a_user_in_many_groups() {
    let _g = crate::honest::exclusive();
    const GROUPS: usize = 1000;
    let server = TestServer::start_with(|c| {
        c.fanout_threshold = 1;
        c.sends_per_sec = 1_000_000;
    })
    .await;
    let groups = many_groups(&server, "busy", GROUPS).await;
    let (mut busy, ack) = server.login("busy", "phone").await;
    assert_eq!(
        ack.unread_total, GROUPS as u64,
        "one unread message per group"
    );
    let pair = HonestPair::start(&server).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // 150 pipelined UNREADs, all answered, every page with the whole total.
    let started = Instant::now();
    pipeline(&mut busy, &Packet::Unread(pb::Unread::default()), 150).await;
    let mut answered = 0;
    while answered < 150 {
        let (_, p) = busy
            .recv_packet_timeout(Duration::from_secs(30))
            .await
            .expect("an answer")
            .expect("open");
        if let Packet::UnreadAck(a) = p {
            assert_eq!(a.total, GROUPS as u64);
            assert_eq!(a.conversations.len(), 200, "a page of the default size");
            answered += 1;
        }
    }
    let unread_time = started.elapsed();

    // MARK_READ of 200 groups, pipelined: each O(1) on the writer, its total read after.
    const READS: usize = 200;
    let started = Instant::now();
    let mut bytes = Vec::new();
    for (i, g) in groups.iter().take(READS).enumerate() {
        let p = Packet::MarkRead(pb::MarkRead {
            conversation: Some(missive_client::group(g)),
            up_to_seq: 1,
        });
        bytes.extend_from_slice(&Frame::new(&p, 5000 + i as u32).to_bytes());
    }
    busy.write_raw(&bytes).await.expect("write");
    let mut left = u64::MAX;
    let mut acks = 0;
    while acks < READS {
        let (_, p) = busy
            .recv_packet_timeout(Duration::from_secs(30))
            .await
            .expect("an answer")
            .expect("open");
        if let Packet::MarkReadAck(a) = p {
            assert!(a.version > 0 && a.unread == 0, "{a:?}");
            left = left.min(a.total);
            acks += 1;
        }
    }
    let mark_time = started.elapsed();
    assert_eq!(
        left,
        (GROUPS - READS) as u64,
        "the other groups are still unread"
    );
    let report = pair.finish().await;
    println!(
        "a user in {GROUPS} read fan-out groups: 150 pipelined UNREADs answered in {:.0} ms, \
         {READS} pipelined MARK_READs in {:.0} ms; {}",
        ms(unread_time),
        ms(mark_time),
        report.summary()
    );
    report.assert_healthy(HONEST_BOUND);
    server.stop().await;
}

/// 195 pipelined SYNC{limit 5000} from a client that never reads its socket, on an inbox of
/// about 2 MB: the server takes no more requests once 256 KiB of replies wait unwritten, so it
/// holds about one reply for the connection (before: every reply, 143 MiB), and closes it at
/// the write timeout. GROUP_HISTORY and CONTACTS go the same way (one reply path).
#[tokio::test]
async fn pipelined_large_replies_to_a_client_that_does_not_read_are_bounded() {
    let _g = crate::honest::exclusive();
    let server = TestServer::start_with(|c| c.sends_per_sec = 1_000_000).await;
    // Fill the reader's inbox with 2000 messages of 1 KiB of incompressible bytes.
    let (mut filler, _) = server.login("filler", "phone").await;
    let mut bytes = Vec::new();
    for i in 0..2000u32 {
        let p = Packet::Send(pb::Send {
            client_msg_id: format!("f{i}"),
            to: Some(missive_client::direct("reader")),
            content_type: 1,
            content: crate::common::noise(1024, 0x9e37_79b9_7f4a_7c15 ^ u64::from(i)),
            ..Default::default()
        });
        bytes.extend_from_slice(&Frame::new(&p, i + 1).to_bytes());
    }
    filler.write_raw(&bytes).await.expect("write");
    let mut acked = 0;
    while acked < 2000 {
        if let Some((_, Packet::SendAck(_))) = filler
            .recv_packet_timeout(Duration::from_secs(30))
            .await
            .expect("acks")
        {
            acked += 1;
        }
    }
    drop(filler);
    let pair = HonestPair::start(&server).await;
    // The attacker: a raw socket that logs in, pipelines the SYNCs and never reads again.
    let mut raw = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let token = server.token("reader", "phone");
    let login = Packet::Login(pb::Login {
        token,
        device_id: "phone".into(),
        ..Default::default()
    });
    raw.write_all(&Frame::new(&login, 1).to_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss();
    let sync = Packet::Sync(pb::Sync {
        since_version: 0,
        limit: 5000,
    });
    let mut bytes = Vec::new();
    for i in 0..195u32 {
        bytes.extend_from_slice(&Frame::new(&sync, 10 + i).to_bytes());
    }
    let sent = bytes.len();
    raw.write_all(&bytes).await.unwrap();
    // Watch the server's memory while the replies cannot be written, until the write times
    // out (10 s) and the connection is closed.
    let mut peak = before;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(12) {
        peak = peak.max(rss());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let held = peak.saturating_sub(before);
    let report = pair.finish().await;
    let store = server.handle().store();
    println!(
        "pipelined SYNC{{5000}} x195 ({sent} bytes sent) on a {} entry inbox, never read: the \
         server's memory grew by at most {:.1} MiB; {}",
        store.core().current_version("reader").unwrap(),
        held as f64 / (1 << 20) as f64,
        report.summary()
    );
    assert!(
        held < 16 << 20,
        "the server held {held} bytes for one connection that reads nothing"
    );
    report.assert_healthy(HONEST_BOUND);
    drop(raw);
    server.stop().await;
}
