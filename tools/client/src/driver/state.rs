//! The task's state: what the [`Client`](crate::Client) handle asks of it ([`Cmd`]), the
//! requests in flight ([`Pending`]) and the [`Driver`] itself. The behaviour is in `mod.rs`
//! (the connection) and `inbox.rs` (the version rules); both use this.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use missive_protocol::{pb, Packet};
use tokio::sync::{mpsc, oneshot};

use crate::config::ClientConfig;
use crate::error::Result;
use crate::event::ClientEvent;
use crate::versions::VersionTracker;

/// Used when LOGIN_ACK says 0.
pub(super) const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);
/// How long to wait for the push of an entry the client's own request created (READ_SYNC,
/// RECALL, DELETE) before fetching it with SYNC.
pub(super) const OWN_ENTRY_GRACE: Duration = Duration::from_secs(1);

/// What the [`Client`](crate::Client) handle asks of the task.
pub(crate) enum Cmd {
    Request {
        /// Boxed: a packet is large, and most commands on the channel are small.
        packet: Box<Packet>,
        reply: oneshot::Sender<Result<Packet>>,
    },
    Close(oneshot::Sender<()>),
}

pub(super) struct UserRequest {
    pub(super) packet: Packet,
    pub(super) reply: oneshot::Sender<Result<Packet>>,
}

/// A request sent on the current connection, by request id.
pub(super) enum Pending {
    User(Box<UserRequest>),
    Sync,
    Heartbeat,
}

pub(crate) struct Driver {
    pub(super) config: ClientConfig,
    pub(super) cmds: mpsc::UnboundedReceiver<Cmd>,
    pub(super) events: mpsc::UnboundedSender<ClientEvent>,
    pub(super) held_shared: Arc<AtomicU64>,
    pub(super) versions: VersionTracker,
    pub(super) user_id: String,
    /// Sent on the current connection, waiting for the reply.
    pub(super) pending: HashMap<u32, Pending>,
    /// Not sent yet: submitted while disconnected, or to be resent after a reconnect.
    pub(super) waiting: VecDeque<UserRequest>,
    pub(super) syncing: bool,
    pub(super) heartbeat: Duration,
    pub(super) last_received: Instant,
    pub(super) heartbeat_sent: Option<Instant>,
    /// The highest version our own request created, and when to SYNC if no push brings it.
    pub(super) expect_own: Option<(u64, Instant)>,
    /// Entries our own SENDs created whose acks came before the entries below them (a PUSH
    /// of the same commit may follow the SEND_ACK): applied as soon as they are next
    /// (PROTOCOL.md 12.3, the set `own`). Cleared with the connection: a reconnect SYNCs.
    pub(super) own: BTreeMap<u64, pb::InboxEntry>,
    pub(super) addr_index: usize,
    pub(super) current_addr: String,
    pub(super) redirect: Option<String>,
    /// Wait at least this long before the next reconnect (KICK reconnect_after_ms).
    pub(super) min_delay: Duration,
    /// Reconnect attempts since a connection last stayed logged in for
    /// `Backoff::reset_after` (PROTOCOL.md 21).
    pub(super) attempt: u32,
    pub(super) close_done: Option<oneshot::Sender<()>>,
    /// Entries were applied since the last PUSH_ACK, which goes out by this time at the latest:
    /// with the next frames the client sends, or on its own (`ClientConfig::ack_delay`).
    pub(super) ack_due: Option<Instant>,
}

impl Driver {
    pub(crate) fn new(
        config: ClientConfig,
        cmds: mpsc::UnboundedReceiver<Cmd>,
        events: mpsc::UnboundedSender<ClientEvent>,
        held_shared: Arc<AtomicU64>,
    ) -> Driver {
        Driver {
            versions: VersionTracker::new(config.last_version),
            config,
            cmds,
            events,
            held_shared,
            user_id: String::new(),
            pending: HashMap::new(),
            waiting: VecDeque::new(),
            syncing: false,
            heartbeat: DEFAULT_HEARTBEAT,
            last_received: Instant::now(),
            heartbeat_sent: None,
            expect_own: None,
            own: BTreeMap::new(),
            addr_index: 0,
            current_addr: String::new(),
            redirect: None,
            min_delay: Duration::ZERO,
            attempt: 0,
            close_done: None,
            ack_due: None,
        }
    }
}
