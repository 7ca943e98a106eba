//! Announces pushes that no foreground device acknowledged in time (`crate::unacked`): a task
//! that takes what is due from the router every so often and queues those notifications in
//! `push_queue`, where the worker sends them like any other. Their keys carry their message's
//! id, older than what the worker may have read since: the worker is told to read the queue
//! from its start again (`rewind`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::counters::Counters;
use crate::router::Router;
use crate::store::Store;

/// How often the task looks: an eighth of `push_unacked_ms`, between 20 and 250 ms, so a
/// message is announced at most that late.
pub fn period(push_unacked_ms: u64) -> Duration {
    Duration::from_millis((push_unacked_ms / 8).clamp(20, 250))
}

/// What the announcing task works with.
pub struct Announcer {
    pub router: Arc<Router>,
    pub store: Arc<Store>,
    pub counters: Arc<Counters>,
    pub shutdown: CancellationToken,
    pub period: Duration,
    /// The worker's wake-up and rewind (`super::worker::Worker::rewinder`).
    pub wake: Arc<Notify>,
    pub rewind: Arc<AtomicBool>,
}

/// Runs until shutdown. What is watched at shutdown (or lost with a crash) is not announced:
/// its message is stored, and the device gets it when it syncs.
pub async fn run(a: Announcer) {
    let Announcer {
        router,
        store,
        counters,
        shutdown,
        period,
        wake,
        rewind,
    } = a;
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
            Ok(()) => {
                Counters::add(&counters.unacked, n);
                rewind.store(true, Ordering::Relaxed);
                wake.notify_one();
            }
            Err(e) => {
                tracing::warn!("unacknowledged pushes not queued for the webhook: {e}");
            }
        }
    }
}
