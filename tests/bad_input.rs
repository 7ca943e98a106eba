//! End to end: a battery of bad connections against a live server while honest clients chat.
//!
//! Three pairs of reliable clients send each other a bounded number of messages (acking every
//! push as they go) while about a hundred other connections, all at once, send one kind of bad
//! input each, before or after logging in: truncated frames (then closing, or stalling until
//! the frame timeout), oversized or impossible length prefixes, bad magic, a wrong version,
//! reserved flags, a bad CRC, unknown commands, undecodable or zlib-bomb bodies, requests before
//! LOGIN, a second LOGIN, commands only the server sends, PUSH_ACKs for versions never pushed,
//! oversized content, an HTTP request, a TLS ClientHello, and seeded random garbage.
//!
//! Each bad connection must get the ERROR that PROTOCOL.md (sections 7, 10.1 and 19) documents
//! for its input, with the documented request id and fatal flag; after a fatal one the server
//! must close it (end of stream within a bounded time), after a non-fatal one the session must
//! go on. At the end every honest client holds every message of its conversation exactly once,
//! in order; the bad users stored nothing; and the store invariants hold (inbox versions without
//! gaps, unread counts equal to a recount).

mod common;
mod e2e;

use std::time::Duration;

use common::observe::{account, check_store};
use common::*;
use e2e::{expect_closed, expect_error, expect_fatal, expect_silence, frame_of, heartbeat_ok};
use missive_client::{direct, pb, Client, ClientEvent, Connection};
use missive_protocol::token::mint;
use missive_protocol::{Command, ErrorCode, Flags, Frame, Packet, MAX_LOGIN_FRAME_LEN};
use tokio::sync::mpsc::UnboundedReceiver;

const MAX_FRAME_LEN: usize = 64 * 1024;
const MAX_CONTENT_LEN: usize = 16 * 1024;
const FRAME_TIMEOUT_MS: u64 = 300;
const LOGIN_TIMEOUT_MS: u64 = 1500;
/// Messages each honest client sends.
const HONEST_MESSAGES: usize = 60;
const PAIRS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Straight after connecting, before any LOGIN.
    Fresh,
    /// After a successful LOGIN.
    LoggedIn,
}

/// What the client does after writing its bytes.
#[derive(Debug, Clone, Copy)]
enum Then {
    /// Keeps the connection open and sends nothing more.
    Stall,
    /// Closes its write half (the server sees end of stream).
    Close,
}

/// What the bad connection must see.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// ERROR `code` (fatal) with request id `rid`, then the server closes.
    Fatal(ErrorCode, u32),
    /// ERROR `code` (not fatal) with request id `rid`; the connection stays usable.
    Refused(ErrorCode, u32),
    /// Before login: ERROR `code` (not fatal) with request id `rid`, then a proper LOGIN on
    /// the same connection succeeds.
    RefusedThenLogin(ErrorCode, u32),
    /// The server closes without a frame (nothing can be answered).
    Closed,
    /// No reply at all; the connection stays usable.
    NoReply,
}

#[derive(Debug, Clone)]
struct Case {
    name: String,
    phase: Phase,
    bytes: Vec<u8>,
    then: Then,
    expect: Expect,
}

fn case(name: impl Into<String>, phase: Phase, bytes: Vec<u8>, expect: Expect) -> Case {
    Case {
        name: name.into(),
        phase,
        bytes,
        then: Then::Stall,
        expect,
    }
}

fn bytes_of(packet: &Packet, rid: u32) -> Vec<u8> {
    Frame::new(packet, rid).to_bytes().to_vec()
}

fn heartbeat(rid: u32) -> Vec<u8> {
    bytes_of(
        &Packet::Heartbeat(pb::Heartbeat {
            client_time_ms: 7,
            ..Default::default()
        }),
        rid,
    )
}

fn send_packet(content_len: usize) -> Packet {
    Packet::Send(e2e::send_body(
        "bad-input",
        "honest-b0",
        &vec![b'x'; content_len],
    ))
}

fn token(user: &str, device: &str) -> String {
    mint(
        SECRET.as_bytes(),
        user,
        device,
        (missive::now_ms() / 1000) as u64 + 3600,
    )
}

fn login_packet(user: &str, device: &str) -> Packet {
    Packet::Login(pb::Login {
        token: token(user, device),
        device_id: device.to_owned(),
        platform: pb::Platform::Android as i32,
        last_version: 0,
        client_version: "bad-input".into(),
        ..Default::default()
    })
}

