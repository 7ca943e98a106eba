//! `mqtt chat`: the `chat` workload against an MQTT broker. U users, each a connection
//! subscribed with QoS 1 to its own topic (`<prefix>/u/<i>`), publish QoS 1 messages to other
//! users' topics at an open-loop aggregate rate: message k is due at `start + k / rate`, its
//! sender and recipient are those `chat` picks for message k, and its latency runs from that
//! scheduled time to its arrival at the recipient. "Acked" is the sender's PUBACK. Every acked
//! message must arrive exactly once, at the right user: the payload carries its number, its
//! scheduled time, its sender and its recipient.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::{stream, StreamExt};
use rumqttc::Publish;

use super::common::{cpu_use, header, payload, Broker, Env, Header, HEADER};
use super::conn::{self, Conn, Handler};
use crate::chat::pair;
use crate::common::cpu_secs;
use crate::stats::{progress, Latency, Report};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub broker: Broker,
    /// Online users (one connection each); every message goes from one to another at random.
    #[arg(short = 'u', long, default_value_t = 200)]
    pub users: usize,
    /// Aggregate messages per second (open loop).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Seconds to wait after the last scheduled send for acks and deliveries in flight.
    #[arg(long, default_value_t = 15)]
    pub grace: u64,
    /// Payload bytes per message (at least 49: number, scheduled time, sender and recipient
    /// in hex, then words).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// The broker's pid, to report its CPU use during the sending window.
    #[arg(long)]
    pub server_pid: Option<String>,
}

/// The pacing thread's shortest sleep (as in `chat`).
const PACE: Duration = Duration::from_micros(200);

/// Per-message flags.
const ACKED: u8 = 1;
const FAILED: u8 = 2;

struct Shared {
    start: Instant,
    rate: f64,
    users: usize,
    /// Per message: ACKED / FAILED.
    state: Vec<AtomicU8>,
    /// Per message: how many times its recipient received it.
    seen: Vec<AtomicU8>,
    sent: AtomicU64,
    acked: AtomicU64,
    send_errors: AtomicU64,
    delivered: AtomicU64,
    duplicated: AtomicU64,
    misrouted: AtomicU64,
    foreign: AtomicU64,
    disconnects: AtomicU64,
    last_delivery_us: AtomicU64,
    last_ack_us: AtomicU64,
    errors: Mutex<Vec<String>>,
    delivery: Latency,
    ack: Latency,
}

impl Shared {
    fn due(&self, k: u64) -> Duration {
        Duration::from_secs_f64(k as f64 / self.rate)
    }
    fn error(&self, what: String) {
        let mut errors = self.errors.lock().expect("errors lock");
        if errors.len() < 5 {
            errors.push(what);
        }
    }
}

impl Handler for Shared {
    fn acked(&self, _conn: usize, k: u64) {
        let Some(state) = self.state.get(k as usize) else {
            return;
        };
        let now = self.start.elapsed();
        self.ack.record(now.saturating_sub(self.due(k)));
        state.store(ACKED, Relaxed);
        self.acked.fetch_add(1, Relaxed);
        self.last_ack_us.fetch_max(now.as_micros() as u64, Relaxed);
    }

    fn received(&self, me: usize, p: &Publish) {
        let Some(h) = header(&p.payload) else {
            self.foreign.fetch_add(1, Relaxed);
            return;
        };
        let Some(seen) = self.seen.get(h.k as usize) else {
            self.foreign.fetch_add(1, Relaxed);
            return;
        };
        let (from, to) = pair(h.k, self.users);
        if h.to as usize != me || to != me || h.from as usize != from {
            self.misrouted.fetch_add(1, Relaxed);
            self.error(format!(
                "message #{} from {} for {} arrived at user {me} (on {})",
                h.k, h.from, h.to, p.topic
            ));
            return;
        }
        let now = self.start.elapsed();
        if seen.fetch_add(1, Relaxed) == 0 {
            self.delivery.record(now.saturating_sub(h.due));
            self.delivered.fetch_add(1, Relaxed);
            self.last_delivery_us
                .fetch_max(now.as_micros() as u64, Relaxed);
        } else {
            self.duplicated.fetch_add(1, Relaxed);
            self.error(format!("message #{} delivered again to user {me}", h.k));
        }
    }

    fn lost(&self, conn: usize, error: String) {
        self.disconnects.fetch_add(1, Relaxed);
        self.error(format!("user {conn} disconnected: {error}"));
    }
}

