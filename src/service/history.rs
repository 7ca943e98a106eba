//! Conversation history and read state: HISTORY (a page of any conversation, direct or group,
//! with the read positions of both sides) and READERS (who in a group read a message). Each is
//! checked here and returned as the store work, for the transport to run off its threads. The
//! receipts a read causes are sent by `messages::mark_read`.

use missive_protocol::pb::{self, HistoryOrder};
use missive_protocol::ErrorCode;

use super::ids::{check_conv, check_id};
use super::refusal::Refusal;
use crate::context::Shared;
use crate::ids::Seq;
use crate::store::{self, HistoryQuery};

/// HISTORY's page size: 0 asks for this many, as GROUP_HISTORY.
pub const HISTORY_DEFAULT: u32 = 50;
/// HISTORY's largest page, as GROUP_HISTORY.
pub const HISTORY_MAX: u32 = 500;
/// READERS looks at this many members per page by default, as GROUP_MEMBERS.
pub const READERS_DEFAULT: u32 = 500;
/// READERS' largest page of members, as GROUP_MEMBERS.
pub const READERS_MAX: u32 = 1000;

/// The order asked for; an unknown number is INVALID_ARGUMENT.
pub fn order(value: i32) -> Result<HistoryOrder, Refusal> {
    HistoryOrder::try_from(value)
        .map_err(|_| Refusal::new(ErrorCode::InvalidArgument, "unknown history order"))
}

/// A page of `conv`'s messages for `user` (`limit` already bounded, see
/// `groups::page_limit`), at most about `max_bytes`, with the read positions.
pub fn history(
    user: &str,
    req: pb::History,
    limit: usize,
    max_bytes: usize,
) -> Result<impl FnOnce(&Shared) -> store::Result<pb::HistoryAck> + Send + 'static, Refusal> {
    let conv = check_conv(user, req.conversation.as_ref())?;
    let q = HistoryQuery {
        order: order(req.order)?,
        before: Seq(req.before_seq),
        after: Seq(req.after_seq),
        limit,
        max_bytes,
    };
    let user = user.to_owned();
    Ok(move |s: &Shared| {
        let page = s.store.core().history(&user, &conv, q)?;
        Ok(pb::HistoryAck {
            messages: page.messages,
            has_more: page.has_more,
            last_seq: page.last_seq,
            read_seq: page.read_seq,
            peer_read_seq: page.peer_read_seq,
            next_seq: page.next_seq,
        })
    })
}

/// The members of a page (`limit` members in id order after `cursor`) who have read the
/// group message at `seq`, for `user`, a member.
pub fn readers(
    user: &str,
    req: pb::Readers,
    limit: usize,
) -> Result<impl FnOnce(&Shared) -> store::Result<pb::ReadersAck> + Send + 'static, Refusal> {
    check_id("group_id", &req.group_id)?;
    let user = user.to_owned();
    Ok(move |s: &Shared| {
        let (read_by, next_cursor) =
            s.store
                .core()
                .group_readers(&user, &req.group_id, Seq(req.seq), &req.cursor, limit)?;
        Ok(pb::ReadersAck {
            read_by,
            next_cursor,
        })
    })
}
