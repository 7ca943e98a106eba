//! Crash consistency: the real `missived` binary is killed with SIGKILL at random moments while
//! clients send one-to-one messages at load, and restarted on the same data directory each
//! time. An acknowledged send is a promise: after all the kills, every acked message must be
//! stored exactly once, in both inboxes, with the msg_id/seq/version of its SEND_ACK; inbox
//! versions must have no gaps or repeats; unread counts must equal a recount; a client that
//! stayed online (reconnecting after each kill) must have received each of its entries exactly
//! once, in version order; and a fresh SYNC from 0 must show exactly the messages sent.
//!
//! Both durability modes are run: SIGKILL kills the process, not the machine, and the write-ahead
//! log is written before the ack, so even `async` must lose nothing acked.
//!
//! `cargo test --test crash` runs a short version (3 kills per mode). The long version is
//! ignored by default: `CRASH_KILLS=50 cargo test --test crash -- --ignored --nocapture`.
//! See RELIABILITY.md.

mod common;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::SECRET;
use missive::check::{self, Acked, InboxRules, Ledger};
use missive::store::{Durability, Store};
use missive_client::{
    direct, pb, Backoff, Client, ClientConfig, ClientError, ClientEvent, Connection,
};
use missive_protocol::{Command as Cmd, Packet, DEFAULT_MAX_FRAME_LEN};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;

/// The users; every one sends to every other. `bob` also has a device that only receives.
const USERS: [&str; 8] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
];
const WATCHER: &str = "bob";
/// One raw `Connection` sender per user plus one reliable `Client` sender per user.
const RAW_DEVICE: &str = "raw";
const REL_DEVICE: &str = "rel";
/// How long a client may take to get back in after a restart before the test gives up.
const RECONNECT_LIMIT: Duration = Duration::from_secs(30);

/// How one run is shaped.
#[derive(Debug, Clone, Copy)]
struct Plan {
    durability: Durability,
    kills: u32,
    /// Load before each kill: uniform in this range (milliseconds).
    up_ms: (u64, u64),
    /// Load after the last restart, before the checks.
    tail_ms: u64,
    /// The whole run (load and checks) must finish within this.
    limit: Duration,
}

impl Plan {
    fn short(durability: Durability) -> Plan {
        Plan {
            durability,
            kills: 3,
            up_ms: (300, 1800),
            tail_ms: 1000,
            limit: Duration::from_secs(120),
        }
    }

    fn long(durability: Durability) -> Plan {
        let kills = std::env::var("CRASH_KILLS")
            .ok()
            .map(|v| v.parse::<u32>().expect("CRASH_KILLS is a number"))
            .unwrap_or(20)
            .clamp(1, 1000);
        Plan {
            durability,
            kills,
            up_ms: (50, 3000),
            tail_ms: 2000,
            limit: Duration::from_secs(120 + 10 * kills as u64),
        }
    }
}

fn durability_flag(d: Durability) -> &'static str {
    match d {
        Durability::Sync => "sync",
        Durability::Async => "async",
    }
}

fn token(user: &str, device: &str) -> String {
    let expires = (missive::now_ms() / 1000) as u64 + 3600;
    missive_protocol::token::mint(SECRET.as_bytes(), user, device, expires)
}

// ---------------------------------------------------------------------------------------------
// The server process

/// A `missived` child process. Dropping it kills the process (also when the test panics), and
/// on a panic prints the end of the server's log.
struct Missived {
    child: Option<Child>,
    data_dir: PathBuf,
    port: u16,
    durability: Durability,
    log: PathBuf,
    starts: u32,
}

