//! Attacks before login: a LOGIN frame announced at the 1 MiB limit and never finished (over
//! TCP or a WebSocket), or only its header.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use missive_protocol::frame::HEADER_LEN;
use missive_protocol::{Command, Frame, Packet, DEFAULT_MAX_FRAME_LEN, MAGIC, PROTOCOL_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::figures::{self, bytes_text, mib, per_connection_bytes};
use super::outcome::Outcome;
use super::rig::Rig;
use super::server;

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
    for i in 0..n {
        let (addr, payload, stop) = (addr.clone(), payload.clone(), stop.clone());
        let (written, closes, ramp) = (written.clone(), closes.clone(), ramp.clone());
        tasks.spawn(async move {
            let permit = ramp.acquire_owned().await;
            let conn = if ws {
                open_ws(&addr, i, &payload).await
            } else {
                open_tcp(&addr, i, &payload).await
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

pub(super) async fn until(stop: &AtomicBool) {
    while !stop.load(Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A pre-login attacker's connection (plain frames, or a WebSocket carrying them).
struct Held {
    s: TcpStream,
    ws: bool,
}

/// Attacker connection `i` comes from a loopback address of its own (127.3.x.y; 127.0.0.0/8 is
/// all loopback on Linux), as from as many machines: what a refused frame costs its sender's
/// address must not fall on the honest users, who connect from 127.0.0.1.
async fn connect_as(addr: &str, i: usize) -> Result<TcpStream, String> {
    let to: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let from = std::net::Ipv4Addr::new(127, 3, (i / 250) as u8, (i % 250) as u8 + 1);
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket.bind((from, 0).into()).map_err(|e| e.to_string())?;
    socket.connect(to).await.map_err(|e| e.to_string())
}

async fn open_tcp(addr: &str, i: usize, payload: &[u8]) -> Result<Held, String> {
    let mut s = connect_as(addr, i).await?;
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
async fn open_ws(addr: &str, i: usize, payload: &[u8]) -> Result<Held, String> {
    let mut s = connect_as(addr, i).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use missive_client::pb;

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
                reason: String::new(),
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
    fn error_frames_are_named() {
        let e = Frame::new(
            &Packet::Error(pb::Error {
                code: 21,
                message: "no LOGIN".into(),
                fatal: true,
                retry_after_ms: 0,
                reason: String::new(),
            }),
            0,
        );
        assert_eq!(error_name(&e.to_bytes()).as_deref(), Some("LOGIN_TIMEOUT"));
        assert_eq!(error_name(b"xy"), None);
    }
}
