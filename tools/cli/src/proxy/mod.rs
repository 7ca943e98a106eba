//! `missive proxy`: a frame-aware TCP relay between a client and a real server that injects
//! faults ([`rules`]) and reports every frame, both ways, as an [`Event`].
//!
//! Each accepted connection gets an upstream connection to the server and one pump per
//! direction. A pump cuts the byte stream into frames by their length prefix, asks the
//! [`rules::Faults`] what to do with each, and hands the result to that direction's writer,
//! which applies delay and bandwidth limits in order. Bytes that are not frames (a length
//! under 14 or over 16 MiB, or a TLS client) are relayed as they come, unexamined.
//! `conform` drives the same proxy through [`Proxy`]'s methods.

pub mod capture;
pub mod rules;
pub mod run;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::{Buf, Bytes, BytesMut};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use rules::{Action, ConnAction, Dir, Faults, Refusal};

/// Frames longer than this are not looked for: the stream is relayed as raw bytes.
const MAX_FRAME: usize = 16 << 20;
const HOLD_TIMEOUT: Duration = Duration::from_secs(1);

/// What happened to a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Forwarded,
    Dropped,
    Duplicated,
    Held,
    /// A held frame, forwarded now.
    Released,
    Corrupted,
    /// Only its first half was forwarded; the connection was closed.
    Cut,
    Delayed,
    /// Swallowed by a black hole.
    Lost,
    /// Made by the proxy (`conform`'s KICK).
    Injected,
}

impl Fate {
    pub fn name(self) -> &'static str {
        match self {
            Fate::Forwarded => "forwarded",
            Fate::Dropped => "dropped",
            Fate::Duplicated => "duplicated",
            Fate::Held => "held",
            Fate::Released => "released",
            Fate::Corrupted => "corrupted",
            Fate::Cut => "cut",
            Fate::Delayed => "delayed",
            Fate::Lost => "lost",
            Fate::Injected => "injected",
        }
    }

    /// Whether the frame reached the other side intact (a duplicate: twice).
    pub fn delivered(self) -> bool {
        matches!(
            self,
            Fate::Forwarded | Fate::Duplicated | Fate::Released | Fate::Delayed | Fate::Injected
        )
    }
}

/// Who closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
    Proxy,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
            Side::Proxy => "proxy",
        }
    }
}

/// Something the proxy saw or did.
#[derive(Debug, Clone)]
pub enum What {
    /// A client connected to listener `listener` (0: the first `--listen`) from `peer`.
    Open {
        listener: usize,
        peer: SocketAddr,
        /// The proxy's address as the client reached it.
        local: SocketAddr,
    },
    /// Closed at once (`refuse`).
    Refused,
    Frame {
        dir: Dir,
        raw: Bytes,
        fate: Fate,
    },
    /// Bytes relayed without being cut into frames.
    Raw {
        dir: Dir,
        len: usize,
    },
    Blackholed {
        why: String,
    },
    /// The connection is over; `by` closed it first.
    Closed {
        by: Side,
        why: String,
    },
}

#[derive(Debug, Clone)]
pub struct Event {
    /// Since the proxy started.
    pub t: Duration,
    pub conn: u32,
    pub what: What,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Blackhole,
    Closed,
}

/// One relayed connection, as the proxy controls it.
struct Conn {
    id: u32,
    /// Frames for the client, made by the proxy.
    inject: mpsc::UnboundedSender<Bytes>,
    state: watch::Sender<State>,
    /// Milliseconds since the proxy started, of the last byte either way.
    last_active: AtomicU64,
    refusal: Option<Refusal>,
    closed_by: Mutex<Option<(Side, String)>>,
}

struct Shared {
    upstream: String,
    start: Instant,
    faults: Mutex<Faults>,
    events: mpsc::UnboundedSender<Event>,
    conns: Mutex<HashMap<u32, Arc<Conn>>>,
    next_conn: AtomicU32,
}

impl Shared {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn emit(&self, conn: u32, what: What) {
        let _ = self.events.send(Event {
            t: self.now(),
            conn,
            what,
        });
    }
}

/// A running proxy. Dropping it does not stop it; the listeners live as long as the runtime.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
    addrs: Vec<SocketAddr>,
}

