//! The login path under attack (issue #18, items 10, 12, 11 and 4): large frames announced and
//! never sent, zlib bombs before login, floods of garbage LOGINs, and tokens that outlive a kick.
//!
//! Every attacker connects from a loopback address of its own choosing (127.0.0.0/8 is all
//! loopback on Linux), so that per-address limits can be told apart from the honest pair's
//! address (127.0.0.1).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use missive_client::{ClientError, Connection};
use missive_protocol::{pb, Command, ErrorCode, Frame, FrameCodec, Packet, ProtocolError};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio_util::codec::Decoder;

use crate::common::{TestServer, SECRET};
use crate::heap::{self, Mem};
use crate::honest::{exclusive, ms, HonestPair};

/// Largest frame before login (PROTOCOL.md sections 10.1 and 20).
const LOGIN_CAP: usize = missive_protocol::MAX_LOGIN_FRAME_LEN;
/// Connections per attack.
const N: usize = 500;
/// What one connection that announced a 1 MiB frame and sent 20 bytes may cost the server: a
/// read chunk (4 KiB) and what serving a woken session takes, not the frame.
const HELD_PER_CONN: i64 = 16 * 1024;
/// Resident memory per connection allowed (noise of the honest pair and RocksDB included).
const RSS_PER_CONN: i64 = 64 * 1024;

/// The `i`-th attacker address: 127.2.x.y, never 127.0.0.1.
fn source(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        127,
        2 + (i / 62_500) as u8,
        (i / 250 % 250) as u8,
        (i % 250 + 1) as u8,
    )
}

/// A TCP connection to `addr` from `from`.
async fn connect_from(addr: &str, from: Ipv4Addr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(from.into(), 0))
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    let to: SocketAddr = addr.parse().unwrap();
    socket
        .connect(to)
        .await
        .unwrap_or_else(|e| panic!("connect from {from}: {e}"))
}

/// The first `sent` bytes of a frame of command `command` (request id 1) whose length field
/// says `len`: the header, then zeros.
fn announce(len: u32, command: Command, sent: usize) -> Vec<u8> {
    let mut b = len.to_be_bytes().to_vec();
    b.extend_from_slice(b"MS\x01\x00");
    b.extend_from_slice(&(command as u16).to_be_bytes());
    b.extend_from_slice(&1u32.to_be_bytes());
    b.resize(sent, 0);
    b
}

/// A LOGIN frame whose length field is exactly `len_field` (padded in `client_version`).
fn login_of_len(token: &str, device: &str, rid: u32, len_field: usize) -> Frame {
    let mut pad = 0;
    loop {
        let login = pb::Login {
            token: token.into(),
            device_id: device.into(),
            client_version: "x".repeat(pad),
            ..Default::default()
        };
        let frame = Frame::new(&Packet::Login(login), rid);
        let n = frame.encoded_len() - 4;
        match n.cmp(&len_field) {
            std::cmp::Ordering::Equal => return frame,
            std::cmp::Ordering::Less => pad += len_field - n,
            std::cmp::Ordering::Greater => pad -= 1,
        }
    }
}

fn token(user: &str, device: &str) -> String {
    let expires = (missive::now_ms() / 1000) as u64 + 3600;
    missive_protocol::token::mint(SECRET.as_bytes(), user, device, expires)
}

/// The next frame, which must be an ERROR: its request id and body.
async fn expect_error(conn: &mut Connection, what: &str) -> (u32, pb::Error) {
    match conn.recv_packet_timeout(Duration::from_secs(5)).await {
        Ok(Some((f, Packet::Error(e)))) => (f.request_id, e),
        other => panic!("{what}: expected an ERROR, got {other:?}"),
    }
}

/// The server closes the connection (end of stream, or a reset: closing with input unread, as
/// after a burst, resets it) without another frame.
async fn expect_closed(conn: &mut Connection, what: &str) {
    match conn.recv_frame_timeout(Duration::from_secs(5)).await {
        Ok(None) | Err(ClientError::Io(_) | ClientError::Protocol(ProtocolError::Io(_))) => {}
        other => panic!("{what}: expected the server to close, got {other:?}"),
    }
}

fn code(e: &pb::Error) -> Option<ErrorCode> {
    ErrorCode::from_u32(e.code)
}

