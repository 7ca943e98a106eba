//! `mqtt offline`: the `offline` workload against an MQTT broker. A reader opens a persistent
//! session (clean session off, a QoS 1 subscription to `<prefix>/o`) and disconnects; a sender
//! publishes N messages QoS 1 to that topic, --window unacknowledged at once, which the broker
//! queues for the offline session; then the reader reconnects to its session and receives
//! them. Reports the time from the reader's connect to the last message received (the MQTT
//! counterpart of `offline`'s LOGIN to the last message synced), and checks that every message
//! arrived exactly once and in the order it was published.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rumqttc::Publish;

use super::common::{header, payload, Broker, Env, Header, HEADER};
use super::conn::{self, Handler};
use crate::stats::{progress, Report, Samples};
use crate::workload::offline::{add_catch_up, add_queue, Copies};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub broker: Broker,
    /// Messages queued for the offline reader.
    #[arg(short = 'n', long, default_value_t = 10_000)]
    pub messages: u64,
    /// Payload bytes per message (at least 49).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Publishes unacknowledged at once while queueing.
    #[arg(long, default_value_t = 256)]
    pub window: u16,
    /// Seconds allowed for queueing, and for the catch-up.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

/// Connection 0 is the sender; 1 the reader (its first and its second connection).
struct Shared {
    /// When the reader's second connection began.
    t0: Mutex<Option<Instant>>,
    acked: AtomicU64,
    last_ack: Mutex<Option<Instant>>,
    /// Per message: how many times the reader received it.
    seen: Vec<AtomicU8>,
    distinct: AtomicU64,
    received: AtomicU64,
    /// One more than the highest message number received so far.
    next: AtomicU64,
    out_of_order: AtomicU64,
    foreign: AtomicU64,
    /// Microseconds from t0 to the arrival that completed the set.
    complete_us: AtomicU64,
    disconnects: AtomicU64,
    errors: Samples,
}

impl Shared {
    fn error(&self, what: String) {
        self.errors.push(what);
    }
}

impl Handler for Shared {
    fn acked(&self, _conn: usize, _k: u64) {
        self.acked.fetch_add(1, Relaxed);
        *self.last_ack.lock().expect("ack lock") = Some(Instant::now());
    }

    fn received(&self, _conn: usize, p: &Publish) {
        self.received.fetch_add(1, Relaxed);
        let found = header(&p.payload).and_then(|h| Some((h.k, self.seen.get(h.k as usize)?)));
        let Some((k, seen)) = found else {
            self.foreign.fetch_add(1, Relaxed);
            return;
        };
        if seen.fetch_add(1, Relaxed) > 0 {
            self.error(format!("message #{k} received again"));
            return;
        }
        if self.next.fetch_max(k + 1, Relaxed) > k {
            self.out_of_order.fetch_add(1, Relaxed);
            self.error(format!("message #{k} after a later one"));
        }
        if self.distinct.fetch_add(1, Relaxed) + 1 == self.seen.len() as u64 {
            if let Some(t0) = *self.t0.lock().expect("t0 lock") {
                self.complete_us
                    .store(t0.elapsed().as_micros() as u64, Relaxed);
            }
        }
    }

    fn lost(&self, conn: usize, error: String) {
        self.disconnects.fetch_add(1, Relaxed);
        let who = if conn == 0 { "sender" } else { "reader" };
        self.error(format!("the {who} disconnected: {error}"));
    }
}

