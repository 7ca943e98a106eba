//! [`Client`]: the reliable client apps use. The algorithm lives in `driver/`; this file is
//! the API: one method per request. The configuration ([`ClientConfig`], `config.rs`) and the
//! events ([`ClientEvent`], `event.rs`) live in modules of their own, which the driver uses too;
//! they are re-exported here.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use missive_protocol::{pb, Packet};
use rand::Rng;
use tokio::sync::{mpsc, oneshot};

pub use crate::config::{Backoff, ClientConfig};
use crate::connection::{heartbeat_body, reply_command};
use crate::driver::{self, Cmd, Driver};
use crate::error::{ClientError, Result};
pub use crate::event::{ClientEvent, DisconnectReason};

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
            mentions: Vec::new(),
            media: Vec::new(),
        };
        reply!(self.request(Packet::Send(body)).await?, SendAck)
    }

    /// Sends a group message that @mentions `mentions` (user ids, at most 50): they are
    /// notified even if they muted the group, and in a read fan-out group (PROTOCOL.md 15.6).
    pub async fn send_mentioning(
        &self,
        group_id: &str,
        content_type: u32,
        content: impl Into<Vec<u8>>,
        mentions: Vec<String>,
        client_msg_id: Option<String>,
    ) -> Result<pb::SendAck> {
        let body = pb::Send {
            client_msg_id: client_msg_id.unwrap_or_else(new_client_msg_id),
            to: Some(group(group_id)),
            content_type,
            content: content.into(),
            mentions,
            media: Vec::new(),
        };
        reply!(self.request(Packet::Send(body)).await?, SendAck)
    }

    /// Mutes (`true`) or unmutes a conversation for this user, on every device: no offline
    /// notifications for it but @mentions; CONTACTS shows `muted`. Returns the state now.
    pub async fn mute(&self, conversation: pb::Conversation, muted: bool) -> Result<bool> {
        let body = pb::Mute {
            conversation: Some(conversation),
            muted,
        };
        reply!(self.request(Packet::Mute(body)).await?, MuteAck).map(|a| a.muted)
    }

    /// Blocks (`true`) or unblocks `user` for this user, on every device: direct messages
    /// between the two are refused with BLOCKED either way while it stands (PROTOCOL.md 15.7).
    /// Returns the state now.
    pub async fn block(&self, user: &str, blocked: bool) -> Result<bool> {
        let body = pb::Block {
            user_id: user.to_owned(),
            blocked,
        };
        reply!(self.request(Packet::Block(body)).await?, BlockAck).map(|a| a.blocked)
    }

    /// One page of the users this user blocked, in id order, after `after` ("" = the first).
    pub async fn blocked_page(&self, after: &str, limit: u32) -> Result<pb::BlockListAck> {
        let body = pb::BlockList {
            after: after.to_owned(),
            limit,
        };
        reply!(self.request(Packet::BlockList(body)).await?, BlockListAck)
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

    /// Asks for heartbeat interval `secs` on this connection (when the app moves between the
    /// foreground, the background and networks): the answer says the interval in force, which
    /// the client then keeps to. Ask again after a reconnect (or set
    /// [`crate::ClientConfig::heartbeat_secs`], which every LOGIN proposes).
    pub async fn set_heartbeat(&self, secs: u32) -> Result<pb::HeartbeatAck> {
        let body = pb::Heartbeat {
            set_interval_secs: secs,
            ..heartbeat_body()
        };
        reply!(self.request(Packet::Heartbeat(body)).await?, HeartbeatAck)
    }

    /// Tells the server the app moved to the background (`true`) or the foreground: a
    /// backgrounded device still gets pushes on this connection, and its user also gets the
    /// offline-push notifications (PROTOCOL.md section 11.2). Optionally with a new heartbeat
    /// interval (0: unchanged), in the same frame.
    pub async fn set_background(
        &self,
        background: bool,
        heartbeat_secs: u32,
    ) -> Result<pb::HeartbeatAck> {
        let state = if background {
            pb::AppState::Background
        } else {
            pb::AppState::Foreground
        };
        let body = pb::Heartbeat {
            set_interval_secs: heartbeat_secs,
            app_state: state as i32,
            ..heartbeat_body()
        };
        reply!(self.request(Packet::Heartbeat(body)).await?, HeartbeatAck)
    }

    /// Sends an ephemeral signal to a conversation: `payload` only with [`pb::SignalKind::App`]
    /// (at most 256 bytes). Returns once it is written: no reply comes, nothing is stored, and
    /// it is not sent again after a reconnect (while disconnected it fails with
    /// [`ClientError::Closed`]). The server drops signals over 5 a second per connection.
    pub async fn signal(
        &self,
        to: pb::Conversation,
        kind: pb::SignalKind,
        payload: impl Into<Vec<u8>>,
    ) -> Result<()> {
        let body = pb::Signal {
            to: Some(to),
            kind: kind as i32,
            payload: payload.into(),
        };
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Request {
                packet: Box::new(Packet::Signal(body)),
                reply: tx,
            })
            .map_err(|_| ClientError::Closed)?;
        tokio::time::timeout(self.request_timeout, rx)
            .await
            .map_err(|_| ClientError::Timeout)?
            .map_err(|_| ClientError::Closed)??;
        Ok(())
    }

    /// TYPING (or TYPING_STOPPED when `typing` is false) to a conversation: [`Client::signal`].
    /// Send TYPING again every few seconds while the user types, not on every key.
    pub async fn typing(&self, to: pb::Conversation, typing: bool) -> Result<()> {
        let kind = if typing {
            pb::SignalKind::Typing
        } else {
            pb::SignalKind::TypingStopped
        };
        self.signal(to, kind, Vec::new()).await
    }

    /// A page of any conversation's messages (HISTORY, PROTOCOL.md 24): `body` as the server
    /// takes it. The ack also carries the conversation's `last_seq`, this user's `read_seq`
    /// and, for a direct conversation, the other user's `peer_read_seq`.
    pub async fn history(&self, body: pb::History) -> Result<pb::HistoryAck> {
        reply!(self.request(Packet::History(body)).await?, HistoryAck)
    }

    /// The newest messages of `conversation` before `before_seq` (0: from the newest), newest
    /// first: what a phone shows when a chat is opened, and, with `before_seq = next_seq` of
    /// the previous page, scrolling back. `limit` 0: the server's default (50).
    pub async fn history_before(
        &self,
        conversation: pb::Conversation,
        before_seq: u64,
        limit: u32,
    ) -> Result<pb::HistoryAck> {
        self.history(pb::History {
            conversation: Some(conversation),
            before_seq,
            limit,
            order: pb::HistoryOrder::NewestFirst as i32,
            ..Default::default()
        })
        .await
    }

    /// The messages of `conversation` after `after_seq` (0: from the first), oldest first:
    /// catching up on a conversation from the last seq held. Repeat from `next_seq` while
    /// `has_more`.
    pub async fn history_after(
        &self,
        conversation: pb::Conversation,
        after_seq: u64,
        limit: u32,
    ) -> Result<pb::HistoryAck> {
        self.history(pb::History {
            conversation: Some(conversation),
            after_seq,
            limit,
            order: pb::HistoryOrder::OldestFirst as i32,
            ..Default::default()
        })
        .await
    }

    /// One page of READERS: of up to `limit` members after `cursor` (0: the server's default,
    /// 500), those who have read the group message at `seq`.
    pub async fn readers_page(
        &self,
        group_id: &str,
        seq: u64,
        cursor: Vec<u8>,
        limit: u32,
    ) -> Result<pb::ReadersAck> {
        let body = pb::Readers {
            group_id: group_id.to_string(),
            seq,
            cursor,
            limit,
        };
        reply!(self.request(Packet::Readers(body)).await?, ReadersAck)
    }

    /// Every member who has read the group message at `seq` (all pages of READERS).
    pub async fn readers(&self, group_id: &str, seq: u64) -> Result<Vec<String>> {
        let mut read_by = Vec::new();
        let mut cursor = Vec::new();
        loop {
            let page = self.readers_page(group_id, seq, cursor, 0).await?;
            read_by.extend(page.read_by);
            cursor = page.next_cursor;
            if cursor.is_empty() {
                return Ok(read_by);
            }
        }
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
