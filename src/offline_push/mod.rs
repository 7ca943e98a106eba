//! Offline push: a message for a user with no online device is announced to a webhook.
//!
//! # How
//! - **Deciding.** A send asks the router ([`crate::store::Outbox::offline`]) which recipients
//!   have no registered session in the foreground, on the writer thread while the send runs,
//!   and writes one `push_queue` key per such recipient in the same batch as the message: once
//!   the sender has its SEND_ACK, the notification survives any crash. The pushes to the other
//!   recipients are watched ([`crate::unacked`]): one that no foreground device acknowledges in
//!   `push_unacked_ms`, or whose user's last foreground connection closes first, is queued then
//!   ([`unacked`]), so a device whose connection is dead but not yet detected (heartbeat sweep)
//!   is notified within seconds. Each message is queued at most once per recipient.
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

pub mod counters;
pub mod payload;
pub mod unacked;
pub mod worker;

pub use crate::config::{Preview, PREVIEW_CHARS};
pub use counters::{Counters, Stats};
