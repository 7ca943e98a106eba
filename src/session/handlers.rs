//! Requests after login, as frames: each decoded body becomes a `service` call, and its answer
//! the reply body. What a request means is `service`'s; this file only translates, and runs the
//! heavy reads so that their replies are framed and compressed off the connection threads.

use std::sync::Arc;

use missive_protocol::pb::{self, GroupRole};
use missive_protocol::{ErrorCode, Frame, Packet};

use crate::context::Shared;
use crate::router::SessionHandle;
use crate::service::blocks;
use crate::service::groups::{self, page_limit};
use crate::service::history;
use crate::service::messages::{self, submit_send, SendOrder, Sender, Via};
use crate::service::reads;
use crate::service::run::{blocking, heavy_turn};
use crate::service::Refusal;
use crate::store::{self, GroupChange};

const SYNC_DEFAULT: u32 = 200;
const SYNC_MAX: u32 = 5000;
const CONTACTS_DEFAULT: u32 = 50;
const CONTACTS_MAX: u32 = 200;
const UNREAD_DEFAULT: u32 = 200;
const UNREAD_MAX: u32 = 1000;
const HISTORY_DEFAULT: u32 = 50;
const HISTORY_MAX: u32 = 500;
const LIST_DEFAULT: u32 = 100;
const LIST_MAX: u32 = 500;
const MEMBERS_DEFAULT: u32 = 500;
const MEMBERS_MAX: u32 = 1000;

/// A reply: a body to frame, or a frame already made (and compressed) where it was read.
/// Not boxed: an answer lives for one request, and where it waits (`serve`'s wake-up state) it
/// is boxed already; a box here would cost an allocation per reply.
#[allow(clippy::large_enum_variant)]
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
/// the compressing of a large page holds a connection thread. It waits for a turn among the
/// heavy reads (`service::run::heavy_turn`); a connection has at most one (its requests are
/// answered in order), and stops reading requests while its replies are unwritten (`serve`),
/// so one client cannot queue more than one page's work and bytes.
async fn heavy<T, F>(shared: &Arc<Shared>, f: F, body: fn(T) -> Packet) -> Result<Answer, Refusal>
where
    T: 'static,
    F: FnOnce(&Shared) -> store::Result<T> + Send + 'static,
{
    let permit = heavy_turn(shared).await?;
    let threshold = shared.config.compress_threshold;
    // The turn is held by the read itself, so a client that goes away while it runs does not
    // free its place for another before the work is done.
    let frame = blocking(shared, move |s| {
        let _turn = permit;
        f(s).map(|t| Frame::compressed_above(&body(t), 0, threshold))
    })
    .await?;
    Ok(Answer::Frame(frame))
}

/// A SEND from a logged-in session; resolves to the reply once it is committed. `order`: the
/// session's, so its sends reach the store in the order they came.
pub fn send(
    shared: &Arc<Shared>,
    session: &SessionHandle,
    req: pb::Send,
    order: &mut SendOrder,
) -> impl std::future::Future<Output = Result<Answer, Refusal>> + Send + 'static {
    let sender = Sender {
        user: &session.user,
        device: &session.device,
        session: Some(session.id),
        via: Via::Socket,
    };
    let ack = submit_send(shared, sender, req, Some(order));
    async move { Ok(Answer::Packet(Packet::SendAck(ack.await?))) }
}

/// What a request costs against the connection's rate of changes (`sends_per_sec`): every
/// request the writer runs costs 1, a group change 1 more per user id it names
/// (`service::groups::cost`); reads cost nothing (they are bounded by `heavy`). `None`: not a
/// change.
pub fn change_cost(packet: &Packet) -> Option<u32> {
    Some(match packet {
        Packet::Send(_)
        | Packet::MarkRead(_)
        | Packet::Recall(_)
        | Packet::Delete(_)
        | Packet::Mute(_)
        | Packet::Block(_) => 1,
        Packet::GroupCreate(r) => groups::cost(r.members.len()),
        Packet::GroupJoin(r) => groups::cost(r.user_ids.len()),
        Packet::GroupLeave(_) | Packet::GroupSetRole(_) => groups::cost(0),
        _ => return None,
    })
}

