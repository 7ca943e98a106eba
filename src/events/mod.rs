//! Event webhooks for the app's backend (`event_webhook_url`, docs/events.md): the events
//! worker reads the queue the store writes in the batch of each change (`store::events`), POSTs
//! each event, signed as the offline push is, and removes it once the backend answered 2xx. At
//! least once: an event whose answer was lost (or that was in flight at a crash) is sent again,
//! with the same `id`. An event still queued `event_webhook_max_age_secs` after it happened is
//! dropped and counted.
//!
//! The worker makes passes over the queue, oldest first, a page at a time, at most
//! [`IN_FLIGHT`] requests at once. After a commit that queued events it makes a pass (at most one
//! per [`PASS_GAP`]). A failure stops the pass; the next one starts again at the oldest after a
//! backoff (1 s doubling to 5 min per failed pass in a row, each wait cut to a random 50–100 %),
//! whatever is queued meanwhile: an outage costs no work per new event, and the worker holds
//! no more than a page of events, however long the queue.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Counter;
use crate::offline_push::payload::{signature, SIGNATURE_HEADER};
use crate::offline_push::worker::{blocking, connector};
use crate::store::{EventKey, QueuedEvent, Store};

/// Requests in flight at once.
pub const IN_FLIGHT: usize = 16;
/// Events read from the queue at a time.
const PAGE: usize = 256;
/// The shortest time between two passes.
const PASS_GAP: Duration = Duration::from_millis(50);
/// The first retry's wait, and the longest.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(300);
/// Largest answer body read (and ignored).
const MAX_RESPONSE: usize = 64 * 1024;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// An event and how its request went.
type Tried = (QueuedEvent, Result<(), String>);

/// What the worker did, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: Counter,
    pub failed: Counter,
    pub dropped: Counter,
}

/// The events worker.
pub struct Worker {
    store: Arc<Store>,
    client: HttpClient,
    url: hyper::Uri,
    secret: Arc<[u8]>,
    timeout: Duration,
    max_age_ms: i64,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    counters: Arc<Counters>,
    /// The second of the last failure logged.
    logged: i64,
}

impl Worker {
    /// The worker of `config` (whose `event_webhook_url` is set and valid), woken by `wake`.
    pub fn new(
        config: &Config,
        store: Arc<Store>,
        wake: Arc<Notify>,
        shutdown: CancellationToken,
        counters: Arc<Counters>,
    ) -> Option<Worker> {
        let url = config.event_webhook_url.parse().ok()?;
        let timeout = Duration::from_millis(config.event_webhook_timeout_ms);
        let client = Client::builder(TokioExecutor::new()).build(connector(timeout));
        Some(Worker {
            store,
            client,
            url,
            secret: config.event_webhook_secret.as_bytes().into(),
            timeout,
            max_age_ms: config.event_webhook_max_age_secs.saturating_mul(1000) as i64,
            wake,
            shutdown,
            counters,
            logged: 0,
        })
    }

    pub async fn run(mut self) {
        // Consecutive passes that a failure stopped.
        let mut failures = 0u32;
        loop {
            let delivered = match self.pass().await {
                Ok(all) => all,
                Err(e) => {
                    tracing::error!("events worker: {e}");
                    false
                }
            };
            failures = if delivered { 0 } else { failures + 1 };
            // Healthy: the next commit that queues events (after a short gap, so that passes
            // stay few). Failing: only the backoff, whatever is queued meanwhile.
            let wait = if failures == 0 {
                PASS_GAP
            } else {
                backoff(failures)
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            if failures == 0 {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    _ = self.wake.notified() => {}
                }
            }
        }
    }

    /// One pass over the queue, oldest first: each event is sent, what was delivered (or is too
    /// old) is removed. A failure stops the pass once the requests in flight are answered, so
    /// the next try starts again at the oldest. Whether the pass got through the whole queue.
    async fn pass(&mut self) -> Result<bool, String> {
        let mut after: Option<EventKey> = None;
        loop {
            let store = self.store.clone();
            let from = after.clone();
            let page = blocking(move || store.core().events_after(from.as_ref(), PAGE)).await?;
            let Some(last) = page.last() else {
                return Ok(true);
            };
            after = Some(last.key.clone());
            let now_ms = crate::clock::now_ms();
            let mut done = Vec::new();
            let mut failed = false;
            let mut flights = JoinSet::new();
            for e in page {
                if now_ms.saturating_sub(e.time_ms) > self.max_age_ms {
                    tracing::warn!("event dropped after event_webhook_max_age_secs");
                    self.counters.dropped.inc();
                    done.push(e);
                    continue;
                }
                while flights.len() >= IN_FLIGHT && !failed {
                    failed |= !self.settle(flights.join_next().await, &mut done);
                }
                if failed {
                    break;
                }
                let (client, url) = (self.client.clone(), self.url.clone());
                let (secret, timeout) = (self.secret.clone(), self.timeout);
                flights.spawn(async move {
                    let request = post(&client, url, &secret, e.body.clone());
                    let outcome = tokio::time::timeout(timeout, request).await;
                    let outcome = outcome.unwrap_or_else(|_| Err("no answer in time".into()));
                    (e, outcome)
                });
            }
            while let Some(r) = flights.join_next().await {
                failed |= !self.settle(Some(r), &mut done);
            }
            if !done.is_empty() {
                self.store
                    .events_remove(done)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            if failed {
                return Ok(false);
            }
        }
    }

    /// Takes the outcome of one request: whether it was delivered.
    fn settle(
        &mut self,
        joined: Option<Result<Tried, tokio::task::JoinError>>,
        done: &mut Vec<QueuedEvent>,
    ) -> bool {
        let Some(Ok((e, outcome))) = joined else {
            return false;
        };
        match outcome {
            Ok(()) => {
                self.counters.sent.inc();
                done.push(e);
                true
            }
            Err(why) => {
                self.counters.failed.inc();
                // At most one line a second, whatever the event rate during an outage.
                let second = crate::clock::now_ms() / 1000;
                if self.logged != second {
                    self.logged = second;
                    let failed = self.counters.failed.get();
                    tracing::warn!("event webhook failed: {why} ({failed} failures so far)");
                }
                false
            }
        }
    }
}

/// The wait after the `tries`-th failed pass in a row: 1 s doubling to 5 min, cut to a random
/// 50–100 %.
fn backoff(tries: u32) -> Duration {
    let full = RETRY_FIRST
        .saturating_mul(1 << tries.saturating_sub(1).min(16))
        .min(RETRY_MAX);
    full.mul_f64(rand::random_range(0.5..=1.0))
}

/// POSTs one event's body: `Ok` on a 2xx.
async fn post(
    client: &HttpClient,
    url: hyper::Uri,
    secret: &[u8],
    body: Vec<u8>,
) -> Result<(), String> {
    let request = hyper::Request::post(url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("missived/", env!("CARGO_PKG_VERSION")),
        )
        .header(SIGNATURE_HEADER, signature(secret, &body))
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let response =
        client
            .request(request)
            .await
            .map_err(|e| match std::error::Error::source(&e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            })?;
    let status = response.status();
    let _ = Limited::new(response.into_body(), MAX_RESPONSE)
        .collect()
        .await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}