/// xorshift64*: deterministic garbage without depending on a random crate's stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// The error PROTOCOL.md section 7 prescribes for a stream that consists of `b` and then
/// nothing (the sender stalls): the first failing check of the table, in its order; a frame
/// still incomplete is refused by the frame timeout (BAD_FRAME). None: `b` holds a whole
/// frame with a valid CRC (random bytes practically never do). `limit`: the length limit, the
/// login cap before login.
fn framing_error_for(b: &[u8], limit: usize) -> Option<ErrorCode> {
    if b.len() < 4 {
        return Some(ErrorCode::BadFrame);
    }
    let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    if len > limit {
        return Some(ErrorCode::FrameTooLarge);
    }
    if b.len() >= 6 && &b[4..6] != b"MS" {
        return Some(ErrorCode::BadFrame);
    }
    if b.len() >= 7 && b[6] != 1 {
        return Some(ErrorCode::UnsupportedVersion);
    }
    if len < 14 {
        return Some(ErrorCode::BadFrame);
    }
    if b.len() >= 8 && b[7] & 0xfc != 0 {
        return Some(ErrorCode::BadFrame);
    }
    if b.len() < 4 + len {
        return Some(ErrorCode::BadFrame);
    }
    let crc_at = len; // 4 + len - 4
    let trailer = u32::from_be_bytes([b[crc_at], b[crc_at + 1], b[crc_at + 2], b[crc_at + 3]]);
    if crc32(&b[..crc_at]) != trailer {
        return Some(ErrorCode::BadCrc);
    }
    None
}

/// CRC-32/ISO-HDLC, bit by bit (PROTOCOL.md section 5), independent of the codec's.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Seeded garbage of four shapes: pure noise, a small length prefix then noise, a prefix and
/// the magic then noise, and a whole header of the right shape with a noisy rest.
fn garbage(seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let n = 1 + (rng.next() % 300) as usize;
    let mut b = rng.bytes(n);
    let shape = seed % 4;
    if shape >= 1 && b.len() >= 4 {
        let len = 10 + (rng.next() % 400) as u32;
        b[..4].copy_from_slice(&len.to_be_bytes());
    }
    if shape >= 2 && b.len() >= 6 {
        b[4..6].copy_from_slice(b"MS");
    }
    if shape >= 3 && b.len() >= 8 {
        b[6] = 1;
        b[7] = (rng.next() % 4) as u8;
    }
    b
}

