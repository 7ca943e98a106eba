//! Attacks on the store's writer and the connection thread: the huge GROUP_CREATE, UNREAD for a
//! user in many groups, repeated MARK_READ.

use std::time::{Duration, Instant};

use anyhow::Result;
use missive_client::{direct, pb};
use missive_protocol::Packet;

use super::figures::{self, bytes_text, short_ms};
use super::outcome::Outcome;
use super::raw::{self, Raw};
use super::rig::Rig;

/// Requests in flight while an attacker sets up or pipelines (the server handles at most 64
/// of a connection's requests at once; more only wait in its socket).
const WINDOW: usize = 64;
/// The bulk load of mark-read: users, and sends in flight per user. The send rate limit is
/// 2,000/s per connection (burst 4,000): 32 users may send 64,000/s, far above what this box's
/// server takes, so the limit never paces them (with 16, the baseline was paced by the burst
/// allowance and the attack phase by the rate, which made the two incomparable).
const BULK_USERS: usize = 32;
const BULK_WINDOW: usize = 8;
/// Longest wait for any one reply while setting up.
const SETUP_REPLY: Duration = Duration::from_secs(60);

/// A logged-in raw connection of `user` (device `device`).
pub async fn attacker(rig: &Rig<'_>, user: &str, device: &str) -> Result<Raw> {
    let mut raw = Raw::connect(rig.addr()).await?;
    raw.login(&rig.token(user, device), device).await?;
    Ok(raw)
}

