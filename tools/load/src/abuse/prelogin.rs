//! Attacks that need no account: half-sent frames before login (TCP and WebSocket), garbage
//! LOGINs, zlib bombs in LOGIN bodies, and slow requests to the Server API.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use missive_client::pb;
use missive_protocol::frame::HEADER_LEN;
use missive_protocol::{Command, Frame, Packet, DEFAULT_MAX_FRAME_LEN, MAGIC, PROTOCOL_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::figures::{self, bytes_text, mib, per_connection_bytes, short_ms};
use super::raw::{self, Raw};
use super::{server, Outcome, Rig};

/// Connections being opened (and written to) at once.
const RAMP_CONCURRENCY: usize = 64;

/// The first `send` bytes of a LOGIN frame whose length field announces the protocol's limit
/// (1 MiB): header, then body bytes (never completed).
pub fn announced_frame(send: usize) -> Vec<u8> {
    let total = 4 + DEFAULT_MAX_FRAME_LEN;
    let mut v = Vec::with_capacity(send.min(total));
    v.extend_from_slice(&(DEFAULT_MAX_FRAME_LEN as u32).to_be_bytes());
    v.extend_from_slice(&MAGIC);
    v.push(PROTOCOL_VERSION);
    v.push(0);
    v.extend_from_slice(&(Command::Login as u16).to_be_bytes());
    v.extend_from_slice(&1u32.to_be_bytes());
    v.resize(send.min(total), b'A');
    v
}

/// When each connection had sent its bytes, when each was closed by the server, and what it
/// said first.
#[derive(Default)]
struct Closes {
    up: Vec<Duration>,
    at: Vec<Duration>,
    said: BTreeMap<String, u64>,
    connect_failed: u64,
    first_error: Option<String>,
}

/// `prelogin-buffer` (all of a 1 MiB LOGIN frame but its last byte), `prelogin-buffer-ws` (the
/// same inside a WebSocket) and `prelogin-header` (only the header and one byte).
pub async fn buffer(rig: &mut Rig<'_>, name: &str) -> Result<Outcome> {
    let n = rig.args.prelogin_connections.max(1);
    let ws = name == "prelogin-buffer-ws";
    let send = if name == "prelogin-header" {
        HEADER_LEN + 1
    } else {
        4 + DEFAULT_MAX_FRAME_LEN - 1
    };
    let payload = Arc::new(announced_frame(send));
    let addr = rig.addr().to_string();
    rig.honest(None, false).await?;
    rig.attack_begins().await;
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let closes = Arc::new(Mutex::new(Closes::default()));
    let ramp = Arc::new(tokio::sync::Semaphore::new(RAMP_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (addr, payload, stop) = (addr.clone(), payload.clone(), stop.clone());
        let (written, closes, ramp) = (written.clone(), closes.clone(), ramp.clone());
        tasks.spawn(async move {
            let permit = ramp.acquire_owned().await;
            let conn = if ws {
                open_ws(&addr, &payload).await
            } else {
                open_tcp(&addr, &payload).await
            };
            drop(permit);
            let mut conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    let mut c = closes.lock().expect("closes");
                    c.connect_failed += 1;
                    c.first_error.get_or_insert(e);
                    return;
                }
            };
            written.fetch_add(1, Relaxed);
            closes.lock().expect("closes").up.push(t0.elapsed());
            // Never log in; watch for the server closing the connection (and what it says).
            let said = tokio::select! {
                s = conn.wait_close() => s,
                _ = until(&stop) => return,
            };
            let mut c = closes.lock().expect("closes");
            c.at.push(t0.elapsed());
            *c.said.entry(said).or_insert(0) += 1;
        });
    }
    // The ramp: every connection has written (or failed).
    let ramp_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let failed = closes.lock().expect("closes").connect_failed;
        if written.load(Relaxed) + failed >= n as u64 || Instant::now() > ramp_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ramp_secs = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(rig.args.prelogin_hold.max(0.0))).await;
    rig.attack_ends();
    let open_at_end = written.load(Relaxed) - closes.lock().expect("closes").at.len() as u64;
    stop.store(true, Relaxed);
    while tasks.join_next().await.is_some() {}
    // The server notices the closes as it gets to them: a moment, then a settled reading.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_close = server::settled_rss_kib(&rig.server, Duration::from_secs(6)).await;

    let c = closes.lock().expect("closes");
    let up = written.load(Relaxed);
    let before = rig.rss_before.unwrap_or(0);
    let peak = rig.peak_kib().unwrap_or(0);
    // Per connection: at the moment the most were open at once (with a slow ramp the first
    // ones reach the login timeout before the last are up, and the memory of those closed is
    // not given back at once: charging the peak to fewer connections would overstate it).
    let at: Vec<(Duration, u64)> = rig
        .samples
        .iter()
        .map(|(t, k)| (t.saturating_duration_since(t0), *k))
        .collect();
    let (open_at_most, rss_at_most) = figures::most_open(&at, &c.up, &c.at).unwrap_or((0, 0));
    let per = per_connection_bytes(before, rss_at_most, open_at_most).unwrap_or(0.0);
    let retained = per_connection_bytes(before, after_close.unwrap_or(before), up as usize);
    let mut first_close: Vec<Duration> = c.at.clone();
    first_close.sort_unstable();
    let transport = if ws { "WebSocket" } else { "TCP" };
    let mut o = Outcome::new(format!(
        "{up} {transport} connections up in {ramp_secs:.1} s, each sent {} of a LOGIN frame \
         announcing 1 MiB and never logged in: server RSS {}→{} MiB with {open_at_most} open = {} \
         per connection (peak {} MiB); {open_at_end} still open after the {:.0} s hold (closed by the server: {}, first at {}); \
         after close {} MiB ({} per connection kept)",
        bytes_text(send as f64),
        mib(before),
        mib(rss_at_most),
        bytes_text(per),
        mib(peak),
        rig.args.prelogin_hold,
        c.at.len(),
        first_close
            .first()
            .map_or("-".into(), |d| format!("{:.1} s", d.as_secs_f64())),
        after_close.map_or("-".into(), |k| mib(k).to_string()),
        retained.map_or("-".into(), bytes_text),
    ));
    o.set("transport", transport);
    o.set("connections_requested", n as u64);
    o.set("connections_up", up);
    o.set("connect_failed", c.connect_failed);
    o.set("connect_first_error", serde_json::json!(c.first_error));
    o.set("bytes_sent_per_connection", send as u64);
    o.set("announced_length", DEFAULT_MAX_FRAME_LEN as u64);
    o.set("ramp_secs", ramp_secs);
    o.set("most_open_at_once", open_at_most as u64);
    o.set("rss_most_open_mib", mib(rss_at_most));
    o.set("bytes_held_per_connection", per.round());
    o.set(
        "rss_after_close_mib",
        serde_json::json!(after_close.map(mib)),
    );
    o.set(
        "bytes_kept_per_connection_after_close",
        serde_json::json!(retained.map(f64::round)),
    );
    o.set("open_at_end_of_hold", open_at_end);
    o.set("closed_by_server", c.at.len() as u64);
    o.set("server_said_on_close", serde_json::to_value(&c.said)?);
    o.set(
        "first_close_secs",
        serde_json::json!(first_close.first().map(|d| d.as_secs_f64())),
    );
    if c.connect_failed > 0 {
        o.problems.push(format!(
            "{} of {n} connections failed to open ({})",
            c.connect_failed,
            c.first_error.clone().unwrap_or_default()
        ));
    }
    Ok(o)
}

