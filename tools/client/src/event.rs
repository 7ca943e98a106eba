//! What the client tells the app: [`ClientEvent`]s, and why a connection ended
//! ([`DisconnectReason`]).

use missive_protocol::pb;

/// Why the connection ended.
#[derive(Debug, Clone, PartialEq)]
pub enum DisconnectReason {
    /// The server closed the connection (without a KICK).
    ServerClosed,
    /// The server sent KICK (then closed).
    Kicked(pb::KickReason),
    /// Nothing arrived within the heartbeat interval after a HEARTBEAT.
    HeartbeatTimeout,
    /// The server sent a fatal ERROR, or refused to log in.
    ServerError {
        code: u32,
        name: String,
        message: String,
    },
    /// The socket failed or the server sent bytes that are not frames.
    Transport(String),
    /// [`Client::close`](crate::Client::close) was called or the [`Client`](crate::Client) was
    /// dropped.
    ClientClosed,
}

/// What the client tells the app, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// Logged in (first connect and every reconnect).
    Connected(pb::LoginAck),
    /// The next inbox entry: each exactly once, in version order, with no gaps. Persist it
    /// together with its version; that version is the `last_version` of the next start.
    Entry(pb::InboxEntry),
    /// A read-fan-out group has new messages, or its membership changed: pull messages with
    /// [`Client::group_history_after`](crate::Client::group_history_after).
    GroupNotify(pb::GroupNotify),
    /// Another user's ephemeral signal (typing, ...): not stored, never repeated; show it
    /// for a few seconds at most (PROTOCOL.md 26).
    Signal(pb::SignalNotify),
    /// The other user of a direct conversation has read it up to `up_to_seq` (RECEIPT, server
    /// -> client, coalesced by the server; not stored and not acknowledged). Keep the highest
    /// seen per conversation; after a reconnect read it back from
    /// [`Client::history`](crate::Client::history) (`peer_read_seq`) or
    /// [`Client::contacts`](crate::Client::contacts).
    Receipt(pb::Receipt),
    /// The server sent KICK; a `Disconnected` follows.
    Kicked(pb::Kick),
    /// The connection is gone. With `reconnecting` false the client has stopped for good.
    Disconnected {
        reason: DisconnectReason,
        reconnecting: bool,
    },
}
