//! Attacks through the size of replies: pipelined large pages to a client that never reads
//! (SYNC, GROUP_HISTORY, CONTACTS), and the GROUP_LIST of a user added to many groups.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use missive_client::{direct, group, pb};
use missive_protocol::{Frame, Packet, DEFAULT_MAX_FRAME_LEN};
use rand::Rng;

use super::attacks::{attacker, create_groups};
use super::figures::{bytes_text, fit_in_read, mib, per_connection_bytes};
use super::outcome::Outcome;
use super::raw::{self, Raw};
use super::rig::Rig;
use super::server;

/// Messages that fill the pages: 12 of 60 KiB, more than the server's page budget (half the
/// frame limit, 512 KiB) can hold, of random bytes so that compression does not shrink them.
const BIG_MESSAGES: usize = 12;
const BIG_CONTENT: usize = 60 * 1024;
/// The server reads a connection 4 KiB at a time and answers every complete request of a read
/// before it writes: that many pipelined requests are answered into one write buffer.
const SERVER_READ: usize = 4096;
/// The attacker's socket receive buffer: small, so that what the server sends stays with it.
const ATTACKER_RCVBUF: u32 = 4096;

fn random_content() -> Vec<u8> {
    let mut v = vec![0u8; BIG_CONTENT];
    rand::rng().fill(&mut v[..]);
    v
}

fn big_send(to: pb::Conversation, k: usize) -> Packet {
    Packet::Send(pb::Send {
        client_msg_id: format!("big-{k}"),
        to: Some(to),
        content_type: 1,
        content: random_content(),
        ..Default::default()
    })
}

