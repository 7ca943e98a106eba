//! Draining: moving every client off this server, gradually (SIGUSR1 or `POST /v1/drain`; the
//! state and the rules are in `crate::drain`).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::context::Shared;
use crate::drain::{Plan, Status};
use crate::router::SessionHandle;

/// How long a drain with nobody left to kick waits before looking again.
const IDLE: Duration = Duration::from_millis(100);
/// The drain wakes at most this often (a faster rate kicks several per wake).
const MIN_PERIOD: Duration = Duration::from_millis(2);
/// Kicks owed after a late wake-up are caught up if they fall within this window; later ones
/// are dropped, so the pace never exceeds the rate by more than a window's worth.
const CATCH_UP: Duration = Duration::from_millis(10);

/// Starts draining with `plan`; if a drain is running, it goes on at the new plan's pace.
///
/// A node of a one-partition cluster is drained by stopping it (docs/CLUSTER.md section 7):
/// logins are refused, the writes in flight finish, the lease is released and another node
/// serves at once; its clients, kicked with a reconnect delay, reconnect through their address
/// list (a standby forwards them to the new owner, or is it). Moving its clients one by one to
/// a node that forwards them back would change nothing.
pub fn start(shared: &Arc<Shared>, plan: Plan) {
    if shared.cluster.is_some() && shared.config.cluster_partitions == 1 {
        tracing::info!("draining a one-partition cluster's node: handing over and stopping");
        shared.drain.active.store(true, Ordering::Relaxed);
        shared.stop_requested.store(true, Ordering::Relaxed);
        shared.shutdown.cancel();
        return;
    }
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
