//! The honest side of every attack, on a thread and runtime of its own (so that the attack's
//! own work in this process does not delay what it measures):
//!
//! - a pair, `honest-a` and `honest-b`, on reliable clients, sending each other a message every
//!   `pace` in turn, open loop (message k is due at start + k·pace whatever happened before, and
//!   its latencies run from that moment, so a stalled server cannot slow the offered load down
//!   and hide its own stall), with a HEARTBEAT round trip every 200 ms;
//! - fresh logins of `honest-login` (connect, LOGIN, close) every 200 ms;
//! - optionally the Server API's `/healthz` every 200 ms, and a bulk load (closed loop, a window
//!   of sends in flight per user) whose acked rate is the honest throughput.
//!
//! Everything is recorded with the moment it was due; the caller splits it into phases.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use futures_util::stream::{FuturesUnordered, StreamExt};
use missive_client::{direct, pb, Client, ClientConfig, ClientError, ClientEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::raw::Raw;
use crate::common::Env;

/// What the honest side does.
#[derive(Clone)]
pub struct Plan {
    pub env: Env,
    pub pace: Duration,
    pub ping_every: Duration,
    pub login_every: Duration,
    /// The Server API address to probe with GET /healthz, if any.
    pub http_addr: Option<String>,
    /// Bulk load: (users, sends in flight per user), if any.
    pub bulk: Option<(usize, usize)>,
}

/// One outcome, at the moment it was due.
#[derive(Debug, Clone)]
pub struct Probe {
    pub due: Instant,
    pub result: Result<Duration, String>,
}

/// One honest message.
#[derive(Debug, Clone)]
pub struct Sent {
    pub due: Instant,
    /// Send → SEND_ACK; an error; or `None` if neither came before the end.
    pub ack: Option<Result<Duration, String>>,
    /// Send → first delivery at the peer.
    pub delivered: Option<Duration>,
    pub copies: u32,
}

/// Everything the honest side saw.
#[derive(Debug, Default)]
pub struct Log {
    pub sent: Vec<Sent>,
    pub pings: Vec<Probe>,
    pub logins: Vec<Probe>,
    pub http: Vec<Probe>,
    /// Bulk sends acked, at the moment of their ack.
    pub bulk_acks: Vec<Instant>,
    pub bulk_errors: u64,
    pub bulk_first_error: Option<String>,
    /// Connections of the pair that ended (each reconnects by itself).
    pub disconnects: u64,
}

impl Log {
    /// Acked messages never delivered.
    pub fn lost(&self) -> usize {
        self.sent
            .iter()
            .filter(|s| matches!(s.ack, Some(Ok(_))) && s.delivered.is_none())
            .count()
    }

    pub fn duplicated(&self) -> usize {
        self.sent
            .iter()
            .map(|s| s.copies.saturating_sub(1) as usize)
            .sum()
    }
}

pub struct Honest {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Result<Log>>>,
}

/// Runs `f` on a thread of its own with a current-thread runtime; `ready` says when it has
/// logged in (or why it could not).
fn spawn<F, Fut>(name: &str, f: F) -> Result<std::thread::JoinHandle<Result<Log>>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Log>>,
{
    Ok(std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(f())
        })?)
}

