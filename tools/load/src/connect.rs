//! `connect`: ramp up N logged-in raw connections (one user each) at a rate, hold them with
//! heartbeats at the server's interval, and report the connect rate, failures and the server's
//! resident memory per connection.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use missive_client::{pb, Connection};
use missive_protocol::Packet;
use tokio::sync::watch;

use crate::common::{cpu_secs, vm_rss_kib, Common, Env, DEVICE};
use crate::stats::{progress, Latency, Report};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Connections to open (one user each). Each holds one file descriptor in this process.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub connections: usize,
    /// New connections per second during the ramp.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Seconds to hold the connections once all are up.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// The server's pid, to read its resident memory (/proc/PID/status VmRSS).
    #[arg(long)]
    pub server_pid: Option<String>,
    /// Local source addresses to connect from, round-robin (e.g. 127.0.0.2,127.0.0.3): past a
    /// server's per-address connection limit, or one source address's port range.
    #[arg(long, value_delimiter = ',')]
    pub sources: Vec<std::net::IpAddr>,
    /// Seconds allowed for one connect + LOGIN.
    #[arg(long, default_value_t = 20)]
    pub login_timeout: u64,
}

#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    connect_failed: AtomicU64,
    login_failed: AtomicU64,
    closed: AtomicU64,
    kicked: AtomicU64,
    heartbeats: AtomicU64,
    heartbeat_acks: AtomicU64,
    other_frames: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Counters {
    fn error(&self, what: String) {
        let mut errors = self.errors.lock().expect("errors lock");
        if errors.len() < 5 {
            errors.push(what);
        }
    }
    fn done(&self) -> u64 {
        self.connected.load(Relaxed)
            + self.connect_failed.load(Relaxed)
            + self.login_failed.load(Relaxed)
    }
}

/// The server's resident memory once it has stopped growing by itself (two readings 200 ms
/// apart agree; at most 6 s): a server that has just opened its listener may still be
/// starting (its threads touching their first pages), and what it then grows to with no
/// client is part of its empty footprint, not the connections' cost (it grew by several MiB in
/// the first half second, then held).
pub(crate) async fn settled_rss_kib(pid: &str) -> Option<u64> {
    let mut last = vm_rss_kib(pid)?;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = vm_rss_kib(pid)?;
        if now == last {
            break;
        }
        last = now;
    }
    Some(last)
}

