//! Blocking under attack (issue #20): BLOCKs pipelined far past the per-connection rate and
//! the per-user cap, and full-size BLOCK_LIST pages pipelined, while the honest pair chats.

use std::time::{Duration, Instant};

use missive_client::Connection;
use missive_protocol::{pb, ErrorCode, Frame, Packet};

use crate::common::TestServer;
use crate::honest::{exclusive, ms, HonestPair};

/// The honest pair's delivery and heartbeat bound under attack (a debug build on a loaded
/// 2-core box).
const HONEST_BOUND: Duration = Duration::from_millis(1000);

/// `max_blocks_per_user` for the test (the default is 10,000; the bound is the same code).
const CAP: usize = 1000;

/// Reads `n` replies of `conn`: each reply's packet, by request id order of arrival.
async fn replies(conn: &mut Connection, n: usize) -> Vec<Packet> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match conn.recv_packet_timeout(Duration::from_secs(30)).await {
            Ok(Some((frame, packet))) if frame.request_id != 0 => out.push(packet),
            Ok(Some(_)) => {}
            other => panic!("a reply was expected, got {other:?}"),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_floods_and_full_block_lists_are_bounded() {
    let _g = exclusive();
    let server = TestServer::start_with(|c| c.max_blocks_per_user = CAP).await;
    let rate = server.config.sends_per_sec as usize;
    let pair = HonestPair::start(&server).await;
    let (mut mallory, _) = server.login("mallory", "phone").await;

    // 6,000 BLOCKs of distinct users in one write (about 130 KiB): each is a change for the
    // writer, so they count against the connection's rate like SENDs, and past the cap they
    // store nothing.
    const FLOOD: usize = 6000;
    let mut bytes = Vec::new();
    for i in 0..FLOOD {
        let block = Packet::Block(pb::Block {
            user_id: format!("victim-{i:05}"),
            blocked: true,
        });
        bytes.extend_from_slice(&Frame::new(&block, i as u32 + 1).to_bytes());
    }
    let started = Instant::now();
    mallory.write_raw(&bytes).await.expect("write");
    let (mut blocked, mut limited, mut over_cap) = (0, 0, 0);
    for reply in replies(&mut mallory, FLOOD).await {
        match reply {
            Packet::BlockAck(a) => {
                assert!(a.blocked);
                blocked += 1;
            }
            Packet::Error(e) if e.code == ErrorCode::RateLimited as u32 => limited += 1,
            Packet::Error(e) if e.code == ErrorCode::LimitExceeded as u32 => over_cap += 1,
            other => panic!("BLOCK_ACK, RATE_LIMITED or LIMIT_EXCEEDED expected, got {other:?}"),
        }
    }
    let flood_time = started.elapsed();
    assert_eq!(blocked, CAP, "blocks stored up to the cap, no more");
    assert!(limited > 0, "the flood ran into the connection's rate");
    // What the writer ran: at most the burst (twice the rate) and the rate over the time taken.
    let allowed = 2 * rate + (rate as f64 * flood_time.as_secs_f64()).ceil() as usize;
    assert!(
        blocked + over_cap <= allowed,
        "{} changes ran in {flood_time:?} at {rate}/s",
        blocked + over_cap
    );

    // Full pages of the full list, pipelined: reads bounded by the page cap (1,000 ids) and by
    // the server's heavy-read slots; the stored list is what was acked.
    const PAGES: usize = 200;
    let mut bytes = Vec::new();
    for i in 0..PAGES {
        let list = Packet::BlockList(pb::BlockList {
            after: String::new(),
            limit: 5000,
        });
        bytes.extend_from_slice(&Frame::new(&list, (FLOOD + i) as u32 + 1).to_bytes());
    }
    let started = Instant::now();
    mallory.write_raw(&bytes).await.expect("write");
    let expect: Vec<String> = (0..CAP).map(|i| format!("victim-{i:05}")).collect();
    for reply in replies(&mut mallory, PAGES).await {
        let Packet::BlockListAck(page) = reply else {
            panic!("BLOCK_LIST_ACK expected, got {reply:?}")
        };
        assert_eq!(
            page.user_ids, expect,
            "one page of at most 1,000, in id order"
        );
        assert!(!page.has_more);
        assert_eq!(page.total as usize, CAP);
    }
    let list_time = started.elapsed();
    drop(mallory);
    let report = pair.finish().await;
    println!(
        "{FLOOD} pipelined BLOCKs: {blocked} stored (cap {CAP}), {over_cap} over the cap, \
         {limited} rate-limited, in {:.0} ms; {PAGES} pipelined BLOCK_LIST pages of {CAP}: \
         {:.0} ms; {}",
        ms(flood_time),
        ms(list_time),
        report.summary()
    );
    report.assert_healthy(HONEST_BOUND);
    server.stop().await;
}