impl Honest {
    /// Logs the honest users in and starts; returns once they chat. The pair and the bulk load
    /// (if any) each get a thread of their own: the bulk load keeps a thread busy, which must
    /// not delay the pair's clocks.
    pub async fn start(plan: Plan) -> Result<Honest> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut readies = Vec::new();
        if let Some((users, window)) = plan.bulk {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let (env, s) = (plan.env.clone(), stop.clone());
            threads.push(spawn("bulk", move || run_bulk(env, users, window, s, tx))?);
            readies.push(rx);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let s = stop.clone();
        threads.push(spawn("honest", move || run(plan, s, tx))?);
        readies.push(rx);
        let honest = Honest { stop, threads };
        for ready in readies {
            let failed = match ready.await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some(anyhow!("the honest side stopped at start")),
            };
            if let Some(e) = failed {
                honest.stop.store(true, Relaxed);
                let _ = honest.join().await;
                return Err(e);
            }
        }
        Ok(honest)
    }

    async fn join(self) -> Result<Log> {
        let threads = self.threads;
        tokio::task::spawn_blocking(move || {
            let mut all = Log::default();
            for t in threads {
                let log = t
                    .join()
                    .map_err(|_| anyhow!("an honest thread panicked"))??;
                all.merge(log);
            }
            Ok(all)
        })
        .await?
    }

    /// Stops sending, waits (bounded) for what is in flight, and returns the log.
    pub async fn finish(self) -> Result<Log> {
        self.stop.store(true, Relaxed);
        self.join().await
    }
}

impl Log {
    fn merge(&mut self, other: Log) {
        self.sent.extend(other.sent);
        self.pings.extend(other.pings);
        self.logins.extend(other.logins);
        self.http.extend(other.http);
        self.bulk_acks.extend(other.bulk_acks);
        self.bulk_errors += other.bulk_errors;
        if self.bulk_first_error.is_none() {
            self.bulk_first_error = other.bulk_first_error;
        }
        self.disconnects += other.disconnects;
    }
}

async fn client(env: &Env, user: &str) -> Result<Client> {
    let token = super::server::token(user, "phone");
    let mut config = ClientConfig::new(env.addrs[0].clone(), token, "phone");
    // Long enough that a stalled server shows up as latency, not as a failure.
    config.request_timeout = Duration::from_secs(300);
    Client::connect(config)
        .await
        .with_context(|| format!("honest user {user} cannot log in"))
}

type Shared = Mutex<Log>;

