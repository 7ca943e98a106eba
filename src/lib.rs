//! missived: the Missive instant-messaging server.
//!
//! # Layers
//!
//! Each module may use the modules of the layers below it, and none above; within a layer,
//! modules use each other in one direction only, and inside a module a file never imports its
//! parent (`mod.rs` re-exports its children; siblings share what lives in a file of its own).
//! `.ci/cycles.py` fails CI on any import cycle; `.ci/layers.py` on an import against this
//! table (it reads the table from this comment).
//!
//! | layer | modules | what it is |
//! |---|---|---|
//! | 7 | `server` | starts and stops everything: listeners, the accept loop, the heartbeat sweep |
//! | 6 | `session`, `http` | the transports: frames <-> `service` (sockets), JSON <-> `service` (the HTTP API) |
//! | 5 | `service` | what each request means, for both transports: checks (one id validator), the store change or read, the answer or a `Refusal` |
//! | 4 | `context` | what every task of a running server holds (`Shared`) |
//! | 3 | `net`, `offline_push`, `moderation`, `events`, `cluster` | bytes below frames (listeners, TLS, the framed connection, WebSocket, the entry point, the poller of idle sockets); the offline-push webhook worker; the word filter and the before-send webhook (signed as the offline push's); the event webhooks' worker; this node's membership of a cluster on NATS (partitions, leases) |
//! | 2 | `router`, `receipts`, `drain`, `check` | user -> online sessions, delivering pushes; read receipts, coalesced; the drain's state; invariant checks for the crash test and fuzzing |
//! | 1 | `config`, `store`, `limits`, `metrics`, `unacked` | settings; RocksDB (families, keys, the writer, queries); permits and token buckets; counters; pushes awaiting an ack, and when to announce them |
//! | 0 | `clock`, `ids` | the wall clock; numeric ids as types (session, message, seq, version) |
//!
//! Below them all is the `missive-protocol` crate (frames, bodies, error codes, ids, tokens).
//! `docs/ARCHITECTURE.md` walks a message through these layers.

#![forbid(unsafe_code)]

#[cfg(feature = "test-hooks")]
pub mod check;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod context;
pub mod drain;
pub mod events;
pub mod http;
pub mod ids;
pub mod limits;
pub mod metrics;
pub mod moderation;
pub mod net;
pub mod offline_push;
pub mod receipts;
pub mod router;
pub mod server;
pub mod service;
pub mod session;
pub mod store;
pub mod unacked;

pub use clock::now_ms;
pub use config::Config;
pub use server::{Server, ServerHandle};
