//! Requests after login: validate, run the store change on the blocking pool, reply.

use std::sync::Arc;

use missive_protocol::pb::{self, Conversation, ConversationKind};
use missive_protocol::{ErrorCode, Frame, Packet};

use super::Refusal;
use crate::router::SessionHandle;
use crate::server::Shared;
use crate::store::{self, GroupLimits, SendRequest, StoreError};

const SYNC_DEFAULT: u32 = 200;
const SYNC_MAX: u32 = 5000;
const CONTACTS_DEFAULT: u32 = 50;
const CONTACTS_MAX: u32 = 200;
const UNREAD_DEFAULT: u32 = 200;
const UNREAD_MAX: u32 = 1000;

/// A reply: a body to frame, or a frame already made (and compressed) where it was read.
pub enum Answer {
    Packet(Packet),
    /// Its request id is set when it is queued.
    Frame(Frame),
}

impl From<Packet> for Answer {
    fn from(p: Packet) -> Answer {
        Answer::Packet(p)
    }
}

/// Runs a read that may touch many keys (SYNC, CONTACTS, UNREAD, the group reads) on the
/// blocking pool, and frames and compresses its reply there too, so neither the reading nor
/// the compressing of a large page holds a connection thread. At most [`HEAVY_READS`] run at
/// once, server-wide, the rest wait their turn in order; a connection has at most one (its
/// requests are answered in order), and stops reading requests while its replies are unwritten
/// (`serve`), so one client cannot queue more than one page's work and bytes.
pub(crate) async fn heavy<F>(shared: &Arc<Shared>, f: F) -> Result<Answer, Refusal>
where
    F: FnOnce(&Shared) -> store::Result<Packet> + Send + 'static,
{
    let permit = heavy_turn(shared).await?;
    let threshold = shared.config.compress_threshold;
    // The turn is held by the read itself, so a client that goes away while it runs does not
    // free its place for another before the work is done.
    let frame = blocking(shared, move |s| {
        let _turn = permit;
        f(s).map(|p| Frame::compressed_above(&p, 0, threshold))
    })
    .await?;
    Ok(Answer::Frame(frame))
}

/// Read fan-out groups a user's unread total may visit in place (on a connection thread, from
/// memory); a user in more is totalled as a heavy read.
const TOTAL_IN_PLACE: usize = 16;

/// The user's unread total (LOGIN_ACK, MARK_READ_ACK): in place while it is a few reads, else
/// as a heavy read.
pub(crate) async fn unread_total(shared: &Arc<Shared>, user: &str) -> Result<u64, Refusal> {
    let who = user.to_owned();
    let few = small_read(shared, move |s| {
        s.store.unread_total_if_few(&who, TOTAL_IN_PLACE)
    })
    .await?;
    if let Some(total) = few {
        return Ok(total);
    }
    let permit = heavy_turn(shared).await?;
    let who = user.to_owned();
    blocking(shared, move |s| {
        let _turn = permit;
        s.store.unread_total(&who)
    })
    .await
}

/// A turn among the heavy reads (FIFO).
async fn heavy_turn(shared: &Arc<Shared>) -> Result<tokio::sync::OwnedSemaphorePermit, Refusal> {
    shared
        .heavy_reads
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Refusal::new(ErrorCode::ShuttingDown, "server shutting down"))
}

/// Heavy reads running at once, server-wide: the cores, and at least two.
pub(crate) fn heavy_read_slots() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}
/// Runs store reads on the blocking pool and maps their errors to wire codes.
pub(crate) async fn blocking<T, F>(shared: &Arc<Shared>, f: F) -> Result<T, Refusal>
where
    T: Send + 'static,
    F: FnOnce(&Shared) -> store::Result<T> + Send + 'static,
{
    let s = shared.clone();
    match tokio::task::spawn_blocking(move || f(&s)).await {
        Ok(r) => refusal(shared, r),
        Err(e) => {
            tracing::error!("store task failed: {e}");
            Err(Refusal::new(ErrorCode::Internal, "internal error"))
        }
    }
}

/// Runs a small store read (a few keys) at once on this task when what it reads is in memory
/// (memtables, block cache), which is the usual case; only a read that needs the disk goes to
/// the blocking pool. Saves a thread handoff per LOGIN and per UNREAD.
pub(crate) async fn small_read<T, F>(shared: &Arc<Shared>, f: F) -> Result<T, Refusal>
where
    T: Send + 'static,
    F: Fn(&Shared) -> store::Result<T> + Send + 'static,
{
    match shared.store.in_memory(|| f(shared)) {
        Some(r) => refusal(shared, r),
        None => blocking(shared, f).await,
    }
}