/// Every case, for both phases where the input makes sense in both.
fn battery() -> Vec<Case> {
    use ErrorCode::*;
    use Expect::*;
    use Phase::*;
    let mut cases = Vec::new();
    let hb = heartbeat(3);
    let header_of = |len: u32, rest: &[u8]| {
        let mut b = len.to_be_bytes().to_vec();
        b.extend_from_slice(rest);
        b
    };

    for phase in [Fresh, LoggedIn] {
        let p = |name: &str| format!("{phase:?}: {name}");
        // Truncated frames.
        let mut c = case(
            p("truncated, then closed"),
            phase,
            hb[..hb.len() / 2].to_vec(),
            Closed,
        );
        c.then = Then::Close;
        cases.push(c);
        let mut c = case(
            p("length prefix only, then closed"),
            phase,
            hb[..4].to_vec(),
            Closed,
        );
        c.then = Then::Close;
        cases.push(c);
        let stall = Fatal(BadFrame, 0);
        cases.push(case(
            p("truncated, then stalled"),
            phase,
            hb[..hb.len() - 1].to_vec(),
            stall,
        ));
        cases.push(case(
            p("two bytes, then stalled"),
            phase,
            hb[..2].to_vec(),
            stall,
        ));
        cases.push(case(
            p("header only, then stalled"),
            phase,
            hb[..14].to_vec(),
            stall,
        ));

        // Length prefixes.
        let big = header_of(
            MAX_FRAME_LEN as u32 + 1,
            b"MS\x01\x00\x00\x03\x00\x00\x00\x09",
        );
        cases.push(case(
            p("length over max_frame_len"),
            phase,
            big,
            Fatal(FrameTooLarge, 0),
        ));
        let huge = vec![0xff; 4];
        cases.push(case(
            p("length u32::MAX, prefix only"),
            phase,
            huge,
            Fatal(FrameTooLarge, 0),
        ));
        let short = header_of(13, b"MS\x01\x00\x00\x02\x00\x00\x00");
        cases.push(case(p("length below 14"), phase, short, Fatal(BadFrame, 0)));
        let http = b"GET / HTTP/1.1\r\nHost: missive\r\n\r\n".to_vec();
        cases.push(case(
            p("an HTTP request"),
            phase,
            http,
            Fatal(FrameTooLarge, 0),
        ));
        // A TLS record header (0x16) to a server without a certificate: just a huge length.
        let mut hello = vec![
            0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03,
        ];
        hello.extend_from_slice(&[0u8; 32]);
        cases.push(case(
            p("a TLS ClientHello"),
            phase,
            hello,
            Fatal(FrameTooLarge, 0),
        ));

        // Header fields.
        let mut b = hb.clone();
        b[4] = b'X';
        cases.push(case(p("bad magic"), phase, b, Fatal(BadFrame, 0)));
        let mut b = hb.clone();
        b[6] = 2;
        cases.push(case(
            p("wrong version"),
            phase,
            b,
            Fatal(UnsupportedVersion, 0),
        ));
        let mut f = Frame::new(
            &Packet::Heartbeat(pb::Heartbeat {
                client_time_ms: 1,
                ..Default::default()
            }),
            4,
        );
        f.flags = Flags(0x04);
        cases.push(case(
            p("reserved flag bit"),
            phase,
            f.to_bytes().to_vec(),
            Fatal(BadFrame, 0),
        ));
        let mut b = hb.clone();
        let last = b.len() - 1;
        b[last] ^= 0x01;
        cases.push(case(p("bad CRC"), phase, b.clone(), Fatal(BadCrc, 0)));
        // What follows a fatal error is never read: the SEND behind the bad CRC is not stored.
        b.extend_from_slice(&bytes_of(&send_packet(4), 5));
        cases.push(case(p("bad CRC, then a SEND"), phase, b, Fatal(BadCrc, 0)));

        // Seeded garbage: the error is the first failing check of PROTOCOL.md section 7.
        for seed in 0..16u64 {
            let g = garbage(seed + if phase == Fresh { 0 } else { 1000 });
            let limit = match phase {
                Fresh => MAX_LOGIN_FRAME_LEN,
                LoggedIn => MAX_FRAME_LEN,
            };
            let code = framing_error_for(&g, limit).expect("garbage is never a valid frame");
            cases.push(case(
                p(&format!("garbage #{seed} ({} bytes)", g.len())),
                phase,
                g,
                Fatal(code, 0),
            ));
        }

        // Frames that are intact but wrong: refused by command, body or state.
        let unknown = frame_of(0x0777, 11, b"").to_bytes().to_vec();
        let bad_send = frame_of(Command::Send as u16, 12, &[0xff, 0xff, 0xff])
            .to_bytes()
            .to_vec();
        let mut not_zlib = frame_of(Command::Heartbeat as u16, 13, b"not zlib at all");
        not_zlib.flags = Flags(Flags::COMPRESSED);
        let not_zlib = not_zlib.to_bytes().to_vec();
        // 200 KB of content in a few hundred bytes: inflates past max_frame_len.
        let bomb = Frame::compressed_above(&send_packet(200_000), 14, 0);
        assert!(bomb.flags.compressed() && bomb.encoded_len() <= 4 + MAX_LOGIN_FRAME_LEN);
        let bomb = bomb.to_bytes().to_vec();
        let too_big = bytes_of(&send_packet(MAX_CONTENT_LEN + 1), 15);
        // The largest frame the server accepts: read whole, refused for its content.
        let at_limit = {
            let wire = |content: usize| Frame::new(&send_packet(content), 16).to_bytes();
            let mut content = MAX_FRAME_LEN - 100;
            content += MAX_FRAME_LEN + 4 - wire(content).len();
            let f = wire(content);
            assert_eq!(
                f.len(),
                MAX_FRAME_LEN + 4,
                "a frame whose length field is the limit"
            );
            f.to_vec()
        };
        match phase {
            Fresh => {
                for (name, bytes, rid) in [
                    ("unknown command", unknown, 11),
                    ("undecodable SEND body", bad_send, 12),
                    ("compressed body that is not zlib", not_zlib, 13),
                    ("zlib bomb", bomb, 14),
                ] {
                    cases.push(case(p(name), phase, bytes, Fatal(NotLoggedIn, rid)));
                }
                // Over the login cap: refused from the length prefix.
                for (name, bytes) in [
                    ("oversized content", too_big),
                    ("frame at max_frame_len", at_limit),
                ] {
                    cases.push(case(p(name), phase, bytes, Fatal(FrameTooLarge, 0)));
                }
            }
            LoggedIn => {
                cases.push(case(
                    p("unknown command"),
                    phase,
                    unknown,
                    Refused(UnknownCommand, 11),
                ));
                cases.push(case(
                    p("undecodable SEND body"),
                    phase,
                    bad_send,
                    Refused(BadBody, 12),
                ));
                cases.push(case(
                    p("compressed body that is not zlib"),
                    phase,
                    not_zlib,
                    Refused(BadBody, 13),
                ));
                cases.push(case(p("zlib bomb"), phase, bomb, Refused(BadBody, 14)));
                cases.push(case(
                    p("oversized content"),
                    phase,
                    too_big,
                    Refused(ContentTooLarge, 15),
                ));
                cases.push(case(
                    p("frame at max_frame_len"),
                    phase,
                    at_limit,
                    Refused(ContentTooLarge, 16),
                ));
            }
        }

        // Commands only the server sends, with a valid body and with garbage: the command is
        // refused before the body is looked at.
        for (i, c) in [
            Command::LoginAck,
            Command::SendAck,
            Command::SyncAck,
            Command::Push,
            Command::GroupNotify,
            Command::Kick,
            Command::Error,
        ]
        .into_iter()
        .enumerate()
        {
            for (j, body) in [&b""[..], &[0xff, 0xff][..]].into_iter().enumerate() {
                let rid = 100 + 2 * i as u32 + j as u32;
                let bytes = frame_of(c as u16, rid, body).to_bytes().to_vec();
                let name = p(&format!("{} from a client, body {body:02x?}", c.name()));
                let expect = match phase {
                    Fresh => Fatal(NotLoggedIn, rid),
                    LoggedIn => Refused(UnknownCommand, rid),
                };
                cases.push(case(name, phase, bytes, expect));
            }
        }
    }

    // Only before LOGIN.
    cases.push(case(
        "Fresh: silence",
        Fresh,
        Vec::new(),
        Fatal(LoginTimeout, 0),
    ));
    for (name, packet) in [
        (
            "HEARTBEAT",
            Packet::Heartbeat(pb::Heartbeat {
                client_time_ms: 1,
                ..Default::default()
            }),
        ),
        ("SEND", send_packet(3)),
        (
            "SYNC",
            Packet::Sync(pb::Sync {
                since_version: 0,
                limit: 0,
            }),
        ),
        ("PUSH_ACK", Packet::PushAck(pb::PushAck { version: 1 })),
        ("UNREAD", Packet::Unread(pb::Unread::default())),
        (
            "GROUP_CREATE",
            Packet::GroupCreate(pb::GroupCreate::default()),
        ),
    ] {
        let name = format!("Fresh: {name} before LOGIN");
        cases.push(case(
            name,
            Fresh,
            bytes_of(&packet, 21),
            Fatal(NotLoggedIn, 21),
        ));
    }
    // A LOGIN whose body does not decode is BAD_BODY, not fatal: a proper LOGIN may follow.
    let bad_login = frame_of(Command::Login as u16, 22, &[0x0a, 0x02, 0xff, 0xfe]); // token: not UTF-8
    cases.push(case(
        "Fresh: LOGIN with a token that is not UTF-8",
        Fresh,
        bad_login.to_bytes().to_vec(),
        RefusedThenLogin(BadBody, 22),
    ));
    let garbage_login = frame_of(Command::Login as u16, 23, &[0xff; 8]);
    cases.push(case(
        "Fresh: LOGIN with an undecodable body",
        Fresh,
        garbage_login.to_bytes().to_vec(),
        RefusedThenLogin(BadBody, 23),
    ));

    // Only after LOGIN.
    cases.push(case(
        "LoggedIn: second LOGIN",
        LoggedIn,
        bytes_of(&login_packet("intruder", "d"), 31),
        Refused(AlreadyLoggedIn, 31),
    ));
    let mut bad_token = login_packet("intruder", "d");
    if let Packet::Login(l) = &mut bad_token {
        l.token = "garbage".into();
    }
    cases.push(case(
        "LoggedIn: second LOGIN with a bad token",
        LoggedIn,
        bytes_of(&bad_token, 32),
        Refused(AlreadyLoggedIn, 32),
    ));
    let mut acks = Vec::new();
    for (i, v) in [1u64, 999, u64::MAX, 0].into_iter().enumerate() {
        acks.extend(bytes_of(
            &Packet::PushAck(pb::PushAck { version: v }),
            40 + i as u32,
        ));
    }
    cases.push(case(
        "LoggedIn: PUSH_ACK for versions never pushed",
        LoggedIn,
        acks,
        NoReply,
    ));
    cases
}

