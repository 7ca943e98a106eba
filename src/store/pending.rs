//! [`Pending`]: the result of a queued change, to await or to wait for.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use super::error::{Result, StoreError};

/// The result of a change, available once the writer has committed (or refused) it.
/// Await it from async code, or [`Pending::wait`] from a thread that may block.
#[must_use = "a change's result says whether it was stored"]
pub struct Pending<T>(oneshot::Receiver<Result<T>>);

/// The writer's side of a [`Pending`].
pub(super) struct Reply<T>(oneshot::Sender<Result<T>>);

impl<T> Reply<T> {
    pub fn send(self, result: Result<T>) {
        // The requester may have gone (connection closed); the change stands regardless.
        let _ = self.0.send(result);
    }
}

fn stopped() -> StoreError {
    StoreError::Failed("the store's writer stopped".into())
}

impl<T> Pending<T> {
    pub(super) fn channel() -> (Reply<T>, Pending<T>) {
        let (tx, rx) = oneshot::channel();
        (Reply(tx), Pending(rx))
    }

    /// Blocks until the result is there. Not from inside an async task: await instead.
    pub fn wait(self) -> Result<T> {
        self.0.blocking_recv().unwrap_or_else(|_| Err(stopped()))
    }
}

impl<T> Future for Pending<T> {
    type Output = Result<T>;

    /// Cancel-safe: dropping it does not undo the change.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(stopped())))
    }
}
