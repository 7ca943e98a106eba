//! `missive conform` end to end: a real missived (in-process, real TCP and RocksDB), the
//! `missive conform --json` binary, and a client under test driven by conform's steps.
//!
//! The reference client (`missive-client`) must pass every rule. Three broken clients must each
//! be caught by the rule they break. Each is the reference client behind a small relay built
//! here that changes what it puts on the wire, the way a buggy app would:
//! - `NewIdOnResend`: every SEND leaves with a fresh client_msg_id, so a resend after an
//!   unknown outcome is a new message;
//! - `AckEachPush`: every PUSH is acknowledged with its own version as it arrives (the client's
//!   cumulative PUSH_ACKs are dropped), so acks go down and run ahead of gaps;
//! - `IgnoreRedirect`: a KICK's redirect address is blanked, so the client reconnects where it
//!   was.

mod common;

use std::process::Stdio;
use std::time::Duration;

use bytes::BytesMut;
use missive::ServerHandle;
use missive_client::{direct, pb, Backoff, Client, ClientConfig};
use missive_protocol::{token, Frame, FrameCodec, Packet};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;

const SECRET: &str = "conform-test-secret-0123456789";

/// A server with a short heartbeat, so that the idle and dead-link steps take seconds.
async fn server() -> (ServerHandle, String, tempfile::TempDir) {
    common::server(|c| {
        c.secret = Some(SECRET.into());
        c.heartbeat_secs = 2;
        c.heartbeat_min_secs = 1;
    })
    .await
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Bug {
    None,
    NewIdOnResend,
    AckEachPush,
    IgnoreRedirect,
}

/// Relays frames between the client and `target`, changing them as `bug` says.
async fn buggy_relay(bug: Bug, target: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&target).await else {
                continue;
            };
            tokio::spawn(relay_conn(bug, client, server));
        }
    });
    addr
}

/// What a relay read next.
enum Read {
    Frames(Vec<Frame>),
    /// Bytes that are not a frame (a corrupted one): passed on as they are, not judged here.
    Garbage(BytesMut),
    End,
}

async fn next_frames(
    r: &mut tokio::net::tcp::OwnedReadHalf,
    codec: &mut FrameCodec,
    buf: &mut BytesMut,
) -> Read {
    loop {
        let mut frames = Vec::new();
        loop {
            match codec.decode(buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(_) if frames.is_empty() => return Read::Garbage(buf.split()),
                Err(_) => break,
            }
        }
        if !frames.is_empty() {
            return Read::Frames(frames);
        }
        if matches!(r.read_buf(buf).await, Ok(0) | Err(_)) {
            return Read::End;
        }
    }
}

/// Changes a frame going to the server; None drops it.
fn buggy_up(bug: Bug, frame: Frame) -> Option<Frame> {
    match (frame.packet(1 << 20).ok(), bug) {
        (Some(Packet::Send(mut s)), Bug::NewIdOnResend) => {
            s.client_msg_id = missive_client::new_client_msg_id();
            Some(Frame::new(&Packet::Send(s), frame.request_id))
        }
        (Some(Packet::PushAck(_)), Bug::AckEachPush) => None,
        _ => Some(frame),
    }
}

/// Changes a frame going to the client; also what to send the server on the client's behalf.
fn buggy_down(bug: Bug, frame: Frame) -> (Frame, Option<Frame>) {
    match (frame.packet(1 << 20).ok(), bug) {
        (Some(Packet::Kick(mut k)), Bug::IgnoreRedirect) => {
            k.redirect_host.clear();
            k.redirect_port = 0;
            (Frame::new(&Packet::Kick(k), frame.request_id), None)
        }
        (Some(Packet::Push(p)), Bug::AckEachPush) => {
            let ack = Packet::PushAck(pb::PushAck { version: p.version });
            (frame, Some(Frame::new(&ack, 0)))
        }
        _ => (frame, None),
    }
}

