//! The rules `missive conform` checks, and the [`Checker`] that follows a run's events (both
//! directions of every connection through the proxy, and what the peer received) and records
//! each rule's checks and violations.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use missive_protocol::frame::{HEADER_LEN, TRAILER_LEN};
use missive_protocol::{pb, token, Command, Flags, Frame, Packet, DEFAULT_MAX_FRAME_LEN};

use crate::proxy::rules::Dir;
use crate::proxy::{Event, Fate, Side, What};

/// A rule: its id, the PROTOCOL.md sections it comes from, what it says.
pub struct Rule {
    pub id: &'static str,
    pub section: &'static str,
    pub title: &'static str,
}

pub const RULES: &[Rule] = &[
    Rule { id: "login-first", section: "10.1, 11", title: "LOGIN is the first frame of a connection; nothing else before LOGIN_ACK" },
    Rule { id: "heartbeat", section: "11, 11.3", title: "an idle client sends a frame at least every H, and HEARTBEATs no closer than H/2" },
    Rule { id: "dead-link", section: "11, 11.3", title: "a connection that delivers nothing (no FIN) is given up within 2·H" },
    Rule { id: "crc", section: "5, 7", title: "a frame with a bad CRC is not applied and its connection is closed" },
    Rule { id: "acks", section: "12.2, 13", title: "PUSH_ACKs are cumulative: never lower than an earlier one, never above the version held" },
    Rule { id: "acks-in-time", section: "13", title: "every push is acknowledged within ack_timeout (5 s)" },
    Rule { id: "gap-sync", section: "12.2, 12.4", title: "a gap is filled by SYNC from the version held, and SYNC is sent only when something is missing" },
    Rule { id: "resume", section: "12.4, 21", title: "LOGIN resumes from the version held: last_version at least what was acknowledged" },
    Rule { id: "resend", section: "14, 21", title: "a SEND with an unknown outcome is sent again with the same client_msg_id" },
    Rule { id: "exactly-once", section: "12, 14", title: "no message lost or stored twice, either way" },
    Rule { id: "backoff", section: "21", title: "reconnects wait min(60 s, 2^attempt s) at most, with full jitter, resetting only after 60 s logged in" },
    Rule { id: "redirect", section: "18, 21", title: "KICK REDIRECT is obeyed: the new address, no sooner than reconnect_after_ms" },
];

/// A frame's command, request id and body; None if it is not an intact, decodable frame.
pub fn decode(raw: &[u8]) -> Option<(Command, u32, Packet)> {
    if raw.len() < HEADER_LEN + TRAILER_LEN {
        return None;
    }
    let frame = Frame {
        flags: Flags(raw[7]),
        command: u16::from_be_bytes([raw[8], raw[9]]),
        request_id: u32::from_be_bytes([raw[10], raw[11], raw[12], raw[13]]),
        body: bytes::Bytes::copy_from_slice(&raw[HEADER_LEN..raw.len() - TRAILER_LEN]),
    };
    if frame.to_bytes()[..] != raw[..] {
        return None; // bad CRC (or not a frame)
    }
    let command = frame.command().ok()?;
    let packet = frame.packet(DEFAULT_MAX_FRAME_LEN).ok()?;
    Some((command, frame.request_id, packet))
}

#[derive(Debug, Default)]
struct ConnInfo {
    /// The proxy's address as the client reached it.
    local: Option<std::net::SocketAddr>,
    login_sent: bool,
    logged_in_at: Option<Duration>,
    h: Option<Duration>,
    current_version: u64,
    sync_has_more: bool,
    last_up: Option<Duration>,
    last_heartbeat: Option<Duration>,
    silent_reported: bool,
    blackholed_at: Option<Duration>,
    corrupted_at: Option<Duration>,
    crc_reported: bool,
    closed: Option<(Duration, Side)>,
    kick: Option<pb::Kick>,
}

#[derive(Debug)]
struct SendRec {
    to: String,
    content: Vec<u8>,
    acked: bool,
    refused: bool,
    /// The connection it was last sent on closed before its reply came.
    unknown: bool,
    resent: bool,
}

#[derive(Debug, Default)]
struct Outcome {
    checks: u32,
    violations: Vec<String>,
}

