//! The before-send hook under attack (issue #20): a user whose messages the app's moderation
//! service is slow on (say, content it must fetch links for) pipelines them from every device
//! it may have, to take every request slot of the server and leave the other users' messages
//! waiting until the hook's timeout (then stored unmoderated, or refused). The honest pair's
//! messages go through the same hook.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Json;
use missive_client::Connection;
use missive_protocol::{pb, ErrorCode, Frame, Packet};
use serde_json::{json, Value};

use crate::common::TestServer;
use crate::honest::{exclusive, ms, HonestPair};

/// The honest pair's delivery and heartbeat bound under attack (a debug build on a loaded
/// 2-core box); the hook's timeout is far above it.
const HONEST_BOUND: Duration = Duration::from_millis(1000);

/// How the hook answers: the attacker's messages after 2 s, everyone else's at once.
#[derive(Default)]
struct SlowForMallory {
    honest: AtomicU64,
    mallory: AtomicU64,
}

async fn answer(State(hook): State<Arc<SlowForMallory>>, body: String) -> Json<Value> {
    let v: Value = serde_json::from_str(&body).unwrap();
    if v["sender"] == "mallory" {
        hook.mallory.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
    } else {
        hook.honest.fetch_add(1, Ordering::SeqCst);
    }
    Json(json!({"action": "allow"}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_the_hook_is_slow_on_cannot_take_the_other_users_turns() {
    let _g = exclusive();
    let hook = Arc::new(SlowForMallory::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/check", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .route("/check", axum::routing::post(answer))
        .with_state(hook.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    // 64 slots server-wide; each device of mallory pipelines 64 sends (the most a connection
    // has in flight), so 5 devices could hold 320 requests: every slot, without the per-user
    // bound.
    let server = TestServer::start_with(move |c| {
        c.send_hook_url = url;
        c.send_hook_secret = "hook-secret-0123456789".into();
        c.send_hook_timeout_ms = 5000;
        c.send_hook_max_in_flight = 64;
        c.sends_per_sec = 100_000;
    })
    .await;
    let devices = server.config.max_devices_per_user;
    let per_user = server.config.send_hook_max_in_flight_per_user;
    let mut mallory: Vec<Connection> = Vec::new();
    for d in 0..devices {
        mallory.push(server.login("mallory", &format!("d{d}")).await.0);
    }
    const EACH: usize = 64;
    for (d, conn) in mallory.iter_mut().enumerate() {
        let mut bytes = Vec::new();
        for i in 0..EACH {
            let send = Packet::Send(pb::Send {
                client_msg_id: format!("d{d}-{i}"),
                to: Some(missive_client::direct("victim")),
                content_type: 1,
                content: format!("see http://slow.example/{d}/{i}").into_bytes(),
                ..Default::default()
            });
            bytes.extend_from_slice(&Frame::new(&send, i as u32 + 1).to_bytes());
        }
        conn.write_raw(&bytes).await.expect("write");
    }
    // Let the attack take what it can, then chat beside it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let pair = HonestPair::start(&server).await;
    let report = pair.finish().await;
    let pair_time = started.elapsed();
    let asked_while_pair_chatted = hook.mallory.load(Ordering::SeqCst);

    // Every one of mallory's sends is answered in the end: acked once its turn came, or failed
    // open at the timeout (acked too, unmoderated: the hook's own choice of failure mode).
    let mut acked = 0;
    for conn in &mut mallory {
        while acked < devices * EACH {
            match conn.recv_packet_timeout(Duration::from_secs(30)).await {
                Ok(Some((_, Packet::SendAck(_)))) => {
                    acked += 1;
                    if acked % EACH == 0 {
                        break;
                    }
                }
                Ok(Some((_, Packet::Error(e)))) => {
                    panic!("{:?}: {e:?}", ErrorCode::from_u32(e.code))
                }
                Ok(Some(_)) => {}
                other => panic!("a reply was expected, got {other:?}"),
            }
        }
    }
    println!(
        "{devices} devices x {EACH} pipelined sends the hook takes 2 s on: {asked_while_pair_chatted} \
         asked while the pair chatted {:.0} ms (at most {per_user} at a time), all {acked} answered; \
         the pair's {} messages asked at once; {}",
        ms(pair_time),
        hook.honest.load(Ordering::SeqCst),
        report.summary()
    );
    assert!(
        asked_while_pair_chatted <= per_user as u64 * (1 + pair_time.as_secs() / 2 + 1),
        "the attacker had {asked_while_pair_chatted} requests at the hook, more than its turns"
    );
    assert!(hook.honest.load(Ordering::SeqCst) >= report.sent as u64);
    report.assert_healthy(HONEST_BOUND);
    server.stop().await;
}
