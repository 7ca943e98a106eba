//! Offline push: a message for a user with no online device is announced to a webhook.
//!
//! # How
//! - **Deciding.** A send asks the router ([`crate::store::Outbox::offline`]) which recipients
//!   have no registered session, on the writer thread while the send runs, and writes one
//!   `push_queue` key per such recipient in the same batch as the message: once the sender has
//!   its SEND_ACK, the notification survives any crash. The decision is taken at write time, so
//!   a device that logs in a moment later gets the message pushed on its connection *and* the
//!   webhook may announce it; a device whose connection is dead but not yet detected (heartbeat
//!   sweep) counts as online and gets no webhook for that message.
//! - **Sending** ([`worker`]). One task reads the queue in message order (at most
//!   [`worker::WINDOW`] entries at a time) and POSTs each notification ([`payload`]) to
//!   `push_webhook_url`, up to [`worker::IN_FLIGHT`] at once. A 2xx answer removes the entry
//!   (through the writer, like every change); anything else (refused connection, timeout, any
//!   other status) retries it after `push_retry_initial_ms`, doubling up to `push_retry_max_ms`,
//!   with jitter. After `push_max_attempts` tries, or once its message is older than
//!   `push_max_age_secs`, the notification is dropped and counted ([`Counters`]).
//! - **What is said** is read from the stored message when it is sent: a message recalled,
//!   deleted by the recipient or read (on another device) before then is not announced, and the
//!   badge is the unread total at sending time.
//!
//! # Guarantees
//! Without a crash, each notification is POSTed until one request gets a 2xx, then never
//! again: the receiver sees it once, unless a request reached it but its 2xx did not come back
//! within `push_timeout_ms` (then it is sent again). After a crash or a shutdown, requests that
//! were in flight are sent again. Every payload has a stable `id` (also in the
//! `X-Missive-Delivery` header) for receivers that must deduplicate.

pub mod payload;
pub mod worker;

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigError};

/// Characters of message text a `text` preview carries at most.
pub const PREVIEW_CHARS: usize = 100;

/// What a notification tells of the message (`push_preview`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preview {
    /// Nothing but who wrote where.
    None,
    /// Also the content type.
    Type,
    /// Also the content as text, cut to [`PREVIEW_CHARS`] characters.
    Text,
}

/// What the push worker did since the server started.
#[derive(Debug, Default)]
pub struct Counters {
    /// Notifications answered with a 2xx.
    pub sent: AtomicU64,
    /// Requests that failed (each is retried, or dropped below).
    pub failed: AtomicU64,
    /// Dropped after `push_max_attempts` tries or `push_max_age_secs`.
    pub dropped: AtomicU64,
    /// Not sent: the message was recalled, deleted or read before its notification was due.
    pub obsolete: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub sent: u64,
    pub failed: u64,
    pub dropped: u64,
    pub obsolete: u64,
}

impl Counters {
    pub fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            sent: get(&self.sent),
            failed: get(&self.failed),
            dropped: get(&self.dropped),
            obsolete: get(&self.obsolete),
        }
    }

    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Checks the push settings (called by [`Config::validate`]).
pub fn validate(c: &Config) -> Result<(), ConfigError> {
    if c.push_webhook_url.is_empty() {
        return Ok(());
    }
    let bad = |m: &str| Err(ConfigError(m.to_owned()));
    let uri: hyper::Uri = match c.push_webhook_url.parse() {
        Ok(u) => u,
        Err(_) => return bad("push_webhook_url: not a URL like http://10.0.0.5:8080/missive"),
    };
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return bad(
            "push_webhook_url: must be an http:// URL with a host (for HTTPS, put a TLS proxy \
             on the same host in front of the webhook)",
        );
    }
    if c.push_webhook_secret.len() < 16 {
        return bad("push_webhook_secret: at least 16 characters are needed with push_webhook_url");
    }
    if c.push_max_attempts == 0 || c.push_max_age_secs == 0 {
        return bad("push_max_attempts and push_max_age_secs: must be at least 1");
    }
    if c.push_retry_initial_ms == 0 || c.push_retry_max_ms < c.push_retry_initial_ms {
        return bad("push_retry_initial_ms: at least 1, and push_retry_max_ms at least that");
    }
    if c.push_timeout_ms == 0 {
        return bad("push_timeout_ms: must be above 0");
    }
    Ok(())
}