/// Follows a run.
pub struct Checker {
    secret: Vec<u8>,
    pub peer: String,
    pub user: Option<String>,
    pub device: Option<String>,
    base: Duration,
    reset_after: Duration,
    conns: HashMap<u32, ConnInfo>,
    /// The connection logged in most recently.
    pub current: Option<u32>,
    based: bool,
    /// The first LOGIN_ACK's current_version while the client has not shown whether it SYNCs
    /// the inbox before it or starts from it (a fresh install, PROTOCOL.md 24.1).
    fresh_start: Option<u64>,
    /// Versions delivered to the client: all up to `held`, and `above`.
    pub held: u64,
    above: BTreeSet<u64>,
    pub acked: u64,
    gap_since: Option<Duration>,
    /// A gap was seen since the last SYNC (the client may not have seen it filled yet).
    gap_seen: bool,
    unacked: Vec<(u32, u64, Duration)>,
    sends: HashMap<String, SendRec>,
    send_order: Vec<String>,
    send_by_req: HashMap<(u32, u32), String>,
    /// Reconnect attempts since a connection stayed logged in for `reset_after`. A connection
    /// that lived within a second or two of it may count either way (the client's clock
    /// started at its own LOGIN_ACK): `attempt` counts it as a reset, `attempt_hi` does not.
    attempt: u32,
    attempt_hi: u32,
    last_close: Option<(u32, Duration)>,
    backoff_samples: Vec<(u32, Duration, Duration)>,
    expect_redirect: Option<(usize, Duration, u32)>,
    /// Entries from the peer that reached the client: content -> version.
    pub from_peer: HashMap<Vec<u8>, u64>,
    /// What the peer received from the user: content -> msg ids.
    peer_got: HashMap<Vec<u8>, BTreeSet<u64>>,
    outcomes: HashMap<&'static str, Outcome>,
    pub logins: u32,
}

impl Checker {
    /// `base` and `reset_after`: the client's backoff numbers (PROTOCOL.md 21: 1 s, 60 s).
    pub fn new(secret: &[u8], peer: &str, base: Duration, reset_after: Duration) -> Checker {
        Checker {
            secret: secret.to_vec(),
            peer: peer.to_string(),
            user: None,
            device: None,
            base,
            reset_after,
            conns: HashMap::new(),
            current: None,
            based: false,
            fresh_start: None,
            held: 0,
            above: BTreeSet::new(),
            acked: 0,
            gap_since: None,
            gap_seen: false,
            unacked: Vec::new(),
            sends: HashMap::new(),
            send_order: Vec::new(),
            send_by_req: HashMap::new(),
            attempt: 0,
            attempt_hi: 0,
            last_close: None,
            backoff_samples: Vec::new(),
            expect_redirect: None,
            from_peer: HashMap::new(),
            peer_got: HashMap::new(),
            outcomes: HashMap::new(),
            logins: 0,
        }
    }

    fn check(&mut self, rule: &'static str) {
        self.outcomes.entry(rule).or_default().checks += 1;
    }

    /// Records a violation of `rule`.
    pub fn fail(&mut self, rule: &'static str, why: String) {
        let o = self.outcomes.entry(rule).or_default();
        o.checks += 1;
        if o.violations.len() < 20 && !o.violations.contains(&why) {
            o.violations.push(why);
        }
    }

    /// The rule's violations so far.
    #[cfg(test)]
    pub fn violations(&self, rule: &str) -> &[String] {
        self.outcomes
            .get(rule)
            .map_or(&[], |o| o.violations.as_slice())
    }

    /// The redirect conform is about to send: the next connection must arrive on `listener`,
    /// no sooner than `after_ms` after `t`.
    pub fn expect_redirect(&mut self, listener: usize, t: Duration, after_ms: u32) {
        self.expect_redirect = Some((listener, t, after_ms));
    }

    /// The connection logged in now, if any.
    pub fn logged_in(&self) -> Option<u32> {
        self.current.filter(|c| {
            self.conns
                .get(c)
                .is_some_and(|i| i.closed.is_none() && i.blackholed_at.is_none())
        })
    }

    /// The address the client used to reach the proxy on connection `id`.
    pub fn local_addr(&self, id: u32) -> Option<std::net::SocketAddr> {
        self.conns.get(&id)?.local
    }

    /// The heartbeat interval of the connection logged in now.
    pub fn h(&self) -> Option<Duration> {
        self.current.and_then(|c| self.conns.get(&c)?.h)
    }

    /// Sends to `to` whose reply reached the client: their contents.
    pub fn acked_sends_to(&self, to: &str) -> BTreeSet<Vec<u8>> {
        self.sends
            .values()
            .filter(|s| s.to == to && s.acked)
            .map(|s| s.content.clone())
            .collect()
    }

    /// What the peer received from the user, by content.
    pub fn peer_received(&mut self, m: &pb::Message) {
        self.peer_got
            .entry(m.content.clone())
            .or_default()
            .insert(m.msg_id);
    }

    pub fn peer_got(&self) -> usize {
        self.peer_got.len()
    }