async fn until(stop: &AtomicBool) {
    while !stop.load(Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A pre-login attacker's connection (plain frames, or a WebSocket carrying them).
struct Held {
    s: TcpStream,
    ws: bool,
}

async fn open_tcp(addr: &str, payload: &[u8]) -> Result<Held, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.write_all(payload).await.map_err(|e| e.to_string())?;
    Ok(Held { s, ws: false })
}

/// The WebSocket upgrade of PROTOCOL.md section 22, by hand (the attacker needs no more).
const WS_UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: missive\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// The header of one masked binary WebSocket message of `len` bytes, with the masking key
/// 0 (legal, if not what a browser would pick): the payload goes out as it is, so every
/// connection sends the one shared buffer instead of a masked copy of its own.
pub fn ws_binary_header(len: usize) -> Vec<u8> {
    let mut h = vec![0x82];
    match len {
        0..=125 => h.push(0x80 | len as u8),
        126..=0xffff => {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            h.push(0x80 | 127);
            h.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    h.extend_from_slice(&[0, 0, 0, 0]);
    h
}

/// Upgrades to a WebSocket at `addr` (host:port) and sends `payload` as one binary message.
async fn open_ws(addr: &str, payload: &[u8]) -> Result<Held, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.write_all(WS_UPGRADE).await.map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 || s.read(&mut byte).await.map_err(|e| e.to_string())? == 0 {
            return Err(format!(
                "WebSocket upgrade refused: {:?}",
                String::from_utf8_lossy(&head[..head.len().min(40)])
            ));
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(format!(
            "WebSocket upgrade answered {:?}",
            String::from_utf8_lossy(&head[..head.len().min(40)])
        ));
    }
    s.write_all(&ws_binary_header(payload.len()))
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(payload).await.map_err(|e| e.to_string())?;
    Ok(Held { s, ws: true })
}

impl Held {
    /// Waits until the server closes the connection; returns the first thing it said (an
    /// ERROR's code name) or "closed".
    async fn wait_close(&mut self) -> String {
        let mut first = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = 4096usize.saturating_sub(first.len());
                    first.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        let frames = if self.ws {
            ws_payload(&first)
        } else {
            Some(&first[..])
        };
        frames
            .and_then(error_name)
            .unwrap_or_else(|| "closed".into())
    }
}

/// The payload of the first (unmasked, server-sent) binary WebSocket message in `bytes`.
fn ws_payload(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.len() < 2 || bytes[0] & 0x0f != 2 {
        return None;
    }
    let (len, at): (usize, usize) = match bytes[1] & 0x7f {
        126 => (
            u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    bytes.get(at..at.checked_add(len)?)
}

/// The code name of an ERROR frame at the start of `bytes`, if there is one.
fn error_name(bytes: &[u8]) -> Option<String> {
    if bytes.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes(bytes[..4].try_into().ok()?) as usize;
    let rest = bytes.get(4..4 + len)?;
    let frame = Frame {
        flags: missive_protocol::Flags(rest[3]),
        command: u16::from_be_bytes([rest[4], rest[5]]),
        request_id: 0,
        body: rest[10..len - 4].to_vec().into(),
    };
    match frame.packet(DEFAULT_MAX_FRAME_LEN).ok()? {
        Packet::Error(e) => Some(missive_client::error::code_name(e.code)),
        other => Some(other.command().name().to_string()),
    }
}

/// A loopback source address for connection loop `i` (127.0.0.2 ... 127.0.0.9): tens of
/// thousands of short connections from one address would run through its ephemeral ports.
fn source(i: usize) -> std::net::IpAddr {
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % 8) as u8))
}

async fn connect_from(addr: &str, src: std::net::IpAddr) -> std::io::Result<TcpStream> {
    let target: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let socket = TcpSocket::new_v4()?;
    socket.bind((src, 0).into())?;
    let s = socket.connect(target).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// `--garbage-workers` loops of connect + LOGIN with a token that is not one, for
/// `--duration`; the honest logins (5/s) show whether real users still get in.
pub async fn login_garbage(rig: &mut Rig<'_>) -> Result<Outcome> {
    let workers = rig.args.garbage_workers.max(1);
    rig.honest(None, false).await?;
    rig.attack_begins().await;
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(rig.args.duration.max(0.1));
    let replies = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let addr = rig.addr().to_string();
        let replies = replies.clone();
        tasks.spawn(async move {
            let mut local = BTreeMap::<String, u64>::new();
            let mut k = 0u64;
            while Instant::now() < end {
                k += 1;
                let outcome = garbage_login(&addr, source(w), w, k).await;
                *local.entry(outcome).or_insert(0) += 1;
            }
            let mut r = replies.lock().expect("replies");
            for (key, v) in local {
                *r.entry(key).or_insert(0) += v;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let took = t0.elapsed();
    rig.attack_ends();
    let replies = replies.lock().expect("replies").clone();
    let total: u64 = replies.values().sum();
    let answered: u64 = replies
        .iter()
        .filter(|(k, _)| !k.starts_with("connect") && *k != "no answer")
        .map(|(_, v)| v)
        .sum();
    let mut o = Outcome::new(format!(
        "{total} garbage LOGINs from {workers} loops in {:.1} s ({:.0}/s answered; {replies:?})",
        took.as_secs_f64(),
        figures::rate(answered, took.as_secs_f64())
    ));
    o.set("workers", workers as u64);
    o.set("garbage_logins", total);
    o.set(
        "garbage_answered_per_s",
        figures::rate(answered, took.as_secs_f64()),
    );
    o.set("replies", serde_json::to_value(&replies)?);
    Ok(o)
}

/// One garbage LOGIN on a fresh connection: its answer's name ("AUTH_FAILED", "SERVER_BUSY",
/// ...), "no answer", or "connect: ...".
async fn garbage_login(addr: &str, src: std::net::IpAddr, w: usize, k: u64) -> String {
    let attempt = async {
        let s = match connect_from(addr, src).await {
            Ok(s) => s,
            Err(e) => return format!("connect: {}", e.kind()),
        };
        let mut raw = Raw::over(s);
        let login = Packet::Login(pb::Login {
            token: format!("garbage-{w}-{k}"),
            device_id: "x".into(),
            platform: 0,
            last_version: 0,
            client_version: String::new(),
        });
        match raw.request(&login, Duration::from_secs(5)).await {
            Ok((p, _)) => {
                // Let the server close first, so the TIME_WAIT is its, not this port's.
                let mut buf = [0u8; 256];
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), raw.read_raw(&mut buf)).await;
                raw::reply_name(&p)
            }
            Err(_) => "no answer".into(),
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(s) => s,
        Err(_) => "no answer".into(),
    }
}

/// A LOGIN frame whose zlib body inflates past the protocol's limit (a valid Login message of
/// 1 MiB + 1 KiB, mostly one repeated byte): the server inflates up to its limit, then refuses
/// it. Returns the frame (request id 1).
pub fn bomb() -> Frame {
    let login = Packet::Login(pb::Login {
        token: "A".repeat(DEFAULT_MAX_FRAME_LEN + 1024),
        device_id: "x".into(),
        platform: 0,
        last_version: 0,
        client_version: String::new(),
    });
    Frame::compressed_above(&login, 1, 0)
}

/// Unanswered bombs per connection.
const BOMBS_IN_FLIGHT: usize = 8;

/// `--bomb-connections` connections send bombs for `--duration`, reconnecting when closed.
pub async fn zlib_bomb(rig: &mut Rig<'_>) -> Result<Outcome> {
    let conns = rig.args.bomb_connections.max(1);
    let template = bomb();
    let bomb_bytes = template.encoded_len();
    rig.honest(None, false).await?;
    rig.attack_begins().await;
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(rig.args.duration.max(0.1));
    let totals = Arc::new(Mutex::new((0u64, 0u64, BTreeMap::<String, u64>::new())));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (addr, totals, template) = (rig.addr().to_string(), totals.clone(), template.clone());
        tasks.spawn(async move {
            let (mut sent, mut connects) = (0u64, 0u64);
            let mut replies = BTreeMap::<String, u64>::new();
            while Instant::now() < end {
                connects += 1;
                let Ok(mut raw) = Raw::connect(&addr).await else {
                    *replies.entry("connect failed".into()).or_insert(0) += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let mut in_flight = 0usize;
                while Instant::now() < end {
                    let mut out = Vec::new();
                    while in_flight < BOMBS_IN_FLIGHT {
                        let mut f = template.clone();
                        f.request_id = raw.id();
                        out.extend_from_slice(&f.to_bytes());
                        in_flight += 1;
                        sent += 1;
                    }
                    if raw.write(&out).await.is_err() {
                        break;
                    }
                    let left = end.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, raw.read()).await {
                        Ok(Ok(Some(r))) => {
                            in_flight = in_flight.saturating_sub(1);
                            let name = r
                                .frame
                                .packet(DEFAULT_MAX_FRAME_LEN)
                                .map(|p| raw::reply_name(&p))
                                .unwrap_or_else(|_| raw::cmd_name(r.frame.command));
                            *replies.entry(name).or_insert(0) += 1;
                        }
                        // Closed (LOGIN_TIMEOUT, or a server that makes it fatal): reconnect.
                        Ok(_) => break,
                        Err(_) => break,
                    }
                }
            }
            let mut t = totals.lock().expect("totals");
            t.0 += sent;
            t.1 += connects;
            for (k, v) in replies {
                *t.2.entry(k).or_insert(0) += v;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let took = t0.elapsed();
    rig.attack_ends();
    let (sent, connects, replies) = totals.lock().expect("totals").clone();
    let bad_body = replies.get("BAD_BODY").copied().unwrap_or(0);
    // Each BAD_BODY for inflating past the limit means the server inflated limit + 1 bytes.
    let inflated = bad_body as f64 * (DEFAULT_MAX_FRAME_LEN + 1) as f64;
    let cpu = rig.attack_cpu();
    let mut o = Outcome::new(format!(
        "{conns} connections sent {sent} bombs of {} ({} in all) in {:.1} s over {connects} \
         connections; replies {replies:?}: ≥{} inflated; server CPU {} s ({} of a core)",
        bytes_text(bomb_bytes as f64),
        bytes_text(sent as f64 * bomb_bytes as f64),
        took.as_secs_f64(),
        bytes_text(inflated),
        cpu.map_or("-".into(), |c| format!("{c:.2}")),
        cpu.map_or("-".into(), |c| format!(
            "{:.0}%",
            c / took.as_secs_f64() * 100.0
        )),
    ));
    o.set("connections", conns as u64);
    o.set("bomb_frame_bytes", bomb_bytes as u64);
    o.set("bombs_sent", sent);
    o.set("bytes_sent", sent * bomb_bytes as u64);
    o.set("connects", connects);
    o.set("replies", serde_json::to_value(&replies)?);
    o.set("inflated_bytes_at_least", inflated);
    o.set(
        "server_cpu_share",
        serde_json::json!(cpu.map(|c| (c / took.as_secs_f64() * 1000.0).round() / 1000.0)),
    );
    Ok(o)
}

/// `--http-connections` request heads left unfinished and as many requests whose body is
/// shorter than their Content-Length, on the Server API, watched for `--http-hold`.
pub async fn http_slow(rig: &mut Rig<'_>) -> Result<Outcome> {
    let n = rig.args.http_connections.max(1);
    let half = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: missive\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\n",
        server::API_KEY
    );
    let lying = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: missive\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"from\": \"mallory\",",
        server::API_KEY
    );
    rig.honest(None, true).await?;
    rig.attack_begins().await;
    let t0 = Instant::now();
    let hold = Duration::from_secs_f64(rig.args.http_hold.max(0.0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for kind in ["half-sent head", "lying Content-Length"] {
        let text = if kind == "lying Content-Length" {
            lying.clone()
        } else {
            half.clone()
        };
        for _ in 0..n {
            let (addr, text, stop) = (rig.server.http_addr.clone(), text.clone(), stop.clone());
            tasks.spawn(async move {
                let r = async {
                    let mut s = TcpStream::connect(&addr).await?;
                    s.write_all(text.as_bytes()).await?;
                    let mut first = Vec::new();
                    let mut buf = [0u8; 1024];
                    loop {
                        let n = s.read(&mut buf).await?;
                        if n == 0 {
                            break;
                        }
                        if first.len() < 64 {
                            first.extend_from_slice(&buf[..n.min(64)]);
                        }
                    }
                    std::io::Result::Ok(first)
                };
                tokio::select! {
                    r = r => {
                        let said = match r {
                            Ok(first) => status_line(&first),
                            Err(e) => format!("error: {}", e.kind()),
                        };
                        (kind, Some((t0.elapsed(), said)))
                    }
                    _ = until(&stop) => (kind, None),
                }
            });
        }
    }
    tokio::time::sleep(hold).await;
    rig.attack_ends();
    stop.store(true, Relaxed);
    // Per kind: still held, when the others were closed, and what the server said.
    type Watched = (u64, Vec<Duration>, BTreeMap<String, u64>);
    let mut by_kind: BTreeMap<&str, Watched> = BTreeMap::new();
    while let Some(r) = tasks.join_next().await {
        let Ok((kind, closed)) = r else { continue };
        let e = by_kind.entry(kind).or_default();
        match closed {
            None => e.0 += 1,
            Some((at, said)) => {
                e.1.push(at);
                *e.2.entry(said).or_insert(0) += 1;
            }
        }
    }
    let mut parts = Vec::new();
    let mut o = Outcome::new("");
    for (kind, (held, mut closed, said)) in by_kind {
        closed.sort_unstable();
        parts.push(format!(
            "{kind}: {held}/{n} still held after {:.0} s{}",
            hold.as_secs_f64(),
            if closed.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} closed by the server (first {}, last {}; {said:?})",
                    closed.len(),
                    short_ms(closed[0]),
                    short_ms(*closed.last().expect("non-empty"))
                )
            }
        ));
        let key = kind.replace([' ', '-'], "_").to_lowercase();
        o.set(&format!("{key}_held_at_end"), held);
        o.set(&format!("{key}_closed"), closed.len() as u64);
        o.set(
            &format!("{key}_closed_at_secs"),
            serde_json::json!(closed.iter().map(|d| d.as_secs_f64()).collect::<Vec<_>>()),
        );
        o.set(&format!("{key}_server_said"), serde_json::to_value(&said)?);
    }
    let before = rig.rss_before.unwrap_or(0);
    let per = per_connection_bytes(before, rig.peak_kib().unwrap_or(0), 2 * n);
    o.set("connections_per_kind", n as u64);
    o.set("hold_secs", hold.as_secs_f64());
    o.set(
        "bytes_per_held_connection",
        serde_json::json!(per.map(f64::round)),
    );
    o.headline = format!(
        "Server API, {} each: {}; {} per connection",
        n,
        parts.join("; "),
        per.map_or("-".into(), bytes_text)
    );
    Ok(o)
}

/// "HTTP/1.1 408 ..." -> "408"; else "closed" (nothing said) or the first bytes.
fn status_line(first: &[u8]) -> String {
    let text = String::from_utf8_lossy(first);
    if first.is_empty() {
        return "closed".into();
    }
    match text.strip_prefix("HTTP/1.1 ") {
        Some(rest) => rest.chars().take(3).collect(),
        None => text.chars().take(20).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_announced_frame_is_a_login_of_the_limit() {
        let head = announced_frame(HEADER_LEN + 1);
        assert_eq!(head.len(), 15);
        assert_eq!(&head[..4], &(1u32 << 20).to_be_bytes());
        assert_eq!(&head[4..6], b"MS");
        assert_eq!(&head[8..10], &[0, 1]);
        let all_but_one = announced_frame(4 + DEFAULT_MAX_FRAME_LEN - 1);
        assert_eq!(all_but_one.len(), 1_048_579);
        // Never more than the whole frame.
        assert_eq!(announced_frame(usize::MAX).len(), 4 + DEFAULT_MAX_FRAME_LEN);
    }

    #[test]
    fn the_bomb_inflates_past_the_limit_from_little() {
        let f = bomb();
        assert!(f.flags.compressed());
        // The server's check: inflating stops past the limit, with BAD_BODY.
        let err = f.packet(DEFAULT_MAX_FRAME_LEN).unwrap_err();
        assert_eq!(err.code(), missive_protocol::ErrorCode::BadBody, "{err}");
        assert!(f.body.len() < 16 * 1024, "bomb of {} bytes", f.body.len());
    }

    #[test]
    fn websocket_messages_are_framed() {
        assert_eq!(ws_binary_header(5), vec![0x82, 0x85, 0, 0, 0, 0]);
        assert_eq!(ws_binary_header(300), vec![0x82, 0xfe, 1, 44, 0, 0, 0, 0]);
        let h = ws_binary_header(1_048_579);
        assert_eq!(h.len(), 14);
        assert_eq!(&h[..2], &[0x82, 0xff]);
        assert_eq!(&h[2..10], &1_048_579u64.to_be_bytes());
        // A server's (unmasked) message carrying an ERROR frame is read back.
        let e = Frame::new(
            &Packet::Error(pb::Error {
                code: 3,
                message: "too large".into(),
                fatal: true,
                retry_after_ms: 0,
            }),
            0,
        )
        .to_bytes();
        let mut msg = vec![0x82, e.len() as u8];
        msg.extend_from_slice(&e);
        assert_eq!(
            ws_payload(&msg).and_then(error_name).as_deref(),
            Some("FRAME_TOO_LARGE")
        );
        assert_eq!(ws_payload(&[0x81, 0]), None);
    }

    #[test]
    fn status_lines_and_error_frames_are_named() {
        assert_eq!(status_line(b"HTTP/1.1 408 Request Timeout\r\n"), "408");
        assert_eq!(status_line(b""), "closed");
        let e = Frame::new(
            &Packet::Error(pb::Error {
                code: 21,
                message: "no LOGIN".into(),
                fatal: true,
                retry_after_ms: 0,
            }),
            0,
        );
        assert_eq!(error_name(&e.to_bytes()).as_deref(), Some("LOGIN_TIMEOUT"));
        assert_eq!(error_name(b"xy"), None);
    }
}
