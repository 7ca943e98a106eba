//! How a request's store work runs: small reads in place when what they read is in memory,
//! everything else on the blocking pool, heavy reads (many keys) one turn each among a few
//! server-wide; and how a store result becomes the answer or a [`Refusal`].

use std::sync::Arc;

use missive_protocol::ErrorCode;
use tokio::sync::OwnedSemaphorePermit;

use super::refusal::Refusal;
use crate::context::Shared;
use crate::store::{self, StoreError};

/// Read fan-out groups a user's unread total may visit in place (on a connection thread, from
/// memory); a user in more is totalled as a heavy read.
const TOTAL_IN_PLACE: usize = 16;

/// The user's unread total (LOGIN_ACK, MARK_READ_ACK): in place while it is a few reads, else
/// as a heavy read.
pub async fn unread_total(shared: &Arc<Shared>, user: &str) -> Result<u64, Refusal> {
    let who = user.to_owned();
    let few = small_read(shared, move |s| {
        s.store.core().unread_total_if_few(&who, TOTAL_IN_PLACE)
    })
    .await?;
    if let Some(total) = few {
        return Ok(total);
    }
    let permit = heavy_turn(shared).await?;
    let who = user.to_owned();
    blocking(shared, move |s| {
        let _turn = permit;
        s.store.core().unread_total(&who)
    })
    .await
}

/// A turn among the heavy reads (FIFO): at most [`heavy_read_slots`] run at once, server-wide.
/// The read holds the permit until its work is done.
pub async fn heavy_turn(shared: &Arc<Shared>) -> Result<OwnedSemaphorePermit, Refusal> {
    shared
        .heavy_reads
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Refusal::new(ErrorCode::ShuttingDown, "server shutting down"))
}

/// Heavy reads running at once, server-wide: the cores, and at least two.
pub fn heavy_read_slots() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

/// Runs store work on the blocking pool and maps its errors to wire codes.
pub async fn blocking<T, F>(shared: &Arc<Shared>, f: F) -> Result<T, Refusal>
where
    T: Send + 'static,
    F: FnOnce(&Shared) -> store::Result<T> + Send + 'static,
{
    let s = shared.clone();
    match tokio::task::spawn_blocking(move || f(&s)).await {
        Ok(r) => outcome(shared, r),
        Err(e) => {
            tracing::error!("store task failed: {e}");
            Err(Refusal::new(ErrorCode::Internal, "internal error"))
        }
    }
}

/// Runs a small store read (a few keys) at once on this task when what it reads is in memory
/// (memtables, block cache), which is the usual case; only a read that needs the disk goes to
/// the blocking pool. Saves a thread handoff per LOGIN and per UNREAD.
pub async fn small_read<T, F>(shared: &Arc<Shared>, f: F) -> Result<T, Refusal>
where
    T: Send + 'static,
    F: Fn(&Shared) -> store::Result<T> + Send + 'static,
{
    match shared.store.core().in_memory(|| f(shared)) {
        Some(r) => outcome(shared, r),
        None => blocking(shared, f).await,
    }
}

/// Maps a store result to the answer: a refusal keeps its code; a storage failure starts a
/// clean shutdown, since the server cannot go on safely.
pub fn outcome<T>(shared: &Shared, r: store::Result<T>) -> Result<T, Refusal> {
    match r {
        Ok(v) => Ok(v),
        Err(StoreError::Refused {
            code,
            message,
            reason,
        }) => {
            let mut r = Refusal::new(code, message);
            r.reason = reason;
            if code == ErrorCode::ServerBusy {
                r.retry_after_ms = 1000 + rand::random_range(0..2000);
            }
            Err(r)
        }
        // A store replicated through a cluster's log whose log refused the change (the lease
        // or the log is gone): the node stops and another serves; the change may have reached
        // the log, so the client is told to reconnect and resend, not that nothing happened
        // (PROTOCOL.md section 14).
        Err(e) if shared.store.is_replicated() => {
            tracing::error!("store failure, this cluster node stops serving: {e}");
            shared.shutdown.cancel();
            let mut r = Refusal::new(
                ErrorCode::ShuttingDown,
                "this node stopped serving: reconnect and send again with the same client_msg_id",
            );
            r.retry_after_ms = 1000 + rand::random_range(0..2000);
            Err(r)
        }
        Err(e) => {
            tracing::error!("store failure, shutting down: {e}");
            shared.shutdown.cancel();
            Err(Refusal::new(ErrorCode::Internal, "storage failure"))
        }
    }
}