/// Maps a store result to the reply: a refusal keeps its code; a storage failure starts a clean
/// shutdown, since the server cannot go on safely.
pub(crate) fn refusal<T>(shared: &Shared, r: store::Result<T>) -> Result<T, Refusal> {
    match r {
        Ok(v) => Ok(v),
        Err(StoreError::Refused { code, message }) => {
            let mut r = Refusal::new(code, message);
            if code == ErrorCode::ServerBusy {
                r.retry_after_ms = 1000 + rand::random_range(0..2000);
            }
            Err(r)
        }
        Err(e) => {
            tracing::error!("store failure, shutting down: {e}");
            shared.shutdown.cancel();
            Err(Refusal::new(ErrorCode::Internal, "storage failure"))
        }
    }
}

/// The one check of an id from a client or the Server API (`missive_protocol::ids`):
/// INVALID_ARGUMENT naming the field and the reason.
pub(crate) fn check_id(what: &str, id: &str) -> Result<(), Refusal> {
    missive_protocol::ids::check(id)
        .map_err(|e| Refusal::new(ErrorCode::InvalidArgument, format!("{what}: {e}")))
}

/// Checks a conversation named by the client (groups are checked by the store).
fn check_conv(user: &str, conv: Option<&Conversation>) -> Result<Conversation, Refusal> {
    let conv =
        conv.ok_or_else(|| Refusal::new(ErrorCode::InvalidArgument, "conversation missing"))?;
    check_id("conversation id", &conv.id)?;
    match ConversationKind::try_from(conv.kind) {
        Ok(ConversationKind::Direct) if conv.id == user => Err(Refusal::new(
            ErrorCode::InvalidArgument,
            "a direct conversation needs another user",
        )),
        Ok(ConversationKind::Direct) => Ok(conv.clone()),
        Ok(ConversationKind::Group) => Ok(conv.clone()),
        _ => Err(Refusal::new(
            ErrorCode::InvalidArgument,
            "conversation kind must be DIRECT or GROUP",
        )),
    }
}

/// Where a send came from (for the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Socket,
    Http,
}

/// A SEND from a logged-in session; resolves to the reply once it is committed.
pub fn send(
    shared: &Arc<Shared>,
    session: &SessionHandle,
    req: pb::Send,
) -> impl std::future::Future<Output = Result<Answer, Refusal>> + Send + 'static {
    let ack = submit_send(shared, &session.user, Some(session.id), Via::Socket, req);
    async move { Ok(Answer::Packet(Packet::SendAck(ack.await?))) }
}

/// Starts a send by `from`, the one path for SENDs from sockets and the HTTP API: validates it
/// and hands it to the store's writer at once (so sends are stored in the order they arrived);
/// the returned future resolves to the ack once it is committed. `session` (the sender's own
/// connection) gets no push of the message; every other online device of both sides does.
pub fn submit_send(
    shared: &Arc<Shared>,
    from: &str,
    session: Option<u64>,
    via: Via,
    req: pb::Send,
) -> impl std::future::Future<Output = Result<pb::SendAck, Refusal>> + Send + 'static {
    let started = start_send(shared, from, session, req);
    let shared = shared.clone();
    async move {
        let out = refusal(&shared, started?.await)?;
        let counter = match (out.ack.duplicate, via) {
            (true, _) => &shared.metrics.sends_duplicate,
            (false, Via::Socket) => &shared.metrics.messages_in_socket,
            (false, Via::Http) => &shared.metrics.messages_in_http,
        };
        counter.inc();
        Ok(out.ack)
    }
}

fn start_send(
    shared: &Shared,
    from: &str,
    session: Option<u64>,
    req: pb::Send,
) -> Result<store::Pending<store::SendOutcome>, Refusal> {
    check_id("client_msg_id", &req.client_msg_id)?;
    let to = check_conv(from, req.to.as_ref())?;
    if req.content_type == 0 {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            "content_type 0 is invalid",
        ));
    }
    if req.content.len() > shared.config.max_content_len {
        return Err(Refusal::new(
            ErrorCode::ContentTooLarge,
            format!(
                "content is limited to {} bytes",
                shared.config.max_content_len
            ),
        ));
    }
    let r = SendRequest {
        from: from.to_owned(),
        client_msg_id: req.client_msg_id,
        to,
        content_type: req.content_type,
        content: req.content,
        now_ms: crate::now_ms(),
    };
    Ok(if r.to.kind == ConversationKind::Group as i32 {
        shared.store.send_group(r, session)
    } else {
        shared.store.send_direct(r, session)
    })
}

