//! [`Client`]: the reliable client apps use. The algorithm lives in `driver.rs`; this file is
//! the API: configuration, events and one method per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use missive_protocol::{pb, Packet};
use rand::Rng;
use tokio::sync::{mpsc, oneshot};

use crate::connection::{heartbeat_body, reply_command, CLIENT_VERSION};
use crate::driver::{self, Cmd, Driver};
use crate::error::{ClientError, Result};

/// Unwraps the expected reply variant (the reply command was already checked).
macro_rules! reply {
    ($packet:expr, $variant:ident) => {
        match $packet {
            Packet::$variant(body) => Ok(body),
            other => Err(ClientError::UnexpectedReply {
                expected: stringify!($variant),
                got: other.command().name(),
            }),
        }
    };
}

/// Capped exponential backoff with full jitter: before attempt `n` (0-based) wait a random time
/// in `[0, min(max, initial * 2^n)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

/// PROTOCOL.md section 21's numbers: 1 s, doubling, capped at 60 s.
impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
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
        }
    }
}

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
    /// [`Client::close`] was called or the [`Client`] was dropped.
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
    /// [`Client::group_history_after`].
    GroupNotify(pb::GroupNotify),
    /// The server sent KICK; a `Disconnected` follows.
    Kicked(pb::Kick),
    /// The connection is gone. With `reconnecting` false the client has stopped for good.
    Disconnected {
        reason: DisconnectReason,
        reconnecting: bool,
    },
}

/// A logged-in, self-healing connection. See the crate docs for the algorithm.
pub struct Client {
    cmds: mpsc::UnboundedSender<Cmd>,
    events: Option<mpsc::UnboundedReceiver<ClientEvent>>,
    held: Arc<AtomicU64>,
    login: pb::LoginAck,
    request_timeout: Duration,
}

