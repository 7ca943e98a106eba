//! `missive proxy` between raw connections and a real missived (in-process, real TCP and
//! RocksDB): the faults that `conform` does not use (delay, throttle, NAT idle, a scenario
//! file), the capture that `missive decode` reads, and bad rules.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use missive::ServerHandle;
use missive_client::{pb, Connection};
use missive_protocol::{token, Packet};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const SECRET: &str = "proxy-test-secret-0123456789";
const WAIT: Duration = Duration::from_secs(10);

async fn server() -> (ServerHandle, String, tempfile::TempDir) {
    common::server(|c| c.secret = Some(SECRET.into())).await
}

/// Starts `missive proxy` with `args`; the child and the address it listens on.
async fn proxy(server: &str, args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_missive"))
        .args([
            "--addr",
            server,
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--quiet",
        ])
        .args(args)
        .env_remove("MISSIVE_ADDR")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // "missive proxy: listening on 127.0.0.1:PORT, forwarding to ..."
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    (child, addr)
}

async fn login(addr: &str, user: &str) -> Connection {
    let mut c = Connection::connect(addr).await.unwrap();
    let tok = token::mint(SECRET.as_bytes(), user, "d", u64::MAX / 2);
    c.login(&tok, "d", 0).await.unwrap();
    c
}

fn text(to: &str, content: Vec<u8>, id: &str) -> Packet {
    Packet::Send(pb::Send {
        client_msg_id: id.into(),
        to: Some(pb::Conversation {
            kind: pb::ConversationKind::Direct as i32,
            id: to.into(),
        }),
        content_type: 1,
        content,
        mentions: Vec::new(),
        media: Vec::new(),
    })
}

/// The next PUSH on `c`.
async fn next_push(c: &mut Connection) -> pb::Push {
    loop {
        let (_, p) = c.recv_packet_timeout(WAIT).await.unwrap().unwrap();
        if let Packet::Push(p) = p {
            return p;
        }
    }
}

#[tokio::test]
async fn a_scenario_drops_and_delays_and_the_capture_decodes() {
    let (_server, addr, dir) = server().await;
    let scenario = dir.path().join("faults.txt");
    std::fs::write(
        &scenario,
        "# drop the first push, delay the others\ndown PUSH #1 drop   # the first\ndown PUSH #2-#9 delay 300\n",
    )
    .unwrap();
    let capture = dir.path().join("run.jsonl");
    let (mut child, paddr) = proxy(
        &addr,
        &[
            "--scenario",
            scenario.to_str().unwrap(),
            "--capture",
            capture.to_str().unwrap(),
        ],
    )
    .await;
    let mut bob = login(&paddr, "bob").await;
    let mut alice = login(&addr, "alice").await;
    for i in 1..=2 {
        let sent = Instant::now();
        alice
            .request(text("bob", format!("m{i}").into_bytes(), &format!("c{i}")))
            .await
            .unwrap();
        if i == 2 {
            // The first push never came; the second is late by the delay.
            let p = next_push(&mut bob).await;
            assert_eq!((p.prev_version, p.version), (1, 2));
            assert!(
                sent.elapsed() >= Duration::from_millis(290),
                "{:?}",
                sent.elapsed()
            );
        }
    }
    bob.push_ack(2).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    child.kill().await.unwrap();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_missive"))
        .args(["decode", "--file", capture.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains(" c1 open "), "{text}");
    assert!(
        lines.iter().any(|l| l.contains("-> LOGIN #1 forwarded")),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.contains("<- PUSH #0 dropped")),
        "{text}"
    );
    assert!(
        lines.iter().any(|l| l.contains("<- PUSH #0 delayed")),
        "{text}"
    );
    assert!(lines.iter().any(|l| l.contains("-> PUSH_ACK")), "{text}");
}

#[tokio::test]
async fn throttle_slows_a_big_reply_and_nat_idle_makes_a_black_hole() {
    let (_server, addr, _dir) = server().await;
    let mut alice = login(&addr, "alice").await;
    // About 40 KB of incompressible content for bob.
    let mut x: u64 = 1;
    for i in 0..10 {
        let content: Vec<u8> = (0..4000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 56) as u8
            })
            .collect();
        alice
            .request(text("bob", content, &format!("big{i}")))
            .await
            .unwrap();
    }
    let (_child, paddr) = proxy(
        &addr,
        &["--fault", "throttle 20000", "--fault", "nat-idle 1"],
    )
    .await;
    let mut bob = login(&paddr, "bob").await;
    let started = Instant::now();
    let reply = bob
        .request(Packet::Sync(pb::Sync {
            since_version: 0,
            limit: 0,
        }))
        .await
        .unwrap();
    let Packet::SyncAck(page) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(page.entries.len(), 10);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "40 KB at 20 KB/s took {took:?}"
    );
    // Idle for over a second: the proxy forgets the connection. A heartbeat gets no answer,
    // and no FIN comes either.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = bob
        .request_timeout(
            Packet::Heartbeat(pb::Heartbeat::default()),
            Duration::from_secs(2),
        )
        .await;
    assert!(r.is_err(), "{r:?}");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_millis(500), bob.read_raw(&mut buf)).await;
    assert!(
        read.is_err(),
        "the black hole sent something or closed: {read:?}"
    );
}

#[test]
fn a_bad_rule_is_refused_with_its_text() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_missive"))
        .args(["proxy", "--fault", "down PUSH #0 drop"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("down PUSH #0 drop") && err.contains("#1"),
        "{err}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_missive"))
        .args(["proxy", "--fault", "up SEND explode"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("explode"));
}

#[tokio::test]
async fn delay_with_jitter_and_a_cut_after_a_time() {
    let (_server, addr, _dir) = server().await;
    let (_child, paddr) = proxy(
        &addr,
        &["--fault", "delay 100 jitter 50", "--fault", "after 1.5 cut"],
    )
    .await;
    let opened = Instant::now();
    let mut bob = login(&paddr, "bob").await;
    // LOGIN and LOGIN_ACK are each 100 to 150 ms late.
    let rtt = opened.elapsed();
    assert!(rtt >= Duration::from_millis(200), "{rtt:?}");
    // The proxy closes the connection 1.5 s after it opened.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, bob.read_raw(&mut buf))
        .await
        .expect("the cut came")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let at = opened.elapsed();
    assert!(
        at >= Duration::from_millis(1400) && at < Duration::from_secs(4),
        "{at:?}"
    );
}
