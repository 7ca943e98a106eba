//! missived: the Missive instant-messaging server.
//!
//! # Layout
//! - [`config`]: settings with their defaults; file, environment and flags.
//! - [`server`]: listeners, the accept loop, the heartbeat sweep, shutdown.
//! - [`session`]: one task per connection: login, requests (SENDs pipelined), pushes, acks and
//!   retransmits.
//! - [`router`]: user -> online sessions; delivers pushes without ever waiting on a client.
//! - [`store`]: RocksDB: column families, key codecs, the single writer thread that applies
//!   every change in order and commits them in groups (one batch, one fsync), queries.
//! - [`limits`]: connection permits and token buckets.
//! - [`metrics`]: process-wide counters.
//! - [`tls`]: the rustls acceptor; TLS and plain connections share a port.
//! - [`http`]: the HTTP API for the app's backend (send, groups, devices, kick, tokens, drain),
//!   health, readiness and `/metrics`, on its own address (axum).
//! - [`drain`]: moving clients off a server gradually (SIGUSR1 or the API).
//! - `check` (hidden): invariant checks for the crash test and the fuzz targets.
//! - [`web`]: HTTP on the same ports: the WebSocket transport and the `GET /v1/entry` entry
//!   point, told from the binary protocol by the first byte.
//! - [`push`]: offline push: notifications queued with the message, sent to a webhook.
//!
//! Dependencies point one way: `missive-protocol` <- `store` <- `session`/`router` <- `server`.

#[doc(hidden)]
pub mod check;
pub mod config;
pub mod drain;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod push;
pub mod router;
pub mod server;
pub mod session;
pub mod store;
pub mod tls;
pub mod web;

pub use config::Config;
pub use server::{Server, ServerHandle};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