async fn relay_conn(bug: Bug, client: TcpStream, server: TcpStream) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let (to_server, mut up_rx) = mpsc::unbounded_channel::<Frame>();
    let up_writer = tokio::spawn(async move {
        while let Some(f) = up_rx.recv().await {
            if sw.write_all(&f.to_bytes()).await.is_err() {
                break;
            }
        }
    });
    let to_server_down = to_server.clone();
    let down = tokio::spawn(async move {
        let (mut codec, mut buf) = (FrameCodec::default(), BytesMut::new());
        loop {
            let bytes = match next_frames(&mut sr, &mut codec, &mut buf).await {
                Read::End => return,
                Read::Garbage(b) => b.to_vec(),
                Read::Frames(frames) => {
                    let mut out = Vec::new();
                    for f in frames {
                        let (f, extra) = buggy_down(bug, f);
                        out.extend_from_slice(&f.to_bytes());
                        if let Some(x) = extra {
                            let _ = to_server_down.send(x);
                        }
                    }
                    out
                }
            };
            if cw.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    let (mut codec, mut buf) = (FrameCodec::default(), BytesMut::new());
    while let Read::Frames(frames) = next_frames(&mut cr, &mut codec, &mut buf).await {
        for f in frames.into_iter().filter_map(|f| buggy_up(bug, f)) {
            let _ = to_server.send(f);
        }
    }
    down.abort();
    drop(to_server);
    let _ = up_writer.await;
}

/// Runs `missive conform --json` with a client that has `bug`; conform's report.
async fn conform_run(bug: Bug, user: &str) -> Value {
    let (_server, addr, _dir) = server().await;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_missive"));
    cmd.args([
        "--json",
        "--addr",
        &addr,
        "--secret",
        SECRET,
        "conform",
        "--listen",
        "127.0.0.1:0",
        "--redirect-listen",
        "127.0.0.1:0",
        "--backoff-base-ms",
        "100",
        "--backoff-reset-secs",
        "3",
        "--wait-secs",
        "20",
    ]);
    // MISSIVE_CONFORM_CAPTURE=dir keeps each run's capture, for `missive decode --file`.
    if let Ok(dir) = std::env::var("MISSIVE_CONFORM_CAPTURE") {
        cmd.arg("--capture").arg(format!("{dir}/{user}.jsonl"));
    }
    let mut child = cmd
        .env_remove("MISSIVE_ADDR")
        .env_remove("MISSIVE_TOKEN")
        .env_remove("MISSIVE_SECRET")
        .env_remove("MISSIVE_USER")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut client: Option<Client> = None;
    let mut listen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .expect("conform finished in time")
            .unwrap()
            .expect("conform printed a report");
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        match (v["event"].as_str(), v["step"].as_str()) {
            (Some("listening"), _) => listen = v["addr"].as_str().unwrap().to_string(),
            (Some("step"), Some("connect")) => {
                let target = if bug == Bug::None {
                    listen.clone()
                } else {
                    buggy_relay(bug, listen.clone()).await
                };
                let tok = token::mint(SECRET.as_bytes(), user, "phone", u64::MAX / 2);
                let mut cfg = ClientConfig::new(target, tok, "phone");
                cfg.backoff = Backoff {
                    initial: Duration::from_millis(100),
                    max: Duration::from_secs(60),
                    reset_after: Duration::from_secs(3),
                };
                let mut c = Client::connect(cfg).await.unwrap();
                let mut events = c.events().unwrap();
                tokio::spawn(async move { while events.recv().await.is_some() {} });
                client = Some(c);
            }
            (Some("step"), Some("send")) => {
                let to = v["to"].as_str().unwrap().to_string();
                let c = client.as_ref().unwrap();
                for i in 1..=v["count"].as_u64().unwrap() {
                    c.send(direct(&to), 1, format!("hello {i}"), None)
                        .await
                        .unwrap();
                }
            }
            (Some("report"), _) => {
                let _ = child.wait().await;
                eprintln!("{user} ({bug:?}): not passed: {:#?}", failed(&v));
                return v;
            }
            _ => {}
        }
    }
}

fn rule<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no rule {id}"))
}

/// Asserts that rule `id` failed; its violations as text.
fn failing(report: &Value, id: &str) -> String {
    let r = rule(report, id);
    assert_eq!(r["result"], "fail", "{report:#}");
    r["violations"].to_string()
}

fn failed(report: &Value) -> Vec<String> {
    report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["result"] != "pass")
        .map(|r| format!("{} {}: {}", r["id"], r["result"], r["violations"]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_client_passes_every_rule() {
    let report = conform_run(Bug::None, "ref-user").await;
    assert_eq!(failed(&report), Vec::<String>::new(), "{report:#}");
    assert_eq!(report["pass"], true);
    assert_eq!(report["user"], "ref-user");
    // Every rule was exercised, the fault ones included.
    for id in [
        "crc",
        "dead-link",
        "redirect",
        "resend",
        "backoff",
        "gap-sync",
    ] {
        assert!(rule(&report, id)["checks"].as_u64().unwrap() > 0, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_resends_under_a_new_client_msg_id_is_caught() {
    let report = conform_run(Bug::NewIdOnResend, "newid-user").await;
    assert_eq!(report["pass"], false);
    failing(&report, "resend");
    // The peer got the cut message twice: stored twice.
    let twice = failing(&report, "exactly-once");
    assert!(twice.contains("as 2 messages"), "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_acks_each_push_as_it_comes_is_caught() {
    let report = conform_run(Bug::AckEachPush, "acker-user").await;
    assert_eq!(report["pass"], false);
    let text = failing(&report, "acks");
    // Acks that go down, and an ack of a version past a gap.
    assert!(
        text.contains("which the client already acknowledged")
            && text.contains("the highest version it received with nothing missing below"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_ignores_a_redirect_is_caught() {
    let report = conform_run(Bug::IgnoreRedirect, "stubborn-user").await;
    assert_eq!(report["pass"], false);
    let text = failing(&report, "redirect");
    assert!(text.contains("old address"), "{text}");
    // Nothing else is wrong with it.
    assert_eq!(failed(&report).len(), 1, "{report:#}");
}
