//! The reference Missive client.
//!
//! This crate is the model that the Swift and Kotlin clients follow: the algorithm below is the
//! one a mobile client must implement, and the code is written to be read next to it. It has
//! two layers.
//!
//! # [`Connection`]: one raw connection (tests and tools)
//!
//! TCP (with `TCP_NODELAY`), or a WebSocket for `ws://host:port/path` addresses
//! ([`transport`]), plus the frame codec of `missive-protocol`. It sends what it is told
//! and nothing else: no heartbeats, no acks, no reconnects, so a test can watch the server's
//! own behaviour (retransmits, timeouts, kicks). Request ids count up from 1.
//! [`Connection::request`] sends a request and waits for the frame with the same request id;
//! frames that arrive meanwhile (PUSH, GROUP_NOTIFY, KICK) are kept, in order, for the next
//! [`Connection::recv_frame`]. [`Connection::write_raw`] and [`Connection::read_raw`] work on
//! bytes, for malformed-frame tests.
//!
//! # [`Client`]: what apps use
//!
//! [`Client::connect`] logs in and starts one background task that owns the connection. Request
//! methods ([`Client::send`], [`Client::contacts`], ...) hand their request to the task and wait
//! for the reply; [`Client::events`] yields [`ClientEvent`]s. The task does this:
//!
//! 1. **Login.** LOGIN with `last_version = held` (the highest inbox version the device holds;
//!    [`ClientConfig::last_version`] at start). LOGIN_ACK gives the heartbeat interval `H` and
//!    the user's `current_version`; if that is above `held`, SYNC (step 4). Pushes may arrive
//!    before the SYNC ends; step 3 handles them.
//! 2. **Heartbeat.** When nothing was sent, or nothing received, for `H`, send HEARTBEAT. If no
//!    frame at all arrives within `H` after it, the connection is dead: close it, reconnect.
//! 3. **Pushes** ([`versions`]): keep `held`, the highest version applied with nothing missing.
//!    PUSH with `version <= held`: duplicate, drop it. `prev_version == held`: apply it (emit
//!    [`ClientEvent::Entry`]), `held = version`. `prev_version > held`: a gap, SYNC from `held`.
//!    Acknowledge with `PUSH_ACK {version: held}` (cumulative, after applying), so a push past
//!    a gap stays unacked until the SYNC fills the gap. The ack waits up to
//!    [`ClientConfig::ack_delay`] (50 ms): it goes out in the same write as the next request if
//!    one is sent by then, else on its own (with a zero delay: after every burst of frames
//!    received). Requests submitted together are written together.
//! 4. **SYNC** from `held`: apply the page's entries with the same rule, ack `held`, and repeat
//!    while `has_more` (or while a higher version is known to exist and the page made progress).
//!    Only one SYNC is in flight at a time.
//! 5. **Own entries.** The server does not push the sender's own message to the sending device:
//!    SEND_ACK.version is its version. The client builds the entry from the SEND and the
//!    SEND_ACK and applies it when it is `held + 1`, at once or as soon as the entries below it
//!    have come (a PUSH of the same commit may follow the SEND_ACK); it SYNCs if they have not
//!    come 1 s later. The same 1 s rule covers MARK_READ, RECALL and DELETE acks.
//! 6. **Reconnect** when the connection closes, fails, misses its heartbeat or is kicked: wait
//!    (capped exponential backoff with full jitter, see [`Backoff`], and at least
//!    `Kick.reconnect_after_ms` when the server gave one; the attempt count restarts only after
//!    a connection stayed logged in for 60 s; to `redirect_host:redirect_port` when given), try
//!    the next address, LOGIN with `held`, SYNC. Not after KICK REPLACED,
//!    TOO_MANY_DEVICES or ADMIN (another connection took this one's place, or the backend wants
//!    the device off), nor when the login is refused (AUTH_FAILED, TOKEN_EXPIRED: a new token
//!    is needed).
//! 7. **Requests across reconnects.** A request whose reply has not come when the connection
//!    drops is sent again on the next connection if repeating it is harmless (SEND, which the
//!    server deduplicates by `client_msg_id`, reads, MARK_READ, RECALL); the others fail with
//!    [`ClientError::Closed`] because they may or may not have taken effect. Requests made while
//!    disconnected wait for the next connection. Each request gives up after
//!    [`ClientConfig::request_timeout`].
//!
//! Entries are therefore delivered exactly once, in version order, with no gaps, across
//! reconnects. An app persists each entry with its version and starts the next session with
//! that version as `last_version`.
//!
//! # Conversations on a phone: HISTORY and read receipts
//!
//! The inbox (steps 1-7) is what *arrives*; a chat screen also needs what is *already there*.
//! A new phone, or a reinstalled app, must not SYNC a user's whole inbox from version 0 to show
//! one chat: it asks the conversation itself ([`Client::history_before`], PROTOCOL.md 24). A
//! Swift or Kotlin client keeps, per conversation (key: kind + id), a store of messages by seq
//! (`[UInt64: Message]` / `TreeMap<Long, Message>`) with `lowest` and `highest` seq held, and
//! `read_seq` / `peer_read_seq`, and does this:
//!
//! 1. **Fresh install.** LOGIN with `last_version = 0`, then, instead of SYNC from 0, set
//!    `held = LoginAck.current_version` (the inbox before it is what HISTORY shows; later
//!    entries arrive as pushes) and list the conversations with CONTACTS (each has its last
//!    message, `unread`, `read_seq` and, for a direct chat, `peer_read_seq`).
//! 2. **Opening a chat.** `HISTORY {conversation, order: NEWEST_FIRST, before_seq: 0}`: the
//!    newest 50 messages, newest first, in one round trip however long the chat is. Store them,
//!    `lowest` = the last one's seq. The ack's `read_seq` places the "unread" divider, its
//!    `peer_read_seq` the "seen" mark on your own messages, `last_seq` says whether anything is
//!    missing at the top.
//! 3. **Scrolling up.** While `has_more`: `HISTORY {NEWEST_FIRST, before_seq: next_seq}`
//!    (`next_seq`, not the lowest seq returned: messages you deleted for yourself are skipped,
//!    and a page can end on them).
//! 4. **Coming back** to a chat whose `highest` is below `last_seq` (after being offline, or
//!    for a read fan-out group): `HISTORY {OLDEST_FIRST, after_seq: highest}`, repeated from
//!    `next_seq` while `has_more`. Messages reach a client both as inbox entries and through
//!    HISTORY: key them by seq (or `msg_id`) and keep one.
//! 5. **Reading.** MARK_READ `{conversation, up_to_seq}` when messages are on screen; one per
//!    screenful is plenty, but the server copes with one per message (below).
//! 6. **Receipts.** A direct chat's other user sends no ack of its own: when its read position
//!    moves, the server sends you [`ClientEvent::Receipt`] `{conversation, reader, up_to_seq}`
//!    (RECEIPT 0x4004; not acknowledged). Set `peer_read_seq = max(peer_read_seq, up_to_seq)`
//!    and mark your messages up to it "seen". The server coalesces them: the first read after a
//!    quiet second comes at once, further reads within the second become one receipt with the
//!    latest position, so a peer reading 500 messages costs you one or two frames. Receipts
//!    are not stored: after a reconnect take `peer_read_seq` from CONTACTS or HISTORY. Your
//!    peer's own message also means it read everything before it (sending moves the sender's
//!    read position; no receipt is sent for that).
//! 7. **Groups** get no receipts (a read would fan out to every member); a "read by" screen
//!    asks [`Client::readers`] (READERS) for one message, paged by member.
//!
//! HISTORY, READERS and CONTACTS are reads: the client repeats them after a reconnect, as any
//! request that is safe to repeat (step 7 of the list before).
//!
//! ```no_run
//! # async fn demo() -> missive_client::Result<()> {
//! use missive_client::{direct, Client, ClientConfig, ClientEvent};
//!
//! let mut client = Client::connect(ClientConfig::new("127.0.0.1:443", "TOKEN", "phone")).await?;
//! let mut events = client.events().expect("first call");
//! let ack = client.send(direct("bob"), 1, "hello", None).await?;
//! println!("stored as msg {} seq {}", ack.msg_id, ack.seq);
//! while let Some(event) = events.recv().await {
//!     if let ClientEvent::Entry(entry) = event {
//!         println!("entry {}", entry.version);
//!     }
//! }
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod client;
mod config;
pub mod connection;
mod driver;
pub mod error;
mod event;
pub mod http_send;
pub mod transport;
pub mod versions;

pub use client::{direct, group, new_client_msg_id, Client};
pub use config::{Backoff, ClientConfig};
pub use connection::Connection;
pub use error::{ClientError, Result};
pub use event::{ClientEvent, DisconnectReason};
pub use http_send::send_over_http;
pub use missive_protocol::pb;