/// GROUP_CREATE with `--members` distinct short ids: the server's duplicate check is done
/// member by member against those before it, on the store's writer thread, before the size
/// limit refuses the group.
pub async fn group_create_huge(rig: &mut Rig<'_>) -> Result<Outcome> {
    let n = rig.args.members;
    let ids = figures::member_ids(n);
    let width = figures::id_width(n);
    let packet = Packet::GroupCreate(pb::GroupCreate {
        name: "huge".into(),
        members: ids,
        history: 0,
        ..Default::default()
    });
    let mut raw = attacker(rig, "mallory", "attacker").await?;
    let frame = raw.frame(&packet);
    let wire = frame.to_bytes();
    rig.honest(None, false).await?;
    rig.attack_begins().await;
    let t0 = Instant::now();
    raw.write(&wire).await?;
    let reply = raw
        .reply(frame.request_id, Duration::from_secs(rig.args.bound))
        .await;
    let took = t0.elapsed();
    rig.attack_ends();
    raw.shutdown().await;
    let mut o = Outcome::new("");
    o.set("members", n as u64);
    o.set("member_id_chars", width as u64);
    o.set("compressed", false);
    o.set("body_bytes", frame.body.len() as u64);
    o.set("frame_bytes", wire.len() as u64);
    o.set("reply_secs", (took.as_secs_f64() * 1000.0).round() / 1000.0);
    let what = format!(
        "GROUP_CREATE of {n} distinct {width}-char members ({} plain body)",
        bytes_text(frame.body.len() as f64)
    );
    match reply {
        Ok((p, _)) => {
            let name = raw::reply_name(&p);
            o.set("reply", name.clone());
            if let Packet::GroupCreateAck(a) = &p {
                let count = a.group.as_ref().map_or(0, |g| g.member_count);
                o.set("member_count", count);
            }
            o.headline = format!("{what} answered {name} after {} s", secs(took));
        }
        Err(e) => {
            o.set("reply", format!("none: {e:#}"));
            o.problems.push(format!("no reply: {e:#}"));
            o.headline = format!("{what}: no reply after {} s ({e:#})", secs(took));
        }
    }
    Ok(o)
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

/// What [`create_groups`] got: how long it took and how many groups it made.
pub struct Created {
    pub took: Duration,
    pub created: usize,
    /// The server refused more with LIMIT_EXCEEDED (a user's `max_groups_per_user`).
    pub capped: bool,
}

/// Creates up to `count` groups owned by the connection's user (each with `members` besides),
/// pipelined in batches as an attacker would: a batch answered RATE_LIMITED in part is sent
/// again after a pause, and creating stops at the first LIMIT_EXCEEDED (the owner or a member
/// is in as many groups as a user may be). Fails on any other refusal.
pub async fn create_groups(
    raw: &mut Raw,
    count: usize,
    members: &[String],
    name: impl Fn(usize) -> String,
) -> Result<Created> {
    let t0 = Instant::now();
    let mut created = 0usize;
    let mut capped = false;
    let mut i = 0usize;
    while created < count && !capped {
        let batch = (count - created).min(WINDOW);
        let requests: Vec<Packet> = (0..batch)
            .map(|k| {
                Packet::GroupCreate(pb::GroupCreate {
                    name: name(i + k),
                    members: members.to_vec(),
                    history: 0,
                    ..Default::default()
                })
            })
            .collect();
        i += batch;
        let counts = raw::pipeline(raw, requests, WINDOW, SETUP_REPLY, |_| {}).await?;
        for (reply, n) in &counts {
            match reply.as_str() {
                "GROUP_CREATE_ACK" => created += *n as usize,
                "RATE_LIMITED" => {}
                "LIMIT_EXCEEDED" => capped = true,
                _ => anyhow::bail!("setup: group creation answered {counts:?}"),
            }
        }
        if counts.contains_key("RATE_LIMITED") {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(Created {
        took: t0.elapsed(),
        created,
        capped,
    })
}

/// A user in `--groups` groups pipelines `--unreads` UNREADs: each adds up every group's unread
/// count, on the connection's own task.
pub async fn unread_many_groups(rig: &mut Rig<'_>) -> Result<Outcome> {
    let asked = rig.args.groups;
    let mut raw = attacker(rig, "mallory", "attacker").await?;
    eprintln!("   setup: creating {asked} groups");
    let made = create_groups(&mut raw, asked, &[], |i| format!("g{i}")).await?;
    let (groups, setup) = (made.created, made.took);
    // One UNREAD alone first: its reply, and how long one takes with no other load.
    let t = Instant::now();
    let (one, one_read) = raw
        .request(
            &Packet::Unread(pb::Unread::default()),
            Duration::from_secs(rig.args.bound),
        )
        .await?;
    let one_took = t.elapsed();
    let n = rig.args.unreads.max(1);
    let mut burst = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..n {
        let f = raw.frame(&Packet::Unread(pb::Unread::default()));
        ids.push(f.request_id);
        burst.extend_from_slice(&f.to_bytes());
    }
    rig.honest(None, false).await?;
    rig.attack_begins().await;
    let t0 = Instant::now();
    raw.write(&burst).await?;
    let mut replies = std::collections::BTreeMap::<String, u64>::new();
    let mut problem = None;
    let deadline = Duration::from_secs(rig.args.bound);
    for id in &ids {
        let left = deadline.saturating_sub(t0.elapsed());
        match raw.reply(*id, left).await {
            Ok((p, _)) => *replies.entry(raw::reply_name(&p)).or_insert(0) += 1,
            Err(e) => {
                problem = Some(format!("{e:#}"));
                break;
            }
        }
    }
    let took = t0.elapsed();
    rig.attack_ends();
    raw.shutdown().await;
    let answered: u64 = replies.values().sum();
    let mut o = Outcome::new(format!(
        "user in {groups} groups: {n} pipelined UNREADs answered in {} s ({answered} replies: \
         {replies:?}; one alone {} ms, reply {})",
        secs(took),
        short_ms(one_took),
        bytes_text(one_read.wire_len as f64),
    ));
    o.set("groups", groups as u64);
    o.set("groups_asked", asked as u64);
    o.set("groups_capped", made.capped);
    o.set("setup_secs", setup.as_secs_f64());
    o.set("unreads", n as u64);
    o.set("answered", answered);
    o.set("replies", serde_json::to_value(&replies)?);
    o.set("burst_secs", (took.as_secs_f64() * 1000.0).round() / 1000.0);
    o.set("one_unread_ms", figures::ms(one_took));
    o.set("one_reply", raw::reply_name(&one));
    o.set("unread_reply_wire_bytes", one_read.wire_len as u64);
    if let Some(p) = problem {
        o.problems.push(format!("after {answered} replies: {p}"));
    }
    Ok(o)
}

/// MARK_READ over and over (64 in flight) on a conversation of 1,000 messages, while a bulk
/// load measures what honest senders get through: each MARK_READ recounts and, as a change
/// that scans, first has every pending change committed.
pub async fn mark_read(rig: &mut Rig<'_>) -> Result<Outcome> {
    const MESSAGES: u64 = 1000;
    let mut friend = attacker(rig, "mallory-friend", "attacker").await?;
    let sends = (0..MESSAGES).map(|k| {
        Packet::Send(pb::Send {
            client_msg_id: format!("setup-{k}"),
            to: Some(direct("mallory")),
            content_type: 1,
            content: format!("unread {k}").into_bytes(),
            ..Default::default()
        })
    });
    let counts = raw::pipeline(&mut friend, sends, WINDOW, SETUP_REPLY, |_| {}).await?;
    if counts.get("SEND_ACK").copied().unwrap_or(0) != MESSAGES {
        anyhow::bail!("setup: sends answered {counts:?}");
    }
    friend.shutdown().await;
    let conns = rig.args.mark_read_connections.max(1);
    let mut attackers = Vec::new();
    for i in 0..conns {
        attackers.push(attacker(rig, "mallory", &format!("attacker-{i}")).await?);
    }
    rig.honest(Some((BULK_USERS, BULK_WINDOW)), false).await?;
    rig.attack_begins().await;
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(rig.args.duration.max(0.1));
    let mut tasks = tokio::task::JoinSet::new();
    for mut raw in attackers {
        tasks.spawn(async move {
            let mut wrote = 0u64;
            let requests = (1u64..)
                .map(|k| {
                    Packet::MarkRead(pb::MarkRead {
                        conversation: Some(direct("mallory-friend")),
                        up_to_seq: k,
                    })
                })
                .take_while(|_| Instant::now() < end);
            let result = raw::pipeline(&mut raw, requests, WINDOW, SETUP_REPLY, |p| {
                if let Packet::MarkReadAck(a) = p {
                    wrote += u64::from(a.version != 0);
                }
            })
            .await;
            raw.shutdown().await;
            (result, wrote)
        });
    }
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    let (mut wrote, mut problem) = (0u64, None);
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok((Ok(c), w)) => {
                wrote += w;
                for (k, v) in c {
                    *counts.entry(k).or_insert(0) += v;
                }
            }
            Ok((Err(e), _)) => problem = Some(format!("{e:#}")),
            Err(e) => problem = Some(e.to_string()),
        }
    }
    let took = t0.elapsed();
    rig.attack_ends();
    let mut o = Outcome::new("");
    let acked = counts.get("MARK_READ_ACK").copied().unwrap_or(0);
    o.headline = format!(
        "{conns} connection(s), {WINDOW} in flight each: {acked} MARK_READs answered in {} s \
         ({:.0}/s, {wrote} of them wrote a READ_SYNC; replies {counts:?})",
        secs(took),
        figures::rate(acked, took.as_secs_f64())
    );
    o.set("mark_reads_answered", acked);
    o.set("mark_reads_per_s", figures::rate(acked, took.as_secs_f64()));
    o.set("mark_reads_that_wrote", wrote);
    o.set("replies", serde_json::to_value(&counts)?);
    o.set("conversation_messages", MESSAGES);
    o.set("connections", conns as u64);
    o.set("bulk_users", BULK_USERS as u64);
    o.set("bulk_window", BULK_WINDOW as u64);
    if let Some(p) = problem {
        o.problems.push(p);
    }
    Ok(o)
}