async fn run(
    plan: Plan,
    stop: Arc<AtomicBool>,
    ready: tokio::sync::oneshot::Sender<Result<()>>,
) -> Result<Log> {
    let started = async {
        let mut a = client(&plan.env, "honest-a").await?;
        let mut b = client(&plan.env, "honest-b").await?;
        let ea = a.events().expect("first call");
        let eb = b.events().expect("first call");
        anyhow::Ok((Arc::new(a), Arc::new(b), ea, eb))
    };
    let (a, b, ea, eb) = match started.await {
        Ok(v) => v,
        Err(e) => {
            let text = format!("{e:#}");
            let _ = ready.send(Err(e));
            return Err(anyhow!(text));
        }
    };
    let _ = ready.send(Ok(()));

    let log = Arc::new(Shared::default());
    let start = Instant::now();
    let pace = plan.pace;
    let due_of = move |k: u64| start + pace * k as u32;
    // Delivery side: message k's content is "k".
    let disconnects = Arc::new(AtomicU64::new(0));
    // Each client also emits its own messages (built from SEND and SEND_ACK): only the
    // recipient's copy is a delivery. honest-a (0) receives the odd messages, honest-b the even.
    let readers = [(ea, 1u64), (eb, 0u64)].map(|(mut events, mine)| {
        let log = log.clone();
        let disconnects = disconnects.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                match ev {
                    ClientEvent::Entry(e) => {
                        let Some(pb::inbox_entry::Body::Message(m)) = e.body else {
                            continue;
                        };
                        let Some(k) = std::str::from_utf8(&m.content)
                            .ok()
                            .and_then(|t| t.parse::<u64>().ok())
                        else {
                            continue;
                        };
                        if k % 2 != mine {
                            continue;
                        }
                        let now = Instant::now();
                        let mut l = log.lock().expect("log");
                        if let Some(s) = l.sent.get_mut(k as usize) {
                            s.copies += 1;
                            if s.delivered.is_none() {
                                s.delivered = Some(now.saturating_duration_since(due_of(k)));
                            }
                        }
                    }
                    ClientEvent::Disconnected { .. } => {
                        disconnects.fetch_add(1, Relaxed);
                    }
                    _ => {}
                }
            }
        })
    });

    let mut tasks = tokio::task::JoinSet::new();
    let mut send_tick = tokio::time::interval(pace);
    let mut ping_tick = tokio::time::interval(plan.ping_every);
    let mut login_tick = tokio::time::interval(plan.login_every);
    let mut http_tick = tokio::time::interval(plan.login_every);
    for t in [
        &mut send_tick,
        &mut ping_tick,
        &mut login_tick,
        &mut http_tick,
    ] {
        // A late tick is not made up for by a burst: each probe is due when its tick fires.
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    }
    let login_token = super::server::token("honest-login", "probe");
    let addr = plan.env.addrs[0].clone();
    let mut k = 0u64;
    let mut sends = tokio::task::JoinSet::new();
    while !stop.load(Relaxed) {
        tokio::select! {
            _ = send_tick.tick() => {
                // Open loop: message k is due at start + k·pace (the tick is only the wake-up).
                let now = Instant::now();
                while due_of(k) <= now {
                    let (from, to) = if k.is_multiple_of(2) { (&a, "honest-b") } else { (&b, "honest-a") };
                    send_one(&mut sends, &log, from.clone(), to, k, due_of(k));
                    k += 1;
                }
            }
            _ = ping_tick.tick() => {
                let (a, log) = (a.clone(), log.clone());
                let due = Instant::now();
                tasks.spawn(async move {
                    let r = a.ping().await.map_err(|e| short_error(&e));
                    log.lock().expect("log").pings.push(Probe { due, result: r });
                });
            }
            _ = login_tick.tick() => {
                let (addr, token, log) = (addr.clone(), login_token.clone(), log.clone());
                let due = Instant::now();
                tasks.spawn(async move {
                    let r = probe_login(&addr, &token).await;
                    log.lock().expect("log").logins.push(Probe { due, result: r });
                });
            }
            _ = http_tick.tick(), if plan.http_addr.is_some() => {
                let (addr, log) = (plan.http_addr.clone().unwrap_or_default(), log.clone());
                let due = Instant::now();
                tasks.spawn(async move {
                    let r = probe_http(&addr).await;
                    log.lock().expect("log").http.push(Probe { due, result: r });
                });
            }
            Some(_) = sends.join_next() => {}
        }
    }
    // What is in flight: up to 60 s for the sends (their clients wait up to 300 s), then up
    // to 10 s for the deliveries of everything acked.
    let wind_down = async {
        while sends.join_next().await.is_some() {}
        while tasks.join_next().await.is_some() {}
    };
    let _ = tokio::time::timeout(Duration::from_secs(60), wind_down).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let missing = {
            let l = log.lock().expect("log");
            l.sent
                .iter()
                .any(|s| matches!(s.ack, Some(Ok(_))) && s.delivered.is_none())
        };
        if !missing {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sends.abort_all();
    tasks.abort_all();
    a.close().await;
    b.close().await;
    for r in readers {
        r.abort();
    }
    let mut out = std::mem::take(&mut *log.lock().expect("log"));
    out.disconnects = disconnects.load(Relaxed);
    Ok(out)
}

/// Sends honest message `k` (due at `due`) from `from` to `to` on a task of its own (open loop:
/// the next one does not wait for it) and records its ack.
fn send_one(
    sends: &mut tokio::task::JoinSet<()>,
    log: &Arc<Shared>,
    from: Arc<Client>,
    to: &'static str,
    k: u64,
    due: Instant,
) {
    log.lock().expect("log").sent.push(Sent {
        due,
        ack: None,
        delivered: None,
        copies: 0,
    });
    let log = log.clone();
    sends.spawn(async move {
        let r = from.send(direct(to), 1, k.to_string(), None).await;
        let r = r
            .map(|_| Instant::now().saturating_duration_since(due))
            .map_err(|e| short_error(&e));
        log.lock().expect("log").sent[k as usize].ack = Some(r);
    });
}

