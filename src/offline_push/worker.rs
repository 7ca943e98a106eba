//! The push worker: reads `push_queue`, POSTs notifications, retries, removes what is done.
//!
//! It holds a window of at most [`WINDOW`] queued entries (the oldest messages first), each with
//! its tries and when it is next due; entries past the window wait in RocksDB, so a long outage
//! of the webhook costs no memory. The window is refilled from the key after the last one read
//! (keys grow with message ids, and the writer commits them in that order) whenever it has room
//! and the writer says it queued more.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::counters::Counters;
use super::payload;
use crate::config::Config;
use crate::config::Preview;
use crate::store::{PushItem, PushKey, Store, StoreError};

/// Queued entries the worker holds at once.
pub const WINDOW: usize = 256;
/// Webhook requests in flight at once.
pub const IN_FLIGHT: usize = 16;
/// How long a shutdown waits for requests in flight (what does not finish is sent again after
/// the restart).
const DRAIN: Duration = Duration::from_secs(3);
/// Largest response body read (and ignored).
const MAX_RESPONSE: usize = 64 * 1024;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The push settings, as the worker uses them.
#[derive(Clone)]
struct Settings {
    url: hyper::Uri,
    secret: Arc<[u8]>,
    preview: Preview,
    max_attempts: u32,
    max_age_ms: i64,
    retry_initial: Duration,
    retry_max: Duration,
    timeout: Duration,
}

/// One entry of the window.
struct Slot {
    tries: u32,
    due: Instant,
    busy: bool,
}

/// What a request came to.
enum Outcome {
    Sent,
    Failed(String),
}

/// The worker, with what it shares with the server.
pub struct Worker {
    store: Arc<Store>,
    settings: Settings,
    client: HttpClient,
    wake: Arc<Notify>,
    /// Set when entries were queued behind the cursor (`super::unacked`: a late notification
    /// keeps its message's id): the next refill reads the queue from its start again.
    rewind: Arc<AtomicBool>,
    shutdown: CancellationToken,
    counters: Arc<Counters>,
    window: BTreeMap<PushKey, Slot>,
    /// The last key read into the window.
    cursor: Option<PushKey>,
    /// The last scan found fewer entries than it had room for.
    drained: bool,
    /// Entries to remove from the queue (sent, dropped or obsolete).
    done: Vec<PushKey>,
    flights: JoinSet<(PushKey, Outcome)>,
    /// Whether the last request succeeded (to log an outage once, not per request).
    healthy: bool,
}

impl Worker {
    /// A worker for `config` (whose `push_webhook_url` is set and valid), woken by `wake`.
    pub fn new(
        config: &Config,
        store: Arc<Store>,
        wake: Arc<Notify>,
        shutdown: CancellationToken,
        counters: Arc<Counters>,
    ) -> Option<Worker> {
        let url = config.push_webhook_url.parse().ok()?;
        let settings = Settings {
            url,
            secret: config.push_webhook_secret.as_bytes().into(),
            preview: config.push_preview,
            max_attempts: config.push_max_attempts,
            max_age_ms: config.push_max_age_secs.saturating_mul(1000) as i64,
            retry_initial: Duration::from_millis(config.push_retry_initial_ms),
            retry_max: Duration::from_millis(config.push_retry_max_ms),
            timeout: Duration::from_millis(config.push_timeout_ms),
        };
        let client = Client::builder(TokioExecutor::new()).build(connector(settings.timeout));
        Some(Worker {
            store,
            settings,
            client,
            wake,
            rewind: Arc::default(),
            shutdown,
            counters,
            window: BTreeMap::new(),
            cursor: None,
            drained: false,
            done: Vec::new(),
            flights: JoinSet::new(),
            healthy: true,
        })
    }

    /// Runs until shutdown or a store failure.
    pub async fn run(mut self) {
        if let Err(e) = self.work().await {
            tracing::error!("push worker stopped: {e}");
        }
    }

