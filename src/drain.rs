//! Drain: move every client off this server, gradually, before it is taken down.
//!
//! Started by SIGUSR1 or `POST /v1/drain`. From then on a LOGIN is refused with
//! `SHUTTING_DOWN` (19, fatal: the client reconnects with backoff, through the load balancer to
//! another server), and connected sessions are sent `KICK REDIRECT` (with `drain_redirect` as
//! `redirect_host:redirect_port` when set, and `reconnect_after_ms`) at `rate` per second, so
//! the other servers take the reconnects at a pace they can absorb. Sessions that log in while
//! the drain starts are picked up by its next pass. The server keeps serving what is left
//! (replies, pushes) until each session is kicked; it stays drained until the drain is stopped
//! (`DELETE /v1/drain`) or the server shuts down.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use missive_protocol::pb::{Kick, KickReason};
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::router::SessionHandle;
use crate::server::Shared;

/// How long a drain with nobody left to kick waits before looking again.
const IDLE: Duration = Duration::from_millis(100);
/// The drain wakes at most this often (a faster rate kicks several per wake).
const MIN_PERIOD: Duration = Duration::from_millis(2);
/// Kicks owed after a late wake-up are caught up if they fall within this window; later ones
/// are dropped, so the pace never exceeds the rate by more than a window's worth.
const CATCH_UP: Duration = Duration::from_millis(10);

/// A drain's pace and where it sends clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Sessions kicked per second.
    pub rate_per_sec: u32,
    /// `redirect_host`, `redirect_port` of the kick; `None`: the same address.
    pub redirect: Option<(String, u16)>,
    /// `reconnect_after_ms` of the kick.
    pub reconnect_after_ms: u32,
}

impl Plan {
    /// The configured plan (`drain_rate_per_sec`, `drain_redirect`, `drain_reconnect_after_ms`).
    pub fn from_config(config: &crate::Config) -> Plan {
        Plan {
            rate_per_sec: config.drain_rate_per_sec,
            redirect: config.redirect_target(),
            reconnect_after_ms: config.drain_reconnect_after_ms,
        }
    }

    /// The KICK each drained session gets.
    pub fn kick(&self) -> Kick {
        let mut k = crate::router::kick(KickReason::Redirect, "server draining; reconnect");
        if let Some((host, port)) = &self.redirect {
            k.redirect_host = host.clone();
            k.redirect_port = u32::from(*port);
        }
        k.reconnect_after_ms = self.reconnect_after_ms;
        k
    }
}

/// The drain state of one server.
#[derive(Debug, Default)]
pub struct Drain {
    active: AtomicBool,
    /// Sessions kicked since the drain started.
    kicked: AtomicU64,
    /// The running drain: its plan and how to stop its task.
    running: Mutex<Option<(Plan, CancellationToken)>>,
}

/// What `GET /v1/drain` reports.
#[derive(Debug, Clone)]
pub struct Status {
    pub draining: bool,
    pub plan: Option<Plan>,
    /// Sessions kicked by this drain so far.
    pub kicked: u64,
    /// Sessions online and not yet asked to leave.
    pub remaining: usize,
}

impl Drain {
    /// Whether logins are refused because the server is draining.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }
}

/// Starts draining with `plan`; if a drain is running, it goes on at the new plan's pace.
pub fn start(shared: &Arc<Shared>, plan: Plan) {
    let stop = CancellationToken::new();
    let mut running = shared.drain.running.lock();
    match running.take() {
        Some((_, old)) => old.cancel(),
        None => shared.drain.kicked.store(0, Ordering::Relaxed),
    }
    shared.drain.active.store(true, Ordering::Relaxed);
    tracing::info!(rate = plan.rate_per_sec, redirect = ?plan.redirect, "draining");
    *running = Some((plan.clone(), stop.clone()));
    drop(running);
    tokio::spawn(run(shared.clone(), plan, stop));
}

/// Stops draining: logins are accepted again; sessions already kicked stay kicked.
pub fn stop(shared: &Shared) {
    if let Some((_, task)) = shared.drain.running.lock().take() {
        task.cancel();
        tracing::info!("drain stopped");
    }
    shared.drain.active.store(false, Ordering::Relaxed);
}

pub fn status(shared: &Shared) -> Status {
    let remaining = shared
        .router
        .sessions()
        .iter()
        .filter(|s| !s.is_closing())
        .count();
    Status {
        draining: shared.drain.is_active(),
        plan: shared.drain.running.lock().as_ref().map(|(p, _)| p.clone()),
        kicked: shared.drain.kicked.load(Ordering::Relaxed),
        remaining,
    }
}

/// Kicks sessions at the plan's rate (a token bucket that starts with one token, so N sessions
/// take (N - 1) / rate seconds), looking for sessions again whenever its list is done.
async fn run(shared: Arc<Shared>, plan: Plan, stop: CancellationToken) {
    let rate = f64::from(plan.rate_per_sec.max(1));
    let period = Duration::from_secs_f64(1.0 / rate).max(MIN_PERIOD);
    let burst = (rate * period.max(CATCH_UP).as_secs_f64()).max(1.0);
    let kick = plan.kick();
    let mut queue: VecDeque<Arc<SessionHandle>> = VecDeque::new();
    let mut allowance = 1.0;
    let mut last = Instant::now();
    loop {
        if queue.is_empty() {
            queue = shared
                .router
                .sessions()
                .into_iter()
                .filter(|s| !s.is_closing())
                .collect();
        }
        let now = Instant::now();
        let wait = if queue.is_empty() {
            allowance = 1.0;
            IDLE
        } else {
            allowance = (allowance + rate * (now - last).as_secs_f64()).min(burst);
            while allowance >= 1.0 {
                let Some(s) = queue.pop_front() else { break };
                if s.is_closing() {
                    continue;
                }
                s.close(Some(kick.clone()));
                shared.drain.kicked.fetch_add(1, Ordering::Relaxed);
                shared.metrics.drain_kicks.inc();
                allowance -= 1.0;
            }
            period
        };
        last = now;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
