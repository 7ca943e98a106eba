//! Announces pushes that no foreground device acknowledged in time (`crate::unacked`): a task
//! that takes what is due from the router every so often and queues those notifications in
//! `push_queue`, where the worker sends them like any other.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::counters::Counters;
use crate::router::Router;
use crate::store::Store;

/// How often the task looks: an eighth of `push_unacked_ms`, between 20 and 250 ms, so a
/// message is announced at most that late.
pub fn period(push_unacked_ms: u64) -> Duration {
    Duration::from_millis((push_unacked_ms / 8).clamp(20, 250))
}

/// Runs until shutdown. What is watched at shutdown (or lost with a crash) is not announced:
/// its message is stored, and the device gets it when it syncs.
pub async fn run(
    router: Arc<Router>,
    store: Arc<Store>,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
    period: Duration,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let due = router.unacked_due(crate::clock::now_ms());
        if due.is_empty() {
            continue;
        }
        let n = due.len() as u64;
        match store.queue_unacked(due).await {
            Ok(()) => Counters::add(&counters.unacked, n),
            Err(e) => {
                tracing::warn!("unacknowledged pushes not queued for the webhook: {e}");
            }
        }
    }
}
