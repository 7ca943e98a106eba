//! `offline`: one user sends N messages to a user who is offline; then that user connects,
//! logs in and SYNCs (pages of --limit, 5000 by default) until `has_more` is false. Reports the
//! time from LOGIN to the last message synced and the number of SYNC round trips, and checks
//! that every message arrived exactly once, in version order, with no gaps.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{stream, StreamExt};
use missive_client::{direct, pb, Connection};
use missive_protocol::Packet;

use crate::common::{Common, Env, DEVICE};
use crate::stats::{progress, Report};
use crate::workload::offline::{add_catch_up, add_queue, Copies};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Messages queued for the offline user.
    #[arg(short = 'n', long, default_value_t = 10_000)]
    pub messages: u64,
    /// Content bytes per message (at least 8).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Sends in flight at once while queueing.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// SYNC page size asked for (the server caps it at 5000).
    #[arg(long, default_value_t = 5000)]
    pub limit: u32,
    /// Seconds allowed for each SYNC round trip.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

pub async fn run(env: &Env, args: &Args) -> Result<Report> {
    let n = args.messages;
    let sender_name = env.user("o-sender", 0);
    let reader_name = env.user("o-reader", 0);
    let sender = Arc::new(env.client(&sender_name, 0).await?);

    // Queue phase: the reader is offline, so everything lands in its inbox only.
    let acked = Arc::new(AtomicU64::new(0));
    let a = acked.clone();
    let ticker = progress("offline", move || {
        format!("queued {} of {n}", a.load(Relaxed))
    });
    let queue_start = Instant::now();
    let size = args.size.max(8);
    let errors: Vec<String> = stream::iter(0..n)
        .map(|k| {
            let sender = sender.clone();
            let to = reader_name.clone();
            let acked = acked.clone();
            let cmid = format!("{}-{k}", env.prefix);
            async move {
                let mut body = k.to_le_bytes().to_vec();
                body.resize(size, b'.');
                let r = sender.send(direct(to), 1, body, Some(cmid)).await;
                acked.fetch_add(u64::from(r.is_ok()), Relaxed);
                r.err().map(|e| format!("send #{k}: {e}"))
            }
        })
        .buffer_unordered(args.window.max(1))
        .filter_map(|e| async move { e })
        .collect()
        .await;
    let queue_time = queue_start.elapsed();
    ticker.abort();
    sender.close().await;
    let queued = acked.load(Relaxed);
    eprintln!(
        "missive-load: queued {queued} messages in {:.2} s; the reader logs in",
        queue_time.as_secs_f64()
    );

    // Catch-up phase: connect, LOGIN with last_version 0, SYNC pages until has_more is false.
    let timeout = Duration::from_secs(args.timeout);
    let mut conn = Connection::connect_timeout(env.addr(0), timeout)
        .await
        .context("reader cannot connect")?;
    let token = env.token(&reader_name)?;
    let t0 = Instant::now();
    let ack = tokio::time::timeout(timeout, conn.login(&token, DEVICE, 0))
        .await
        .context("reader LOGIN timed out")?
        .context("reader LOGIN")?;
    let login_time = t0.elapsed();
    let mut seen = vec![0u8; n as usize];
    let (mut since, mut round_trips, mut entries, mut foreign) = (0u64, 0u64, 0u64, 0u64);
    let mut version_errors = Vec::new();
    let mut page_ms = Vec::new();
    loop {
        let page_start = Instant::now();
        let body = pb::Sync {
            since_version: since,
            limit: args.limit,
        };
        let page = match conn.request_timeout(Packet::Sync(body), timeout).await {
            Ok(Packet::SyncAck(page)) => page,
            Ok(other) => bail!("SYNC answered with {}", other.command().name()),
            Err(e) => bail!("SYNC from version {since} failed: {e}"),
        };
        page_ms.push(page_start.elapsed().as_secs_f64() * 1e3);
        round_trips += 1;
        for entry in &page.entries {
            entries += 1;
            if entry.version != since + 1 && version_errors.len() < 5 {
                version_errors.push(format!("version {} after {since}", entry.version));
            }
            since = entry.version;
            match &entry.body {
                Some(pb::inbox_entry::Body::Message(m)) if m.content.len() >= 8 => {
                    let k = u64::from_le_bytes(m.content[..8].try_into().expect("8 bytes"));
                    match seen.get_mut(k as usize) {
                        Some(s) if m.from_user == sender_name => *s = s.saturating_add(1),
                        _ => foreign += 1,
                    }
                }
                _ => foreign += 1,
            }
        }
        if page.new_version != since {
            version_errors.push(format!(
                "new_version {} but last entry {since}",
                page.new_version
            ));
        }
        since = page.new_version;
        if !page.has_more {
            break;
        }
        if page.entries.is_empty() {
            bail!("SYNC from {since}: has_more with an empty page");
        }
    }
    let sync_time = t0.elapsed();

    let copies = Copies::count(seen.iter().copied());
    let mut r = Report::new("offline");
    let window = args.window.max(1) as u64;
    add_queue(&mut r, queued, errors.len() as u64, queue_time, window);
    r.add("LOGIN_ACK current_version", ack.current_version, "");
    r.add("LOGIN_ACK unread_total", ack.unread_total, "");
    r.add_f("login time", login_time.as_secs_f64() * 1e3, 1, "ms");
    r.add("sync page limit", u64::from(args.limit), "");
    r.add("sync round trips", round_trips, "");
    r.add(
        "sync page times",
        page_ms
            .iter()
            .map(|ms| format!("{ms:.0}"))
            .collect::<Vec<_>>()
            .join(","),
        "ms",
    );
    r.add("entries synced", entries, "");
    add_catch_up(&mut r, sync_time.as_secs_f64(), entries);
    copies.add_to(&mut r);
    r.add("unrecognised entries", foreign, "");
    for e in errors.iter().take(5) {
        r.add("sample error", e.clone(), "");
    }
    for e in &version_errors {
        r.add("version error", e.clone(), "");
    }
    if !errors.is_empty() {
        r.fail(format!("{} sends failed", errors.len()));
    }
    copies.check(&mut r, n, "synced");
    if !version_errors.is_empty() {
        r.fail("inbox versions not contiguous".to_string());
    }
    if ack.current_version != since {
        r.fail(format!(
            "LOGIN_ACK current_version {} but synced up to {since}",
            ack.current_version
        ));
    }
    Ok(r)
}
