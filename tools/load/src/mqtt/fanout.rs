//! `mqtt fanout`: the `fanout` workload against an MQTT broker. M members subscribe with QoS 1
//! to one topic (`<prefix>/g`, the group); one more connection publishes QoS 1 to it at an
//! open-loop rate. Latency runs from a message's scheduled send time to its arrival at a
//! member; every (message, member) pair must arrive exactly once, and every publish must be
//! acknowledged (PUBACK).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::{stream, StreamExt};
use rumqttc::Publish;

use super::common::{header, payload, Broker, Env, Header, HEADER};
use super::conn::{self, Handler};
use crate::stats::{progress, Latency, Report};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub broker: Broker,
    /// Subscribers of the topic besides the publisher, all online.
    #[arg(short = 'm', long, default_value_t = 50)]
    pub members: usize,
    /// Messages per second from the publisher (open loop).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Seconds to wait after the last scheduled send for deliveries in flight.
    #[arg(long, default_value_t = 15)]
    pub grace: u64,
    /// Payload bytes per message (at least 49).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
}

struct Shared {
    start: Instant,
    members: usize,
    /// seen[k * members + m]: deliveries of message k to member m.
    seen: Vec<AtomicU8>,
    acked: AtomicU64,
    send_errors: AtomicU64,
    delivered: AtomicU64,
    duplicated: AtomicU64,
    foreign: AtomicU64,
    disconnects: AtomicU64,
    last_delivery_us: AtomicU64,
    errors: Mutex<Vec<String>>,
    latency: Latency,
}

impl Shared {
    fn error(&self, what: String) {
        let mut errors = self.errors.lock().expect("errors lock");
        if errors.len() < 5 {
            errors.push(what);
        }
    }
}

/// Connection 0 is the publisher, connection m + 1 member m.
impl Handler for Shared {
    fn acked(&self, _conn: usize, _k: u64) {
        self.acked.fetch_add(1, Relaxed);
    }

    fn received(&self, conn: usize, p: &Publish) {
        let m = conn.wrapping_sub(1);
        let slot = header(&p.payload)
            .filter(|_| m < self.members)
            .and_then(|h| {
                let i = (h.k as usize).checked_mul(self.members)?.checked_add(m)?;
                Some((h, self.seen.get(i)?))
            });
        let Some((h, slot)) = slot else {
            self.foreign.fetch_add(1, Relaxed);
            return;
        };
        let now = self.start.elapsed();
        if slot.fetch_add(1, Relaxed) == 0 {
            self.latency.record(now.saturating_sub(h.due));
            self.delivered.fetch_add(1, Relaxed);
            self.last_delivery_us
                .fetch_max(now.as_micros() as u64, Relaxed);
        } else {
            self.duplicated.fetch_add(1, Relaxed);
            self.error(format!("message #{} delivered again to member {m}", h.k));
        }
    }

    fn lost(&self, conn: usize, error: String) {
        self.disconnects.fetch_add(1, Relaxed);
        match conn {
            0 => self.error(format!("the publisher disconnected: {error}")),
            c => self.error(format!("member {} disconnected: {error}", c - 1)),
        }
    }
}

