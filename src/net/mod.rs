//! Bytes below frames: listeners, TLS, the framed connection, HTTP on the public ports (the
//! WebSocket transport and the entry point) and the poller of idle sockets. Nothing here knows
//! sessions, users or the store.
//!
//! Files, bottom-up: `listen`, `tls`, `ws` (WebSocket as a byte stream), `conn` (frames over a
//! plain, TLS or WebSocket stream), `entry` (the `GET /v1/entry` document), `web` (telling HTTP
//! from the binary protocol, answering it), `parker` (the epoll thread of parked sockets).

pub mod conn;
pub mod entry;
pub mod listen;
pub mod parker;
pub mod tls;
pub mod web;
pub mod ws;