pub async fn run(args: &Args) -> Result<Report> {
    if args.users < 2 {
        bail!("--users must be at least 2");
    }
    // A connection's queue holds what it has not written yet: room for the whole run's share
    // of a user, so that a slow broker shows as latency, not as refused sends.
    let total = (args.rate * args.duration as f64).round() as u64;
    let per_user = (total as usize / args.users).saturating_mul(4).max(1024);
    let env = Env::new(&args.broker, per_user)?;
    eprintln!(
        "missive-load: mqtt clients {}-*, broker {}",
        env.prefix, env.settings.addr
    );
    let size = args.size.max(HEADER);
    let topics: Vec<String> = (0..args.users)
        .map(|i| env.topic(&format!("u/{i}")))
        .collect();
    eprintln!(
        "missive-load: connecting and subscribing {} users",
        args.users
    );
    let setup = Instant::now();
    let opened: Vec<Result<conn::Opened>> = stream::iter(0..args.users)
        .map(|i| {
            let (env, topics) = (&env, &topics);
            async move {
                conn::open(
                    &env.settings,
                    &env.client_id("u", i),
                    true,
                    Some(&topics[i]),
                )
                .await
            }
        })
        .buffered(64)
        .collect()
        .await;
    let login_secs = setup.elapsed().as_secs_f64();
    let shared = Arc::new(Shared {
        start: Instant::now(),
        rate: args.rate,
        users: args.users,
        state: (0..total).map(|_| AtomicU8::new(0)).collect(),
        seen: (0..total).map(|_| AtomicU8::new(0)).collect(),
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        send_errors: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        duplicated: AtomicU64::new(0),
        misrouted: AtomicU64::new(0),
        foreign: AtomicU64::new(0),
        disconnects: AtomicU64::new(0),
        last_delivery_us: AtomicU64::new(0),
        last_ack_us: AtomicU64::new(0),
        errors: Mutex::new(Vec::new()),
        delivery: Latency::default(),
        ack: Latency::default(),
    });
    let mut online: Vec<Conn> = Vec::with_capacity(args.users);
    let mut drivers = Vec::with_capacity(args.users);
    for (i, o) in opened.into_iter().enumerate() {
        let o = o?;
        drivers.push(conn::drive(i, &o.conn, o.events, shared.clone()));
        online.push(o.conn);
    }
    let s = shared.clone();
    let ticker = progress("mqtt-chat", move || {
        let (sent, acked, errs) = (
            s.sent.load(Relaxed),
            s.acked.load(Relaxed),
            s.send_errors.load(Relaxed),
        );
        format!(
            "sent {sent} acked {acked} delivered {} in flight {} errors {errs} dup {} disconnects {}",
            s.delivered.load(Relaxed),
            sent.saturating_sub(acked + errs),
            s.duplicated.load(Relaxed),
            s.disconnects.load(Relaxed),
        )
    });

    // Open loop, paced on a thread of its own as in `chat` (a runtime timer's millisecond
    // ticks would make messages late before they are sent). Handing a message to a
    // connection does not wait: its event loop writes it and reports the PUBACK.
    let pid = args.server_pid.as_deref();
    let cpu_before = (cpu_secs("self"), pid.and_then(cpu_secs));
    let start = shared.start;
    let (users, pace) = (args.users, shared.clone());
    let pacer = tokio::task::spawn_blocking(move || {
        let shared = pace;
        let mut k = 0u64;
        while k < total {
            let now = start.elapsed();
            while k < total && shared.due(k) <= now {
                let (from, to) = pair(k, users);
                let h = Header {
                    k,
                    due: shared.due(k),
                    from: from as u32,
                    to: to as u32,
                };
                shared.sent.fetch_add(1, Relaxed);
                if let Err(e) = online[from].publish(k, topics[to].clone(), payload(h, size)) {
                    shared.state[k as usize].store(FAILED, Relaxed);
                    shared.send_errors.fetch_add(1, Relaxed);
                    shared.error(format!("{e:#}"));
                }
                k += 1;
            }
            if k < total {
                let wait = shared.due(k).saturating_sub(start.elapsed());
                std::thread::sleep(wait.max(PACE));
            }
        }
        online
    });
    let online = pacer.await?;
    let send_window = start.elapsed();
    let cpu = (
        cpu_use(cpu_before.0, cpu_secs("self"), send_window),
        cpu_use(cpu_before.1, pid.and_then(cpu_secs), send_window),
    );
    // Grace: wait for the acks and deliveries still in flight.
    let deadline = Instant::now() + Duration::from_secs(args.grace);
    let s = &shared;
    while Instant::now() < deadline {
        let settled = s.acked.load(Relaxed) + s.send_errors.load(Relaxed) == total;
        if settled && s.delivered.load(Relaxed) >= s.acked.load(Relaxed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A last moment for a duplicate that would arrive right behind the original.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ticker.abort();
    let mut r = report(s, args, total, send_window, login_secs, size);
    if let Some(harness) = cpu.0 {
        r.add_f("harness CPU while sending", harness, 0, "% of one core");
    }
    if let Some(server) = cpu.1 {
        r.add_f("server CPU while sending", server, 0, "% of one core");
    }
    for c in &online {
        c.close().await;
    }
    for d in drivers {
        let _ = tokio::time::timeout(Duration::from_secs(2), d).await;
    }
    Ok(r)
}

/// The summary, under the keys of `chat`'s (those that have a meaning for MQTT).
fn report(
    s: &Shared,
    args: &Args,
    total: u64,
    window: Duration,
    login_secs: f64,
    size: usize,
) -> Report {
    let (mut lost, mut unacked_delivered, mut pending) = (0u64, 0u64, 0u64);
    let mut lost_samples = Vec::new();
    for k in 0..total as usize {
        let state = s.state[k].load(Relaxed);
        let seen = s.seen[k].load(Relaxed);
        if state == ACKED && seen == 0 {
            lost += 1;
            if lost_samples.len() < 5 {
                let (from, to) = pair(k as u64, args.users);
                lost_samples.push(format!("#{k} (u-{from} -> u-{to})"));
            }
        }
        if state != ACKED && seen > 0 {
            unacked_delivered += 1;
        }
        if state == 0 {
            pending += 1;
        }
    }
    let mut r = Report::new("mqtt-chat");
    r.add("broker", format!("mqtt {}", args.broker.addr), "");
    r.add("users", args.users as u64, "");
    r.add_f("login of all users", login_secs, 2, "s");
    r.add_f("offered rate", args.rate, 1, "msg/s");
    r.add("duration", args.duration, "s");
    r.add("content size", size as u64, "bytes");
    r.add("sent", s.sent.load(Relaxed), "");
    r.add("acked", s.acked.load(Relaxed), "");
    r.add("send errors", s.send_errors.load(Relaxed), "");
    r.add("unanswered at end", pending, "");
    r.add("delivered", s.delivered.load(Relaxed), "");
    r.add("lost (acked, never delivered)", lost, "");
    r.add("duplicated deliveries", s.duplicated.load(Relaxed), "");
    r.add("delivered but not acked", unacked_delivered, "");
    r.add("misrouted", s.misrouted.load(Relaxed), "");
    r.add("unrecognised messages", s.foreign.load(Relaxed), "");
    r.add("client disconnects", s.disconnects.load(Relaxed), "");
    let secs = window.as_secs_f64().max(1e-9);
    // Over the sending window, or up to the last ack when acks trailed behind it.
    let last_ack = (s.last_ack_us.load(Relaxed) as f64 / 1e6).max(secs);
    r.add_f(
        "ack throughput",
        s.acked.load(Relaxed) as f64 / last_ack,
        1,
        "msg/s",
    );
    r.add_f("last ack after start", last_ack, 2, "s");
    let last = s.last_delivery_us.load(Relaxed) as f64 / 1e6;
    r.add_f("last delivery after start", last, 2, "s");
    r.add_f(
        "delivery throughput",
        s.delivered.load(Relaxed) as f64 / last.max(secs),
        1,
        "msg/s",
    );
    r.latency("ack latency", &s.ack.snapshot());
    r.latency("delivery latency", &s.delivery.snapshot());
    for e in s.errors.lock().expect("errors lock").iter() {
        r.add("sample error", e.clone(), "");
    }
    if !lost_samples.is_empty() {
        r.add("lost samples", lost_samples.join(", "), "");
    }
    let f = |n: u64, what: &str, r: &mut Report| {
        if n > 0 {
            r.fail(format!("{n} {what}"));
        }
    };
    f(lost, "messages acked but never delivered (LOST)", &mut r);
    f(s.duplicated.load(Relaxed), "duplicate deliveries", &mut r);
    f(s.misrouted.load(Relaxed), "misrouted messages", &mut r);
    f(s.send_errors.load(Relaxed), "send errors", &mut r);
    f(pending, "sends unanswered at the end", &mut r);
    f(unacked_delivered, "deliveries of unacked sends", &mut r);
    f(s.disconnects.load(Relaxed), "connections lost", &mut r);
    r
}
