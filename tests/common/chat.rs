//! Users chatting 1:1 with a cluster whose nodes come and go, through the reference client's
//! connections, and the check of what they end up with.
//!
//! Each user logs in at whichever node serves, sends one message at a time and waits for its
//! SEND_ACK. After any failure (the node closed the connection, an error reply, no answer in
//! 10 s) it logs in again wherever the cluster serves now and sends the same message again,
//! with the same client message id: a message stored before the failure is then acknowledged
//! as a duplicate, with the first one's id.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use missive_client::{ClientError, Connection};
use missive_protocol::pb;
use missive_protocol::Packet;

use super::{message, sync_all, SECRET};

pub fn user(i: usize) -> String {
    format!("u{i}")
}

/// Logs `name` in at whichever of `ports` serves, trying for up to 60 s; returns the
/// connection and the port that served.
pub async fn login(ports: &[u16], name: &str) -> (Connection, u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for &port in ports {
            let addr = format!("127.0.0.1:{port}");
            if let Ok(Ok(mut conn)) =
                tokio::time::timeout(Duration::from_secs(2), Connection::connect(&addr)).await
            {
                let expires = (missive::now_ms() / 1000) as u64 + 600;
                let token = missive_protocol::token::mint(SECRET.as_bytes(), name, "d", expires);
                let logged =
                    tokio::time::timeout(Duration::from_secs(5), conn.login(&token, "d", 0));
                if let Ok(Ok(_)) = logged.await {
                    return (conn, port);
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name}: no node served within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `from`'s message number `n`, to `to`: client message id `<from>-<n>`, text `<from> #<n>`.
pub fn send(to: &str, n: usize, from: &str) -> Packet {
    Packet::Send(pb::Send {
        client_msg_id: format!("{from}-{n}"),
        to: Some(pb::Conversation {
            kind: pb::ConversationKind::Direct as i32,
            id: to.into(),
        }),
        content_type: 1,
        content: format!("{from} #{n}").into_bytes(),
        ..Default::default()
    })
}

/// Who chats with whom, how much and how fast.
#[derive(Clone, Copy)]
pub struct Plan {
    pub users: usize,
    /// Messages each user sends at most (it stops sooner once [`Progress::stop`] is set).
    pub per_user: usize,
    /// The recipient of user `me`'s message number `n`.
    pub peer: fn(me: usize, n: usize) -> usize,
    /// The pause after each acknowledged send.
    pub pause: Duration,
}

/// One acknowledged send.
#[derive(Clone, Debug)]
pub struct Ack {
    pub to: usize,
    pub msg_id: u64,
    pub seq: u64,
    pub duplicate: bool,
    /// When the SEND_ACK arrived.
    pub at: Instant,
}

/// What one user's sends were acknowledged with, by message number.
pub type Acks = BTreeMap<usize, Ack>;

/// What every user's chat has done so far, shared with the test driving the cluster.
#[derive(Default)]
pub struct Progress {
    /// Sends acknowledged, over every user.
    pub acked: AtomicUsize,
    /// Set to end the chat: each user stops after its next acknowledged send.
    pub stop: AtomicBool,
    /// Sends tried again, by what the previous try ended with.
    retries: Mutex<BTreeMap<String, usize>>,
}

impl Progress {
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` sends were acknowledged (at most `limit`).
    pub async fn wait_acked(&self, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.acked() < n {
            assert!(
                Instant::now() < deadline,
                "{} sends acknowledged in {limit:?}, waited for {n}",
                self.acked()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends tried again so far, by what the try before ended with.
    pub fn retries(&self) -> BTreeMap<String, usize> {
        self.retries.lock().unwrap().clone()
    }

    fn retried(&self, why: String) {
        *self.retries.lock().unwrap().entry(why).or_default() += 1;
    }
}

/// Why a send was not acknowledged, in a word.
fn failure(reply: &Result<Packet, ClientError>) -> String {
    match reply {
        Ok(other) => format!("reply {}", other.command().name()),
        Err(ClientError::Server { name, .. }) => name.clone(),
        Err(ClientError::Timeout) => "no answer in 10 s".into(),
        Err(ClientError::Closed) => "connection closed".into(),
        Err(ClientError::Io(_)) => "i/o error".into(),
        Err(e) => e.to_string(),
    }
}

/// User `me` chats by `plan` with the nodes at `ports` until it has sent `plan.per_user`
/// messages or `progress.stop` is set; returns its acknowledgements. A send is tried until it
/// is acknowledged, so every message a user started is acknowledged when it stops.
pub async fn chat(plan: Plan, me: usize, ports: Vec<u16>, progress: Arc<Progress>) -> Acks {
    let name = user(me);
    let (mut conn, _) = login(&ports, &name).await;
    let mut acks = Acks::new();
    for n in 0..plan.per_user {
        if progress.stop.load(Ordering::Relaxed) {
            break;
        }
        let to = (plan.peer)(me, n);
        loop {
            let reply = conn
                .request_timeout(send(&user(to), n, &name), Duration::from_secs(10))
                .await;
            if let Ok(Packet::SendAck(ack)) = reply {
                let at = Instant::now();
                let (msg_id, seq, duplicate) = (ack.msg_id, ack.seq, ack.duplicate);
                let ack = Ack {
                    to,
                    msg_id,
                    seq,
                    duplicate,
                    at,
                };
                acks.insert(n, ack);
                progress.acked.fetch_add(1, Ordering::Relaxed);
                break;
            }
            // The node died, is stopping or lost the partition: log in wherever the partition
            // is served now and send the same message again, with the same client message id.
            progress.retried(failure(&reply));
            conn = login(&ports, &name).await.0;
        }
        tokio::time::sleep(plan.pause).await;
    }
    acks
}

/// Starts every user's chat; [`finish`] collects them.
pub fn start(
    plan: Plan,
    ports: &[u16],
    progress: &Arc<Progress>,
) -> Vec<tokio::task::JoinHandle<Acks>> {
    (0..plan.users)
        .map(|i| tokio::spawn(chat(plan, i, ports.to_vec(), progress.clone())))
        .collect()
}

/// Stops the chats and returns every user's acknowledgements, by user number.
pub async fn finish(
    progress: &Progress,
    chats: Vec<tokio::task::JoinHandle<Acks>>,
) -> BTreeMap<usize, Acks> {
    progress.stop.store(true, Ordering::Relaxed);
    let mut all = BTreeMap::new();
    for (i, c) in chats.into_iter().enumerate() {
        all.insert(i, c.await.expect("the chat ends"));
    }
    all
}

/// The longest time in `[from, to]` in which no send of any user was acknowledged.
pub fn longest_silence(all: &BTreeMap<usize, Acks>, from: Instant, to: Instant) -> Duration {
    let mut times: Vec<Instant> = all
        .values()
        .flat_map(|a| a.values().map(|a| a.at))
        .filter(|&t| t > from && t < to)
        .collect();
    times.push(from);
    times.push(to);
    times.sort_unstable();
    times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

/// One acknowledged message: who sent it to whom, its number and its seq.
struct Sent {
    from: usize,
    to: usize,
    n: usize,
    seq: u64,
}

/// Checks every user's SYNC and UNREAD at whichever of `ports` serves against what was
/// acknowledged (`all`: user number -> acks): each user's inbox holds exactly the messages it
/// sent or was sent that were acknowledged, each once, with the id, seq, sender and text of
/// its acknowledgement, at versions 1, 2, 3, ...; each conversation's acknowledged seqs are 1,
/// 2, 3, ...; the unread counts equal a recount from the inbox. Returns the messages checked.
pub async fn check(ports: &[u16], all: &BTreeMap<usize, Acks>) -> usize {
    // Every acknowledged message by its id: ids are unique across users and messages (a
    // resend acknowledged as a duplicate carries the first one's id, under the same number).
    let mut sent: BTreeMap<u64, Sent> = BTreeMap::new();
    for (&from, acks) in all {
        for (&n, a) in acks {
            let before = sent.insert(
                a.msg_id,
                Sent {
                    from,
                    to: a.to,
                    n,
                    seq: a.seq,
                },
            );
            assert!(before.is_none(), "msg_id {} acked twice", a.msg_id);
        }
    }
    // Each conversation's seqs, from both sides' acks: 1, 2, 3, ... with no gap or repeat.
    let mut seqs: BTreeMap<(usize, usize), Vec<u64>> = BTreeMap::new();
    for s in sent.values() {
        let pair = (s.from.min(s.to), s.from.max(s.to));
        seqs.entry(pair).or_default().push(s.seq);
    }
    for (pair, mut seqs) in seqs {
        seqs.sort_unstable();
        let want: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, want, "conversation {pair:?}: acked seqs");
    }
    for &me in all.keys() {
        check_user(ports, me, &sent).await;
    }
    sent.len()
}

async fn check_user(ports: &[u16], me: usize, sent: &BTreeMap<u64, Sent>) {
    let name = user(me);
    let (mut conn, _) = login(ports, &name).await;
    let entries = sync_all(&mut conn, 0).await;
    let versions: Vec<u64> = entries.iter().map(|e| e.version).collect();
    let want: Vec<u64> = (1..=entries.len() as u64).collect();
    assert_eq!(versions, want, "{name}: versions gapless");
    let mut seen = BTreeSet::new();
    for e in &entries {
        let m = message(e);
        let s = sent
            .get(&m.msg_id)
            .unwrap_or_else(|| panic!("{name}: message {m:?} was never acknowledged"));
        assert!(seen.insert(m.msg_id), "{name}: {} twice", m.msg_id);
        let peer = if s.from == me { s.to } else { s.from };
        assert!(s.from == me || s.to == me, "{name}: holds {m:?}");
        assert_eq!(
            (m.from_user.as_str(), m.seq, m.content.as_slice()),
            (
                user(s.from).as_str(),
                s.seq,
                format!("{} #{}", user(s.from), s.n).as_bytes()
            ),
            "{name}: message {} as acknowledged",
            m.msg_id
        );
        let conv = e.conversation.as_ref().expect("a conversation");
        assert_eq!(conv.id, user(peer), "{name}: {}'s conversation", m.msg_id);
    }
    let mine: BTreeSet<u64> = sent
        .iter()
        .filter(|(_, s)| s.from == me || s.to == me)
        .map(|(&id, _)| id)
        .collect();
    assert_eq!(seen, mine, "{name}: every acknowledged message, once");

    // Nobody marks anything read: a message is unread unless its recipient wrote in the
    // conversation after it (replying reads the conversation).
    let want = missive::check::direct_unread_from_inbox(&name, &entries);
    let (total, got) = unread(&mut conn).await;
    assert_eq!(got, want, "{name}: unread per conversation vs a recount");
    assert_eq!(total, want.values().sum::<u64>(), "{name}: unread total");
    conn.shutdown().await.ok();
}

/// The user's unread total and each conversation's unread count (those above 0).
async fn unread(conn: &mut Connection) -> (u64, BTreeMap<String, u64>) {
    let mut cursor = Vec::new();
    let mut counts = BTreeMap::new();
    loop {
        let reply = conn
            .request(Packet::Unread(pb::Unread { cursor, limit: 0 }))
            .await
            .expect("unread");
        let Packet::UnreadAck(page) = reply else {
            panic!("expected UNREAD_ACK, got {reply:?}");
        };
        for c in page.conversations.iter().filter(|c| c.unread > 0) {
            let id = c.conversation.clone().unwrap_or_default().id;
            counts.insert(id, c.unread);
        }
        if page.next_cursor.is_empty() {
            return (page.total, counts);
        }
        cursor = page.next_cursor;
    }
}
