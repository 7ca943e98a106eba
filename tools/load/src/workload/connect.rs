//! The `connect` workload: ramp up N idle connections at a rate (connection i is opened at
//! `start + i / rate`), wait until each is logged in or has failed, hold them for a while with
//! heartbeats, and report the connect rate, the failures and what the server used: resident
//! memory per connection, CPU during the hold. How one connection is opened and held is the
//! side's ([`ramp`]'s `open`); the rest is here.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::sync::watch;

use super::pace::Schedule;
use crate::common::{cpu_secs, vm_rss_kib};
use crate::stats::{progress, Latency, Report, Samples};

/// What the held connections count.
#[derive(Default)]
pub struct Counters {
    pub connected: AtomicU64,
    pub connect_failed: AtomicU64,
    pub login_failed: AtomicU64,
    pub closed: AtomicU64,
    pub kicked: AtomicU64,
    pub heartbeats: AtomicU64,
    pub heartbeat_acks: AtomicU64,
    pub other_frames: AtomicU64,
    errors: Samples,
}

impl Counters {
    pub fn error(&self, what: String) {
        self.errors.push(what);
    }

    fn done(&self) -> u64 {
        self.connected.load(Relaxed)
            + self.connect_failed.load(Relaxed)
            + self.login_failed.load(Relaxed)
    }
}

/// What one connection reports to: the counters, the connect+login latency (from the moment
/// it began), and the end of the hold (`stop` changes).
pub struct Hold {
    pub c: Arc<Counters>,
    pub latency: Arc<Latency>,
    pub stop: watch::Receiver<bool>,
}

/// The run: `n` connections at `rate` a second, held for `hold` seconds once all are up;
/// the server's pid to read its memory and CPU.
pub struct Ramp<'a> {
    /// The scenario's name (progress line and report).
    pub scenario: &'static str,
    pub n: usize,
    pub rate: f64,
    pub hold: u64,
    pub pid: Option<&'a str>,
    /// Allowed for one connection's connect and login: the ramp ends when every connection is
    /// up or has failed, or this and 5 s more after the last one was opened.
    pub timeout: Duration,
    /// The progress line's name for the heartbeats.
    pub beats: &'static str,
}

/// What the ramp and the hold measured.
pub struct Held {
    pub c: Arc<Counters>,
    latency: Arc<Latency>,
    ramp: Duration,
    connected: u64,
    open_at_end: u64,
    server: ServerUse,
}