impl Proxy {
    /// Listens on every address of `listen` and relays to `upstream` (host:port).
    pub async fn start(
        listen: &[String],
        upstream: &str,
        faults: Faults,
    ) -> Result<(Proxy, mpsc::UnboundedReceiver<Event>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            start: Instant::now(),
            faults: Mutex::new(faults),
            events: tx,
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU32::new(1),
        });
        let mut addrs = Vec::new();
        for (i, addr) in listen.iter().enumerate() {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            addrs.push(listener.local_addr()?);
            tokio::spawn(accept_loop(shared.clone(), listener, i));
        }
        Ok((Proxy { shared, addrs }, rx))
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Since the proxy started.
    pub fn now(&self) -> Duration {
        self.shared.now()
    }

    /// Changes the faults in force (for connections open now too).
    pub fn faults<R>(&self, f: impl FnOnce(&mut Faults) -> R) -> R {
        f(&mut self.shared.faults.lock().unwrap())
    }

    fn conn(&self, id: u32) -> Option<Arc<Conn>> {
        self.shared.conns.lock().unwrap().get(&id).cloned()
    }

    /// Closes a connection now, both sides.
    pub fn cut(&self, id: u32, why: &str) {
        if let Some(c) = self.conn(id) {
            close(&self.shared, id, &c, Side::Proxy, why);
        }
    }

    /// Makes a connection a black hole now.
    pub fn blackhole(&self, id: u32, why: &str) {
        if let Some(c) = self.conn(id) {
            blackhole(&self.shared, id, &c, why);
        }
    }

    /// Sends `raw` (a whole frame) to the client of connection `id`, then closes the
    /// connection: how `conform` plays a server's KICK.
    pub fn inject_and_close(&self, id: u32, raw: Bytes, why: &str) {
        let Some(c) = self.conn(id) else { return };
        let shared = self.shared.clone();
        let why = why.to_string();
        let mut inject = c.state.subscribe();
        // The down writer owns the client's socket; it takes the frame from this channel.
        let _ = c.inject.send(raw.clone());
        shared.emit(
            id,
            What::Frame {
                dir: Dir::Down,
                raw,
                fate: Fate::Injected,
            },
        );
        tokio::spawn(async move {
            // Give the writer a moment to put the frame on the wire before the close.
            let _ = tokio::time::timeout(Duration::from_millis(200), inject.changed()).await;
            close(&shared, id, &c, Side::Proxy, &why);
        });
    }
}

fn close(shared: &Shared, id: u32, c: &Conn, by: Side, why: &str) {
    {
        let mut closed = c.closed_by.lock().unwrap();
        if closed.is_some() {
            return;
        }
        *closed = Some((by, why.to_string()));
    }
    c.state.send_replace(State::Closed);
    shared.emit(
        id,
        What::Closed {
            by,
            why: why.to_string(),
        },
    );
}