/// The user a case's connection logs in as (each its own, so no device limit is shared).
fn bad_user(i: usize) -> String {
    format!("bad-{i}")
}

/// Runs one case on its own connection; panics with the case's name on any deviation.
async fn run_case(addr: String, i: usize, c: Case) {
    let what = &c.name;
    let mut conn = Connection::connect(&addr).await.expect("connects");
    let user = bad_user(i);
    if c.phase == Phase::LoggedIn {
        conn.login(&token(&user, "d"), "d", 0)
            .await
            .unwrap_or_else(|e| panic!("{what}: login failed: {e}"));
    }
    if !c.bytes.is_empty() {
        conn.write_raw(&c.bytes).await.expect("bytes written");
    }
    if let Then::Close = c.then {
        conn.shutdown().await.expect("write half closed");
    }
    let check = async {
        match c.expect {
            Expect::Fatal(code, rid) => expect_fatal(&mut conn, rid, code).await,
            Expect::Refused(code, rid) | Expect::RefusedThenLogin(code, rid) => {
                let (got_rid, e) = expect_error(&mut conn).await;
                assert_eq!(ErrorCode::from_u32(e.code), Some(code), "{e:?}");
                assert!(!e.fatal, "{} is not fatal", code.name());
                assert_eq!(got_rid, rid, "request id of the ERROR");
                if let Expect::RefusedThenLogin(..) = c.expect {
                    let ack = conn
                        .login(&token(&user, "d"), "d", 0)
                        .await
                        .unwrap_or_else(|e| panic!("LOGIN after the refusal: {e}"));
                    assert_eq!(ack.user_id, user);
                }
                heartbeat_ok(&mut conn, 99).await;
            }
            Expect::Closed => expect_closed(&mut conn, e2e::WAIT).await,
            Expect::NoReply => {
                expect_silence(&mut conn, Duration::from_millis(400)).await;
                heartbeat_ok(&mut conn, 98).await;
            }
        }
    };
    // Every expectation is bounded; this catches a case that would hang in between.
    if tokio::time::timeout(Duration::from_secs(15), check)
        .await
        .is_err()
    {
        panic!("{what}: no outcome within 15 s");
    }
}

