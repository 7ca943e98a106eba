//! What committed changes hand on to reach online devices: [`Delivery`] and [`GroupNotice`],
//! given to the [`Outbox`] (the router) once their group is committed (see `writer.rs`).

use missive_protocol::pb::{self, InboxEntry};

use crate::ids::SessionId;

/// An inbox entry to push to every online device of `user`.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub user: String,
    pub entry: InboxEntry,
    /// A message for a recipient found online when it was stored (offline push on): announced
    /// all the same if no foreground device acknowledges it in time (`crate::unacked`).
    pub watch: bool,
}

/// Where committed changes send what must reach online devices. Implemented by the router; called
/// on the committer thread (`deliver`, `notify_group`) or the writer thread (`offline`), so it
/// must never block.
pub trait Outbox: Send + Sync {
    /// Pushes each delivery to every online session of its user, except session `exclude`.
    fn deliver(&self, deliveries: Vec<Delivery>, exclude: Option<SessionId>);
    /// Of `users`, those with no online session: they get an offline push (`src/offline_push`) when it
    /// is on. Asked on the writer thread while a send runs, before its commit, so that the
    /// notification is written in the same batch as the message. Never blocks. The default
    /// (an outbox that knows no presence) counts everyone as online.
    fn offline<'a>(&self, _users: &[&'a str]) -> Vec<&'a str> {
        Vec::new()
    }
    /// Tells the online members of a read fan-out group that its log reached `last_seq` (with
    /// the message at `last_seq`, or the membership change, if given).
    fn notify_group(&self, notify: GroupNotice<'_>);
}

/// A GROUP_NOTIFY for the online `members` of a read fan-out group (not session `exclude`).
pub struct GroupNotice<'a> {
    pub group_id: &'a str,
    pub last_seq: u64,
    pub message: Option<pb::Message>,
    pub event: Option<pb::GroupEvent>,
    pub members: &'a [String],
    pub exclude: Option<SessionId>,
}