    async fn work(&mut self) -> Result<(), String> {
        loop {
            if !self.drained && self.window.len() < WINDOW {
                self.refill().await?;
            }
            self.start_due().await?;
            self.remove_done().await?;
            let next_due = self
                .window
                .values()
                .filter(|s| !s.busy)
                .map(|s| s.due)
                .min();
            tokio::select! {
                _ = self.shutdown.cancelled() => return self.drain().await,
                Some(joined) = self.flights.join_next(), if !self.flights.is_empty() => {
                    if let Ok((key, outcome)) = joined {
                        self.finished(key, outcome);
                    }
                }
                _ = self.wake.notified() => self.drained = false,
                _ = sleep_until(next_due), if next_due.is_some() => {}
            }
        }
    }

    /// What tells the worker that entries were queued behind its cursor.
    pub fn rewinder(&self) -> Arc<AtomicBool> {
        self.rewind.clone()
    }

    /// Reads the entries after the cursor into the window. After a rewind the cursor starts
    /// again from the queue's first key: what is in the window already keeps its state, and
    /// what was sent or dropped but is not removed yet (`done`) is not read again.
    async fn refill(&mut self) -> Result<(), String> {
        if self.rewind.swap(false, Ordering::Relaxed) {
            self.cursor = None;
        }
        let room = WINDOW - self.window.len();
        let after = self.cursor.clone();
        let store = self.store.clone();
        let keys = blocking(move || store.core().push_queue_after(after.as_ref(), room)).await?;
        self.drained = keys.len() < room;
        let now = Instant::now();
        for key in keys {
            self.cursor = Some(key.clone());
            if self.done.contains(&key) {
                continue;
            }
            self.window.entry(key).or_insert(Slot {
                tries: 0,
                due: now,
                busy: false,
            });
        }
        Ok(())
    }

    /// Starts a request for every due entry, as many as may be in flight.
    async fn start_due(&mut self) -> Result<(), String> {
        let now = Instant::now();
        let room = IN_FLIGHT.saturating_sub(self.flights.len());
        let due: Vec<PushKey> = self
            .window
            .iter()
            .filter(|(_, s)| !s.busy && s.due <= now)
            .take(room)
            .map(|(k, _)| k.clone())
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let store = self.store.clone();
        let keys = due.clone();
        let items = blocking(move || {
            keys.iter()
                .map(|k| store.core().push_item(k))
                .collect::<crate::store::Result<Vec<_>>>()
        })
        .await?;
        let now_ms = crate::clock::now_ms();
        for (key, item) in due.into_iter().zip(items) {
            let Some(item) = item else {
                Counters::add(&self.counters.obsolete, 1);
                self.forget(key);
                continue;
            };
            if now_ms - item.timestamp_ms > self.settings.max_age_ms {
                self.drop_expired(key, "older than push_max_age_secs");
                continue;
            }
            let Some(slot) = self.window.get_mut(&key) else {
                continue;
            };
            slot.busy = true;
            slot.tries += 1;
            let attempt = slot.tries;
            let (client, settings) = (self.client.clone(), self.settings.clone());
            self.flights.spawn(async move {
                let outcome = post(&client, &settings, &item, attempt).await;
                (key, outcome)
            });
        }
        Ok(())
    }

    /// Books the outcome of a request.
    fn finished(&mut self, key: PushKey, outcome: Outcome) {
        match outcome {
            Outcome::Sent => {
                Counters::add(&self.counters.sent, 1);
                if !self.healthy {
                    tracing::info!("push webhook answers again");
                    self.healthy = true;
                }
                self.forget(key);
            }
            Outcome::Failed(why) => {
                Counters::add(&self.counters.failed, 1);
                if self.healthy {
                    tracing::warn!("push webhook failed ({why}); retrying with backoff");
                    self.healthy = false;
                } else {
                    tracing::debug!("push webhook failed: {why}");
                }
                let Some(slot) = self.window.get_mut(&key) else {
                    return;
                };
                if slot.tries >= self.settings.max_attempts {
                    self.drop_expired(key, "push_max_attempts reached");
                    return;
                }
                slot.busy = false;
                slot.due = Instant::now() + retry_delay(&self.settings, slot.tries);
            }
        }
    }