pub async fn run(env: &Env, args: &Args) -> Result<Report> {
    let n = args.connections;
    let pid = args.server_pid.as_deref();
    let rss_before = match pid {
        Some(pid) => settled_rss_kib(pid).await,
        None => None,
    };
    let counters = Arc::new(Counters::default());
    let login_latency = Arc::new(Latency::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let c = counters.clone();
    let ticker = progress("connect", move || {
        format!(
            "connected {} open {} failed {} heartbeats {}/{}",
            c.connected.load(Relaxed),
            c.connected.load(Relaxed) - c.closed.load(Relaxed),
            c.connect_failed.load(Relaxed) + c.login_failed.load(Relaxed),
            c.heartbeat_acks.load(Relaxed),
            c.heartbeats.load(Relaxed),
        )
    });

    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / args.rate);
        tokio::time::sleep_until(due.into()).await;
        let addr = env.addr(i).to_string();
        let user = env.user("c", i);
        let token = env.token(&user)?;
        let counters = counters.clone();
        let latency = login_latency.clone();
        let stop = stop_rx.clone();
        let timeout = Duration::from_secs(args.login_timeout);
        let source = (!args.sources.is_empty()).then(|| args.sources[i % args.sources.len()]);
        tasks.push(tokio::spawn(async move {
            hold_one(addr, source, token, timeout, counters, latency, stop).await
        }));
    }
    // The ramp ends when every connection is logged in or has failed.
    let ramp_deadline = Instant::now() + Duration::from_secs(args.login_timeout + 5);
    while (counters.done() as usize) < n && Instant::now() < ramp_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ramp = start.elapsed();
    let connected = counters.connected.load(Relaxed);
    // Let the server settle (allocations of the last logins) before reading its memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_up = pid.and_then(vm_rss_kib);
    eprintln!(
        "missive-load: {connected} of {n} connections up in {:.2} s; holding for {} s",
        ramp.as_secs_f64(),
        args.duration
    );
    let cpu_before = pid.and_then(cpu_secs);
    let hold_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    let cpu_after = pid.and_then(cpu_secs);
    let hold = hold_start.elapsed().as_secs_f64();
    let rss_end = pid.and_then(vm_rss_kib);
    let own_rss = vm_rss_kib("self");
    let open_at_end = connected - counters.closed.load(Relaxed);
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    ticker.abort();

    let c = &counters;
    let mut r = Report::new("connect");
    let failures = (c.connect_failed.load(Relaxed), c.login_failed.load(Relaxed));
    add_ramp(
        &mut r,
        n,
        connected,
        failures,
        args.rate,
        ramp,
        &login_latency,
    );
    r.add("hold", args.duration, "s");
    r.add("open at end of hold", open_at_end, "");
    r.add("closed by server during run", c.closed.load(Relaxed), "");
    r.add("kicked", c.kicked.load(Relaxed), "");
    r.add("heartbeats sent", c.heartbeats.load(Relaxed), "");
    r.add("heartbeat acks", c.heartbeat_acks.load(Relaxed), "");
    r.add("other frames received", c.other_frames.load(Relaxed), "");
    let server = ServerUse {
        pid,
        rss_kib: [rss_before, rss_up, rss_end],
        cpu_secs: [cpu_before, cpu_after],
        hold,
        own_rss,
    };
    add_server_use(&mut r, &server, connected);
    for e in c.errors.lock().expect("errors lock").iter() {
        r.add("sample error", e.clone(), "");
    }
    let failed = c.connect_failed.load(Relaxed) + c.login_failed.load(Relaxed);
    if failed > 0 {
        r.fail(format!(
            "{failed} of {n} connections failed to connect or log in"
        ));
    }
    if c.closed.load(Relaxed) > 0 {
        r.fail(format!(
            "{} connections were closed by the server while held",
            c.closed.load(Relaxed)
        ));
    }
    Ok(r)
}

/// One connection: connect, LOGIN, then heartbeats at the server's interval until `stop`.
async fn hold_one(
    addr: String,
    source: Option<std::net::IpAddr>,
    token: String,
    timeout: Duration,
    c: Arc<Counters>,
    latency: Arc<Latency>,
    mut stop: watch::Receiver<bool>,
) {
    let began = Instant::now();
    let mut conn = match connect_from(&addr, source, timeout).await {
        Ok(conn) => conn,
        Err(e) => {
            c.connect_failed.fetch_add(1, Relaxed);
            c.error(format!("connect {addr}: {e}"));
            return;
        }
    };
    let ack = match tokio::time::timeout(timeout, conn.login(&token, DEVICE, 0)).await {
        Ok(Ok(ack)) => ack,
        Ok(Err(e)) => {
            c.login_failed.fetch_add(1, Relaxed);
            c.error(format!("login: {e}"));
            return;
        }
        Err(_) => {
            c.login_failed.fetch_add(1, Relaxed);
            c.error("login: timed out".into());
            return;
        }
    };
    latency.record(began.elapsed());
    c.connected.fetch_add(1, Relaxed);
    let interval = Duration::from_secs(u64::from(ack.heartbeat_interval_secs.max(1)));
    loop {
        let due = conn.last_sent() + interval;
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep_until(due.into()) => {
                let body = pb::Heartbeat { client_time_ms: 0, ..Default::default() };
                if conn.send_packet(Packet::Heartbeat(body)).await.is_err() {
                    c.closed.fetch_add(1, Relaxed);
                    return;
                }
                c.heartbeats.fetch_add(1, Relaxed);
            }
            frame = conn.recv_packet() => match frame {
                Ok(Some((_, Packet::HeartbeatAck(_)))) => {
                    c.heartbeat_acks.fetch_add(1, Relaxed);
                }
                Ok(Some((_, Packet::Kick(k)))) => {
                    c.kicked.fetch_add(1, Relaxed);
                    c.error(format!("kicked: {:?} {}", k.reason(), k.message));
                }
                Ok(Some((_, Packet::Push(p)))) => {
                    c.other_frames.fetch_add(1, Relaxed);
                    let _ = conn.push_ack(p.version).await;
                }
                Ok(Some(_)) => {
                    c.other_frames.fetch_add(1, Relaxed);
                }
                Ok(None) | Err(_) => {
                    c.closed.fetch_add(1, Relaxed);
                    return;
                }
            }
        }
    }
}

