//! `mqtt chat`: the `chat` workload against an MQTT broker. U users, each a connection
//! subscribed with QoS 1 to its own topic (`<prefix>/u/<i>`), publish QoS 1 messages to other
//! users' topics at an open-loop aggregate rate: message k is due at `start + k / rate`, its
//! sender and recipient are those `chat` picks for message k, and its latency runs from that
//! scheduled time to its arrival at the recipient. "Acked" is the sender's PUBACK. Every acked
//! message must arrive exactly once, at the right user: the payload carries its number, its
//! scheduled time, its sender and its recipient.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::{stream, StreamExt};
use rumqttc::Publish;

use super::common::{header, payload, Broker, Env, Header, HEADER};
use super::conn::{self, Conn, Handler};
use crate::stats::{progress, Report};
use crate::workload::chat::{self, pair, Inboxes, Load, Shared, Side};
use crate::workload::pace::Cpu;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub broker: Broker,
    #[command(flatten)]
    pub load: Load,
    /// Payload bytes per message (at least 49: number, scheduled time, sender and recipient
    /// in hex, then words).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// The broker's pid, to report its CPU use during the sending window.
    #[arg(long)]
    pub server_pid: Option<String>,
}

/// Connection i is user i.
impl Handler for Shared {
    fn acked(&self, _conn: usize, k: u64) {
        Shared::acked(self, k);
    }

    fn received(&self, me: usize, p: &Publish) {
        let s = self;
        let Some(h) = header(&p.payload) else {
            s.c.foreign.fetch_add(1, Relaxed);
            return;
        };
        let Some(copies) = s.copies(h.k) else {
            return;
        };
        let (from, to) = pair(h.k, s.users);
        if h.to as usize != me || to != me || h.from as usize != from {
            s.misrouted(format!(
                "message #{} from {} for {} arrived at user {me} (on {})",
                h.k, h.from, h.to, p.topic
            ));
            return;
        }
        if !s.c.deliver(copies, h.due, s.schedule.elapsed()) {
            s.c.error(format!("message #{} delivered again to user {me}", h.k));
        }
    }

    fn lost(&self, conn: usize, error: String) {
        self.c.disconnects.fetch_add(1, Relaxed);
        self.c.error(format!("user {conn} disconnected: {error}"));
    }
}

pub async fn run(args: &Args) -> Result<Report> {
    let load = &args.load;
    if load.users < 2 {
        bail!("--users must be at least 2");
    }
    // A connection's queue holds what it has not written yet: room for the whole run's share
    // of a user, so that a slow broker shows as latency, not as refused sends.
    let total = load.total();
    let per_user = (total as usize / load.users).saturating_mul(4).max(1024);
    let env = Env::new(&args.broker, per_user)?;
    eprintln!(
        "missive-load: mqtt clients {}-*, broker {}",
        env.prefix, env.settings.addr
    );
    let size = args.size.max(HEADER);
    let topics: Vec<String> = (0..load.users)
        .map(|i| env.topic(&format!("u/{i}")))
        .collect();
    eprintln!(
        "missive-load: connecting and subscribing {} users",
        load.users
    );
    let setup = Instant::now();
    let opened: Vec<Result<conn::Opened>> = stream::iter(0..load.users)
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
    let shared = Arc::new(Shared::new(load));
    let mut online: Vec<Conn> = Vec::with_capacity(load.users);
    let mut drivers = Vec::with_capacity(load.users);
    for (i, o) in opened.into_iter().enumerate() {
        let o = o?;
        drivers.push(conn::drive(i, &o.conn, o.events, shared.clone()));
        online.push(o.conn);
    }
    let s = shared.clone();
    let ticker = progress("mqtt-chat", move || s.progress("disconnects"));

    // Open loop, paced on a thread of its own as in `chat` (see `Schedule::on_thread`).
    // Handing a message to a connection does not wait: its event loop writes it and reports
    // the PUBACK.
    let cpu = Cpu::start(args.server_pid.as_deref());
    let schedule = shared.schedule;
    let (users, pace) = (load.users, shared.clone());
    let send = move |online: &mut Vec<Conn>, ks: std::ops::Range<u64>| {
        let shared = &pace;
        for k in ks {
            let (from, to) = pair(k, users);
            let h = Header {
                k,
                due: schedule.due(k),
                from: from as u32,
                to: to as u32,
            };
            shared.sent.fetch_add(1, Relaxed);
            if let Err(e) = online[from].publish(k, topics[to].clone(), payload(h, size)) {
                shared.failed(k, format!("{e:#}"));
            }
        }
    };
    let online = schedule.on_thread(total, online, send).await?;
    let window = schedule.elapsed();
    let cpu = cpu.stop(window);
    // Grace: wait for the acks and deliveries still in flight.
    let s = &shared;
    s.c.settle(total, 1, Duration::from_secs(load.grace)).await;
    ticker.abort();
    let run = chat::Run {
        load,
        total,
        window,
        login_secs,
        size: size as u64,
        cpu,
    };
    let side = Side {
        resend_acks: false,
        inboxes: Inboxes::Absent,
        reconnects: false,
    };
    let mut r = Report::new("mqtt-chat");
    r.add("broker", format!("mqtt {}", args.broker.addr), "");
    chat::report(&mut r, s, &run, &side);
    for c in &online {
        c.close().await;
    }
    for d in drivers {
        let _ = tokio::time::timeout(Duration::from_secs(2), d).await;
    }
    Ok(r)
}
