//! [`ClientConfig`]: how to reach the server and who to be; [`Backoff`]: how long to wait
//! between reconnects.

use std::time::Duration;

use missive_protocol::pb;
use rand::Rng;

use crate::connection::CLIENT_VERSION;

/// Capped exponential backoff with full jitter: before attempt `n` (0-based) wait a random time
/// in `[0, min(max, initial * 2^n)]`. The attempt count goes back to 0 only once a connection
/// has stayed logged in for `reset_after`, not at LOGIN_ACK: a server that accepts the login
/// and then drops the connection must still be backed off from (PROTOCOL.md section 21).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

/// PROTOCOL.md section 21's numbers: 1 s, doubling, capped at 60 s, reset after 60 s logged in.
impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            reset_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The cap for attempt `attempt` (before jitter).
    pub fn cap(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// A random delay for attempt `attempt`: uniform in `[0, cap(attempt)]`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let cap = self.cap(attempt).as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=cap))
    }
}

/// How to reach the server and who to be.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Addresses tried in turn on each (re)connect: `host:port` (TCP) or `ws://host:port/path`
    /// (the same frames over a WebSocket, for networks that only let HTTP through).
    pub addrs: Vec<String>,
    /// Token minted by the app's backend for (user, `device_id`).
    pub token: String,
    pub device_id: String,
    pub platform: pb::Platform,
    /// The highest inbox version this device already holds (0 on a fresh install). The client
    /// delivers entries above it.
    pub last_version: u64,
    /// Reconnect (with `backoff`) when the connection drops or the server kicks.
    pub auto_reconnect: bool,
    pub backoff: Backoff,
    /// How long a request method waits for its reply, reconnects included.
    pub request_timeout: Duration,
    /// How long one connect + LOGIN may take.
    pub connect_timeout: Duration,
    /// Free text sent in LOGIN for the server's logs.
    pub client_version: String,
    /// How long an acknowledgement may wait (PROTOCOL.md section 13 allows batching well within
    /// the server's 5 s `ack_timeout`). A PUSH_ACK that is due goes out with the next frame the
    /// client sends anyway (one write for both), or on its own once this has passed. Zero: one
    /// PUSH_ACK right after each burst of frames received.
    pub ack_delay: Duration,
    /// The heartbeat interval proposed at LOGIN (0: the server's default). The server clamps it
    /// and says the value in force; change it later with [`crate::Client::set_heartbeat`].
    pub heartbeat_secs: u32,
    /// Log in as an app in the background (PROTOCOL.md section 11.2); change it later with
    /// [`crate::Client::set_background`].
    pub background: bool,
}

impl ClientConfig {
    /// A configuration with defaults for everything but the address and credentials.
    pub fn new(addr: impl Into<String>, token: impl Into<String>, device_id: &str) -> Self {
        ClientConfig {
            addrs: vec![addr.into()],
            token: token.into(),
            device_id: device_id.to_string(),
            platform: pb::Platform::Unspecified,
            last_version: 0,
            auto_reconnect: true,
            backoff: Backoff::default(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            client_version: CLIENT_VERSION.to_string(),
            ack_delay: Duration::from_millis(50),
            heartbeat_secs: 0,
            background: false,
        }
    }
}