    fn deliver(&mut self, v: u64, t: Duration) {
        if v <= self.held {
            return;
        }
        self.above.insert(v);
        while self.above.remove(&(self.held + 1)) {
            self.held += 1;
        }
        if self.above.is_empty() {
            self.gap_since = None;
        } else {
            self.gap_seen = true;
            if self.gap_since.is_none() {
                self.gap_since = Some(t);
            }
        }
    }

    fn tol(h: Duration) -> Duration {
        (h / 10).max(Duration::from_secs(1))
    }

    /// Time-based checks; call every 100 ms or so with the proxy's clock.
    pub fn tick(&mut self, now: Duration) {
        if let Some(since) = self.gap_since {
            if now.saturating_sub(since) > Duration::from_millis(2500) {
                let why = format!(
                    "versions up to {} were held with {:?} received above a gap, and no SYNC came within 2.5 s",
                    self.held,
                    self.above.iter().take(5).collect::<Vec<_>>()
                );
                self.fail("gap-sync", why);
                self.gap_since = None;
            }
        }
        let late: Vec<(u32, u64)> = self
            .unacked
            .iter()
            .filter(|(_, _, t)| now.saturating_sub(*t) > Duration::from_secs(5))
            .map(|(c, v, _)| (*c, *v))
            .collect();
        if !late.is_empty() {
            self.unacked
                .retain(|(_, _, t)| now.saturating_sub(*t) <= Duration::from_secs(5));
            for (c, v) in late {
                self.fail(
                    "acks-in-time",
                    format!(
                        "the push of version {v} on connection {c} was not acknowledged within 5 s"
                    ),
                );
            }
        }
        let mut silent = Vec::new();
        for (id, c) in &self.conns {
            if let (Some(h), Some(last), None, None) = (c.h, c.last_up, c.closed, c.corrupted_at) {
                let limit = h + Self::tol(h);
                if !c.silent_reported && now.saturating_sub(last) > limit {
                    silent.push((*id, h, now.saturating_sub(last)));
                }
            }
        }
        for (id, h, gap) in silent {
            self.silent(id, h, gap);
        }
    }