pub async fn run(args: &Args) -> Result<Report> {
    let m = args.members.max(1);
    let total = (args.rate * args.duration as f64).round() as u64;
    let env = Env::new(&args.broker, (total as usize).max(1024))?;
    let topic = env.topic("g");
    eprintln!(
        "missive-load: mqtt clients {}-*, broker {}; subscribing {m} members to {topic}",
        env.prefix, env.settings.addr
    );
    let sender = conn::open(&env.settings, &env.client_id("g-sender", 0), true, None).await?;
    let members: Vec<Result<conn::Opened>> = stream::iter(0..m)
        .map(|i| {
            let (env, topic) = (&env, &topic);
            async move { conn::open(&env.settings, &env.client_id("g", i), true, Some(topic)).await }
        })
        .buffered(64)
        .collect()
        .await;
    let shared = Arc::new(Shared {
        start: Instant::now(),
        members: m,
        seen: (0..total as usize * m).map(|_| AtomicU8::new(0)).collect(),
        acked: AtomicU64::new(0),
        send_errors: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        duplicated: AtomicU64::new(0),
        foreign: AtomicU64::new(0),
        disconnects: AtomicU64::new(0),
        last_delivery_us: AtomicU64::new(0),
        errors: Mutex::new(Vec::new()),
        latency: Latency::default(),
    });
    let mut drivers = vec![conn::drive(0, &sender.conn, sender.events, shared.clone())];
    let mut online = Vec::with_capacity(m);
    for (i, o) in members.into_iter().enumerate() {
        let o = o?;
        drivers.push(conn::drive(i + 1, &o.conn, o.events, shared.clone()));
        online.push(o.conn);
    }
    let sender = sender.conn;
    let s = shared.clone();
    let ticker = progress("mqtt-fanout", move || {
        format!(
            "acked {} delivered {} dup {} errors {}",
            s.acked.load(Relaxed),
            s.delivered.load(Relaxed),
            s.duplicated.load(Relaxed),
            s.send_errors.load(Relaxed),
        )
    });
    let start = shared.start;
    let size = args.size.max(HEADER);
    let due = |k: u64| Duration::from_secs_f64(k as f64 / args.rate);
    for k in 0..total {
        tokio::time::sleep_until((start + due(k)).into()).await;
        let h = Header {
            k,
            due: due(k),
            from: 0,
            to: 0,
        };
        if let Err(e) = sender.publish(k, topic.clone(), payload(h, size)) {
            shared.error(format!("{e:#}"));
            shared.send_errors.fetch_add(1, Relaxed);
        }
    }
    let window = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(args.grace);
    while Instant::now() < deadline {
        let acked = shared.acked.load(Relaxed);
        let settled = acked + shared.send_errors.load(Relaxed) == total;
        if settled && shared.delivered.load(Relaxed) >= acked * m as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    ticker.abort();

    let s = &shared;
    let acked = s.acked.load(Relaxed);
    let expected = acked * m as u64;
    let delivered = s.delivered.load(Relaxed);
    let mut r = Report::new("mqtt-fanout");
    r.add("broker", format!("mqtt {}", args.broker.addr), "");
    r.add("members (besides the sender)", m as u64, "");
    r.add_f("offered rate", args.rate, 1, "msg/s");
    r.add("content size", size as u64, "bytes");
    r.add("messages sent", total, "");
    r.add("acked", acked, "");
    r.add("send errors", s.send_errors.load(Relaxed), "");
    r.add("deliveries expected", expected, "");
    r.add("delivered", delivered, "");
    r.add("lost deliveries", expected.saturating_sub(delivered), "");
    r.add("duplicated deliveries", s.duplicated.load(Relaxed), "");
    r.add("unrecognised messages", s.foreign.load(Relaxed), "");
    r.add("member disconnects", s.disconnects.load(Relaxed), "");
    let last = (s.last_delivery_us.load(Relaxed) as f64 / 1e6).max(window.as_secs_f64());
    r.add_f("deliveries/s", delivered as f64 / last.max(1e-9), 1, "");
    r.latency("delivery latency", &s.latency.snapshot());
    for e in s.errors.lock().expect("errors lock").iter() {
        r.add("sample error", e.clone(), "");
    }
    if delivered < expected {
        r.fail(format!("{} deliveries lost", expected - delivered));
    }
    if s.duplicated.load(Relaxed) > 0 {
        r.fail(format!(
            "{} duplicate deliveries",
            s.duplicated.load(Relaxed)
        ));
    }
    if acked < total {
        r.fail(format!("{} of {total} sends not acked", total - acked));
    }
    if s.disconnects.load(Relaxed) > 0 {
        r.fail(format!("{} connections lost", s.disconnects.load(Relaxed)));
    }
    sender.close().await;
    for c in &online {
        c.close().await;
    }
    for d in drivers {
        let _ = tokio::time::timeout(Duration::from_secs(2), d).await;
    }
    Ok(r)
}
