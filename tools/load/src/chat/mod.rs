//! `chat`: U online users (reliable `Client`s) send one-to-one messages at an open-loop
//! aggregate rate. Message k is due at `start + k / rate` whatever happened before (so a slow
//! server cannot slow the offered load down); its latency runs from that scheduled time to the
//! moment its recipient's client delivers it. Every message must be acked (SEND_ACK) and
//! delivered exactly once, to the right user: the content carries its number and recipient.
//! With `--kill-pid` the harness also disrupts a server during the window and times how long
//! the users whose connection was lost took to be served again (`disrupt`).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::stream::{self, FuturesUnordered, StreamExt};
use missive_client::{direct, pb, Client, ClientEvent};

use crate::common::Env;
use crate::stats::{progress, Report};
use crate::workload::chat::{self, pair, Inboxes, Shared, Side};
use crate::workload::pace::Cpu;

mod args;
mod disrupt;

pub use args::Args;
use disrupt::Failover;
pub use disrupt::AFTER_HELP;

pub async fn run(env: &Env, args: &Args) -> Result<Report> {
    let load = &args.load;
    if load.users < 2 {
        bail!("--users must be at least 2");
    }
    let size = args.size.max(HEADER);
    let total = load.total();
    let failover = args.disrupt.watch(load.users, load.duration)?;
    let names: Vec<String> = (0..load.users).map(|i| env.user("u", i)).collect();
    eprintln!("missive-load: logging in {} users", load.users);
    let setup = Instant::now();
    // A disrupted run's sends may wait for their users' reconnects (the client's backoff
    // grows to a minute): they wait to the end of the run rather than fail as timed out.
    let patience = match failover {
        Some(_) => Duration::from_secs(load.duration + load.grace + 60),
        None => Duration::from_secs(60),
    };
    let clients: Vec<Result<Client>> = stream::iter(names.iter().enumerate())
        .map(|(i, name)| env.client_waiting(name, i, patience))
        .buffered(64)
        .collect()
        .await;
    let mut online = Vec::with_capacity(clients.len());
    let mut receivers = Vec::with_capacity(clients.len());
    for c in clients {
        let mut c = c?;
        receivers.push(c.events().expect("events are taken once"));
        online.push(Arc::new(c));
    }
    let login_secs = setup.elapsed().as_secs_f64();
    let shared = Arc::new(Shared::new(load));
    for (i, mut events) in receivers.into_iter().enumerate() {
        let shared = shared.clone();
        let failover = failover.clone();
        let me = names[i].clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                on_event(&shared, failover.as_deref(), i, &me, event);
            }
        });
    }
    let s = shared.clone();
    let ticker = progress("chat", move || s.progress("reconnects"));

    // Open loop (see `Schedule::on_thread`): the messages due since the pacer last woke are
    // handed to the runtime together, in one task, which polls their sends together (a task per
    // message cost a spawn, a registration with the runtime and its removal each).
    let cpu = Cpu::start(args.server_pid.as_deref());
    let schedule = shared.schedule;
    let runtime = tokio::runtime::Handle::current();
    let (users, prefix) = (load.users, env.prefix.clone());
    let (pace_shared, pace_names) = (shared.clone(), names.clone());
    let pace_failover = failover.clone();
    let send = move |online: &mut Vec<Arc<Client>>, ks: std::ops::Range<u64>| {
        let shared = &pace_shared;
        let mut due = Vec::new();
        for k in ks {
            let (from, to) = pair(k, users);
            let client = online[from].clone();
            let body = content(k, schedule.due(k), to, size);
            let to_user = pace_names[to].clone();
            let cmid = format!("{prefix}-{k}");
            shared.sent.fetch_add(1, Relaxed);
            due.push((client, k, from, to_user, body, cmid));
        }
        let batch = shared.clone();
        let failover = pace_failover.clone();
        runtime.spawn(async move {
            let mut sends: FuturesUnordered<_> = due
                .into_iter()
                .map(|(client, k, from, to_user, body, cmid)| {
                    let sender = failover.clone().map(|f| (f, from));
                    send_one(batch.clone(), client, k, sender, to_user, body, cmid)
                })
                .collect();
            while sends.next().await.is_some() {}
        });
    };
    let kill = failover.as_ref().map(|f| f.arm(schedule));
    let online = schedule.on_thread(total, online, send).await?;
    let window = schedule.elapsed();
    let cpu = cpu.stop(window);
    // Grace: wait for the acks and deliveries still in flight.
    shared
        .c
        .settle(total, 1, Duration::from_secs(load.grace))
        .await;
    ticker.abort();
    if let Some(kill) = kill {
        let _ = kill.await;
    }
    eprintln!("missive-load: reading every inbox to check what was stored");
    let parse = |i: usize, m: &pb::Message| {
        let (k, _, to) = header(&m.content)?;
        (to as usize == i).then_some(k as usize)
    };
    let stored = crate::verify::stored_counts(&online, &names, total as usize, parse).await;
    let stored = match stored {
        Ok((counts, took)) => {
            eprintln!("missive-load: inboxes read in {:.2} s", took.as_secs_f64());
            Some(counts)
        }
        Err(e) => {
            eprintln!("missive-load: cannot read the inboxes: {e:#}");
            None
        }
    };
    let run = chat::Run {
        load,
        total,
        window,
        login_secs,
        // The row as it read before the header grew to 41 bytes (4402c3a); the content sent
        // is `size`, at least HEADER bytes. Kept: the report does not change here.
        size: args.size.max(20) as u64,
        cpu,
    };
    let side = Side {
        resend_acks: true,
        inboxes: stored.as_deref().map_or(Inboxes::Unread, Inboxes::Read),
        reconnects: true,
    };
    let mut report = Report::new("chat");
    chat::report(&mut report, &shared, &run, &side);
    if let Some(failover) = &failover {
        failover.report(&mut report);
    }
    for client in &online {
        client.close().await;
    }
    Ok(report)
}