/// Connects to `addr`, from `source` if given (any port).
async fn connect_from(
    addr: &str,
    source: Option<std::net::IpAddr>,
    timeout: Duration,
) -> anyhow::Result<Connection> {
    let Some(source) = source else {
        return Ok(Connection::connect_timeout(addr, timeout).await?);
    };
    let target: std::net::SocketAddr = addr.parse()?;
    let socket = match source {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind((source, 0).into())?;
    let stream = tokio::time::timeout(timeout, socket.connect(target)).await??;
    Ok(Connection::from_stream(stream)?)
}

/// The ramp's rows of a connect report (Missive's or a peer's): connections asked for and
/// logged in, failures (to connect, to log in), the rates, and the connect+login latency.
pub(crate) fn add_ramp(
    r: &mut Report,
    n: usize,
    connected: u64,
    (connect_failed, login_failed): (u64, u64),
    rate: f64,
    ramp: Duration,
    latency: &Latency,
) {
    r.add("connections requested", n as u64, "");
    r.add("connections logged in", connected, "");
    r.add("connect failures", connect_failed, "");
    r.add("login failures", login_failed, "");
    r.add_f("ramp rate requested", rate, 1, "conn/s");
    r.add_f("ramp time", ramp.as_secs_f64(), 2, "s");
    r.add_f(
        "connect rate achieved",
        connected as f64 / ramp.as_secs_f64().max(1e-9),
        1,
        "conn/s",
    );
    r.latency("connect+login", &latency.snapshot());
}

/// What a held ramp measured of the server: its RSS (KiB) before, once all were connected and
/// at the end of the hold; its CPU seconds before and after the hold, which lasted `hold` s.
pub(crate) struct ServerUse<'a> {
    pub pid: Option<&'a str>,
    pub rss_kib: [Option<u64>; 3],
    pub cpu_secs: [Option<f64>; 2],
    pub hold: f64,
    pub own_rss: Option<u64>,
}

/// The server's rows of a connect report: RSS, memory per connection, CPU during the hold (idle
/// connections cost only heartbeats then: their CPU price), and the harness's own RSS.
pub(crate) fn add_server_use(r: &mut Report, u: &ServerUse<'_>, connected: u64) {
    if let [Some(before), Some(up), Some(end)] = u.rss_kib {
        r.add("server RSS before", before, "KiB");
        r.add("server RSS all connected", up, "KiB");
        r.add("server RSS end of hold", end, "KiB");
        let per = end.saturating_sub(before) as f64 * 1024.0 / connected.max(1) as f64;
        r.add_f("server memory per connection", per, 0, "bytes");
        if let [Some(a), Some(b)] = u.cpu_secs {
            let cpu = (b - a) / u.hold * 100.0;
            r.add_f("server CPU during hold", cpu, 2, "% of one core");
        }
    } else if let Some(pid) = u.pid {
        r.fail(format!("cannot read /proc/{pid}/status"));
    }
    if let Some(own) = u.own_rss {
        r.add("harness RSS", own, "KiB");
    }
}