impl Client {
    /// Connects to the first address that answers, logs in, and starts the background task.
    /// Fails if no address accepts the login (no retry here: the first connect is the app's
    /// decision to make). Must be called inside a tokio runtime.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        let mut last_err = ClientError::Closed;
        for addr in config.addrs.clone() {
            match driver::connect_and_login(&addr, &config, config.last_version).await {
                Ok((conn, ack)) => {
                    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
                    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
                    let held = Arc::new(AtomicU64::new(config.last_version));
                    let client = Client {
                        cmds: cmd_tx,
                        events: Some(ev_rx),
                        held: held.clone(),
                        login: ack.clone(),
                        request_timeout: config.request_timeout,
                    };
                    let driver = Driver::new(config, cmd_rx, ev_tx, held);
                    tokio::spawn(driver.run(conn, ack, addr));
                    return Ok(client);
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "connect failed");
                    let fatal = matches!(e, ClientError::Server { .. });
                    last_err = e;
                    if fatal {
                        break;
                    }
                }
            }
        }
        Err(last_err)
    }

    /// The event stream. The first call takes it; later calls return `None`. Events are
    /// buffered until read (and dropped if the receiver is dropped).
    pub fn events(&mut self) -> Option<mpsc::UnboundedReceiver<ClientEvent>> {
        self.events.take()
    }

    /// The highest inbox version delivered as [`ClientEvent::Entry`] (or held at start).
    pub fn held_version(&self) -> u64 {
        self.held.load(Ordering::SeqCst)
    }

    /// The LOGIN_ACK of the first login.
    pub fn login_ack(&self) -> &pb::LoginAck {
        &self.login
    }

    /// The logged-in user's id.
    pub fn user_id(&self) -> &str {
        &self.login.user_id
    }

    /// Sends any request through the live connection and returns the reply body. While the
    /// client is reconnecting the request waits; requests that are safe to repeat are resent
    /// after a reconnect, the others fail with [`ClientError::Closed`] if the connection drops
    /// before the reply.
    pub async fn request(&self, packet: Packet) -> Result<Packet> {
        let expected = reply_command(packet.command());
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Request {
                packet: Box::new(packet),
                reply: tx,
            })
            .map_err(|_| ClientError::Closed)?;
        let reply = tokio::time::timeout(self.request_timeout, rx)
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(|_| ClientError::Closed)??;
        if reply.command() == expected {
            Ok(reply)
        } else {
            Err(ClientError::UnexpectedReply {
                expected: expected.name(),
                got: reply.command().name(),
            })
        }
    }

    /// Sends a message. Without `client_msg_id` a random one is made; either way the same id is
    /// reused when the send is retried after a reconnect, so the server stores it once.
    pub async fn send(
        &self,
        to: pb::Conversation,
        content_type: u32,
        content: impl Into<Vec<u8>>,
        client_msg_id: Option<String>,
    ) -> Result<pb::SendAck> {
        let body = pb::Send {
            client_msg_id: client_msg_id.unwrap_or_else(new_client_msg_id),
            to: Some(to),
            content_type,
            content: content.into(),
        };
        reply!(self.request(Packet::Send(body)).await?, SendAck)
    }

    /// One SYNC page, as the server returns it. It does not change what the client delivers.
    pub async fn sync_page(&self, since_version: u64, limit: u32) -> Result<pb::SyncAck> {
        let body = pb::Sync {
            since_version,
            limit,
        };
        reply!(self.request(Packet::Sync(body)).await?, SyncAck)
    }

    /// Recent conversations, newest first; pass `next_cursor` back for the next page.
    pub async fn contacts(&self, cursor: Vec<u8>, limit: u32) -> Result<pb::ContactsAck> {
        let body = pb::Contacts { cursor, limit };
        reply!(self.request(Packet::Contacts(body)).await?, ContactsAck)
    }

    /// Unread counts: the total and every conversation with unread messages (all pages).
    pub async fn unread(&self) -> Result<pb::UnreadAck> {
        let mut all = self.unread_page(Vec::new(), 0).await?;
        let mut cursor = std::mem::take(&mut all.next_cursor);
        while !cursor.is_empty() {
            let page = self.unread_page(cursor, 0).await?;
            all.conversations.extend(page.conversations);
            all.total = page.total;
            cursor = page.next_cursor;
        }
        Ok(all)
    }

    /// One page of unread counts (`limit` 0: the server's default); pass `next_cursor` back.
    pub async fn unread_page(&self, cursor: Vec<u8>, limit: u32) -> Result<pb::UnreadAck> {
        let body = pb::Unread { cursor, limit };
        reply!(self.request(Packet::Unread(body)).await?, UnreadAck)
    }

    /// Marks `conversation` read up to and including `up_to_seq`.
    pub async fn mark_read(
        &self,
        conversation: pb::Conversation,
        up_to_seq: u64,
    ) -> Result<pb::MarkReadAck> {
        let body = pb::MarkRead {
            conversation: Some(conversation),
            up_to_seq,
        };
        reply!(self.request(Packet::MarkRead(body)).await?, MarkReadAck)
    }

    /// Recalls one of this user's messages.
    pub async fn recall(
        &self,
        conversation: pb::Conversation,
        msg_id: u64,
    ) -> Result<pb::RecallAck> {
        let body = pb::RecallMessage {
            conversation: Some(conversation),
            msg_id,
        };
        reply!(self.request(Packet::Recall(body)).await?, RecallAck)
    }

    /// Deletes a message from this user's own view.
    pub async fn delete(
        &self,
        conversation: pb::Conversation,
        msg_id: u64,
    ) -> Result<pb::DeleteAck> {
        let body = pb::DeleteMessage {
            conversation: Some(conversation),
            msg_id,
        };
        reply!(self.request(Packet::Delete(body)).await?, DeleteAck)
    }

    /// Creates an invite-only group; this user becomes its owner.
    pub async fn group_create(
        &self,
        name: &str,
        members: Vec<String>,
        history: pb::HistoryVisibility,
    ) -> Result<pb::GroupAck> {
        let body = pb::GroupCreate {
            name: name.to_string(),
            members,
            history: history as i32,
            join_policy: pb::JoinPolicy::Invite as i32,
        };
        self.group_create_with(body).await
    }

    /// Creates a group as `body` says (e.g. an OPEN one); this user becomes its owner.
    pub async fn group_create_with(&self, body: pb::GroupCreate) -> Result<pb::GroupAck> {
        reply!(
            self.request(Packet::GroupCreate(body)).await?,
            GroupCreateAck
        )
    }

    /// Joins an open group `group_id` (empty `user_ids`) or adds `user_ids` to it (owner or
    /// admin).
    pub async fn group_join(&self, group_id: &str, user_ids: Vec<String>) -> Result<pb::GroupAck> {
        let body = pb::GroupJoin {
            group_id: group_id.to_string(),
            user_ids,
        };
        reply!(self.request(Packet::GroupJoin(body)).await?, GroupJoinAck)
    }

    /// Leaves `group_id` (empty `user_id`) or removes `user_id` from it.
    pub async fn group_leave(&self, group_id: &str, user_id: &str) -> Result<pb::GroupAck> {
        let body = pb::GroupLeave {
            group_id: group_id.to_string(),
            user_id: user_id.to_string(),
        };
        reply!(self.request(Packet::GroupLeave(body)).await?, GroupLeaveAck)
    }

    /// Makes `user_id` an admin of `group_id` or a member again (the owner only).
    pub async fn group_set_role(
        &self,
        group_id: &str,
        user_id: &str,
        role: pb::GroupRole,
    ) -> Result<pb::GroupAck> {
        let body = pb::GroupSetRole {
            group_id: group_id.to_string(),
            user_id: user_id.to_string(),
            role: role as i32,
        };
        reply!(
            self.request(Packet::GroupSetRole(body)).await?,
            GroupSetRoleAck
        )
    }

    /// A group's members (all pages).
    pub async fn group_members(&self, group_id: &str) -> Result<pb::GroupMembersAck> {
        let mut all: Option<pb::GroupMembersAck> = None;
        let mut cursor = Vec::new();
        loop {
            let body = pb::GroupMembers {
                group_id: group_id.to_string(),
                cursor,
                limit: 0,
            };
            let page = reply!(
                self.request(Packet::GroupMembers(body)).await?,
                GroupMembersAck
            )?;
            cursor = page.next_cursor.clone();
            match &mut all {
                None => all = Some(page),
                Some(a) => a.members.extend(page.members),
            }
            if cursor.is_empty() {
                let mut a = all.unwrap_or_default();
                a.next_cursor.clear();
                return Ok(a);
            }
        }
    }

    /// The groups this user belongs to (all pages).
    pub async fn group_list(&self) -> Result<pb::GroupListAck> {
        let mut groups = Vec::new();
        let mut cursor = Vec::new();
        loop {
            let body = pb::GroupList { cursor, limit: 0 };
            let page = reply!(self.request(Packet::GroupList(body)).await?, GroupListAck)?;
            groups.extend(page.groups);
            cursor = page.next_cursor;
            if cursor.is_empty() {
                return Ok(pb::GroupListAck {
                    groups,
                    next_cursor: Vec::new(),
                });
            }
        }
    }

    /// A page of a group's log oldest first: messages with seq above `after_seq` (0: from the
    /// first), for catching up. Repeat from the last seq while `has_more`.
    pub async fn group_history_after(
        &self,
        group_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<pb::GroupHistoryAck> {
        self.group_history(pb::GroupHistory {
            group_id: group_id.to_string(),
            after_seq,
            limit,
            order: pb::HistoryOrder::OldestFirst as i32,
            ..Default::default()
        })
        .await
    }

    /// A page of a group's log newest first: messages with seq below `before_seq` (0: from the
    /// newest), for scrolling back.
    pub async fn group_history_before(
        &self,
        group_id: &str,
        before_seq: u64,
        limit: u32,
    ) -> Result<pb::GroupHistoryAck> {
        self.group_history(pb::GroupHistory {
            group_id: group_id.to_string(),
            before_seq,
            limit,
            order: pb::HistoryOrder::NewestFirst as i32,
            ..Default::default()
        })
        .await
    }

    async fn group_history(&self, body: pb::GroupHistory) -> Result<pb::GroupHistoryAck> {
        reply!(
            self.request(Packet::GroupHistory(body)).await?,
            GroupHistoryAck
        )
    }

    /// Sends a HEARTBEAT and returns the round trip to its HEARTBEAT_ACK.
    pub async fn ping(&self) -> Result<Duration> {
        let start = Instant::now();
        self.request(Packet::Heartbeat(heartbeat_body())).await?;
        Ok(start.elapsed())
    }

    /// Closes the connection and stops the background task (requests still waiting fail with
    /// [`ClientError::Closed`]). Returns once the task has stopped.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Cmd::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// A random client message id: 32 hex digits (128 bits).
pub fn new_client_msg_id() -> String {
    let n: u128 = rand::rng().random();
    format!("{n:032x}")
}

/// A DIRECT conversation with `user_id`.
pub fn direct(user_id: impl Into<String>) -> pb::Conversation {
    pb::Conversation {
        kind: pb::ConversationKind::Direct as i32,
        id: user_id.into(),
    }
}

/// A GROUP conversation.
pub fn group(group_id: impl Into<String>) -> pb::Conversation {
    pb::Conversation {
        kind: pb::ConversationKind::Group as i32,
        id: group_id.into(),
    }
}