/// Waits for every task; panics with the first failure.
async fn join_all(mut tasks: JoinSet<()>) {
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// Prints what the N connections of `what` made the server hold, and asserts its heap grew by
/// at most [`HELD_PER_CONN`] per connection (`each`: what one is called).
fn held_within(held: Mem, what: &str, each: &str) {
    println!("{N} {what}: {held} in all, {} per {each}", held.per(N));
    assert!(
        held.heap <= HELD_PER_CONN * N as i64,
        "the server holds {} per {each}",
        held.per(N)
    );
}

/// A 1 MiB frame announced before login (and one after, on logged-in connections), 20 bytes of
/// it sent, by N connections: the server holds a read chunk for each at most, never the frame;
/// before login the length alone is refused (FRAME_TOO_LARGE). A LOGIN of exactly the login cap
/// still logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_large_frames_cost_a_read_chunk_not_the_frame() {
    let _g = exclusive();
    let server = TestServer::start().await;
    let addr = server.addr.clone();
    let pair = HonestPair::start(&server).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = Mem::now();

    // Before login: each from an address of its own.
    let mut fresh = Vec::new();
    for i in 0..N {
        let mut s = connect_from(&addr, source(i)).await;
        s.write_all(&announce(1 << 20, Command::Login, 20))
            .await
            .unwrap();
        fresh.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_login = Mem::now().since(base);
    held_within(
        before_login,
        "before login, connections announcing 1 MiB",
        "connection",
    );
    let mut tasks = JoinSet::new();
    for (i, s) in fresh.into_iter().enumerate() {
        tasks.spawn(async move {
            let what = format!("announcer {i}");
            let mut c = Connection::from_stream(s).unwrap();
            let (rid, e) = expect_error(&mut c, &what).await;
            assert_eq!(code(&e), Some(ErrorCode::FrameTooLarge), "{what}: {e:?}");
            assert!(e.fatal && rid == 0, "{what}: {e:?} on request {rid}");
            expect_closed(&mut c, &what).await;
        });
    }
    join_all(tasks).await;

    // The cap itself: one byte over is refused from the length, a LOGIN of exactly the cap
    // logs in.
    let mut over = Connection::from_stream(connect_from(&addr, source(N)).await).unwrap();
    let big = login_of_len(&token("cap", "d"), "d", 3, LOGIN_CAP + 1);
    over.send_frame(&big).await.unwrap();
    let (rid, e) = expect_error(&mut over, "LOGIN over the cap").await;
    assert_eq!(code(&e), Some(ErrorCode::FrameTooLarge), "{e:?}");
    assert!(e.fatal && rid == 0, "{e:?} on request {rid}");
    let mut at_cap = Connection::from_stream(connect_from(&addr, source(N)).await).unwrap();
    at_cap
        .send_frame(&login_of_len(&token("cap", "d"), "d", 4, LOGIN_CAP))
        .await
        .unwrap();
    match at_cap.recv_packet_timeout(Duration::from_secs(5)).await {
        Ok(Some((f, Packet::LoginAck(_)))) => assert_eq!(f.request_id, 4),
        other => panic!("a LOGIN of exactly the cap: {other:?}"),
    }
    drop((over, at_cap));

    // Logged in: the same announcement, of a SEND, on N sessions.
    let mut logged = Vec::new();
    for i in 0..N {
        let s = connect_from(&addr, source(N + 1 + i)).await;
        let mut c = Connection::from_stream(s).unwrap();
        let user = format!("big-{i}");
        c.login(&token(&user, "d"), "d", 0)
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        logged.push(c);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = Mem::now();
    for c in &mut logged {
        c.write_raw(&announce(1 << 20, Command::Send, 20))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_login = Mem::now().since(idle);
    held_within(
        after_login,
        "logged in, sessions announcing 1 MiB",
        "session",
    );
    assert!(
        after_login.rss <= RSS_PER_CONN * N as i64,
        "resident memory grew by {} per session",
        after_login.per(N)
    );
    drop(logged);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after_close = Mem::now().since(base);
    println!("after closing them all: {after_close} more than before the attack");
    assert!(
        after_close.heap <= 2048 * 2 * N as i64,
        "still held after closing: {after_close}"
    );
    assert!(
        after_close.rss <= RSS_PER_CONN * N as i64,
        "resident after closing: {after_close}"
    );

    let report = pair.finish().await;
    println!(
        "FIGURE large-frame announcements ({N} TCP connections, 1 MiB announced, 20 B sent): \
         before login {} B/conn heap, {} B/conn RSS (refused FRAME_TOO_LARGE); logged in {} B/conn \
         heap, {} B/conn RSS; after close {} B heap, {} B RSS above the start; {}",
        before_login.per(N).heap,
        before_login.per(N).rss,
        after_login.per(N).heap,
        after_login.per(N).rss,
        after_close.heap,
        after_close.rss,
        report.summary()
    );
    report.assert_healthy(Duration::from_millis(1000));
    server.stop().await;
}

const WS_UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: missive\r\nUpgrade: websocket\r\n\
                          Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                          Sec-WebSocket-Version: 13\r\n\r\n";

/// A WebSocket (RFC 6455) opened by hand on a raw socket from `from`.
async fn ws_open(addr: &str, from: Ipv4Addr) -> TcpStream {
    let mut s = connect_from(addr, from).await;
    s.write_all(WS_UPGRADE.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.expect("the upgrade answer");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// A client's (masked) WebSocket frame: a binary message whose header says `len` payload bytes,
/// followed by `payload` (which may be less).
fn ws_frame(len: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x82];
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    let mask = [0x12, 0x34, 0x56, 0x78];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// The frame in the server's next WebSocket message; `None` at a close message or the end.
async fn ws_read_frame(s: &mut TcpStream) -> Option<Frame> {
    let read = async {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).await.ok()?;
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                s.read_exact(&mut l).await.ok()?;
                u16::from_be_bytes(l) as usize
            }
            127 => {
                let mut l = [0u8; 8];
                s.read_exact(&mut l).await.ok()?;
                u64::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.ok()?;
        if h[0] & 0x0f != 0x2 {
            return None;
        }
        let mut buf = BytesMut::from(&payload[..]);
        FrameCodec::default().decode(&mut buf).ok()?
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("a WebSocket message within 5 s")
}

/// The same over WebSocket: N connections, after the upgrade, announce a 1 MiB binary message
/// and send 20 bytes of it; the server holds little for them and refuses the length
/// (FRAME_TOO_LARGE) before login. A LOGIN of the login cap in one message still logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_announced_large_before_login_cost_little() {
    let _g = exclusive();
    let server = TestServer::start().await;
    let addr = server.addr.clone();
    let pair = HonestPair::start(&server).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = Mem::now();
    let mut socks = Vec::new();
    for i in 0..N {
        let mut s = ws_open(&addr, source(i)).await;
        s.write_all(&ws_frame(1 << 20, &announce(1 << 20, Command::Login, 20)))
            .await
            .unwrap();
        socks.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = Mem::now().since(base);
    held_within(
        held,
        "WebSockets announcing a 1 MiB message before login",
        "WebSocket",
    );
    let mut tasks = JoinSet::new();
    for (i, mut s) in socks.into_iter().enumerate() {
        tasks.spawn(async move {
            let f = ws_read_frame(&mut s)
                .await
                .unwrap_or_else(|| panic!("WebSocket {i}: no ERROR"));
            match f.packet(1 << 20) {
                Ok(Packet::Error(e)) => {
                    assert_eq!(code(&e), Some(ErrorCode::FrameTooLarge), "{i}: {e:?}");
                    assert!(e.fatal && f.request_id == 0, "{i}: {e:?}");
                }
                other => panic!("WebSocket {i}: {other:?}"),
            }
            assert!(ws_read_frame(&mut s).await.is_none(), "{i}: then closed");
        });
    }
    join_all(tasks).await;

    // In one message: a LOGIN of exactly the cap logs in; one byte more is refused.
    let mut s = ws_open(&addr, source(N)).await;
    let login = login_of_len(&token("ws-cap", "d"), "d", 5, LOGIN_CAP).to_bytes();
    s.write_all(&ws_frame(login.len() as u64, &login))
        .await
        .unwrap();
    let f = ws_read_frame(&mut s).await.expect("an answer");
    assert!(
        matches!(f.packet(1 << 20), Ok(Packet::LoginAck(_))),
        "{:?}",
        f.packet(1 << 20)
    );
    let mut s = ws_open(&addr, source(N + 1)).await;
    let login = login_of_len(&token("ws-cap", "e"), "e", 6, LOGIN_CAP + 1).to_bytes();
    s.write_all(&ws_frame(login.len() as u64, &login))
        .await
        .unwrap();
    let f = ws_read_frame(&mut s).await.expect("an answer");
    match f.packet(1 << 20) {
        Ok(Packet::Error(e)) => assert_eq!(code(&e), Some(ErrorCode::FrameTooLarge), "{e:?}"),
        other => panic!("{other:?}"),
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = Mem::now().since(base);
    let report = pair.finish().await;
    println!(
        "FIGURE large WebSocket messages ({N} connections, 1 MiB announced before login, 20 B \
         sent): {} B/conn heap, {} B/conn RSS while open (refused FRAME_TOO_LARGE); after close \
         {} B heap, {} B RSS above the start; {}",
        held.per(N).heap,
        held.per(N).rss,
        after.heap,
        after.rss,
        report.summary()
    );
    report.assert_healthy(Duration::from_millis(1000));
    server.stop().await;
}

/// The bomb test's `max_frame_len`, also the most a body may inflate to: below what a bomb
/// inflates to, so that a server that inflated one would find it too large (BAD_BODY).
const BOMB_FRAME_LEN: usize = 256 * 1024;

/// A LOGIN whose body is a zlib stream of 512 KiB (about 2.4 KB compressed): a bomb that fits
/// under the login cap and inflates past `BOMB_FRAME_LEN`.
fn bomb(rid: u32) -> Vec<u8> {
    let login = Packet::Login(pb::Login {
        token: "0".repeat(2 * BOMB_FRAME_LEN),
        device_id: "d".into(),
        ..Default::default()
    });
    let frame = Frame::compressed_above(&login, rid, 0);
    assert!(frame.flags.compressed());
    let wire = frame.to_bytes().to_vec();
    assert!(wire.len() <= LOGIN_CAP + 4, "bomb of {} bytes", wire.len());
    wire
}

/// Zlib bombs before login, for two seconds, in waves of 50 connections at once (each from an
/// address of its own): each connection sends a burst of compressed LOGINs; the first is refused
/// (BAD_BODY, fatal, on its request id) and nothing after it is read. A LOGIN body that does not
/// decode is forgiven once (not fatal), the second is fatal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_frames_before_login_are_refused_and_a_second_bad_login_is_fatal() {
    let _g = exclusive();
    const CONNS: usize = 50;
    const BOMBS: u32 = 20;
    const BOMBING: Duration = Duration::from_secs(2);
    let server = TestServer::start_with(|c| c.max_frame_len = BOMB_FRAME_LEN).await;
    let addr = server.addr.clone();
    let pair = HonestPair::start(&server).await;
    let mut burst = Vec::new();
    for rid in 1..=BOMBS {
        burst.extend_from_slice(&bomb(rid));
    }
    let cpu = heap::cpu();
    let started = Instant::now();
    let mut bombers = 0;
    while started.elapsed() < BOMBING {
        let mut tasks = JoinSet::new();
        for i in bombers..bombers + CONNS {
            let addr = addr.clone();
            let burst = burst.clone();
            tasks.spawn(async move {
                let what = format!("bomber {i}");
                let mut c = Connection::from_stream(connect_from(&addr, source(i)).await).unwrap();
                // The server may close before taking the whole burst.
                let _ = c.write_raw(&burst).await;
                let (rid, e) = expect_error(&mut c, &what).await;
                assert_eq!(code(&e), Some(ErrorCode::BadBody), "{what}: {e:?}");
                assert!(
                    e.fatal,
                    "{what}: a compressed frame before login is fatal: {e:?}"
                );
                assert_eq!(rid, 1, "{what}: on the bomb's request id");
                expect_closed(&mut c, &what).await;
            });
        }
        join_all(tasks).await;
        bombers += CONNS;
    }
    let took = started.elapsed();
    let used = heap::cpu().saturating_sub(cpu);

    // Garbage LOGIN bodies: the first is forgiven, the second is fatal.
    let mut c = Connection::from_stream(connect_from(&addr, source(bombers)).await).unwrap();
    let garbage = |rid| Frame {
        flags: Default::default(),
        command: Command::Login as u16,
        request_id: rid,
        body: vec![0xff; 8].into(),
    };
    c.send_frame(&garbage(8)).await.unwrap();
    let (rid, e) = expect_error(&mut c, "first bad LOGIN").await;
    assert_eq!(
        (code(&e), rid, e.fatal),
        (Some(ErrorCode::BadBody), 8, false)
    );
    c.send_frame(&garbage(9)).await.unwrap();
    let (rid, e) = expect_error(&mut c, "second bad LOGIN").await;
    assert_eq!(
        (code(&e), rid, e.fatal),
        (Some(ErrorCode::BadBody), 9, true)
    );
    expect_closed(&mut c, "after the second bad LOGIN").await;
    // One bad body, then a good LOGIN: still fine.
    let mut c = Connection::from_stream(connect_from(&addr, source(bombers + 1)).await).unwrap();
    c.send_frame(&garbage(10)).await.unwrap();
    let (_, e) = expect_error(&mut c, "one bad LOGIN").await;
    assert!(!e.fatal);
    c.login(&token("forgiven", "d"), "d", 0)
        .await
        .expect("a good LOGIN after one bad body");

    let report = pair.finish().await;
    println!(
        "FIGURE zlib bombs before login ({bombers} connections, {CONNS} at a time, each sending \
         {BOMBS} compressed LOGINs of 512 KiB inflated, {} B each on the wire): each refused at \
         its first bomb, {:.0} connections/s; process CPU {:.0} ms in {:.0} ms ({:.0} us per \
         connection, client side included); {}",
        burst.len() / BOMBS as usize,
        bombers as f64 / took.as_secs_f64(),
        ms(used),
        ms(took),
        used.as_secs_f64() * 1e6 / bombers as f64,
        report.summary()
    );
    report.assert_healthy(Duration::from_millis(1000));
    server.stop().await;
}

/// How long the garbage flood runs.
const FLOOD: Duration = Duration::from_secs(3);
/// The flooding address, and the one honest users log in from.
const FLOODER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const HONEST: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// The flood test's failed-login budget per address.
const FAILURES_PER_SEC: u32 = 10;
const FAILURES_BURST: u32 = 50;

/// What one flooding connection got.
#[derive(Debug, Default)]
struct Flooded {
    /// AUTH_FAILED for its LOGIN.
    auth_failed: usize,
    /// SERVER_BUSY on request id 0: refused at accept.
    busy_at_accept: usize,
    /// SERVER_BUSY for its LOGIN (the server-wide login rate).
    busy_at_login: usize,
    /// Closed without a frame.
    closed: usize,
    other: Vec<String>,
}

/// A flood of garbage LOGINs from one address, as fast as two loops can go, while honest users
/// log in from another: every honest LOGIN succeeds (garbage does not use up the server-wide
/// login rate), and the flooding address is refused at accept once past its failure budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_logins_do_not_lock_out_real_users() {
    let _g = exclusive();
    // A low server-wide rate, so that garbage charged to it would run it dry.
    let server = TestServer::start_with(|c| {
        c.logins_per_sec = 100;
        c.login_failures_per_sec = FAILURES_PER_SEC;
        c.login_failures_burst = FAILURES_BURST;
    })
    .await;
    let addr = server.addr.clone();
    let pair = HonestPair::start(&server).await;
    let started = Instant::now();
    let mut flood = JoinSet::new();
    for w in 0..2 {
        let addr = addr.clone();
        flood.spawn(async move {
            let mut got = Flooded::default();
            let mut n = 0u32;
            while started.elapsed() < FLOOD {
                n += 1;
                let s = connect_from(&addr, FLOODER).await;
                let mut c = Connection::from_stream(s).unwrap();
                let garbage = pb::Login {
                    token: format!("garbage-{w}-{n}"),
                    device_id: "d".into(),
                    ..Default::default()
                };
                if c.send_frame(&Frame::new(&Packet::Login(garbage), 7))
                    .await
                    .is_err()
                {
                    got.closed += 1;
                    continue;
                }
                match c.recv_packet_timeout(Duration::from_secs(5)).await {
                    Ok(Some((f, Packet::Error(e)))) => match (code(&e), f.request_id) {
                        (Some(ErrorCode::AuthFailed), 7) => got.auth_failed += 1,
                        (Some(ErrorCode::ServerBusy), 0) => {
                            assert!(e.fatal && e.retry_after_ms > 0, "{e:?}");
                            got.busy_at_accept += 1
                        }
                        (Some(ErrorCode::ServerBusy), 7) => got.busy_at_login += 1,
                        _ => got.other.push(format!("{e:?} on {}", f.request_id)),
                    },
                    Ok(None) | Err(ClientError::Io(_)) => got.closed += 1,
                    other => got.other.push(format!("{other:?}")),
                }
            }
            got
        });
    }
    // Honest users, one LOGIN after another, from their own address.
    let mut honest = Vec::new();
    let mut refused = Vec::new();
    let mut i = 0;
    while started.elapsed() < FLOOD {
        i += 1;
        let user = format!("real-{i}");
        let t = Instant::now();
        let mut c = Connection::from_stream(connect_from(&addr, HONEST).await).unwrap();
        match c
            .login_with(pb::Login {
                token: token(&user, "d"),
                device_id: "d".into(),
                ..Default::default()
            })
            .await
        {
            Ok(_) => honest.push(t.elapsed()),
            Err(e) => refused.push(format!("{user}: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut total = Flooded::default();
    while let Some(r) = flood.join_next().await {
        let f = r.expect("flood task");
        total.auth_failed += f.auth_failed;
        total.busy_at_accept += f.busy_at_accept;
        total.busy_at_login += f.busy_at_login;
        total.closed += f.closed;
        total.other.extend(f.other);
    }
    let secs = started.elapsed().as_secs_f64();
    honest.sort();
    let report = pair.finish().await;
    let attempts = total.auth_failed + total.busy_at_accept + total.busy_at_login + total.closed;
    println!(
        "FIGURE garbage LOGIN flood from one address: {attempts} connections in {secs:.1} s \
         ({:.0}/s): {} AUTH_FAILED, {} SERVER_BUSY at accept, {} SERVER_BUSY at LOGIN, {} closed \
         without a frame; {} honest logins from another address, {} refused, login p50 {:.1} ms, \
         max {:.1} ms; {}",
        attempts as f64 / secs,
        total.auth_failed,
        total.busy_at_accept,
        total.busy_at_login,
        total.closed,
        honest.len(),
        refused.len(),
        ms(honest.get(honest.len() / 2).copied().unwrap_or_default()),
        ms(honest.last().copied().unwrap_or_default()),
        report.summary()
    );
    assert!(refused.is_empty(), "honest logins refused: {refused:?}");
    assert!(
        honest.len() >= 20,
        "too few honest logins: {}",
        honest.len()
    );
    assert!(total.other.is_empty(), "unexpected: {:?}", total.other);
    assert!(
        total.busy_at_accept > 0,
        "the flooding address was never refused at accept"
    );
    // Its failures stayed within its budget: the burst, then the rate (plus one for each of
    // the two loops: a connection accepted with the last failure left is charged later).
    let budget = FAILURES_BURST as f64 + FAILURES_PER_SEC as f64 * secs;
    assert!(
        total.auth_failed as f64 <= budget + 2.0,
        "{} garbage LOGINs answered, budget {budget:.0}",
        total.auth_failed
    );
    assert_eq!(total.busy_at_login, 0, "garbage took from the login rate");
    report.assert_healthy(Duration::from_millis(1000));
    server.stop().await;
}

/// The next KICK on `conn` (skipping nothing else: a revoked session gets only that).
async fn expect_kick(conn: &mut Connection, what: &str) -> pb::Kick {
    match conn.recv_packet_timeout(Duration::from_secs(5)).await {
        Ok(Some((_, Packet::Kick(k)))) => k,
        other => panic!("{what}: expected a KICK, got {other:?}"),
    }
}

/// A LOGIN with `token` on a fresh connection: its result.
async fn try_login(server: &TestServer, token: &str, device: &str) -> Result<(), ClientError> {
    let mut c = server.connect().await;
    c.login(token, device, 0).await.map(|_| ())
}

fn expect_revoked(r: Result<(), ClientError>, what: &str) {
    match r {
        Err(ClientError::Server {
            code,
            message,
            fatal,
            ..
        }) => {
            assert_eq!(code, ErrorCode::AuthFailed as u32, "{what}: {message}");
            assert!(fatal, "{what}");
            assert!(message.contains("revoked"), "{what}: {message}");
        }
        other => panic!("{what}: expected AUTH_FAILED (revoked), got {other:?}"),
    }
}

/// Revocation: a kick with `revoke` (and `/revoke`) voids every token of the user issued until
/// then, v1 tokens included (they carry no issue time); a token minted afterwards logs in; and
/// it holds across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_stay_out_and_fresh_ones_get_in_across_a_restart() {
    let _g = exclusive();
    let mut server = TestServer::start_api(|_| {}).await;
    let pair = HonestPair::start(&server).await;
    let api = server.api();
    let mint = |device: &'static str| {
        let api = api.clone();
        async move {
            let r = api
                .post("/v1/tokens", json!({"user": "victim", "device": device}))
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["token"].as_str().unwrap().to_owned()
        }
    };
    let stolen = mint("phone").await;
    let v1 = token("victim", "tablet");
    let mut phone = server.connect().await;
    phone.login(&stolen, "phone", 0).await.expect("API token");
    let mut tablet = server.connect().await;
    tablet.login(&v1, "tablet", 0).await.expect("v1 token");

    let kicked = api
        .post("/v1/users/victim/kick", json!({"revoke": true}))
        .await;
    assert_eq!(kicked.status, 200, "{}", kicked.text());
    let body = kicked.json();
    assert_eq!(body["kicked"], 2, "{body}");
    let first = body["revoked_through"].as_u64().expect("revoked_through");
    let now = (missive::now_ms() / 1000) as u64;
    assert!(first >= now - 5 && first <= now + 1, "{first} vs {now}");
    for (c, what) in [(&mut phone, "phone"), (&mut tablet, "tablet")] {
        let k = expect_kick(c, what).await;
        assert_eq!(k.reason, pb::KickReason::Admin as i32, "{what}: {k:?}");
    }
    expect_revoked(try_login(&server, &stolen, "phone").await, "the old token");
    expect_revoked(try_login(&server, &v1, "tablet").await, "a v1 token");
    // A revoked token cannot kick the user's new session either (it is refused before).
    let fresh = mint("phone").await;
    let mut renewed = server.connect().await;
    renewed
        .login(&fresh, "phone", 0)
        .await
        .expect("a fresh token");
    expect_revoked(try_login(&server, &stolen, "phone").await, "again");
    renewed
        .heartbeat()
        .await
        .expect("the new session is untouched");

    // `/revoke`: the same, answered with what it did; it voids the fresh token too, even in the
    // second it was minted.
    let r = api.post("/v1/users/victim/revoke", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["user"], "victim", "{body}");
    assert_eq!(body["kicked"], 1, "{body}");
    let second = body["revoked_through"].as_u64().unwrap();
    assert!(second > first, "{second} after {first}");
    expect_kick(&mut renewed, "renewed").await;
    expect_revoked(try_login(&server, &fresh, "phone").await, "the fresh token");
    let after = mint("phone").await;
    try_login(&server, &after, "phone")
        .await
        .expect("a token minted after /revoke");
    // Someone else is not affected.
    try_login(&server, &token("bystander", "d"), "d")
        .await
        .expect("another user");
    // The above takes milliseconds: the pair chats a while longer before it reports.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = pair.finish().await;

    drop(api);
    server.restart().await;
    expect_revoked(
        try_login(&server, &stolen, "phone").await,
        "after a restart",
    );
    expect_revoked(
        try_login(&server, &v1, "tablet").await,
        "v1 after a restart",
    );
    try_login(&server, &after, "phone")
        .await
        .expect("the token minted after /revoke, after a restart");
    println!(
        "FIGURE revocation: kick+revoke and /revoke kicked every session, revoked tokens refused \
         before and after a restart; {}",
        report.summary()
    );
    report.assert_healthy(Duration::from_millis(1000));
    server.stop().await;
}