impl Missived {
    fn new(data_dir: &Path, durability: Durability) -> Missived {
        Missived {
            child: None,
            data_dir: data_dir.to_path_buf(),
            port: 0,
            durability,
            log: data_dir.join("missived.log"),
            starts: 0,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&self) -> Child {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("server log opens");
        Command::new(env!("CARGO_BIN_EXE_missived"))
            .arg("--listen")
            .arg(self.addr())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--secret")
            .arg(SECRET)
            .arg("--durability")
            .arg(durability_flag(self.durability))
            .arg("--log")
            .arg("warn")
            .arg("--http-listen=")
            .env_remove("MISSIVE_CONFIG")
            .env_remove("MISSIVE_HEARTBEAT_SECS")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("missived starts")
    }

    /// Starts the server and waits until it accepts a LOGIN (the store is open). The first
    /// start picks a free port; restarts reuse it.
    async fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let first = self.starts == 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if first {
                self.port = free_port();
            }
            self.child = Some(self.spawn());
            match self.wait_ready(deadline).await {
                Ok(()) => {
                    self.starts += 1;
                    return;
                }
                Err(why) => {
                    self.kill();
                    assert!(
                        Instant::now() < deadline,
                        "missived did not come up on {}: {why}\n{}",
                        self.addr(),
                        self.log_tail(30)
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn wait_ready(&mut self, deadline: Instant) -> Result<(), String> {
        let addr = self.addr();
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!("exited with {status}"));
            }
            if Instant::now() > deadline {
                return Err("no LOGIN_ACK in time".into());
            }
            if let Ok(mut conn) = Connection::connect_timeout(&addr, Duration::from_secs(1)).await {
                let login = tokio::time::timeout(
                    Duration::from_secs(10),
                    conn.login(&token("probe", "probe"), "probe", 0),
                )
                .await;
                if let Ok(Ok(_)) = login {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, and wait until the process is gone (its RocksDB lock with it).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_tail(&self, lines: usize) -> String {
        let Ok(f) = File::open(&self.log) else {
            return String::from("(no server log)");
        };
        let all: Vec<String> = BufReader::new(f).lines().map_while(Result::ok).collect();
        let from = all.len().saturating_sub(lines);
        format!(
            "--- missived log (last {lines} lines) ---\n{}",
            all[from..].join("\n")
        )
    }
}

impl Drop for Missived {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(40));
        }
    }
}

/// A port for the server: not in the kernel's ephemeral range (32768-60999 by default), so no
/// client's outgoing connection can take it while the server is down (and, on loopback,
/// connect to itself), and free right now.
fn free_port() -> u16 {
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let port = rng.random_range(20_000..32_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000");
}

// ---------------------------------------------------------------------------------------------
// The clients

/// What the sides share during a run.
struct Shared {
    addr: String,
    stop: AtomicBool,
    acked: Mutex<Vec<Acked>>,
    /// Raw sends whose connection died before the reply and that were sent again.
    resent: AtomicU64,
    /// Of those, the ones the server had stored before the kill (answered duplicate = true).
    resent_were_stored: AtomicU64,
    /// Sends of the reliable client that failed (timeout, closed) and were sent again.
    reliable_retries: AtomicU64,
    /// Reconnects of the raw senders.
    reconnects: AtomicU64,
}

impl Shared {
    fn record(&self, from: &str, to: &str, client_msg_id: &str, ack: &pb::SendAck) {
        assert_eq!(
            ack.client_msg_id, client_msg_id,
            "SEND_ACK for another send"
        );
        assert!(ack.msg_id > 0 && ack.seq > 0 && ack.version > 0, "{ack:?}");
        let content = content(from, client_msg_id);
        self.acked
            .lock()
            .unwrap()
            .push(Acked::direct(from, to, &content, ack));
    }
}

fn content(from: &str, client_msg_id: &str) -> Vec<u8> {
    format!("{from} says {client_msg_id}").into_bytes()
}

fn pick_peer(rng: &mut StdRng, me: &str) -> String {
    loop {
        let to = USERS[rng.random_range(0..USERS.len())];
        if to != me {
            return to.to_owned();
        }
    }
}

/// Connects and logs in a raw connection, retrying while the server is down.
async fn raw_login(addr: &str, user: &str, device: &str) -> (Connection, pb::LoginAck) {
    let deadline = Instant::now() + RECONNECT_LIMIT;
    loop {
        if let Ok(mut conn) = Connection::connect_timeout(addr, Duration::from_secs(2)).await {
            let login = tokio::time::timeout(
                Duration::from_secs(10),
                conn.login(&token(user, device), device, 0),
            )
            .await;
            match login {
                Ok(Ok(ack)) => return (conn, ack),
                Ok(Err(e @ ClientError::Server { .. })) if e.server_code().is_some() => {
                    panic!("{user}/{device}: login refused: {e}")
                }
                _ => {}
            }
        }
        assert!(
            Instant::now() < deadline,
            "{user}/{device}: could not log in again within {RECONNECT_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Takes the pushes that arrived meanwhile and acknowledges them (so the server does not
/// retransmit or kick). Returns false if the connection turned out to be dead.
async fn drain_pushes(conn: &mut Connection) -> bool {
    let mut max = 0;
    let mut alive = true;
    loop {
        match conn.recv_frame_timeout(Duration::ZERO).await {
            Ok(Some(frame)) => {
                if frame.command == Cmd::Push as u16 {
                    if let Ok(Packet::Push(p)) = frame.packet(DEFAULT_MAX_FRAME_LEN) {
                        max = max.max(p.version);
                    }
                }
            }
            Err(ClientError::Timeout) => break,
            _ => {
                alive = false;
                break;
            }
        }
    }
    if alive && max > 0 {
        alive = conn.push_ack(max).await.is_ok();
    }
    alive
}

/// A sender on a raw connection: sends until told to stop; a send whose connection dies before
/// the SEND_ACK is sent again, with the same client_msg_id, on a new connection.
async fn raw_sender(shared: Arc<Shared>, user: &'static str, seed: u64) -> u64 {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut conn = raw_login(&shared.addr, user, RAW_DEVICE).await.0;
    let mut n = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        let to = pick_peer(&mut rng, user);
        let cmid = format!("{user}.{RAW_DEVICE}.{n}");
        let send = pb::Send {
            client_msg_id: cmid.clone(),
            to: Some(direct(to.clone())),
            content_type: 1,
            content: content(user, &cmid),
            ..Default::default()
        };
        let mut tries = 0;
        let mut resent = false;
        loop {
            tries += 1;
            assert!(tries < 100, "{cmid}: no SEND_ACK after 100 connections");
            let reply = conn
                .request_timeout(Packet::Send(send.clone()), Duration::from_secs(20))
                .await;
            match reply {
                Ok(Packet::SendAck(ack)) => {
                    assert!(
                        resent || !ack.duplicate,
                        "{cmid}: first send answered as a duplicate: {ack:?}"
                    );
                    if resent && ack.duplicate {
                        shared.resent_were_stored.fetch_add(1, Ordering::SeqCst);
                    }
                    shared.record(user, &to, &cmid, &ack);
                    break;
                }
                Ok(other) => panic!("{cmid}: SEND answered with {other:?}"),
                Err(e @ ClientError::Server { .. })
                    if !matches!(e, ClientError::Server { fatal: true, .. }) =>
                {
                    panic!("{cmid}: SEND refused: {e}")
                }
                Err(_) => {
                    // In flight when the server died (or the connection was already dead):
                    // it may or may not be stored. Send it again on a new connection.
                    if !resent {
                        shared.resent.fetch_add(1, Ordering::SeqCst);
                    }
                    resent = true;
                    shared.reconnects.fetch_add(1, Ordering::SeqCst);
                    conn = raw_login(&shared.addr, user, RAW_DEVICE).await.0;
                }
            }
        }
        n += 1;
        if !drain_pushes(&mut conn).await {
            shared.reconnects.fetch_add(1, Ordering::SeqCst);
            conn = raw_login(&shared.addr, user, RAW_DEVICE).await.0;
        }
    }
    n
}

fn client_config(addr: &str, user: &str, device: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new(addr, token(user, device), device);
    cfg.auto_reconnect = true;
    cfg.backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
        ..Default::default()
    };
    cfg.request_timeout = Duration::from_secs(20);
    cfg
}

/// A sender on a reliable `Client` with auto_reconnect: the client itself resends a SEND that
/// was in flight at a kill; if the request still fails, the same client_msg_id is sent again.
async fn reliable_sender(shared: Arc<Shared>, user: &'static str, seed: u64) -> u64 {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut client = Client::connect(client_config(&shared.addr, user, REL_DEVICE))
        .await
        .expect("reliable sender connects");
    drop(client.events());
    let mut n = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        let to = pick_peer(&mut rng, user);
        let cmid = format!("{user}.{REL_DEVICE}.{n}");
        let mut tries = 0;
        loop {
            tries += 1;
            assert!(tries < 10, "{cmid}: the reliable client gave up 10 times");
            let sent = client
                .send(
                    direct(to.clone()),
                    1,
                    content(user, &cmid),
                    Some(cmid.clone()),
                )
                .await;
            match sent {
                Ok(ack) => {
                    shared.record(user, &to, &cmid, &ack);
                    break;
                }
                Err(e @ ClientError::Server { .. }) => panic!("{cmid}: SEND refused: {e}"),
                Err(_) => {
                    shared.reliable_retries.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        n += 1;
    }
    client.close().await;
    n
}

/// Bob's phone: a reliable client online throughout, reconnecting after each kill. Collects
/// every entry it delivers.
struct Watcher {
    client: Client,
    entries: Arc<Mutex<Vec<pb::InboxEntry>>>,
    connects: Arc<AtomicU64>,
    gave_up: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

impl Watcher {
    async fn start(addr: &str) -> Watcher {
        let mut client = Client::connect(client_config(addr, WATCHER, "watch"))
            .await
            .expect("watcher connects");
        let mut events = client.events().expect("events");
        let entries = Arc::new(Mutex::new(Vec::new()));
        let connects = Arc::new(AtomicU64::new(0));
        let gave_up = Arc::new(Mutex::new(None));
        let (e, c, g) = (entries.clone(), connects.clone(), gave_up.clone());
        let task = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    ClientEvent::Entry(entry) => e.lock().unwrap().push(entry),
                    ClientEvent::Connected(_) => {
                        c.fetch_add(1, Ordering::SeqCst);
                    }
                    ClientEvent::Disconnected {
                        reason,
                        reconnecting: false,
                    } => {
                        *g.lock().unwrap() = Some(format!("{reason:?}"));
                    }
                    _ => {}
                }
            }
        });
        Watcher {
            client,
            entries,
            connects,
            gave_up,
            task,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The run

/// The figures of one run, printed at the end (see RELIABILITY.md).
#[derive(Debug, Default)]
struct Report {
    kills: u32,
    acked: usize,
    acked_as_duplicate: usize,
    resent: u64,
    resent_were_stored: u64,
    reliable_retries: u64,
    raw_reconnects: u64,
    watcher_connects: u64,
    watcher_entries: usize,
    stored_entries: u64,
}

async fn crash_run(plan: Plan) -> Report {
    let dir = tempfile::Builder::new()
        .prefix("missive-crash-")
        .tempdir()
        .expect("temp dir");
    let mut server = Missived::new(dir.path(), plan.durability);
    server.start().await;
    let addr = server.addr();
    let mut rng = StdRng::seed_from_u64(rand::random());

    let shared = Arc::new(Shared {
        addr: addr.clone(),
        stop: AtomicBool::new(false),
        acked: Mutex::new(Vec::new()),
        resent: AtomicU64::new(0),
        resent_were_stored: AtomicU64::new(0),
        reliable_retries: AtomicU64::new(0),
        reconnects: AtomicU64::new(0),
    });
    let watcher = Watcher::start(&addr).await;
    let mut senders = Vec::new();
    for user in USERS {
        senders.push(tokio::spawn(raw_sender(shared.clone(), user, rng.random())));
        senders.push(tokio::spawn(reliable_sender(
            shared.clone(),
            user,
            rng.random(),
        )));
    }

    // Load, kill, restart, as many times as planned.
    for kill in 1..=plan.kills {
        let up = rng.random_range(plan.up_ms.0..=plan.up_ms.1);
        tokio::time::sleep(Duration::from_millis(up)).await;
        let before = shared.acked.lock().unwrap().len();
        server.kill();
        eprintln!(
            "[{}] kill {kill}/{} after {up} ms of load ({before} acked so far)",
            durability_flag(plan.durability),
            plan.kills
        );
        // Sometimes restart at once, sometimes leave clients failing to connect for a while.
        let down = rng.random_range(0..300);
        tokio::time::sleep(Duration::from_millis(down)).await;
        server.start().await;
    }
    tokio::time::sleep(Duration::from_millis(plan.tail_ms)).await;

    // Stop the senders; each finishes (and gets acked) the send it has begun.
    shared.stop.store(true, Ordering::SeqCst);
    for s in senders {
        s.await.expect("sender task");
    }
    let acked = shared.acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 16,
        "too little load to mean anything: {} acked",
        acked.len()
    );
    let ledger = ledger(&acked);

    // Bob's phone must catch up with everything in his inbox (as the server has it now; the
    // check below compares that with the acks).
    let (_, login) = raw_login(&addr, WATCHER, "audit").await;
    let bob_current = login.current_version;
    let deadline = Instant::now() + Duration::from_secs(30);
    while watcher.client.held_version() < bob_current {
        if let Some(why) = watcher.gave_up.lock().unwrap().clone() {
            panic!("bob's watcher stopped reconnecting: {why}");
        }
        assert!(
            Instant::now() < deadline,
            "bob's watcher holds version {} of {bob_current} after 30 s",
            watcher.client.held_version()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Anything wrongly delivered twice or beyond the end would arrive about now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let watched = watcher.entries.lock().unwrap().clone();
    check_watcher(&ledger, &watched);

    // A fresh SYNC from 0 shows exactly what was sent, and resending an acked client_msg_id
    // gives back the original ack.
    for user in USERS {
        let (mut conn, _) = raw_login(&addr, user, "audit").await;
        let entries = common::sync_all(&mut conn, 0).await;
        check_sync(&ledger, user, &entries);
        check_dedup(&ledger, user, &mut conn).await;
    }
    watcher.client.close().await;
    let _ = watcher.task.await;

    // The final stop is one more SIGKILL; then the store is opened here and checked.
    server.kill();
    drop(server);
    let store = Store::open(&dir.path().join("db"), plan.durability).expect("store opens");
    let stored = check_store(&ledger, &store);

    Report {
        kills: plan.kills,
        acked: acked.len(),
        acked_as_duplicate: acked.iter().filter(|a| a.duplicate).count(),
        resent: shared.resent.load(Ordering::SeqCst),
        resent_were_stored: shared.resent_were_stored.load(Ordering::SeqCst),
        reliable_retries: shared.reliable_retries.load(Ordering::SeqCst),
        raw_reconnects: shared.reconnects.load(Ordering::SeqCst),
        watcher_connects: watcher.connects.load(Ordering::SeqCst),
        watcher_entries: watched.len(),
        stored_entries: stored,
    }
}

// ---------------------------------------------------------------------------------------------
// The checks

/// The crash test's ledger: every stored message was acked (senders never give up), so per
/// conversation the acked seqs are 1..=n.
fn ledger(acked: &[Acked]) -> Ledger {
    let ledger = Ledger::new(acked).unwrap_or_else(|e| panic!("{e}"));
    ledger
        .check_direct_seqs_complete()
        .unwrap_or_else(|e| panic!("{e}"));
    ledger
}

/// Only sends happened, and every stored message was acked.
const RULES: InboxRules = InboxRules {
    only_messages: true,
    all_acked: true,
};

fn check_inbox(ledger: &Ledger, user: &str, entries: &[pb::InboxEntry], source: &str) {
    check::check_inbox(ledger, user, entries, source, RULES).unwrap_or_else(|e| panic!("{e}"));
}

fn check_watcher(ledger: &Ledger, watched: &[pb::InboxEntry]) {
    check_inbox(ledger, WATCHER, watched, "bob's online client");
}

fn check_sync(ledger: &Ledger, user: &str, entries: &[pb::InboxEntry]) {
    check_inbox(ledger, user, entries, "SYNC from 0");
}

/// Resends a sample of the user's acked sends: each must come back as the original ack with
/// duplicate = true, and store nothing.
async fn check_dedup(ledger: &Ledger, user: &str, conn: &mut Connection) {
    let mine: Vec<&Acked> = ledger.sends().iter().filter(|a| a.from == user).collect();
    let step = (mine.len() / 50).max(1);
    for a in mine.iter().step_by(step) {
        let reply = conn
            .request_timeout(
                Packet::Send(pb::Send {
                    client_msg_id: a.client_msg_id.clone(),
                    to: Some(direct(a.to.clone())),
                    content_type: 1,
                    content: content(&a.from, &a.client_msg_id),
                    ..Default::default()
                }),
                Duration::from_secs(10),
            )
            .await
            .expect("resend answered");
        let Packet::SendAck(ack) = reply else {
            panic!("resend answered with {reply:?}");
        };
        assert!(
            ack.duplicate,
            "{user}/{}: resend stored again",
            a.client_msg_id
        );
        assert_eq!(
            (ack.msg_id, ack.seq, ack.version),
            (a.msg_id, a.seq, a.version),
            "{user}/{}: resend got another ack",
            a.client_msg_id
        );
    }
}

/// Everything read from the store itself after the final SIGKILL. Returns the entries checked.
fn check_store(ledger: &Ledger, store: &Store) -> u64 {
    let mut total = 0;
    for user in USERS {
        let entries = check::check_store_user(store.core(), user).unwrap_or_else(|e| panic!("{e}"));
        let n = entries.len() as u64;
        check_inbox(ledger, user, &entries, "store after the last SIGKILL");
        // Nobody marks anything read, so a message is unread unless its recipient sent a
        // message in the conversation after it (replying reads).
        let want = check::direct_unread_from_inbox(user, &entries);
        let unread = store.core().unread(user).expect("unread");
        let got: BTreeMap<String, u64> = unread
            .conversations
            .iter()
            .map(|c| (c.conversation.clone().unwrap_or_default().id, c.unread))
            .collect();
        assert_eq!(
            got, want,
            "{user}: unread per conversation vs messages received after the user's last reply"
        );
        assert_eq!(
            unread.total,
            want.values().sum::<u64>(),
            "{user}: unread total vs messages received after the user's last reply"
        );
        total += n;
    }
    total
}

// ---------------------------------------------------------------------------------------------
// The tests

async fn run_and_report(plan: Plan) {
    let started = Instant::now();
    let report = tokio::time::timeout(plan.limit, crash_run(plan))
        .await
        .unwrap_or_else(|_| panic!("the crash run did not finish within {:?}", plan.limit));
    // Reaching this line means every check passed: nothing acked was lost or duplicated.
    println!(
        "crash {}: {} SIGKILLs survived; {} sends acked and checked ({} acked as duplicates); \
         {} raw sends in flight at a kill resent with the same client_msg_id ({} had been \
         stored, {} stored by the resend); {} reliable-client retries; {} raw reconnects; \
         bob's online client connected {} times and got {} entries; {} inbox entries checked \
         in the store; lost 0, duplicated 0; {:.1} s",
        durability_flag(plan.durability),
        report.kills,
        report.acked,
        report.acked_as_duplicate,
        report.resent,
        report.resent_were_stored,
        report.resent - report.resent_were_stored,
        report.reliable_retries,
        report.raw_reconnects,
        report.watcher_connects,
        report.watcher_entries,
        report.stored_entries,
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_load_loses_nothing_acked_sync() {
    run_and_report(Plan::short(Durability::Sync)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_load_loses_nothing_acked_async() {
    run_and_report(Plan::short(Durability::Async)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long: CRASH_KILLS kills (default 20); run with --ignored"]
async fn sigkill_many_times_loses_nothing_acked_sync() {
    run_and_report(Plan::long(Durability::Sync)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long: CRASH_KILLS kills (default 20); run with --ignored"]
async fn sigkill_many_times_loses_nothing_acked_async() {
    run_and_report(Plan::long(Durability::Async)).await;
}
