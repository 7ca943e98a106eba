//! What every task of a running server holds: the settings, the store, the router, the limits,
//! the counters. Built once by `server`, below every module that uses it.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::router::Router;
use crate::store::Store;

/// What every task of the server shares.
pub struct Shared {
    pub config: Config,
    pub store: Arc<Store>,
    pub router: Arc<Router>,
    pub secret: Vec<u8>,
    pub shutdown: CancellationToken,
    /// Present when a certificate is configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub connections: Arc<crate::limits::Connections>,
    pub logins: parking_lot::Mutex<crate::limits::Bucket>,
    /// Failed logins per source address; an address over its budget is refused at accept.
    pub login_failures: crate::limits::LoginFailures,
    /// Cluster nodes that forward clients here (checked by the client's address instead).
    pub forwarders: crate::limits::Forwarders,
    /// Counters for `/metrics`.
    pub metrics: crate::metrics::Metrics,
    /// Whether the server is draining (logins refused, sessions moved away).
    pub drain: crate::drain::Drain,
    /// Set when the shutdown was asked for from inside (a drain that stops the node), so that
    /// it is not taken for a failure.
    pub stop_requested: std::sync::atomic::AtomicBool,
    /// The bound listener addresses (for the entry point).
    pub bound: Vec<SocketAddr>,
    /// What the offline-push worker did (for `/metrics` and tests).
    pub push: Arc<crate::offline_push::Counters>,
    /// The runtime and the server's task tracker, for sessions woken without a task of their
    /// own (a parked session is revived from whichever thread wakes it; see `session::park`).
    pub runtime: tokio::runtime::Handle,
    pub tasks: TaskTracker,
    /// Where parked plain connections wait for their sockets.
    pub parker: Arc<crate::net::parker::Parker>,
    /// Turns for reads that may touch many keys (SYNC, CONTACTS, UNREAD, group reads):
    /// `session::heavy`.
    pub heavy_reads: Arc<tokio::sync::Semaphore>,
    /// Read receipts of direct conversations, coalesced (`receipt_coalesce_ms`).
    pub receipts: crate::receipts::Receipts,
    /// The word filter's list in force (PROTOCOL.md 15.8).
    pub words: crate::moderation::Words,
    /// The before-send webhook, when `send_hook_url` is set (PROTOCOL.md 15.9).
    pub hook: Option<crate::moderation::hook::Hook>,
    /// What the event webhooks' worker did (all zero when they are off).
    pub events: Arc<crate::events::Counters>,
    /// This node's membership of a cluster (`--cluster`); `None` on a single node.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}
