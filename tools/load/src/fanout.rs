//! `fanout`: one sender creates a group (GROUP_CREATE with M members besides itself) and posts
//! to it at an open-loop rate while every member is online. A write-fan-out group delivers each
//! message as a PUSH to every member; a read-fan-out group sends GROUP_NOTIFY, which carries
//! the message (small ones), and the member pulls GROUP_HISTORY only after a gap. Latency runs from a message's scheduled send time to its arrival at a
//! member; every (message, member) pair must arrive exactly once.
//!
//! A server without groups answers GROUP_CREATE with UNKNOWN_COMMAND: the scenario then stops
//! with exit code 2 and says so (no result is made up).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_util::{stream, StreamExt};
use missive_client::{group, pb, Client, ClientEvent};
use missive_protocol::ErrorCode;

use crate::common::{Common, Env};
use crate::stats::{progress, Latency, Report};
use crate::unsupported::Unsupported;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Group members besides the sender, all online.
    #[arg(short = 'm', long, default_value_t = 50)]
    pub members: usize,
    /// Messages per second from the sender (open loop).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Seconds to wait after the last scheduled send for deliveries in flight.
    #[arg(long, default_value_t = 15)]
    pub grace: u64,
    /// Content bytes per message (at least 16).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
}

struct Shared {
    start: Instant,
    rate: f64,
    members: usize,
    group_id: String,
    sender: String,
    /// seen[k * members + m]: deliveries of message k to member m.
    seen: Vec<AtomicU8>,
    acked: AtomicU64,
    send_errors: AtomicU64,
    delivered: AtomicU64,
    duplicated: AtomicU64,
    notifies: AtomicU64,
    disconnects: AtomicU64,
    last_delivery_us: AtomicU64,
    errors: Mutex<Vec<String>>,
    latency: Latency,
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
    /// A group message arrived at member `m`.
    fn arrived(&self, m: usize, msg: &pb::Message) {
        if msg.from_user != self.sender || msg.content.len() < 16 {
            return;
        }
        let k = u64::from_le_bytes(msg.content[..8].try_into().expect("8 bytes"));
        let due = u64::from_le_bytes(msg.content[8..16].try_into().expect("8 bytes"));
        let Some(slot) = self.seen.get(k as usize * self.members + m) else {
            return;
        };
        let now = self.start.elapsed();
        if slot.fetch_add(1, Relaxed) == 0 {
            self.latency
                .record(now.saturating_sub(Duration::from_micros(due)));
            self.delivered.fetch_add(1, Relaxed);
            self.last_delivery_us
                .fetch_max(now.as_micros() as u64, Relaxed);
        } else {
            self.duplicated.fetch_add(1, Relaxed);
            self.error(format!("message #{k} delivered again to member {m}"));
        }
    }
}

