//! `fanout`: one sender creates a group (GROUP_CREATE with M members besides itself) and posts
//! to it at an open-loop rate while every member is online. A write-fan-out group delivers each
//! message as a PUSH to every member; a read-fan-out group sends GROUP_NOTIFY, which carries
//! the message (small ones), and the member pulls GROUP_HISTORY only after a gap. Latency runs from a message's scheduled send time to its arrival at a
//! member; every (message, member) pair must arrive exactly once.
//!
//! A server without groups answers GROUP_CREATE with UNKNOWN_COMMAND: the scenario then stops
//! with exit code 2 and says so (no result is made up).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::{stream, StreamExt};
use missive_client::{group, pb, Client, ClientEvent};
use missive_protocol::ErrorCode;

use crate::common::{Common, Env};
use crate::stats::{progress, Report};
use crate::unsupported::Unsupported;
use crate::workload::fanout;

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

/// The workload's state, and what only Missive's group has.
struct Shared {
    w: fanout::Shared,
    group_id: String,
    sender: String,
    notifies: AtomicU64,
}

impl Shared {
    /// A group message arrived at member `m`.
    fn arrived(&self, m: usize, msg: &pb::Message) {
        if msg.from_user != self.sender || msg.content.len() < 16 {
            return;
        }
        let k = u64::from_le_bytes(msg.content[..8].try_into().expect("8 bytes"));
        let due = u64::from_le_bytes(msg.content[8..16].try_into().expect("8 bytes"));
        self.w.arrived(m, k, Duration::from_micros(due));
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
        w: fanout::Shared::new(args.rate, total, m),
        group_id: info.group_id.clone(),
        sender: sender_name.clone(),
        notifies: AtomicU64::new(0),
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
                        shared.w.c.disconnects.fetch_add(1, Relaxed);
                        shared
                            .w
                            .c
                            .error(format!("member {i} disconnected: {reason:?}"));
                    }
                    _ => {}
                }
            }
        });
    }
    let s = shared.clone();
    let ticker = progress("fanout", move || {
        s.w.progress(&format!("notifies {} ", s.notifies.load(Relaxed)))
    });
    let schedule = shared.w.schedule;
    let size = args.size.max(16);
    let send = |k: u64| {
        let mut body = k.to_le_bytes().to_vec();
        body.extend_from_slice(&(schedule.due(k).as_micros() as u64).to_le_bytes());
        body.resize(size, b'.');
        let (sender, shared) = (sender.clone(), shared.clone());
        let cmid = format!("{}-g{k}", env.prefix);
        tokio::spawn(async move {
            let to = group(shared.group_id.clone());
            match sender.send(to, 1, body, Some(cmid)).await {
                Ok(_) => {
                    shared.w.c.acked.fetch_add(1, Relaxed);
                }
                Err(e) => shared.w.c.send_failed(format!("send #{k}: {e}")),
            }
        });
    };
    schedule.on_timer(total, send).await;
    let window = schedule.elapsed();
    let grace = Duration::from_secs(args.grace);
    shared.w.c.settle(total, m as u64, grace).await;
    ticker.abort();

    let mut r = Report::new("fanout");
    let side = fanout::Side {
        mode: Some(format!("{fanout_mode:?}")),
        size: None,
        counted: ("GROUP_NOTIFY received", shared.notifies.load(Relaxed)),
        reconnects: true,
    };
    fanout::report(&mut r, &shared.w, args.rate, total, window, side);
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
                shared
                    .w
                    .c
                    .error(format!("GROUP_HISTORY for member {m}: {e}"));
                break;
            }
        }
    }
}