/// Sends message `k` and records its ack (latency from its scheduled time), and for a
/// disrupted run the ack of its sender (`Failover`, user number).
async fn send_one(
    shared: Arc<Shared>,
    client: Arc<Client>,
    k: u64,
    sender: Option<(Arc<Failover>, usize)>,
    to_user: String,
    body: Vec<u8>,
    cmid: String,
) {
    let result = match &sender {
        None => client.send(direct(to_user), 1, body, Some(cmid)).await,
        Some((failover, _)) => disrupt::send(&client, failover, to_user, body, cmid).await,
    };
    match result {
        Ok(ack) => {
            if let Some((failover, from)) = sender {
                failover.acked(from, shared.schedule.elapsed());
            }
            shared.acked(k);
            if ack.duplicate {
                shared.ack_duplicate.fetch_add(1, Relaxed);
            }
        }
        Err(e) => shared.failed(k, format!("send #{k}: {e}")),
    }
}

/// Bytes of a message's header: number, scheduled time and recipient in hex, and a space.
const HEADER: usize = 16 + 16 + 8 + 1;

/// The words the padding is made of: plain chat text, so that a server's word filter reads
/// every message as it would a user's (it reads UTF-8 text only).
const PADDING: &[u8] = b"see you at the station at eight, bring the map and some water. ";

/// Message content, all ASCII text: number, scheduled time (µs after start), recipient index
/// (lowercase hex), a space, then words up to `size` bytes.
fn content(k: u64, due: Duration, to: usize, size: usize) -> Vec<u8> {
    let mut body =
        format!("{k:016x}{:016x}{:08x} ", due.as_micros() as u64, to as u32).into_bytes();
    while body.len() < size {
        let n = (size - body.len()).min(PADDING.len());
        body.extend_from_slice(&PADDING[..n]);
    }
    body
}

/// The number, scheduled time and recipient of a message made by [`content`].
fn header(content: &[u8]) -> Option<(u64, u64, u32)> {
    let text = std::str::from_utf8(content.get(..HEADER - 1)?).ok()?;
    let k = u64::from_str_radix(&text[..16], 16).ok()?;
    let due = u64::from_str_radix(&text[16..32], 16).ok()?;
    let to = u32::from_str_radix(&text[32..40], 16).ok()?;
    Some((k, due, to))
}

fn on_event(
    shared: &Shared,
    failover: Option<&Failover>,
    me_index: usize,
    me: &str,
    event: ClientEvent,
) {
    let c = &shared.c;
    let entry = match event {
        ClientEvent::Entry(entry) => entry,
        ClientEvent::Connected(_) => {
            if let Some(f) = failover {
                f.connected(me_index, shared.schedule.elapsed());
            }
            return;
        }
        ClientEvent::Disconnected { reason, .. } => {
            c.disconnects.fetch_add(1, Relaxed);
            let what = format!("{me} disconnected: {reason:?}");
            match failover {
                // Expected there: the samples stay for what went wrong.
                Some(f) => f.disconnected(me_index, what),
                None => c.error(what),
            }
            return;
        }
        _ => return,
    };
    let Some(pb::inbox_entry::Body::Message(m)) = entry.body else {
        return;
    };
    if m.from_user == me {
        return; // our own message, echoed by the client from its SEND_ACK or a SYNC
    }
    let Some((k, due, to)) = header(&m.content) else {
        c.foreign.fetch_add(1, Relaxed);
        return;
    };
    let to = Some(to);
    let Some(copies) = shared.copies(k) else {
        return;
    };
    if to != Some(me_index as u32) {
        shared.misrouted(format!("message #{k} for user {to:?} arrived at {me}"));
        return;
    }
    let now = shared.schedule.elapsed();
    if !c.deliver(copies, Duration::from_micros(due), now) {
        c.error(format!(
            "message #{k} delivered again to {me} (msg_id {})",
            m.msg_id
        ));
    }
}