pub async fn run(env: &Env, args: &Args) -> Result<Report> {
    let m = args.members.max(1);
    let sender_name = env.user("g-sender", 0);
    let names: Vec<String> = (0..m).map(|i| env.user("g", i)).collect();
    let sender = Arc::new(env.client(&sender_name, 0).await?);
    let history = pb::HistoryVisibility::Full;
    let info = match sender.group_create("load", names.clone(), history).await {
        Ok(ack) => ack.group.context("GROUP_CREATE_ACK without a group")?,
        Err(e) if e.server_code() == Some(ErrorCode::UnknownCommand) => {
            sender.close().await;
            return Err(Unsupported(format!(
                "the server at {} does not support groups yet: GROUP_CREATE was answered \
                 with UNKNOWN_COMMAND ({e}); no fanout figures can be measured",
                env.addr(0)
            ))
            .into());
        }
        Err(e) => return Err(e).context("GROUP_CREATE failed"),
    };
    let fanout_mode = info.fanout();
    eprintln!(
        "missive-load: group {} ({} members, {:?}); logging in {m} members",
        info.group_id, info.member_count, fanout_mode
    );
    let total = (args.rate * args.duration as f64).round() as u64;
    let shared = Arc::new(Shared {
        start: Instant::now(),
        rate: args.rate,
        members: m,
        group_id: info.group_id.clone(),
        sender: sender_name.clone(),
        seen: (0..total as usize * m).map(|_| AtomicU8::new(0)).collect(),
        acked: AtomicU64::new(0),
        send_errors: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        duplicated: AtomicU64::new(0),
        notifies: AtomicU64::new(0),
        disconnects: AtomicU64::new(0),
        last_delivery_us: AtomicU64::new(0),
        errors: Mutex::new(Vec::new()),
        latency: Latency::default(),
    });
    let clients: Vec<Result<Client>> = stream::iter(names.iter().enumerate())
        .map(|(i, name)| env.client(name, i + 1))
        .buffered(64)
        .collect()
        .await;
    let mut online = Vec::with_capacity(m);
    for (i, c) in clients.into_iter().enumerate() {
        let mut c = c?;
        let mut events = c.events().expect("events are taken once");
        let c = Arc::new(c);
        online.push(c.clone());
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut pulled = 0u64; // read fan-out: the last group seq pulled
            while let Some(event) = events.recv().await {
                match event {
                    ClientEvent::Entry(e) => {
                        if let Some(pb::inbox_entry::Body::Message(msg)) = &e.body {
                            shared.arrived(i, msg);
                        }
                    }
                    ClientEvent::GroupNotify(n) if n.group_id == shared.group_id => {
                        shared.notifies.fetch_add(1, Relaxed);
                        match &n.message {
                            // The next message, carried in the notification: nothing to pull.
                            Some(msg) if msg.seq == pulled + 1 => {
                                pulled = msg.seq;
                                shared.arrived(i, msg);
                            }
                            _ => pull(&shared, &c, i, &mut pulled, n.last_seq).await,
                        }
                    }
                    ClientEvent::Disconnected { reason, .. } => {
                        shared.disconnects.fetch_add(1, Relaxed);
                        shared.error(format!("member {i} disconnected: {reason:?}"));
                    }
                    _ => {}
                }
            }
        });
    }
    let s = shared.clone();
    let ticker = progress("fanout", move || {
        format!(
            "acked {} delivered {} notifies {} dup {} errors {}",
            s.acked.load(Relaxed),
            s.delivered.load(Relaxed),
            s.notifies.load(Relaxed),
            s.duplicated.load(Relaxed),
            s.send_errors.load(Relaxed),
        )
    });
    let start = shared.start;
    let size = args.size.max(16);
    for k in 0..total {
        tokio::time::sleep_until((start + shared.due(k)).into()).await;
        let mut body = k.to_le_bytes().to_vec();
        body.extend_from_slice(&(shared.due(k).as_micros() as u64).to_le_bytes());
        body.resize(size, b'.');
        let (sender, shared) = (sender.clone(), shared.clone());
        let cmid = format!("{}-g{k}", env.prefix);
        tokio::spawn(async move {
            let to = group(shared.group_id.clone());
            match sender.send(to, 1, body, Some(cmid)).await {
                Ok(_) => shared.acked.fetch_add(1, Relaxed),
                Err(e) => {
                    shared.error(format!("send #{k}: {e}"));
                    shared.send_errors.fetch_add(1, Relaxed)
                }
            };
        });
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
    let mut r = Report::new("fanout");
    r.add("members (besides the sender)", m as u64, "");
    r.add("fanout mode", format!("{fanout_mode:?}"), "");
    r.add_f("offered rate", args.rate, 1, "msg/s");
    r.add("messages sent", total, "");
    r.add("acked", acked, "");
    r.add("send errors", s.send_errors.load(Relaxed), "");
    r.add("deliveries expected", expected, "");
    r.add("delivered", delivered, "");
    r.add("lost deliveries", expected.saturating_sub(delivered), "");
    r.add("duplicated deliveries", s.duplicated.load(Relaxed), "");
    r.add("GROUP_NOTIFY received", s.notifies.load(Relaxed), "");
    r.add("member reconnects", s.disconnects.load(Relaxed), "");
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
    sender.close().await;
    for c in &online {
        c.close().await;
    }
    Ok(r)
}

/// Read fan-out: pull the group's log after `pulled` up to at least `last_seq`.
async fn pull(shared: &Shared, c: &Client, m: usize, pulled: &mut u64, last_seq: u64) {
    while *pulled < last_seq {
        match c.group_history_after(&shared.group_id, *pulled, 200).await {
            Ok(page) => {
                for msg in &page.messages {
                    *pulled = (*pulled).max(msg.seq);
                    shared.arrived(m, msg);
                }
                if !page.has_more || page.messages.is_empty() {
                    break;
                }
            }
            Err(e) => {
                shared.error(format!("GROUP_HISTORY for member {m}: {e}"));
                break;
            }
        }
    }
}
