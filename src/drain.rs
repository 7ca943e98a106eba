//! Drain: move every client off this server, gradually, before it is taken down. This file
//! holds the state (whether this server drains, at what pace, how far it got); the procedure is
//! `service::drain`.
//!
//! Started by SIGUSR1 or `POST /v1/drain`. From then on a LOGIN is refused with
//! `SHUTTING_DOWN` (19, fatal: the client reconnects with backoff, through the load balancer to
//! another server), and connected sessions are sent `KICK REDIRECT` (with `drain_redirect` as
//! `redirect_host:redirect_port` when set, and `reconnect_after_ms`) at `rate` per second, so
//! the other servers take the reconnects at a pace they can absorb. Sessions that log in while
//! the drain starts are picked up by its next pass. The server keeps serving what is left
//! (replies, pushes) until each session is kicked; it stays drained until the drain is stopped
//! (`DELETE /v1/drain`) or the server shuts down.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use missive_protocol::pb::{Kick, KickReason};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// A drain's pace and where it sends clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Sessions kicked per second.
    pub rate_per_sec: u32,
    /// `redirect_host`, `redirect_port` of the kick; `None`: the same address.
    pub redirect: Option<(String, u16)>,
    /// `reconnect_after_ms` of the kick.
    pub reconnect_after_ms: u32,
}

impl Plan {
    /// The configured plan (`drain_rate_per_sec`, `drain_redirect`, `drain_reconnect_after_ms`).
    pub fn from_config(config: &crate::config::Config) -> Plan {
        Plan {
            rate_per_sec: config.drain_rate_per_sec,
            redirect: config.redirect_target(),
            reconnect_after_ms: config.drain_reconnect_after_ms,
        }
    }

    /// The KICK each drained session gets.
    pub fn kick(&self) -> Kick {
        let mut k = crate::router::kick(KickReason::Redirect, "server draining; reconnect");
        if let Some((host, port)) = &self.redirect {
            k.redirect_host = host.clone();
            k.redirect_port = u32::from(*port);
        }
        k.reconnect_after_ms = self.reconnect_after_ms;
        k
    }
}

/// The drain state of one server.
#[derive(Debug, Default)]
pub struct Drain {
    pub(crate) active: AtomicBool,
    /// Sessions kicked since the drain started.
    pub(crate) kicked: AtomicU64,
    /// The running drain: its plan and how to stop its task.
    pub(crate) running: Mutex<Option<(Plan, CancellationToken)>>,
}

/// What `GET /v1/drain` reports.
#[derive(Debug, Clone)]
pub struct Status {
    pub draining: bool,
    pub plan: Option<Plan>,
    /// Sessions kicked by this drain so far.
    pub kicked: u64,
    /// Sessions online and not yet asked to leave.
    pub remaining: usize,
}

impl Drain {
    /// Whether logins are refused because the server is draining.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }
}
