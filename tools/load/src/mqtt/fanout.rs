//! `mqtt fanout`: the `fanout` workload against an MQTT broker. M members subscribe with QoS 1
//! to one topic (`<prefix>/g`, the group); one more connection publishes QoS 1 to it at an
//! open-loop rate. Latency runs from a message's scheduled send time to its arrival at a
//! member; every (message, member) pair must arrive exactly once, and every publish must be
//! acknowledged (PUBACK).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use futures_util::{stream, StreamExt};
use rumqttc::Publish;

use super::common::{header, payload, Broker, Env, Header, HEADER};
use super::conn::{self, Handler};
use crate::stats::{progress, Report};
use crate::workload::fanout;

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

/// Connection 0 is the publisher, connection m + 1 member m.
impl Handler for fanout::Shared {
    fn acked(&self, _conn: usize, _k: u64) {
        self.c.acked.fetch_add(1, Relaxed);
    }

    fn received(&self, conn: usize, p: &Publish) {
        let m = conn.wrapping_sub(1);
        let ours = header(&p.payload).is_some_and(|h| self.arrived(m, h.k, h.due));
        if !ours {
            self.c.foreign.fetch_add(1, Relaxed);
        }
    }

    fn lost(&self, conn: usize, error: String) {
        self.c.disconnects.fetch_add(1, Relaxed);
        match conn {
            0 => self.c.error(format!("the publisher disconnected: {error}")),
            c => self
                .c
                .error(format!("member {} disconnected: {error}", c - 1)),
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
    let shared = Arc::new(fanout::Shared::new(args.rate, total, m));
    let mut drivers = vec![conn::drive(0, &sender.conn, sender.events, shared.clone())];
    let mut online = Vec::with_capacity(m);
    for (i, o) in members.into_iter().enumerate() {
        let o = o?;
        drivers.push(conn::drive(i + 1, &o.conn, o.events, shared.clone()));
        online.push(o.conn);
    }
    let sender = sender.conn;
    let s = shared.clone();
    let ticker = progress("mqtt-fanout", move || s.progress(""));
    let schedule = shared.schedule;
    let size = args.size.max(HEADER);
    let send = |k: u64| {
        let h = Header {
            k,
            due: schedule.due(k),
            from: 0,
            to: 0,
        };
        if let Err(e) = sender.publish(k, topic.clone(), payload(h, size)) {
            shared.c.send_failed(format!("{e:#}"));
        }
    };
    schedule.on_timer(total, send).await;
    let window = schedule.elapsed();
    shared
        .c
        .settle(total, m as u64, Duration::from_secs(args.grace))
        .await;
    ticker.abort();

    let mut r = Report::new("mqtt-fanout");
    r.add("broker", format!("mqtt {}", args.broker.addr), "");
    let side = fanout::Side {
        mode: None,
        size: Some(size as u64),
        counted: ("unrecognised messages", shared.c.foreign.load(Relaxed)),
        reconnects: false,
    };
    fanout::report(&mut r, &shared, args.rate, total, window, side);
    sender.close().await;
    for c in &online {
        c.close().await;
    }
    for d in drivers {
        let _ = tokio::time::timeout(Duration::from_secs(2), d).await;
    }
    Ok(r)
}