    fn drop_expired(&mut self, key: PushKey, why: &str) {
        tracing::warn!(
            user = key.user(),
            msg_id = key.msg_id(),
            "push dropped: {why}"
        );
        Counters::add(&self.counters.dropped, 1);
        self.forget(key);
    }

    /// Takes an entry out of the window; it is removed from the queue next.
    fn forget(&mut self, key: PushKey) {
        self.window.remove(&key);
        self.done.push(key);
        // Room in the window: entries past it may be waiting.
        self.drained = false;
    }

    async fn remove_done(&mut self) -> Result<(), String> {
        if self.done.is_empty() {
            return Ok(());
        }
        let done = std::mem::take(&mut self.done);
        match self.store.push_remove(done.clone()).await {
            Ok(()) => Ok(()),
            // The writer is overloaded: keep them and try again on the next turn.
            Err(StoreError::Refused { .. }) => {
                self.done = done;
                Ok(())
            }
            Err(e) => Err(format!("cannot remove sent notifications: {e}")),
        }
    }

    /// At shutdown: lets the requests in flight finish (up to [`DRAIN`]) and removes the sent.
    async fn drain(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + DRAIN;
        while !self.flights.is_empty() {
            match tokio::time::timeout_at(deadline, self.flights.join_next()).await {
                Ok(Some(Ok((key, outcome)))) => self.finished(key, outcome),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        self.flights.abort_all();
        self.remove_done().await
    }
}

/// The wait before try `tries + 1`: `retry_initial * 2^(tries-1)`, capped, then between half and
/// all of that (jitter, so entries that failed together do not retry together).
fn retry_delay(s: &Settings, tries: u32) -> Duration {
    let factor = 1u32
        .checked_shl(tries.saturating_sub(1).min(31))
        .unwrap_or(u32::MAX);
    let full = s.retry_initial.saturating_mul(factor).min(s.retry_max);
    full.mul_f64(rand::random_range(0.5..=1.0))
}

/// POSTs the notification of `item`; a 2xx within the timeout is success.
async fn post(client: &HttpClient, s: &Settings, item: &PushItem, attempt: u32) -> Outcome {
    let body = payload::body(item, s.preview, attempt, crate::clock::now_ms());
    let request = hyper::Request::post(s.url.clone())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("missived/", env!("CARGO_PKG_VERSION")),
        )
        .header(
            payload::SIGNATURE_HEADER,
            payload::signature(&s.secret, &body),
        )
        .header(
            payload::DELIVERY_HEADER,
            payload::delivery_id(item.msg_id, &item.user),
        )
        .body(Full::new(Bytes::from(body)));
    let request = match request {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("cannot build the request: {e}")),
    };
    let exchange = async {
        let response = client.request(request).await.map_err(|e| {
            // The connector's error (refused, unreachable) is the useful part.
            match std::error::Error::source(&e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            }
        })?;
        let status = response.status();
        // Read the (small) answer so the connection can be reused.
        let _ = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await;
        Ok::<_, String>(status)
    };
    match tokio::time::timeout(s.timeout, exchange).await {
        Ok(Ok(status)) if status.is_success() => Outcome::Sent,
        Ok(Ok(status)) => Outcome::Failed(format!("HTTP {status}")),
        Ok(Err(e)) => Outcome::Failed(e),
        Err(_) => Outcome::Failed(format!("no answer within {} ms", s.timeout.as_millis())),
    }
}

/// The HTTP connector of the server's webhooks (offline push, before-send hook, events):
/// TCP_NODELAY, and a connect within `timeout`.
pub(crate) fn connector(timeout: Duration) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(timeout));
    connector
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs store reads on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::store::Result<T> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("store task failed: {e}")),
    }
}