pub async fn run(args: &Args) -> Result<Report> {
    let n = args.messages;
    let mut env = Env::new(&args.broker, (n as usize).max(1024))?;
    env.settings.inflight = args.window.max(1);
    let topic = env.topic("o");
    let reader_id = env.client_id("o-reader", 0);
    let timeout = Duration::from_secs(args.timeout);
    let shared = Arc::new(Shared {
        t0: Mutex::new(None),
        acked: AtomicU64::new(0),
        last_ack: Mutex::new(None),
        seen: (0..n).map(|_| AtomicU8::new(0)).collect(),
        distinct: AtomicU64::new(0),
        received: AtomicU64::new(0),
        next: AtomicU64::new(0),
        out_of_order: AtomicU64::new(0),
        foreign: AtomicU64::new(0),
        complete_us: AtomicU64::new(0),
        disconnects: AtomicU64::new(0),
        errors: Samples::default(),
    });
    eprintln!(
        "missive-load: mqtt clients {}-*, broker {}; {reader_id} subscribes to {topic} and leaves",
        env.prefix, env.settings.addr
    );

    // The reader's session: subscribed, then offline (DISCONNECT keeps a persistent session).
    let first = conn::open(&env.settings, &reader_id, false, Some(&topic)).await?;
    let driver = conn::drive(1, &first.conn, first.events, shared.clone());
    first.conn.close().await;
    if tokio::time::timeout(timeout, driver).await.is_err() {
        bail!(
            "the reader's DISCONNECT was not sent within {} s",
            args.timeout
        );
    }

    // Queue phase: the sender publishes everything; the broker queues it for the session.
    let sender = conn::open(&env.settings, &env.client_id("o-sender", 0), true, None).await?;
    let sender_driver = conn::drive(0, &sender.conn, sender.events, shared.clone());
    let s = shared.clone();
    let ticker = progress("mqtt-offline", move || {
        format!("queued {} of {n}", s.acked.load(Relaxed))
    });
    let size = args.size.max(HEADER);
    let queue_start = Instant::now();
    let mut send_errors = 0u64;
    for k in 0..n {
        let h = Header {
            k,
            due: Duration::ZERO,
            from: 0,
            to: 0,
        };
        if let Err(e) = sender.conn.publish(k, topic.clone(), payload(h, size)) {
            send_errors += 1;
            shared.error(format!("{e:#}"));
        }
    }
    let deadline = Instant::now() + timeout;
    while shared.acked.load(Relaxed) + send_errors < n
        && shared.disconnects.load(Relaxed) == 0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let last_ack = *shared.last_ack.lock().expect("ack lock");
    let queue_time = last_ack.map_or(Duration::ZERO, |t| t.duration_since(queue_start));
    ticker.abort();
    sender.conn.close().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), sender_driver).await;
    let queued = shared.acked.load(Relaxed);
    eprintln!(
        "missive-load: queued {queued} messages in {:.2} s; the reader reconnects",
        queue_time.as_secs_f64()
    );

    // Catch-up phase: reconnect to the session and receive until every message has arrived.
    let t0 = Instant::now();
    *shared.t0.lock().expect("t0 lock") = Some(t0);
    let second = conn::open(&env.settings, &reader_id, false, None).await?;
    let login_time = t0.elapsed();
    let driver = conn::drive(1, &second.conn, second.events, shared.clone());
    let deadline = t0 + timeout;
    while shared.distinct.load(Relaxed) < n
        && shared.disconnects.load(Relaxed) == 0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // A last moment for a duplicate right behind the last message.
    tokio::time::sleep(Duration::from_millis(500)).await;
    second.conn.close().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), driver).await;

    let s = &shared;
    let distinct = s.distinct.load(Relaxed);
    let copies = Copies::count(s.seen.iter().map(|c| c.load(Relaxed)));
    let sync_secs = s.complete_us.load(Relaxed) as f64 / 1e6;
    let mut r = Report::new("mqtt-offline");
    r.add("broker", format!("mqtt {}", args.broker.addr), "");
    r.add("content size", size as u64, "bytes");
    let window = u64::from(args.window.max(1));
    add_queue(&mut r, queued, send_errors, queue_time, window);
    r.add("session present", second.session_present, "");
    r.add_f("login time", login_time.as_secs_f64() * 1e3, 1, "ms");
    r.add("entries synced", s.received.load(Relaxed), "");
    if distinct == n {
        add_catch_up(&mut r, sync_secs, n);
    }
    copies.add_to(&mut r);
    r.add("out of order", s.out_of_order.load(Relaxed), "");
    r.add("unrecognised entries", s.foreign.load(Relaxed), "");
    r.add("disconnects", s.disconnects.load(Relaxed), "");
    r.samples(&s.errors);
    if send_errors > 0 || queued + send_errors < n {
        r.fail(format!("{} of {n} publishes not acked", n - queued));
    }
    if !second.session_present {
        r.fail("the broker did not keep the reader's session".to_string());
    }
    copies.check(&mut r, n, "received");
    if s.out_of_order.load(Relaxed) > 0 {
        r.fail(format!(
            "{} messages received after a later one",
            s.out_of_order.load(Relaxed)
        ));
    }
    if s.foreign.load(Relaxed) > 0 {
        r.fail(format!(
            "{} messages the run did not send",
            s.foreign.load(Relaxed)
        ));
    }
    if s.disconnects.load(Relaxed) > 0 {
        r.fail("a connection was lost".to_string());
    }
    Ok(r)
}