/// The bulk load: `users` users (`bulk-0` ...), each sending to the next with `window` sends in
/// flight (closed loop) until `stop`; the log holds the moment of every ack.
async fn run_bulk(
    env: Env,
    users: usize,
    window: usize,
    stop: Arc<AtomicBool>,
    ready: tokio::sync::oneshot::Sender<Result<()>>,
) -> Result<Log> {
    let mut bulk = Vec::new();
    for i in 0..users.max(2) {
        match client(&env, &format!("bulk-{i}")).await {
            Ok(mut c) => {
                // Their deliveries are not looked at: dropping the receiver drops them.
                drop(c.events());
                bulk.push(Arc::new(c));
            }
            Err(e) => {
                let text = format!("{e:#}");
                let _ = ready.send(Err(e));
                return Err(anyhow!(text));
            }
        }
    }
    let _ = ready.send(Ok(()));
    let n = bulk.len();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, from) in bulk.iter().enumerate() {
        let from = from.clone();
        let to = format!("bulk-{}", (i + 1) % n);
        let stop = stop.clone();
        tasks.spawn(async move {
            let mut log = Log::default();
            let mut flight = FuturesUnordered::new();
            let mut k = 0u64;
            loop {
                while !stop.load(Relaxed) && flight.len() < window.max(1) {
                    let (from, to) = (from.clone(), to.clone());
                    k += 1;
                    flight.push(async move {
                        from.send(direct(to), 1, format!("bulk {k}"), None).await
                    });
                }
                match flight.next().await {
                    Some(Ok(_)) => log.bulk_acks.push(Instant::now()),
                    Some(Err(e)) => {
                        log.bulk_errors += 1;
                        log.bulk_first_error.get_or_insert_with(|| e.to_string());
                        // A refusal (RATE_LIMITED, SERVER_BUSY) is not retried at once.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    None => break,
                }
            }
            log
        });
    }
    let mut all = Log::default();
    while let Some(r) = tasks.join_next().await {
        if let Ok(log) = r {
            all.merge(log);
        }
    }
    for c in &bulk {
        c.close().await;
    }
    Ok(all)
}

/// A short reason: the server's error code name, "timeout", "closed", or the error text.
fn short_error(e: &ClientError) -> String {
    match e {
        ClientError::Server { name, .. } => name.clone(),
        ClientError::Timeout => "timeout".into(),
        ClientError::Closed => "closed".into(),
        other => other.to_string(),
    }
}

/// A real user's login: connect, LOGIN, LOGIN_ACK (within 10 s), close. The error is the
/// refusal's code name (SERVER_BUSY, ...) or what went wrong.
pub async fn probe_login(addr: &str, token: &str) -> Result<Duration, String> {
    let began = Instant::now();
    let attempt = async {
        let mut raw = Raw::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let r = raw.login(token, "probe").await;
        raw.shutdown().await;
        r.map_err(|e| {
            let text = e.to_string();
            // "LOGIN refused: SERVER_BUSY (18): ..." -> "SERVER_BUSY"
            text.strip_prefix("LOGIN refused: ")
                .and_then(|t| t.split_whitespace().next())
                .map(str::to_owned)
                .unwrap_or(text)
        })
    };
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(Ok(_)) => Ok(began.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("timeout".into()),
    }
}

/// GET /healthz on the Server API (a fresh connection, within 10 s); 200 is success.
pub async fn probe_http(addr: &str) -> Result<Duration, String> {
    let began = Instant::now();
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: missive\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        let head = String::from_utf8_lossy(&buf[..buf.len().min(12)]).to_string();
        if head.starts_with("HTTP/1.1 200") {
            Ok(())
        } else {
            Err(format!("answer {head:?}"))
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(Ok(())) => Ok(began.elapsed()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("timeout".into()),
    }
}