/// Handles one request from a logged-in session.
pub async fn handle(
    shared: &Arc<Shared>,
    session: &Arc<SessionHandle>,
    packet: Packet,
) -> Result<Answer, Refusal> {
    let user: &str = &session.user;
    // Half the frame limit leaves room for one maximal message past the budget.
    let max_bytes = shared.config.max_frame_len / 2;
    match packet {
        Packet::Send(req) => send(shared, session, req, &mut SendOrder::default()).await,
        Packet::Sync(req) => {
            let limit = page_limit(req.limit, SYNC_DEFAULT, SYNC_MAX);
            let read = reads::sync(user, req.since_version, limit, max_bytes);
            heavy(shared, read, Packet::SyncAck).await
        }
        Packet::Contacts(req) => {
            let limit = page_limit(req.limit, CONTACTS_DEFAULT, CONTACTS_MAX);
            let read = reads::contacts(user, req.cursor, limit, max_bytes);
            heavy(shared, read, Packet::ContactsAck).await
        }
        Packet::Unread(req) => {
            let limit = page_limit(req.limit, UNREAD_DEFAULT, UNREAD_MAX);
            heavy(
                shared,
                reads::unread(user, req.cursor, limit),
                Packet::UnreadAck,
            )
            .await
        }
        Packet::MarkRead(req) => {
            let conv = req.conversation.as_ref();
            let ack = messages::mark_read(shared, user, conv, req.up_to_seq).await?;
            Ok(Packet::MarkReadAck(ack).into())
        }
        Packet::Recall(req) => {
            let conv = req.conversation.as_ref();
            let version = messages::recall(shared, user, conv, req.msg_id).await?;
            Ok(Packet::RecallAck(pb::RecallAck { version }).into())
        }
        Packet::Delete(req) => {
            let conv = req.conversation.as_ref();
            let version = messages::delete(shared, user, conv, req.msg_id).await?;
            Ok(Packet::DeleteAck(pb::DeleteAck { version }).into())
        }
        Packet::GroupCreate(req) => {
            let (name, members) = (req.name, req.members);
            let group =
                groups::create(shared, user, name, members, req.history, req.join_policy).await?;
            Ok(Packet::GroupCreateAck(pb::GroupAck { group: Some(group) }).into())
        }
        Packet::GroupJoin(req) => {
            let change = GroupChange::Join {
                group_id: req.group_id,
                users: req.user_ids,
            };
            group_change(shared, user, change, Packet::GroupJoinAck).await
        }
        Packet::GroupLeave(req) => {
            let change = GroupChange::Leave {
                group_id: req.group_id,
                user: (!req.user_id.is_empty()).then_some(req.user_id),
            };
            group_change(shared, user, change, Packet::GroupLeaveAck).await
        }
        Packet::GroupSetRole(req) => {
            // An unknown role number is refused by the service as any role it does not set.
            let role = GroupRole::try_from(req.role).unwrap_or(GroupRole::Owner);
            let change = GroupChange::SetRole {
                group_id: req.group_id,
                user: req.user_id,
                role,
            };
            group_change(shared, user, change, Packet::GroupSetRoleAck).await
        }
        Packet::GroupMembers(req) => {
            let limit = page_limit(req.limit, MEMBERS_DEFAULT, MEMBERS_MAX);
            let read = groups::members(Some(user), &req.group_id, req.cursor, limit)?;
            let ack = |(group, (members, next_cursor))| {
                Packet::GroupMembersAck(pb::GroupMembersAck {
                    group: Some(group),
                    members,
                    next_cursor,
                })
            };
            heavy(shared, read, ack).await
        }
        Packet::GroupList(req) => {
            let limit = page_limit(req.limit, LIST_DEFAULT, LIST_MAX);
            let read = groups::list(user, req.cursor, limit, max_bytes);
            heavy(shared, read, Packet::GroupListAck).await
        }
        Packet::GroupHistory(req) => {
            let limit = page_limit(req.limit, HISTORY_DEFAULT, HISTORY_MAX);
            let read = groups::history(user, req, limit, max_bytes)?;
            heavy(shared, read, Packet::GroupHistoryAck).await
        }
        Packet::Mute(req) => {
            let conv = req.conversation.as_ref();
            let muted = messages::mute(shared, user, conv, req.muted).await?;
            Ok(Packet::MuteAck(pb::MuteAck { muted }).into())
        }
        Packet::Block(req) => {
            let blocked = blocks::block(shared, user, &req.user_id, req.blocked).await?;
            Ok(Packet::BlockAck(pb::BlockAck { blocked }).into())
        }
        Packet::BlockList(req) => {
            let limit = page_limit(req.limit, blocks::LIST_DEFAULT, blocks::LIST_MAX);
            let read = blocks::list(user, req.after, limit)?;
            let ack = |p: store::BlockPage| {
                Packet::BlockListAck(pb::BlockListAck {
                    user_ids: p.user_ids,
                    has_more: p.has_more,
                    total: p.total.min(u32::MAX as u64) as u32,
                })
            };
            heavy(shared, read, ack).await
        }
        Packet::History(req) => {
            use history::{HISTORY_DEFAULT as DEFAULT, HISTORY_MAX as MAX};
            let limit = page_limit(req.limit, DEFAULT, MAX);
            let read = history::history(user, req, limit, max_bytes)?;
            heavy(shared, read, Packet::HistoryAck).await
        }
        Packet::Readers(req) => {
            use history::{READERS_DEFAULT as DEFAULT, READERS_MAX as MAX};
            let limit = page_limit(req.limit, DEFAULT, MAX);
            let read = history::readers(user, req, limit)?;
            heavy(shared, read, Packet::ReadersAck).await
        }
        other => Err(Refusal::new(
            ErrorCode::UnknownCommand,
            format!("{} is not a request", other.command().name()),
        )),
    }
}

/// A group change by `user`, answered with `ack` of the group as it is after it.
async fn group_change(
    shared: &Arc<Shared>,
    user: &str,
    change: GroupChange,
    ack: fn(pb::GroupAck) -> Packet,
) -> Result<Answer, Refusal> {
    let group = groups::change(shared, user, change).await?;
    Ok(ack(pb::GroupAck { group: Some(group) }).into())
}

/// A SIGNAL from a logged-in session (over its rate it never gets here: `serve` drops it). No
/// reply when relayed; a refusal is answered as ERROR.
pub async fn signal(
    shared: &Arc<Shared>,
    session: &SessionHandle,
    req: pb::Signal,
) -> Result<(), Refusal> {
    crate::service::signals::relay(shared, &session.user, req).await
}