/// The server's resident memory once it has stopped growing by itself (two readings 200 ms
/// apart agree; at most 6 s): a server that has just opened its listener may still be
/// starting (its threads touching their first pages), and what it then grows to with no
/// client is part of its empty footprint, not the connections' cost (it grew by several MiB in
/// the first half second, then held).
async fn settled_rss_kib(pid: &str) -> Option<u64> {
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

/// Runs the ramp: `open(i, hold)` is connection i's task (connect, log in, then heartbeats
/// until `hold.stop`), spawned when it is due; then the hold, and the connections are stopped.
pub async fn ramp<F, T>(ramp: &Ramp<'_>, mut open: F) -> Result<Held>
where
    F: FnMut(usize, Hold) -> Result<T>,
    T: Future<Output = ()> + Send + 'static,
{
    let (n, pid) = (ramp.n, ramp.pid);
    let rss_before = match pid {
        Some(pid) => settled_rss_kib(pid).await,
        None => None,
    };
    let counters = Arc::new(Counters::default());
    let latency = Arc::new(Latency::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let c = counters.clone();
    let beats = ramp.beats;
    let ticker = progress(ramp.scenario, move || {
        format!(
            "connected {} open {} failed {} {beats} {}/{}",
            c.connected.load(Relaxed),
            c.connected.load(Relaxed) - c.closed.load(Relaxed),
            c.connect_failed.load(Relaxed) + c.login_failed.load(Relaxed),
            c.heartbeat_acks.load(Relaxed),
            c.heartbeats.load(Relaxed),
        )
    });

    let schedule = Schedule::new(ramp.rate);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        schedule.wait(i as u64).await;
        let hold = Hold {
            c: counters.clone(),
            latency: latency.clone(),
            stop: stop_rx.clone(),
        };
        tasks.push(tokio::spawn(open(i, hold)?));
    }
    // The ramp ends when every connection is logged in or has failed.
    let ramp_deadline = Instant::now() + ramp.timeout + Duration::from_secs(5);
    while (counters.done() as usize) < n && Instant::now() < ramp_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ramp_time = schedule.elapsed();
    let connected = counters.connected.load(Relaxed);
    // Let the server settle (allocations of the last logins) before reading its memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_up = pid.and_then(vm_rss_kib);
    eprintln!(
        "missive-load: {connected} of {n} connections up in {:.2} s; holding for {} s",
        ramp_time.as_secs_f64(),
        ramp.hold
    );
    let cpu_before = pid.and_then(cpu_secs);
    let hold_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(ramp.hold)).await;
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
    Ok(Held {
        c: counters,
        latency,
        ramp: ramp_time,
        connected,
        open_at_end,
        server: ServerUse {
            pid: pid.map(str::to_string),
            rss_kib: [rss_before, rss_up, rss_end],
            cpu_secs: [cpu_before, cpu_after],
            hold,
            own_rss,
        },
    })
}

/// What the held ramp measured of the server: its RSS (KiB) before, once all were connected
/// and at the end of the hold; its CPU seconds before and after the hold, which lasted `hold` s.
struct ServerUse {
    pid: Option<String>,
    rss_kib: [Option<u64>; 3],
    cpu_secs: [Option<f64>; 2],
    hold: f64,
    own_rss: Option<u64>,
}

/// What the report says that only one side has.
pub struct Side {
    /// The keep-alive every connection was given, seconds (a row after the hold's).
    pub keep_alive: Option<u64>,
    /// Whether the server can kick a connection (the row `kicked`).
    pub kicks: bool,
    /// What a connection that connected but did not come up failed to do ("log in").
    pub login: &'static str,
    /// What the server is called in the failures ("server").
    pub server: &'static str,
}

/// The summary into `r`: the ramp, the hold, what the server used, and what makes the run fail.
pub fn report(r: &mut Report, ramp: &Ramp<'_>, held: &Held, side: &Side) {
    let (c, n, connected) = (&held.c, ramp.n, held.connected);
    r.add("connections requested", n as u64, "");
    r.add("connections logged in", connected, "");
    r.add("connect failures", c.connect_failed.load(Relaxed), "");
    r.add("login failures", c.login_failed.load(Relaxed), "");
    r.add_f("ramp rate requested", ramp.rate, 1, "conn/s");
    r.add_f("ramp time", held.ramp.as_secs_f64(), 2, "s");
    r.add_f(
        "connect rate achieved",
        connected as f64 / held.ramp.as_secs_f64().max(1e-9),
        1,
        "conn/s",
    );
    r.latency("connect+login", &held.latency.snapshot());
    r.add("hold", ramp.hold, "s");
    if let Some(keep_alive) = side.keep_alive {
        r.add("keep-alive", keep_alive, "s");
    }
    r.add("open at end of hold", held.open_at_end, "");
    r.add("closed by server during run", c.closed.load(Relaxed), "");
    if side.kicks {
        r.add("kicked", c.kicked.load(Relaxed), "");
    }
    r.add("heartbeats sent", c.heartbeats.load(Relaxed), "");
    r.add("heartbeat acks", c.heartbeat_acks.load(Relaxed), "");
    r.add("other frames received", c.other_frames.load(Relaxed), "");
    // The server's memory per connection and CPU during the hold (idle connections cost only
    // heartbeats then: their CPU price), and the harness's own RSS.
    let u = &held.server;
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
    } else if let Some(pid) = &u.pid {
        r.fail(format!("cannot read /proc/{pid}/status"));
    }
    if let Some(own) = u.own_rss {
        r.add("harness RSS", own, "KiB");
    }
    r.samples(&c.errors);
    let failed = c.connect_failed.load(Relaxed) + c.login_failed.load(Relaxed);
    if failed > 0 {
        r.fail(format!(
            "{failed} of {n} connections failed to connect or {}",
            side.login
        ));
    }
    if c.closed.load(Relaxed) > 0 {
        r.fail(format!(
            "{} connections were closed by the {} while held",
            c.closed.load(Relaxed),
            side.server
        ));
    }
}