/// `sync-pipeline`, `history-pipeline`, `contacts-pipeline`.
pub async fn pipeline(rig: &mut Rig<'_>, name: &str) -> Result<Outcome> {
    let mut setup = attacker(rig, "mallory", "setup").await?;
    let request = match name {
        "history-pipeline" => {
            let (p, _) = setup
                .request(
                    &Packet::GroupCreate(pb::GroupCreate {
                        name: "history".into(),
                        members: Vec::new(),
                        history: 0,
                        ..Default::default()
                    }),
                    Duration::from_secs(30),
                )
                .await?;
            let Packet::GroupCreateAck(pb::GroupAck { group: Some(g) }) = p else {
                bail!("setup: GROUP_CREATE answered {}", raw::describe(&p));
            };
            let sends = (0..BIG_MESSAGES).map(|k| big_send(group(g.group_id.clone()), k));
            raw::pipeline(&mut setup, sends, 4, Duration::from_secs(30), |_| {}).await?;
            Packet::GroupHistory(pb::GroupHistory {
                group_id: g.group_id,
                before_seq: 0,
                after_seq: 0,
                limit: 500,
                // Newest first, as an old server reads these bounds too.
                order: pb::HistoryOrder::NewestFirst as i32,
            })
        }
        _ => {
            let sends = (0..BIG_MESSAGES).map(|k| big_send(direct(format!("sink-{k}")), k));
            raw::pipeline(&mut setup, sends, 4, Duration::from_secs(30), |_| {}).await?;
            if name == "contacts-pipeline" {
                Packet::Contacts(pb::Contacts {
                    cursor: Vec::new(),
                    limit: 200,
                })
            } else {
                Packet::Sync(pb::Sync {
                    since_version: 0,
                    limit: 5000,
                })
            }
        }
    };
    // One reply, read as a client would: its size is what each pipelined request costs.
    let (one, one_read) = setup.request(&request, Duration::from_secs(30)).await?;
    setup.shutdown().await;
    let one_inflated = one.encode_body().len();
    let items = match &one {
        Packet::SyncAck(a) => a.entries.len(),
        Packet::GroupHistoryAck(a) => a.messages.len(),
        Packet::ContactsAck(a) => a.contacts.len(),
        _ => 0,
    };
    let frame_len = Frame::new(&request, 1).encoded_len();
    let per_conn = fit_in_read(frame_len, SERVER_READ);
    let conns = rig.args.pipeline_connections.max(1);
    let mut attackers = Vec::new();
    for i in 0..conns {
        let mut raw = Raw::connect_small_rcvbuf(rig.addr(), ATTACKER_RCVBUF).await?;
        let device = format!("pipe-{i}");
        raw.login(&rig.token("mallory", &device), &device).await?;
        attackers.push(raw);
    }
    rig.honest(None, false).await?;
    let http = rig.server.http_addr.clone();
    // The least of a few readings: an honest login probe may be open for a moment.
    let mut open_before: Option<f64> = None;
    for _ in 0..4 {
        if let Some(v) = server::metric(&http, "missive_connections").await {
            open_before = Some(open_before.map_or(v, |m| m.min(v)));
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    rig.attack_begins().await;
    let t0 = Instant::now();
    for raw in &mut attackers {
        let mut burst = Vec::with_capacity(per_conn * frame_len);
        for _ in 0..per_conn {
            burst.extend_from_slice(&raw.frame(&request).to_bytes());
        }
        raw.write(&burst).await?;
    }
    // When the server lets the connections go: its connections gauge (the attackers are
    // counted in it from their login on) polled through the hold.
    let hold_end = t0 + Duration::from_secs_f64(rig.args.hold.max(0.0));
    let (mut first_gone, mut all_gone) = (None, None);
    while Instant::now() < hold_end {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (Some(before), Some(now)) = (
            open_before,
            server::metric(&http, "missive_connections").await,
        ) else {
            continue;
        };
        let at = t0.elapsed().as_secs_f64();
        if now < before && first_gone.is_none() {
            first_gone = Some(at);
        }
        if now <= before - conns as f64 && all_gone.is_none() {
            all_gone = Some(at);
        }
    }
    let end_kib = rig.server.rss_kib();
    // Whether the server has given up on each connection: read what it still sends (bounded)
    // and look for the end of the stream.
    let mut closed = 0;
    for raw in &mut attackers {
        if drained_to_eof(raw, 16 << 20, Duration::from_secs(2)).await {
            closed += 1;
        }
    }
    drop(attackers);
    let after_close = server::settled_rss_kib(&rig.server, Duration::from_secs(6)).await;
    // The attack's phase (and the RSS peak) runs until the server has settled after the close:
    // a server still building replies when the hold ends is still paying for the attack.
    rig.attack_ends();

    let before = rig.rss_before.unwrap_or(0);
    let peak = rig.peak_kib().unwrap_or(0);
    let per = per_connection_bytes(before, peak, conns).unwrap_or(0.0);
    let cmd = request.command().name();
    let mut o =
        Outcome::new(format!(
        "{conns} connections that never read, {per_conn} pipelined {cmd} each ({} sent each; one \
         reply {} on the wire, {} inflated, {items} items): server held {} per connection \
         (RSS {}→{} MiB); the server dropped the first after {} s, all after {} s; at end of the \
         {:.0} s hold {} MiB; {closed}/{conns} found closed; after close {} MiB",
        bytes_text((per_conn * frame_len) as f64),
        bytes_text(one_read.wire_len as f64),
        bytes_text(one_inflated as f64),
        bytes_text(per),
        mib(before),
        mib(peak),
        first_gone.map_or("-".into(), |s| format!("{s:.1}")),
        all_gone.map_or(format!("more than {:.0}", rig.args.hold), |s| format!("{s:.1}")),
        rig.args.hold,
        end_kib.map_or("-".into(), |k| mib(k).to_string()),
        after_close.map_or("-".into(), |k| mib(k).to_string()),
    ));
    o.set("request", cmd);
    o.set("connections", conns as u64);
    o.set("requests_per_connection", per_conn as u64);
    o.set(
        "request_bytes_per_connection",
        (per_conn * frame_len) as u64,
    );
    o.set("one_reply_wire_bytes", one_read.wire_len as u64);
    o.set("one_reply_inflated_bytes", one_inflated as u64);
    o.set("one_reply_compressed", one_read.frame.flags.compressed());
    o.set("one_reply_items", items as u64);
    o.set(
        "reply_bytes_due_per_connection",
        (per_conn * one_read.wire_len) as u64,
    );
    o.set("bytes_held_per_connection", per.round());
    o.set("first_dropped_after_secs", serde_json::json!(first_gone));
    o.set("all_dropped_after_secs", serde_json::json!(all_gone));
    o.set("rss_end_of_hold_mib", serde_json::json!(end_kib.map(mib)));
    o.set(
        "rss_after_close_mib",
        serde_json::json!(after_close.map(mib)),
    );
    o.set("hold_secs", rig.args.hold);
    o.set("closed_by_server", closed as u64);
    o.set("attacker_rcvbuf", ATTACKER_RCVBUF);
    Ok(o)
}

/// Reads and drops up to `limit` bytes; true if the stream ended (or failed) within `t`.
async fn drained_to_eof(raw: &mut Raw, limit: usize, t: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + t;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    while total < limit {
        match tokio::time::timeout_at(deadline, raw.read_raw(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(n)) => total += n,
            Err(_) => return false,
        }
    }
    false
}

/// A victim added to `--groups` groups (names of 128 random characters, the limit) by someone
/// else, without any consent asked, lists its groups.
pub async fn group_list_many(rig: &mut Rig<'_>) -> Result<Outcome> {
    let asked = rig.args.groups;
    let mut raw = attacker(rig, "mallory", "attacker").await?;
    eprintln!("   setup: adding the victim to {asked} groups");
    let victim = vec!["victim".to_string()];
    let made = create_groups(&mut raw, asked, &victim, |_| {
        let mut rng = rand::rng();
        (0..128)
            .map(|_| rng.sample(rand::distr::Alphanumeric) as char)
            .collect()
    })
    .await?;
    let (groups, setup) = (made.created, made.took);
    raw.shutdown().await;
    let mut v = attacker(rig, "victim", "phone").await?;
    rig.honest(None, false).await?;
    rig.attack_begins().await;
    let t0 = Instant::now();
    let reply = v
        .request(
            &Packet::GroupList(pb::GroupList::default()),
            Duration::from_secs(rig.args.bound),
        )
        .await;
    let took = t0.elapsed();
    rig.attack_ends();
    v.shutdown().await;
    let mut o = Outcome::new("");
    o.set("groups", groups as u64);
    o.set("groups_asked", asked as u64);
    o.set("groups_capped", made.capped);
    o.set("setup_secs", setup.as_secs_f64());
    o.set("reply_secs", (took.as_secs_f64() * 1000.0).round() / 1000.0);
    match reply {
        Ok((p, r)) => {
            let inflated = p.encode_body().len();
            let listed = match &p {
                Packet::GroupListAck(a) => a.groups.len(),
                _ => 0,
            };
            // What a client that applies the protocol's 1 MiB limit makes of it: the frame's
            // length field, then the inflated body.
            let frame_ok = r.wire_len - 4 <= DEFAULT_MAX_FRAME_LEN;
            let body_ok = r.frame.packet(DEFAULT_MAX_FRAME_LEN).is_ok();
            let verdict = match (frame_ok, body_ok) {
                (false, _) => {
                    "a client applying the 1 MiB limit refuses the frame (FRAME_TOO_LARGE)"
                }
                (true, false) => "a client applying the 1 MiB limit refuses the body (BAD_BODY)",
                (true, true) => "within the 1 MiB limit",
            };
            o.headline = format!(
                "victim in {groups} groups: GROUP_LIST answered {} in {} s, {} on the wire{}, \
                 {} inflated, {listed} groups: {verdict}",
                raw::reply_name(&p),
                format_args!("{:.2}", took.as_secs_f64()),
                bytes_text(r.wire_len as f64),
                if r.frame.flags.compressed() {
                    " (compressed)"
                } else {
                    ""
                },
                bytes_text(inflated as f64),
            );
            o.set("reply", raw::reply_name(&p));
            o.set("reply_wire_bytes", r.wire_len as u64);
            o.set("reply_compressed", r.frame.flags.compressed());
            o.set("reply_inflated_bytes", inflated as u64);
            o.set("groups_listed", listed as u64);
            o.set("client_limit_frame_ok", frame_ok);
            o.set("client_limit_body_ok", body_ok);
            o.set("inflated_over_1mib", inflated > DEFAULT_MAX_FRAME_LEN);
        }
        Err(e) => {
            o.problems.push(format!("GROUP_LIST: {e:#}"));
            o.headline = format!(
                "victim in {groups} groups: GROUP_LIST got no reply ({e:#}) after {:.2} s",
                took.as_secs_f64()
            );
        }
    }
    Ok(o)
}