/// What a request costs against the connection's rate of changes (`sends_per_sec`): every
/// request the writer runs costs 1, a group change 1 more per user id it names; reads cost
/// nothing (they are bounded by `heavy`). `None`: not a change.
pub fn change_cost(packet: &Packet) -> Option<u32> {
    match packet {
        Packet::Send(_) | Packet::MarkRead(_) | Packet::Recall(_) | Packet::Delete(_) => Some(1),
        other => super::groups::cost(other),
    }
}

/// Handles one request from a logged-in session.
pub async fn handle(
    shared: &Arc<Shared>,
    session: &Arc<SessionHandle>,
    packet: Packet,
) -> Result<Answer, Refusal> {
    let user = session.user.to_string();
    let now = crate::now_ms();
    match packet {
        Packet::Send(req) => send(shared, session, req).await,
        Packet::Sync(req) => {
            let limit = match req.limit {
                0 => SYNC_DEFAULT,
                n => n.min(SYNC_MAX),
            } as usize;
            // Half the frame limit leaves room for one maximal message past the budget.
            let max_bytes = shared.config.max_frame_len / 2;
            heavy(shared, move |s| {
                let page = s
                    .store
                    .inbox_after(&user, req.since_version, limit, max_bytes)?;
                s.metrics.sync_pages.inc();
                let new_version = page
                    .entries
                    .last()
                    .map(|e| e.version)
                    .unwrap_or(req.since_version);
                Ok(Packet::SyncAck(pb::SyncAck {
                    entries: page.entries,
                    new_version,
                    has_more: page.has_more,
                    current_version: page.current_version,
                }))
            })
            .await
        }
        Packet::Contacts(req) => {
            let limit = match req.limit {
                0 => CONTACTS_DEFAULT,
                n => n.min(CONTACTS_MAX),
            } as usize;
            let max_bytes = shared.config.max_frame_len / 2;
            heavy(shared, move |s| {
                let (contacts, next_cursor) =
                    s.store.contacts(&user, &req.cursor, limit, max_bytes)?;
                Ok(Packet::ContactsAck(pb::ContactsAck {
                    contacts,
                    next_cursor,
                }))
            })
            .await
        }
        Packet::Unread(req) => {
            let limit = match req.limit {
                0 => UNREAD_DEFAULT,
                n => n.min(UNREAD_MAX),
            } as usize;
            heavy(shared, move |s| {
                let ack = s.store.unread_page(&user, &req.cursor, limit)?;
                Ok(Packet::UnreadAck(ack))
            })
            .await
        }
        Packet::MarkRead(req) => {
            let conv = check_conv(&user, req.conversation.as_ref())?;
            let pending = shared.store.mark_read(&user, &conv, req.up_to_seq, now);
            let mut ack = refusal(shared, pending.await)?;
            // The total over every conversation is read once the change is stored, here rather
            // than on the writer (it visits each read fan-out group of the user).
            ack.total = unread_total(shared, &user).await?;
            Ok(Packet::MarkReadAck(ack).into())
        }
        Packet::Recall(req) => {
            let conv = check_conv(&user, req.conversation.as_ref())?;
            let window = shared.config.recall_window_secs as i64 * 1000;
            let pending = if conv.kind == ConversationKind::Group as i32 {
                shared
                    .store
                    .recall_group(&user, &conv.id, req.msg_id, now, window)
            } else {
                shared.store.recall(&user, &conv, req.msg_id, now, window)
            };
            let version = refusal(shared, pending.await)?;
            Ok(Packet::RecallAck(pb::RecallAck { version }).into())
        }
        Packet::Delete(req) => {
            let conv = check_conv(&user, req.conversation.as_ref())?;
            let pending = shared.store.delete(&user, &conv, req.msg_id, now);
            let version = refusal(shared, pending.await)?;
            Ok(Packet::DeleteAck(pb::DeleteAck { version }).into())
        }
        p @ (Packet::GroupCreate(_)
        | Packet::GroupJoin(_)
        | Packet::GroupLeave(_)
        | Packet::GroupSetRole(_)) => super::groups::change(shared, &user, now, p)
            .await
            .map(Answer::from),
        other => super::groups::read(shared, &user, other).await,
    }
}

/// The store's view of the group settings.
pub fn group_limits(shared: &Shared) -> GroupLimits {
    GroupLimits {
        fanout_threshold: shared.config.fanout_threshold,
        max_group_size: shared.config.max_group_size,
        max_groups_per_user: shared.config.max_groups_per_user,
    }
}
