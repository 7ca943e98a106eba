//! `chat`: U online users (reliable `Client`s) send one-to-one messages at an open-loop
//! aggregate rate. Message k is due at `start + k / rate` whatever happened before (so a slow
//! server cannot slow the offered load down); its latency runs from that scheduled time to the
//! moment its recipient's client delivers it. Every message must be acked (SEND_ACK) and
//! delivered exactly once, to the right user: the content carries its number and recipient.

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use futures_util::stream::{self, FuturesUnordered, StreamExt};
use missive_client::{direct, pb, Client, ClientEvent};

use crate::common::{cpu_secs, Env};
use crate::stats::{progress, Latency, Report};

mod args;
mod report;
mod shared;

pub use args::Args;
use report::report;
pub(crate) use shared::pair;
use shared::{Counters, Shared, ACKED, FAILED};

/// The pacing thread's shortest sleep (see `run`).
const PACE: Duration = Duration::from_micros(200);

pub async fn run(env: &Env, args: &Args) -> Result<Report> {
    if args.users < 2 {
        bail!("--users must be at least 2");
    }
    let size = args.size.max(HEADER);
    let total = (args.rate * args.duration as f64).round() as u64;
    let names: Vec<String> = (0..args.users).map(|i| env.user("u", i)).collect();
    eprintln!("missive-load: logging in {} users", args.users);
    let setup = Instant::now();
    let clients: Vec<Result<Client>> = stream::iter(names.iter().enumerate())
        .map(|(i, name)| env.client(name, i))
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
    let shared = Arc::new(Shared {
        start: Instant::now(),
        rate: args.rate,
        state: (0..total).map(|_| AtomicU8::new(0)).collect(),
        seen: (0..total).map(|_| AtomicU8::new(0)).collect(),
        c: Counters::default(),
        delivery: Latency::default(),
        ack: Latency::default(),
    });
    for (i, mut events) in receivers.into_iter().enumerate() {
        let shared = shared.clone();
        let me = names[i].clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                on_event(&shared, i, &me, event);
            }
        });
    }
    let s = shared.clone();
    let ticker = progress("chat", move || {
        let c = &s.c;
        let (sent, acked, errs) = (
            c.sent.load(Relaxed),
            c.acked.load(Relaxed),
            c.send_errors.load(Relaxed),
        );
        format!(
            "sent {sent} acked {acked} delivered {} in flight {} errors {errs} dup {} reconnects {}",
            c.delivered.load(Relaxed),
            sent - acked - errs,
            c.duplicated.load(Relaxed),
            c.disconnects.load(Relaxed),
        )
    });

    // Open loop: message k is due at start + k / rate, sent on time whatever came before. The
    // pacing runs on a thread of its own with the system's sleep rather than on a runtime
    // timer, whose millisecond ticks would make every message up to 1-2 ms late before it is
    // even sent (and that lateness counts as latency). It wakes at most every PACE: at high
    // rates the messages due since are handed to the runtime together, in one task, so the
    // pacing costs one wakeup per PACE rather than one per message.
    let pid = args.server_pid.as_deref();
    let cpu_before = (cpu_secs("self"), pid.and_then(cpu_secs));
    let start = shared.start;
    let runtime = tokio::runtime::Handle::current();
    let (users, prefix) = (args.users, env.prefix.clone());
    let (pace_shared, pace_names) = (shared.clone(), names.clone());
    let pacer = tokio::task::spawn_blocking(move || {
        let shared = pace_shared;
        let mut k = 0u64;
        while k < total {
            let now = start.elapsed();
            let mut due = Vec::new();
            while k < total && shared.due(k) <= now {
                let (from, to) = pair(k, users);
                let client = online[from].clone();
                let body = content(k, shared.due(k), to, size);
                let to_user = pace_names[to].clone();
                let cmid = format!("{prefix}-{k}");
                shared.c.sent.fetch_add(1, Relaxed);
                due.push((client, k, to_user, body, cmid));
                k += 1;
            }
            if !due.is_empty() {
                let batch = shared.clone();
                // One task per batch, polling its sends together (a task per message cost a
                // spawn, a registration with the runtime and its removal each).
                runtime.spawn(async move {
                    let mut sends: FuturesUnordered<_> = due
                        .into_iter()
                        .map(|(client, k, to_user, body, cmid)| {
                            send_one(batch.clone(), client, k, to_user, body, cmid)
                        })
                        .collect();
                    while sends.next().await.is_some() {}
                });
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
    let c = &shared.c;
    while Instant::now() < deadline {
        let settled = c.acked.load(Relaxed) + c.send_errors.load(Relaxed) == total;
        if settled && c.delivered.load(Relaxed) >= c.acked.load(Relaxed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A last moment for a duplicate that would arrive right behind the original.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ticker.abort();
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
    let mut report = report(
        &shared,
        args,
        total,
        send_window,
        login_secs,
        stored.as_deref(),
    );
    if let Some(harness) = cpu.0 {
        report.add_f("harness CPU while sending", harness, 0, "% of one core");
    }
    if let Some(server) = cpu.1 {
        report.add_f("server CPU while sending", server, 0, "% of one core");
    }
    for client in &online {
        client.close().await;
    }
    Ok(report)
}

/// Sends message `k` and records its ack (latency from its scheduled time).
async fn send_one(
    shared: Arc<Shared>,
    client: Arc<Client>,
    k: u64,
    to_user: String,
    body: Vec<u8>,
    cmid: String,
) {
    let result = client.send(direct(to_user), 1, body, Some(cmid)).await;
    let late = shared.start.elapsed().saturating_sub(shared.due(k));
    let c = &shared.c;
    match result {
        Ok(ack) => {
            shared.ack.record(late);
            shared.state[k as usize].store(ACKED, Relaxed);
            c.acked.fetch_add(1, Relaxed);
            let now = shared.start.elapsed().as_micros() as u64;
            c.last_ack_us.fetch_max(now, Relaxed);
            if ack.duplicate {
                c.ack_duplicate.fetch_add(1, Relaxed);
            }
        }
        Err(e) => {
            shared.state[k as usize].store(FAILED, Relaxed);
            c.send_errors.fetch_add(1, Relaxed);
            c.error(format!("send #{k}: {e}"));
        }
    }
}

/// CPU use between two readings over `window`, in percent of one core.
fn cpu_use(before: Option<f64>, after: Option<f64>, window: Duration) -> Option<f64> {
    Some((after? - before?) * 100.0 / window.as_secs_f64().max(1e-9))
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

fn on_event(shared: &Shared, me_index: usize, me: &str, event: ClientEvent) {
    let c = &shared.c;
    let entry = match event {
        ClientEvent::Entry(entry) => entry,
        ClientEvent::Disconnected { reason, .. } => {
            c.disconnects.fetch_add(1, Relaxed);
            c.error(format!("{me} disconnected: {reason:?}"));
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
    if k as usize >= shared.seen.len() {
        c.foreign.fetch_add(1, Relaxed);
        return;
    }
    if to != Some(me_index as u32) {
        c.misrouted.fetch_add(1, Relaxed);
        c.error(format!("message #{k} for user {to:?} arrived at {me}"));
        return;
    }
    let now = shared.start.elapsed();
    if shared.seen[k as usize].fetch_add(1, Relaxed) == 0 {
        shared
            .delivery
            .record(now.saturating_sub(Duration::from_micros(due)));
        c.delivered.fetch_add(1, Relaxed);
        c.last_delivery_us
            .fetch_max(now.as_micros() as u64, Relaxed);
    } else {
        c.duplicated.fetch_add(1, Relaxed);
        c.error(format!(
            "message #{k} delivered again to {me} (msg_id {})",
            m.msg_id
        ));
    }
}