fn blackhole(shared: &Shared, id: u32, c: &Conn, why: &str) {
    let changed = c.state.send_if_modified(|s| {
        if *s == State::Open {
            *s = State::Blackhole;
            true
        } else {
            false
        }
    });
    if changed {
        shared.emit(id, What::Blackholed { why: why.into() });
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, index: usize) {
    loop {
        let Ok((client, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
        let local = client.local_addr().unwrap_or(peer);
        shared.emit(
            id,
            What::Open {
                listener: index,
                peer,
                local,
            },
        );
        let refusal = shared.faults.lock().unwrap().refusals.pop_front();
        if refusal == Some(Refusal::AtAccept) {
            shared.emit(id, What::Refused);
            shared.emit(
                id,
                What::Closed {
                    by: Side::Proxy,
                    why: "refused".into(),
                },
            );
            drop(client);
            continue;
        }
        tokio::spawn(relay(shared.clone(), id, client, refusal));
    }
}

async fn relay(shared: Arc<Shared>, id: u32, client: TcpStream, refusal: Option<Refusal>) {
    let _ = client.set_nodelay(true);
    let server = match TcpStream::connect(&shared.upstream).await {
        Ok(s) => s,
        Err(e) => {
            shared.emit(
                id,
                What::Closed {
                    by: Side::Server,
                    why: format!("cannot connect to {}: {e}", shared.upstream),
                },
            );
            return;
        }
    };
    let _ = server.set_nodelay(true);
    let (state, _) = watch::channel(State::Open);
    let (inject_tx, inject_rx) = mpsc::unbounded_channel();
    let conn = Arc::new(Conn {
        id,
        inject: inject_tx,
        state,
        last_active: AtomicU64::new(shared.now().as_millis() as u64),
        refusal,
        closed_by: Mutex::new(None),
    });
    shared.conns.lock().unwrap().insert(id, conn.clone());
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let (up_tx, up_rx) = mpsc::unbounded_channel();
    let (down_tx, down_rx) = mpsc::unbounded_channel();
    let tasks = [
        tokio::spawn(pump(shared.clone(), id, conn.clone(), Dir::Up, cr, up_tx)),
        tokio::spawn(pump(
            shared.clone(),
            id,
            conn.clone(),
            Dir::Down,
            sr,
            down_tx,
        )),
        tokio::spawn(writer(shared.clone(), conn.clone(), up_rx, None, sw)),
        tokio::spawn(writer(
            shared.clone(),
            conn.clone(),
            down_rx,
            Some(inject_rx),
            cw,
        )),
        tokio::spawn(watchdog(shared.clone(), id, conn.clone())),
    ];
    let mut state = conn.state.subscribe();
    let _ = state.wait_for(|s| *s == State::Closed).await;
    // Let the writers finish what they were told (a cut's half frame) before the sockets go.
    tokio::time::sleep(Duration::from_millis(20)).await;
    for t in tasks {
        t.abort();
    }
    shared.conns.lock().unwrap().remove(&id);
}

/// What a pump hands its writer.
enum Out {
    Bytes {
        at: Instant,
        bytes: Bytes,
    },
    /// Write this, then close the connection.
    CutAfter(Bytes),
}

fn side_of(dir: Dir) -> Side {
    match dir {
        Dir::Up => Side::Client,
        Dir::Down => Side::Server,
    }
}

/// Reads one direction, cuts it into frames and decides each one's fate.
async fn pump(
    shared: Arc<Shared>,
    id: u32,
    conn: Arc<Conn>,
    dir: Dir,
    mut src: OwnedReadHalf,
    out: mpsc::UnboundedSender<Out>,
) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut raw_mode = false;
    let mut held: Vec<Bytes> = Vec::new();
    let mut held_since = Instant::now();
    let mut last_at = Instant::now();
    let mut state = conn.state.subscribe();
    loop {
        let hold_deadline = held_since + HOLD_TIMEOUT;
        let n = tokio::select! {
            r = src.read_buf(&mut buf) => r,
            _ = tokio::time::sleep_until(hold_deadline), if !held.is_empty() => {
                release(&shared, id, dir, &mut held, &out, &mut last_at);
                continue;
            }
            _ = async { let _ = state.wait_for(|s| *s == State::Closed).await; } => return,
        };
        match n {
            Ok(0) | Err(_) => {
                let why = match n {
                    Err(e) => format!("{} read error: {e}", side_of(dir).name()),
                    _ => "closed its side".into(),
                };
                let holed = *conn.state.borrow() == State::Blackhole;
                if holed && dir == Dir::Down {
                    // Behind a NAT that forgot the mapping the client hears nothing of the
                    // server's close either: the connection ends when the client gives up.
                    return;
                } else if holed {
                    close(&shared, id, &conn, Side::Client, &why);
                } else {
                    close(&shared, id, &conn, side_of(dir), &why);
                }
                return;
            }
            Ok(_) => {}
        }
        conn.last_active
            .store(shared.now().as_millis() as u64, Ordering::Relaxed);
        let swallowed = *conn.state.borrow() == State::Blackhole;
        // Bytes that are not frames go on as they are (unless into a black hole).
        let pass_raw = |buf: &mut BytesMut, at: Instant| {
            let bytes = buf.split().freeze();
            let len = bytes.len();
            shared.emit(id, What::Raw { dir, len });
            if !swallowed {
                let _ = out.send(Out::Bytes { at, bytes });
            }
        };
        if raw_mode {
            pass_raw(&mut buf, last_at);
            continue;
        }
        loop {
            if buf.len() < 4 {
                break;
            }
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if !(14..=MAX_FRAME).contains(&len) {
                raw_mode = true;
                pass_raw(&mut buf, last_at);
                break;
            }
            if buf.len() < 4 + len {
                break;
            }
            let raw = buf.split_to(4 + len).freeze();
            if *conn.state.borrow() == State::Blackhole {
                shared.emit(
                    id,
                    What::Frame {
                        dir,
                        raw,
                        fate: Fate::Lost,
                    },
                );
                continue;
            }
            let command = u16::from_be_bytes([raw[8], raw[9]]);
            let (action, delay, jitter) = {
                let mut f = shared.faults.lock().unwrap();
                (f.decide(dir, command), f.delay_ms, f.jitter_ms)
            };
            let jitter = if jitter > 0 {
                rand::rng().random_range(0..=jitter)
            } else {
                0
            };
            let mut at = (Instant::now() + Duration::from_millis(delay + jitter)).max(last_at);
            let mut shown = raw.clone();
            let send = |bytes: Bytes, at: Instant| {
                let _ = out.send(Out::Bytes { at, bytes });
            };
            let fate = match action {
                None => {
                    send(raw.clone(), at);
                    Fate::Forwarded
                }
                Some(Action::Drop) => Fate::Dropped,
                Some(Action::Dup) => {
                    send(raw.clone(), at);
                    send(raw.clone(), at);
                    Fate::Duplicated
                }
                Some(Action::Corrupt) => {
                    let mut bad = BytesMut::from(&raw[..]);
                    // The first body byte, or the CRC's last one for an empty body.
                    let at_byte = if raw.len() > 18 { 14 } else { raw.len() - 1 };
                    bad[at_byte] ^= 0x01;
                    shown = bad.freeze();
                    send(shown.clone(), at);
                    Fate::Corrupted
                }
                Some(Action::Cut) => {
                    let _ = out.send(Out::CutAfter(raw.slice(..raw.len() / 2)));
                    Fate::Cut
                }
                Some(Action::Blackhole) => Fate::Lost,
                Some(Action::Hold) => {
                    if held.is_empty() {
                        held_since = Instant::now();
                    }
                    held.push(raw.clone());
                    Fate::Held
                }
                Some(Action::Delay(ms)) => {
                    at = at.max(Instant::now() + Duration::from_millis(ms));
                    send(raw.clone(), at);
                    Fate::Delayed
                }
            };
            last_at = at;
            shared.emit(
                id,
                What::Frame {
                    dir,
                    raw: shown,
                    fate,
                },
            );
            match fate {
                Fate::Cut => {
                    return;
                }
                Fate::Lost => {
                    blackhole(&shared, id, &conn, "a blackhole rule hit a frame");
                }
                Fate::Held => {}
                _ => release(&shared, id, dir, &mut held, &out, &mut last_at),
            }
            if dir == Dir::Down
                && command == 0x8001
                && conn.refusal == Some(Refusal::AfterLogin)
                && fate.delivered()
            {
                let _ = out.send(Out::CutAfter(Bytes::new()));
                return;
            }
        }
    }
}

/// Forwards held frames, latest first.
fn release(
    shared: &Shared,
    id: u32,
    dir: Dir,
    held: &mut Vec<Bytes>,
    out: &mpsc::UnboundedSender<Out>,
    last_at: &mut Instant,
) {
    while let Some(raw) = held.pop() {
        let _ = out.send(Out::Bytes {
            at: *last_at,
            bytes: raw.clone(),
        });
        shared.emit(
            id,
            What::Frame {
                dir,
                raw,
                fate: Fate::Released,
            },
        );
    }
}

/// Writes one direction: in order, each chunk no earlier than its time, within the throttle.
async fn writer(
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    mut rx: mpsc::UnboundedReceiver<Out>,
    mut inject: Option<mpsc::UnboundedReceiver<Bytes>>,
    mut dst: OwnedWriteHalf,
) {
    let mut state = conn.state.subscribe();
    loop {
        let out = tokio::select! {
            o = rx.recv() => match o { Some(o) => o, None => return },
            Some(bytes) = async { match inject.as_mut() { Some(r) => r.recv().await, None => None } } => {
                let _ = dst.write_all(&bytes).await;
                let _ = dst.flush().await;
                // Wake `inject_and_close`: the KICK is on the wire.
                conn.state.send_modify(|_| {});
                continue;
            }
            _ = async { let _ = state.wait_for(|s| *s == State::Closed).await; } => return,
        };
        match out {
            Out::Bytes { at, bytes } => {
                tokio::time::sleep_until(at).await;
                // What the pump let through before a black hole still goes (it was on the
                // wire); only a closed connection stops it.
                if *conn.state.borrow() == State::Closed {
                    return;
                }
                let rate = shared.faults.lock().unwrap().throttle;
                if let Some(rate) = rate {
                    // Chunks of at most a tenth of a second's worth.
                    let chunk = (rate / 10).max(1) as usize;
                    let mut b = bytes;
                    while b.has_remaining() {
                        let part = b.split_to(chunk.min(b.len()));
                        if dst.write_all(&part).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_secs_f64(
                            part.len() as f64 / rate as f64,
                        ))
                        .await;
                    }
                } else if dst.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Out::CutAfter(bytes) => {
                let _ = dst.write_all(&bytes).await;
                let _ = dst.flush().await;
                close(&shared, conn.id, &conn, Side::Proxy, "cut");
                return;
            }
        }
    }
}

/// Time-based faults of one connection: `nat-idle` and `after`.
async fn watchdog(shared: Arc<Shared>, id: u32, conn: Arc<Conn>) {
    let opened = shared.now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (nat_idle, after) = {
            let f = shared.faults.lock().unwrap();
            (f.nat_idle, f.after.clone())
        };
        let now = shared.now();
        if let Some(idle) = nat_idle {
            let last = Duration::from_millis(conn.last_active.load(Ordering::Relaxed));
            if now.saturating_sub(last) >= idle {
                blackhole(
                    &shared,
                    id,
                    &conn,
                    &format!("idle for {} s (nat-idle)", idle.as_secs_f64()),
                );
            }
        }
        for (d, action) in after {
            if now.saturating_sub(opened) >= d {
                match action {
                    ConnAction::Cut => close(&shared, id, &conn, Side::Proxy, "after"),
                    ConnAction::Blackhole => blackhole(&shared, id, &conn, "after"),
                }
            }
        }
        if *conn.state.borrow() == State::Closed {
            return;
        }
    }
}