    /// Connection `id` stayed silent for `gap` with heartbeat interval `h`: one failure per
    /// connection.
    fn silent(&mut self, id: u32, h: Duration, gap: Duration) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.silent_reported = true;
        }
        self.fail(
            "heartbeat",
            format!(
                "connection {id} sent nothing for {:.1} s with H = {} s",
                gap.as_secs_f64(),
                h.as_secs()
            ),
        );
    }

    pub fn event(&mut self, e: &Event) {
        let t = e.t;
        match &e.what {
            What::Open {
                listener, local, ..
            } => {
                self.on_open(e.conn, *listener, t);
                if let Some(c) = self.conns.get_mut(&e.conn) {
                    c.local = Some(*local);
                }
            }
            What::Refused => {}
            What::Raw { dir, .. } => {
                if *dir == Dir::Up {
                    self.fail(
                        "login-first",
                        format!(
                            "connection {}: the client sent bytes that are not frames",
                            e.conn
                        ),
                    );
                }
            }
            What::Blackholed { .. } => {
                if let Some(c) = self.conns.get_mut(&e.conn) {
                    c.blackholed_at.get_or_insert(t);
                }
                self.unacked.retain(|(c, _, _)| *c != e.conn);
                if self.current == Some(e.conn) {
                    self.gap_since = None;
                }
            }
            What::Closed { by, .. } => self.on_close(e.conn, *by, t),
            What::Frame { dir, raw, fate } => {
                if *fate == Fate::Corrupted && *dir == Dir::Down {
                    if let Some(c) = self.conns.get_mut(&e.conn) {
                        c.corrupted_at.get_or_insert(t);
                    }
                    self.unacked.retain(|(c, _, _)| *c != e.conn);
                    return;
                }
                let Some((command, rid, packet)) = decode(raw) else {
                    return;
                };
                match dir {
                    Dir::Up => self.on_up(e.conn, t, command, rid, packet, *fate),
                    Dir::Down if fate.delivered() => {
                        let times = if *fate == Fate::Duplicated { 2 } else { 1 };
                        for _ in 0..times {
                            self.on_down(e.conn, t, rid, packet.clone());
                        }
                    }
                    Dir::Down => {}
                }
            }
        }
    }

    fn on_open(&mut self, id: u32, listener: usize, t: Duration) {
        self.conns.insert(id, ConnInfo::default());
        if let Some((listener_wanted, kicked, after_ms)) = self.expect_redirect.take() {
            if listener != listener_wanted {
                self.fail(
                    "redirect",
                    format!("after KICK REDIRECT the client connected to its old address (connection {id}), not to the one it was given"),
                );
            } else if t.saturating_sub(kicked) + Duration::from_millis(50)
                < Duration::from_millis(after_ms.into())
            {
                self.fail(
                    "redirect",
                    format!(
                        "reconnected {} ms after KICK REDIRECT, which said reconnect_after_ms {after_ms}",
                        t.saturating_sub(kicked).as_millis()
                    ),
                );
            } else {
                self.check("redirect");
            }
        }
        let Some((prev, closed_at)) = self.last_close.take() else {
            return;
        };
        let delay = t.saturating_sub(closed_at);
        let kick_after = self
            .conns
            .get(&prev)
            .and_then(|c| c.kick.as_ref())
            .map(|k| Duration::from_millis(k.reconnect_after_ms.into()));
        let cap_of =
            |attempt: u32| (self.base * (1u32 << attempt.min(16))).min(Duration::from_secs(60));
        let cap = cap_of(self.attempt);
        let bound = cap_of(self.attempt_hi).max(kick_after.unwrap_or_default());
        let limit = bound + bound / 20 + Duration::from_millis(300);
        if delay > limit {
            self.fail(
                "backoff",
                format!(
                    "reconnect attempt {} (connection {id}) came {:.2} s after the close; its cap is {} s",
                    self.attempt_hi,
                    delay.as_secs_f64(),
                    bound.as_secs_f64()
                ),
            );
        } else {
            self.check("backoff");
        }
        if kick_after.is_none() {
            self.backoff_samples.push((self.attempt, cap, delay));
        }
        self.attempt = self.attempt.saturating_add(1);
        self.attempt_hi = self.attempt_hi.saturating_add(1);
    }

    fn on_close(&mut self, id: u32, by: Side, t: Duration) {
        let reset_after = self.reset_after;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.closed.is_some() {
            return;
        }
        c.closed = Some((t, by));
        let lived = c.logged_in_at.map(|l| t.saturating_sub(l));
        let blackholed = c.blackholed_at;
        let corrupted = c.corrupted_at;
        let h = c.h;
        let margin = Duration::from_secs(2);
        if lived.is_some_and(|l| l + margin >= reset_after) {
            self.attempt = 0;
        }
        if lived.is_some_and(|l| l >= reset_after + margin) {
            self.attempt_hi = 0;
        }
        self.last_close = Some((id, t));
        self.unacked.retain(|(c, _, _)| *c != id);
        if self.current == Some(id) {
            self.gap_since = None;
            self.gap_seen = false;
        }
        for s in self.send_by_req.iter().filter(|((c, _), _)| *c == id) {
            if let Some(rec) = self.sends.get_mut(s.1) {
                if !rec.acked && !rec.refused {
                    rec.unknown = true;
                }
            }
        }
        self.send_by_req.retain(|(c, _), _| *c != id);
        if let (Some(b), Some(h)) = (blackholed, h) {
            if by == Side::Client {
                let took = t.saturating_sub(b);
                let limit = 2 * h + Self::tol(h);
                if took > limit {
                    self.fail(
                        "dead-link",
                        format!(
                            "connection {id} became a black hole and the client gave it up only {:.1} s later (2·H = {} s)",
                            took.as_secs_f64(),
                            2 * h.as_secs()
                        ),
                    );
                } else {
                    self.check("dead-link");
                }
            }
        }
        if let Some(at) = corrupted {
            if by == Side::Client && t.saturating_sub(at) <= Duration::from_secs(2) {
                self.check("crc");
            }
        }
    }

    fn on_up(
        &mut self,
        id: u32,
        t: Duration,
        command: Command,
        rid: u32,
        packet: Packet,
        fate: Fate,
    ) {
        let _ = fate;
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        // A frame from a client that should have closed the connection on a bad CRC.
        if let Some(at) = c.corrupted_at {
            if t.saturating_sub(at) > Duration::from_secs(2) && !c.crc_reported {
                c.crc_reported = true;
                self.fail(
                    "crc",
                    format!("connection {id} got a frame with a bad CRC and was still used {:.1} s later", t.saturating_sub(at).as_secs_f64()),
                );
                return;
            }
        }
        let c = self.conns.get_mut(&id).unwrap();
        let prev_up = c.last_up.replace(t);
        if let (Some(h), Some(prev)) = (c.h, prev_up) {
            let gap = t.saturating_sub(prev);
            if gap > h + Self::tol(h) && !c.silent_reported {
                self.silent(id, h, gap);
            }
        }
        self.on_up_rest(id, t, command, rid, packet)
    }

    fn on_up_rest(&mut self, id: u32, t: Duration, command: Command, rid: u32, packet: Packet) {
        let (login_sent, logged_in) = {
            let c = &self.conns[&id];
            (c.login_sent, c.logged_in_at.is_some())
        };
        if !login_sent {
            if command != Command::Login {
                self.fail(
                    "login-first",
                    format!(
                        "connection {id} began with {} instead of LOGIN",
                        command.name()
                    ),
                );
                return;
            }
        } else if !logged_in && command != Command::Login {
            self.fail(
                "login-first",
                format!("connection {id}: {} sent before LOGIN_ACK", command.name()),
            );
        }
        match packet {
            Packet::Login(login) => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.login_sent = true;
                }
                self.check("login-first");
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                if let Ok(claims) = token::verify(&self.secret, &login.token, now) {
                    self.user.get_or_insert(claims.user_id);
                    self.device.get_or_insert(claims.device_id);
                }
                let lv = login.last_version;
                if !self.based {
                    self.based = true;
                    self.held = lv;
                    self.acked = lv;
                } else if self.between_ack_and_held("resume", lv, || {
                    format!("LOGIN on connection {id} with last_version {lv}")
                }) {
                    self.check("resume");
                }
            }
            Packet::Heartbeat(_) => {
                let c = self.conns.get_mut(&id).unwrap();
                let prev = c.last_heartbeat.replace(t);
                match (prev, c.h) {
                    (Some(prev), Some(h)) if t.saturating_sub(prev) < h / 2 => {
                        self.fail(
                            "heartbeat",
                            format!(
                                "HEARTBEATs {:.1} s apart on connection {id} with H = {} s",
                                t.saturating_sub(prev).as_secs_f64(),
                                h.as_secs()
                            ),
                        );
                    }
                    _ => self.check("heartbeat"),
                }
            }
            Packet::PushAck(a) => {
                let v = a.version;
                if let Some(cv) = self.fresh_start {
                    if v >= cv {
                        // Started from the inbox's current version without SYNCing what came
                        // before (a fresh install, PROTOCOL.md 24.1).
                        self.fresh_start = None;
                        self.deliver_through(cv, t);
                    }
                }
                if self.between_ack_and_held("acks", v, || format!("PUSH_ACK {v}")) {
                    self.check("acks");
                }
                self.acked = self.acked.max(v);
                let before = self.unacked.len();
                self.unacked.retain(|(_, pv, _)| *pv > v);
                for _ in self.unacked.len()..before {
                    self.check("acks-in-time");
                }
            }
            Packet::Sync(s) => {
                self.fresh_start = None;
                let since = s.since_version;
                let c = &self.conns[&id];
                let current = c.current_version;
                // A gap the proxy saw may be filled by the time the SYNC it caused gets here.
                let missing = current > since
                    || c.sync_has_more
                    || self.gap_seen
                    || self.above.last().is_some_and(|&v| v > since);
                if self.between_ack_and_held("gap-sync", since, || format!("SYNC from {since}")) {
                    if missing {
                        self.check("gap-sync");
                    } else {
                        self.fail(
                            "gap-sync",
                            format!("SYNC from {since} on connection {id} with nothing missing (no gap, LOGIN_ACK's current_version {current})"),
                        );
                    }
                }
                self.gap_since = None;
                self.gap_seen = false;
                if let Some(c) = self.conns.get_mut(&id) {
                    c.sync_has_more = false;
                }
            }
            Packet::Send(s) => {
                let to = s.to.as_ref().map(|c| c.id.clone()).unwrap_or_default();
                let cmi = s.client_msg_id.clone();
                if let Some(rec) = self.sends.get_mut(&cmi) {
                    if rec.unknown {
                        rec.resent = true;
                        rec.unknown = false;
                    }
                } else {
                    let earlier = self.send_order.iter().find(|k| {
                        self.sends.get(*k).is_some_and(|r| {
                            r.to == to
                                && r.content == s.content
                                && (r.unknown || (r.resent && !r.acked))
                        })
                    });
                    if let Some(first) = earlier {
                        self.fail(
                            "resend",
                            format!(
                                "'{}' was sent again under a new client_msg_id {cmi} after its first SEND ({first}) had an unknown outcome",
                                String::from_utf8_lossy(&s.content)
                            ),
                        );
                    }
                    self.sends.insert(
                        cmi.clone(),
                        SendRec {
                            to,
                            content: s.content.clone(),
                            acked: false,
                            refused: false,
                            unknown: false,
                            resent: false,
                        },
                    );
                    self.send_order.push(cmi.clone());
                }
                self.send_by_req.insert((id, rid), cmi);
            }
            _ => {}
        }
    }

    /// Whether `v` (what `what` says) lies between the last ack and the version held; records
    /// a violation of `rule` if not.
    fn between_ack_and_held(
        &mut self,
        rule: &'static str,
        v: u64,
        what: impl FnOnce() -> String,
    ) -> bool {
        let why = if v < self.acked {
            format!(
                "{}: below {}, which the client already acknowledged",
                what(),
                self.acked
            )
        } else if v > self.held {
            format!(
                "{}: above {}, the highest version it received with nothing missing below",
                what(),
                self.held
            )
        } else {
            return true;
        };
        self.fail(rule, why);
        false
    }

    fn deliver_through(&mut self, v: u64, t: Duration) {
        if v > self.held {
            for x in self.held + 1..=v {
                self.above.insert(x);
            }
            self.deliver(v, t);
        }
    }

    fn on_down(&mut self, id: u32, t: Duration, rid: u32, packet: Packet) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        match packet {
            Packet::LoginAck(a) => {
                c.logged_in_at = Some(t);
                c.h = Some(Duration::from_secs(a.heartbeat_interval_secs.max(1).into()));
                c.current_version = a.current_version;
                self.current = Some(id);
                self.logins += 1;
                if self.logins == 1 && a.current_version > self.held {
                    self.fresh_start = Some(a.current_version);
                }
            }
            Packet::HeartbeatAck(a) if a.interval_secs > 0 => {
                c.h = Some(Duration::from_secs(a.interval_secs.into()));
            }
            Packet::Push(p) => {
                if let Some(entry) = &p.entry {
                    self.note_entry(entry);
                }
                if p.version > self.held {
                    self.unacked.push((id, p.version, t));
                }
                self.deliver(p.version, t);
            }
            Packet::SyncAck(a) => {
                c.sync_has_more = a.has_more;
                for e in &a.entries {
                    self.note_entry(e);
                    self.deliver(e.version, t);
                }
            }
            Packet::SendAck(a) => {
                if let Some(cmi) = self.send_by_req.remove(&(id, rid)) {
                    if let Some(rec) = self.sends.get_mut(&cmi) {
                        rec.acked = true;
                        rec.unknown = false;
                    }
                }
                self.deliver(a.version, t);
            }
            Packet::MarkReadAck(a) => self.deliver(a.version, t),
            Packet::RecallAck(a) => self.deliver(a.version, t),
            Packet::DeleteAck(a) => self.deliver(a.version, t),
            Packet::Error(_) => {
                if let Some(cmi) = self.send_by_req.remove(&(id, rid)) {
                    if let Some(rec) = self.sends.get_mut(&cmi) {
                        rec.refused = true;
                        rec.unknown = false;
                    }
                }
            }
            Packet::Kick(k) => c.kick = Some(k),
            _ => {}
        }
    }

    fn note_entry(&mut self, e: &pb::InboxEntry) {
        if let Some(pb::inbox_entry::Body::Message(m)) = &e.body {
            if m.from_user == self.peer {
                self.from_peer.insert(m.content.clone(), e.version);
            }
        }
    }

    /// The end of the run: the checks that need all of it. `peer_sent`: what the peer sent.
    pub fn finish(&mut self, peer_sent: &[Vec<u8>]) {
        // Backoff: grows, and is jittered.
        let grown: Vec<&(u32, Duration, Duration)> = self
            .backoff_samples
            .iter()
            .filter(|(_, cap, _)| *cap >= self.base * 4)
            .collect();
        // Under full jitter each of these waits is below 1.2 x base with a chance of at most
        // 1.2/4, 1.2/8, ...: all of them, about one in 400,000 for five.
        if grown.len() >= 3 && grown.iter().all(|(_, _, d)| *d < self.base * 6 / 5) {
            let waits: Vec<String> = grown
                .iter()
                .map(|(a, _, d)| format!("attempt {a}: {:.2} s", d.as_secs_f64()))
                .collect();
            self.fail(
                "backoff",
                format!("the waits do not grow: {} (is the attempt count reset at LOGIN_ACK rather than after a connection stayed up 60 s?)", waits.join(", ")),
            );
        }
        let ratios: Vec<f64> = self
            .backoff_samples
            .iter()
            .filter(|(_, cap, _)| *cap >= self.base * 2)
            .map(|(_, cap, d)| d.as_secs_f64() / cap.as_secs_f64())
            .collect();
        if ratios.len() >= 3 {
            let lo = ratios.iter().cloned().fold(f64::MAX, f64::min);
            let hi = ratios.iter().cloned().fold(f64::MIN, f64::max);
            if hi - lo < 0.05 {
                self.fail(
                    "backoff",
                    format!("no jitter: every wait was {:.0}% of its cap", lo * 100.0),
                );
            }
        }
        // Sends: every one answered, none stored twice.
        for cmi in self.send_order.clone() {
            let rec = &self.sends[&cmi];
            if !rec.acked && !rec.refused {
                let why = format!(
                    "SEND '{}' ({cmi}) never got its SEND_ACK",
                    String::from_utf8_lossy(&rec.content)
                );
                self.fail("exactly-once", why);
            } else {
                self.check("exactly-once");
            }
            if self.sends[&cmi].resent {
                self.check("resend");
            }
        }
        let twice: Vec<String> = self
            .peer_got
            .iter()
            .filter(|(_, ids)| ids.len() > 1)
            .map(|(c, ids)| {
                format!(
                    "'{}' reached {} as {} messages (msg ids {:?})",
                    String::from_utf8_lossy(c),
                    self.peer,
                    ids.len(),
                    ids
                )
            })
            .collect();
        for why in twice {
            self.fail("exactly-once", why);
        }
        for content in peer_sent {
            match self.from_peer.get(content) {
                None => self.fail(
                    "exactly-once",
                    format!("'{}' from {} never reached the client", String::from_utf8_lossy(content), self.peer),
                ),
                Some(&v) if v > self.acked => self.fail(
                    "exactly-once",
                    format!("'{}' (version {v}) reached the client but was never acknowledged (last ack {})", String::from_utf8_lossy(content), self.acked),
                ),
                Some(_) => self.check("exactly-once"),
            }
        }
    }

    /// Each rule: checks made, violations.
    pub fn results(&self) -> Vec<(&'static Rule, u32, Vec<String>)> {
        RULES
            .iter()
            .map(|r| {
                let o = self.outcomes.get(r.id);
                (
                    r,
                    o.map_or(0, |o| o.checks),
                    o.map_or_else(Vec::new, |o| o.violations.clone()),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"secret";

    /// Builds a run's events by hand.
    struct Script {
        c: Checker,
        t: Duration,
        conn: u32,
        rid: u32,
    }

    impl Script {
        fn new() -> Script {
            Script {
                c: Checker::new(
                    SECRET,
                    "peer",
                    Duration::from_secs(1),
                    Duration::from_secs(60),
                ),
                t: Duration::ZERO,
                conn: 0,
                rid: 0,
            }
        }

        fn at(&mut self, secs: f64) -> &mut Script {
            self.t = Duration::from_secs_f64(secs);
            self.c.tick(self.t);
            self
        }

        fn ev(&mut self, what: What) -> &mut Script {
            let e = Event {
                t: self.t,
                conn: self.conn,
                what,
            };
            self.c.event(&e);
            self
        }

        fn frame(&mut self, dir: Dir, p: Packet, fate: Fate) -> &mut Script {
            self.rid += 1;
            let rid = if matches!(p, Packet::Push(_)) {
                0
            } else {
                self.rid
            };
            let raw = Frame::new(&p, rid).to_bytes();
            self.ev(What::Frame { dir, raw, fate })
        }

        fn up(&mut self, p: Packet) -> &mut Script {
            self.frame(Dir::Up, p, Fate::Forwarded)
        }

        fn down(&mut self, p: Packet) -> &mut Script {
            self.frame(Dir::Down, p, Fate::Forwarded)
        }

        /// A new connection, logged in with `last_version`, the server at `current`.
        fn login(&mut self, last_version: u64, current: u64) -> &mut Script {
            self.conn += 1;
            let peer = "127.0.0.1:1".parse().unwrap();
            self.ev(What::Open {
                listener: 0,
                peer,
                local: peer,
            });
            let tok = token::mint(SECRET, "alice", "phone", u64::MAX / 2);
            self.up(Packet::Login(pb::Login {
                token: tok,
                device_id: "phone".into(),
                last_version,
                ..Default::default()
            }));
            self.down(Packet::LoginAck(pb::LoginAck {
                heartbeat_interval_secs: 10,
                current_version: current,
                ..Default::default()
            }))
        }

        fn close(&mut self, by: Side) -> &mut Script {
            self.ev(What::Closed {
                by,
                why: String::new(),
            })
        }

        fn push(&mut self, v: u64) -> &mut Script {
            self.down(Packet::Push(pb::Push {
                version: v,
                prev_version: v - 1,
                entry: Some(pb::InboxEntry {
                    version: v,
                    ..Default::default()
                }),
            }))
        }

        fn ack(&mut self, v: u64) -> &mut Script {
            self.up(Packet::PushAck(pb::PushAck { version: v }))
        }

        fn sync(&mut self, since: u64) -> &mut Script {
            self.up(Packet::Sync(pb::Sync {
                since_version: since,
                limit: 0,
            }))
        }

        fn fails(&self, rule: &str) -> bool {
            !self.c.violations(rule).is_empty()
        }
    }

    #[test]
    fn a_sync_is_needed_for_a_gap_and_only_then() {
        let mut s = Script::new();
        s.login(0, 0).push(1).ack(1).push(3);
        s.at(1.0).sync(1);
        assert!(!s.fails("gap-sync"));
        s.down(Packet::SyncAck(pb::SyncAck {
            entries: (2..=3)
                .map(|v| pb::InboxEntry {
                    version: v,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }));
        s.ack(3);
        assert_eq!((s.c.held, s.c.acked), (3, 3));
        s.at(2.0).sync(3);
        assert!(s.fails("gap-sync"), "a SYNC with nothing missing");

        // A gap left alone.
        let mut s = Script::new();
        s.login(0, 0).push(1).ack(1).push(3);
        s.at(3.0);
        assert!(s.fails("gap-sync"));
    }

    #[test]
    fn acks_must_not_go_down_nor_run_ahead() {
        let mut s = Script::new();
        s.login(0, 0).push(1).push(2).ack(2).ack(1);
        assert!(s.fails("acks"));
        let mut s = Script::new();
        s.login(0, 0).push(1).push(3).ack(3);
        assert!(s.fails("acks"));
        // And a push nobody acknowledges.
        let mut s = Script::new();
        s.login(0, 0).push(1);
        s.at(6.0);
        assert!(s.fails("acks-in-time"));
    }

    #[test]
    fn a_login_must_resume_from_what_was_acknowledged() {
        let mut s = Script::new();
        s.login(0, 0).push(1).push(2).ack(2).close(Side::Server);
        s.at(0.5).login(2, 2);
        assert!(!s.fails("resume"));
        s.close(Side::Server).at(1.5).login(0, 2);
        assert!(s.fails("resume"), "last_version 0 after acking 2");
    }

    #[test]
    fn heartbeats_neither_too_rare_nor_too_often() {
        let mut s = Script::new();
        s.login(0, 0);
        s.at(9.0).up(Packet::Heartbeat(pb::Heartbeat::default()));
        s.at(12.0).up(Packet::Heartbeat(pb::Heartbeat::default()));
        assert!(s.fails("heartbeat"), "3 s apart with H = 10 s");
        let mut s = Script::new();
        s.login(0, 0);
        s.at(12.0);
        assert!(s.fails("heartbeat"), "silent for 12 s with H = 10 s");
    }

    #[test]
    fn backoff_needs_bounds_growth_and_jitter() {
        // Waits of exactly the cap: in bounds, but no jitter.
        let mut s = Script::new();
        s.login(0, 0);
        let mut t = 0.0;
        for k in 0..5 {
            s.close(Side::Proxy);
            t += f64::from(1u32 << k);
            s.at(t).login(0, 0);
        }
        s.c.finish(&[]);
        assert_eq!(
            s.c.violations("backoff").len(),
            1,
            "{:?}",
            s.c.violations("backoff")
        );
        assert!(s.c.violations("backoff")[0].contains("no jitter"));
        // Waits that start again at every login.
        let mut s = Script::new();
        s.login(0, 0);
        let mut t = 0.0;
        for k in 0..5 {
            s.close(Side::Proxy);
            t += 0.1 + 0.15 * f64::from(k);
            s.at(t).login(0, 0);
        }
        s.c.finish(&[]);
        assert!(s.c.violations("backoff")[0].contains("do not grow"));
        // One wait far over its cap.
        let mut s = Script::new();
        s.login(0, 0).close(Side::Proxy);
        s.at(3.0).login(0, 0);
        assert!(s.fails("backoff"));
    }

    #[test]
    fn a_corrupted_frame_must_end_the_connection_and_a_dead_one_too() {
        let mut s = Script::new();
        s.login(0, 0);
        let raw = Frame::new(&Packet::Push(pb::Push::default()), 0).to_bytes();
        s.ev(What::Frame {
            dir: Dir::Down,
            raw,
            fate: Fate::Corrupted,
        });
        s.at(3.0).up(Packet::Heartbeat(pb::Heartbeat::default()));
        assert!(s.fails("crc"));

        let mut s = Script::new();
        s.login(0, 0).ev(What::Blackholed { why: String::new() });
        s.at(9.0).up(Packet::Heartbeat(pb::Heartbeat::default()));
        s.at(25.0).close(Side::Client);
        assert!(s.fails("dead-link"), "given up after 25 s with H = 10 s");
    }
}