/// One honest client: sends its messages to its peer, then collects every inbox entry.
struct Honest {
    user: String,
    peer: String,
    sent: Vec<String>,
    entries: Vec<pb::InboxEntry>,
    events: UnboundedReceiver<ClientEvent>,
    client: Client,
}

async fn chat(client: Client, mut events: UnboundedReceiver<ClientEvent>, peer: String) -> Honest {
    let user = client.user_id().to_owned();
    let mut sent = Vec::new();
    for i in 0..HONEST_MESSAGES {
        let text = format!("{user} #{i}");
        client
            .send(direct(&peer), 1, text.clone(), None)
            .await
            .unwrap_or_else(|e| panic!("{user}: send #{i} failed: {e}"));
        sent.push(text);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut entries = Vec::new();
    while entries.len() < 2 * HONEST_MESSAGES {
        entries.push(next_entry(&mut events).await);
    }
    Honest {
        user,
        peer,
        sent,
        entries,
        events,
        client,
    }
}

/// The message of a failed task's panic.
fn panic_text(e: tokio::task::JoinError) -> String {
    let Ok(p) = e.try_into_panic() else {
        return "cancelled".into();
    };
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
        .replace('\n', " ")
}

fn text(e: &pb::InboxEntry) -> String {
    String::from_utf8(message(e).content.clone()).expect("UTF-8 content")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_connections_get_their_documented_error_while_honest_clients_chat() {
    let server = TestServer::start_with(|c| {
        c.max_frame_len = MAX_FRAME_LEN;
        c.max_content_len = MAX_CONTENT_LEN;
        c.frame_timeout_ms = FRAME_TIMEOUT_MS;
        c.login_timeout_ms = LOGIN_TIMEOUT_MS;
        // Every bad connection comes from 127.0.0.1, as the honest ones: the per-address budget
        // of failed logins (tested in tests/abuse/login.rs) must not refuse the ones that log in.
        c.login_failures_burst = 100_000;
    })
    .await;

    // The honest pairs start chatting.
    let mut honest = tokio::task::JoinSet::new();
    for i in 0..PAIRS {
        let (a, b) = (format!("honest-a{i}"), format!("honest-b{i}"));
        let (ca, ea) = server.client(&a, "phone").await;
        let (cb, eb) = server.client(&b, "phone").await;
        honest.spawn(chat(ca, ea, b.clone()));
        honest.spawn(chat(cb, eb, a));
    }

    // Meanwhile, every bad connection at once.
    let cases = battery();
    let count = cases.len();
    let mut bad = tokio::task::JoinSet::new();
    for (i, c) in cases.iter().cloned().enumerate() {
        let name = c.name.clone();
        let run = tokio::spawn(run_case(server.addr.clone(), i, c));
        bad.spawn(async move { run.await.map_err(|e| format!("{name}: {}", panic_text(e))) });
    }
    let mut failures = Vec::new();
    while let Some(r) = bad.join_next().await {
        if let Err(msg) = r.expect("battery task") {
            failures.push(msg);
        }
    }
    failures.sort();
    assert!(
        failures.is_empty(),
        "{} of {count} bad connections deviated:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Every honest client holds its conversation exactly once, in order.
    let mut done = Vec::new();
    while let Some(r) = honest.join_next().await {
        done.push(r.expect("honest client"));
    }
    let sent_by: std::collections::HashMap<String, Vec<String>> = done
        .iter()
        .map(|h| (h.user.clone(), h.sent.clone()))
        .collect();
    for h in &mut done {
        let versions: Vec<u64> = h.entries.iter().map(|e| e.version).collect();
        let expected: Vec<u64> = (1..=2 * HONEST_MESSAGES as u64).collect();
        assert_eq!(versions, expected, "{}: versions 1..=n, each once", h.user);
        let peer = h.peer.clone();
        let mine: Vec<String> = h
            .entries
            .iter()
            .filter(|e| message(e).from_user == h.user)
            .map(text)
            .collect();
        let theirs: Vec<String> = h
            .entries
            .iter()
            .filter(|e| message(e).from_user == peer)
            .map(text)
            .collect();
        assert_eq!(mine, h.sent, "{}: own messages, once, in order", h.user);
        assert_eq!(
            &theirs, &sent_by[&peer],
            "{}: {peer}'s messages, once, in order",
            h.user
        );
        e2e::expect_no_entry(&mut h.events, Duration::from_millis(200)).await;
        // What a fresh device of the same user sees: the same messages, and the peer's
        // messages after the user's own last one unread (nobody marked anything read; replying
        // reads the conversation).
        let view = account(&server, &h.user).await;
        let ids = |es: &[pb::InboxEntry]| es.iter().map(|e| message(e).msg_id).collect::<Vec<_>>();
        assert_eq!(
            ids(&view.entries),
            ids(&h.entries),
            "{}: synced = delivered",
            h.user
        );
        let last_own = h
            .entries
            .iter()
            .filter(|e| message(e).from_user == h.user)
            .map(|e| message(e).seq)
            .max()
            .unwrap_or(0);
        let after_reply = h
            .entries
            .iter()
            .filter(|e| message(e).from_user == peer && message(e).seq > last_own)
            .count() as u64;
        assert_eq!(view.unread.total, after_reply, "{}: unread", h.user);
    }

    // The bad users stored nothing, and every bad session is gone.
    let store = server.handle().store();
    for i in 0..count {
        let u = bad_user(i);
        assert_eq!(
            store.core().current_version(&u).unwrap(),
            0,
            "{u} stored nothing"
        );
    }
    assert_eq!(store.core().current_version("intruder").unwrap(), 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while server.handle().online_sessions() > 2 * PAIRS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} sessions online, only the {} honest clients should be",
            server.handle().online_sessions(),
            2 * PAIRS
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut users: Vec<String> = done.iter().map(|h| h.user.clone()).collect();
    users.extend((0..count).map(bad_user));
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    check_store(&server, &users);
    for h in &done {
        h.client.close().await;
    }
    server.stop().await;
}
