//! Conversation history and read state: one walk of a conversation's log by seq, for direct
//! and group conversations alike (HISTORY; GROUP_HISTORY is the same walk for groups), with
//! the reader's and the other side's read positions; and who in a group has read a message
//! (READERS).
//!
//! Every message of every conversation is in the conversation log (`conv_log`: conversation +
//! seq -> message id), written with the message, so a device that holds nothing reads the
//! latest page of any conversation in one request, without syncing the inbox. The work is
//! bounded by the page: at most `limit + 1` seqs are looked at, and where messages the reader
//! deleted are left out, at most [`SCAN_PER_MESSAGE`] × `limit` (a page that ran into that
//! bound says `has_more` and where to go on, `next_seq`). Read positions are counters read
//! with one point read each.

use missive_protocol::pb::{self, Conversation, ConversationKind, HistoryOrder, HistoryVisibility};
use missive_protocol::ErrorCode;
use prost::Message as _;

use super::conversation::group_conv;
use super::core::Core;
use super::error::{Result, StoreError};
use super::family::Family;
use super::groups::Page;
use super::keys::{self, ConvKey};
use super::membership::{group_info, require_member};
use super::read::Reader;
use crate::ids::Seq;

/// Seqs one HISTORY page may look at per message it may return, where messages the reader
/// deleted for itself are skipped: a conversation whose reader deleted a long run of messages
/// costs a bounded walk per request, and the client goes on from `next_seq`.
pub const SCAN_PER_MESSAGE: usize = 4;

/// What a page asks for: the order, the bounds (peer-supplied: any values are accepted, every
/// step saturates), at most `limit` messages and (after the first) about `max_bytes` encoded.
#[derive(Debug, Clone, Copy)]
pub struct HistoryQuery {
    pub order: HistoryOrder,
    pub before: Seq,
    pub after: Seq,
    pub limit: usize,
    pub max_bytes: usize,
}

/// A page of a conversation's history and the read positions in it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryPage {
    pub messages: Vec<pb::Message>,
    pub has_more: bool,
    /// With `has_more`: the bound of the next page (the last seq this page looked at); else 0.
    pub next_seq: u64,
    /// The conversation's latest seq.
    pub last_seq: u64,
    /// The reader's read position.
    pub read_seq: u64,
    /// A direct conversation's other user's read position; 0 for groups.
    pub peer_read_seq: u64,
}

/// A conversation's log as one reader may see it.
struct Log {
    ck: ConvKey,
    /// The conversation as the reader sees it (each message's `conversation`).
    view: Conversation,
    /// Seqs at or below it are not shown (a FROM_JOIN group's first join).
    floor: u64,
    last: u64,
}

impl Core {
    /// A group's log as member `user` may see it: NOT_FOUND for anyone else (as for a group
    /// that does not exist), and in a FROM_JOIN group nothing at or below the member's first
    /// join.
    fn group_log(&self, user: &str, group_id: &str) -> Result<Log> {
        let me = require_member(self, group_id, user)?;
        let info = group_info(self, group_id)?;
        let floor = if info.history == HistoryVisibility::FromJoin as i32 {
            me.joined_seq
        } else {
            0
        };
        let ck = ConvKey::group(group_id);
        Ok(Log {
            last: self.get_u64(Family::Convs, &ck.0)?,
            ck,
            view: group_conv(group_id),
            floor,
        })
    }

    /// The direct conversation of `user` with `peer`. Its key holds both users, so a reader
    /// only ever reaches its own conversations: one with no message is simply empty.
    fn direct_log(&self, user: &str, peer: &str) -> Result<Log> {
        let ck = ConvKey::direct(user, peer);
        Ok(Log {
            last: self.get_u64(Family::Convs, &ck.0)?,
            ck,
            view: Conversation {
                kind: ConversationKind::Direct as i32,
                id: peer.to_owned(),
            },
            floor: 0,
        })
    }

    /// The one walk of a log: seqs in (lo, hi] from one end (OLDEST_FIRST: after `after`;
    /// NEWEST_FIRST: before `before`, 0 the newest; UNSPECIFIED: OLDEST_FIRST when `after` is
    /// above 0), each message loaded by id and shown as `log.view`. `hidden_for`: leave out
    /// the messages this user deleted for itself, looking at no more than
    /// [`SCAN_PER_MESSAGE`] × `limit` seqs; without it at most `limit + 1` are looked at.
    fn walk(&self, log: &Log, q: &HistoryQuery, hidden_for: Option<&str>) -> Result<HistoryPage> {
        let oldest_first = match q.order {
            HistoryOrder::OldestFirst => true,
            HistoryOrder::NewestFirst => false,
            HistoryOrder::Unspecified => q.after.0 > 0,
        };
        let (lo, hi) = if oldest_first {
            (q.after.0.max(log.floor), log.last)
        } else {
            let top = match q.before.0 {
                0 => log.last,
                b => (b - 1).min(log.last),
            };
            (log.floor, top)
        };
        let span = hi.saturating_sub(lo);
        let scan = match hidden_for {
            Some(_) => q.limit.saturating_mul(SCAN_PER_MESSAGE),
            None => 0,
        }
        .max(q.limit.saturating_add(1));
        let steps = span.min(scan as u64);
        let mut messages = Vec::with_capacity(q.limit.min(steps as usize));
        let (mut bytes, mut looked, mut last_looked) = (0usize, 0u64, None);
        let mut has_more = false;
        for i in 0..steps {
            if messages.len() >= q.limit || (bytes >= q.max_bytes && !messages.is_empty()) {
                has_more = true;
                break;
            }
            let seq = if oldest_first { lo + 1 + i } else { hi - i };
            looked = i + 1;
            last_looked = Some(seq);
            let Some(msg_id) = self.value(Family::ConvLog, &keys::conv_log(&log.ck, seq), |v| {
                v.map(keys::u64_value)
            })?
            else {
                continue;
            };
            let msg_id = msg_id.ok_or_else(|| StoreError::Corrupt("conv_log".into()))?;
            if let Some(user) = hidden_for {
                if self.exists(Family::Unread, &keys::hidden(user, msg_id))? {
                    continue;
                }
            }
            let mut msg = self
                .get_msg::<pb::Message>(Family::Content, &keys::content(msg_id))?
                .ok_or_else(|| StoreError::Corrupt(format!("message {msg_id} missing")))?;
            msg.conversation = Some(log.view.clone());
            bytes += msg.encoded_len() + 4;
            messages.push(msg);
        }
        // The walk stopped at its bound with seqs left in the range.
        has_more |= looked < span;
        let next_seq = match (has_more, last_looked) {
            (false, _) => 0,
            (true, Some(seq)) => seq,
            (true, None) if oldest_first => lo,
            (true, None) => hi.saturating_add(1),
        };
        Ok(HistoryPage {
            messages,
            has_more,
            next_seq,
            last_seq: log.last,
            ..HistoryPage::default()
        })
    }

    /// HISTORY: a page of `conv` (as `user` names it: DIRECT + the other user, or GROUP + a
    /// group id) with the read positions. Groups: for members only (NOT_FOUND for anyone
    /// else), FROM_JOIN groups from the member's first join. Messages `user` deleted for
    /// itself are left out; recalled ones are shown recalled (empty content). A direct
    /// conversation without messages is an empty page.
    pub fn history(&self, user: &str, conv: &Conversation, q: HistoryQuery) -> Result<HistoryPage> {
        let group = conv.kind == ConversationKind::Group as i32;
        let log = if group {
            self.group_log(user, &conv.id)?
        } else {
            self.direct_log(user, &conv.id)?
        };
        let mut page = self.walk(&log, &q, Some(user))?;
        page.read_seq = self.get_u64(Family::Unread, &keys::read_pos(user, &log.ck))?;
        if !group {
            page.peer_read_seq =
                self.get_u64(Family::Unread, &keys::read_pos(&conv.id, &log.ck))?;
        }
        Ok(page)
    }

    /// GROUP_HISTORY (deprecated by HISTORY): the same walk of the group's log for a member,
    /// without the read positions, and showing messages the member deleted for itself, as it
    /// always did.
    #[allow(clippy::too_many_arguments)]
    pub fn group_history(
        &self,
        user: &str,
        group_id: &str,
        order: HistoryOrder,
        before: Seq,
        after: Seq,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<pb::Message>, bool)> {
        let log = self.group_log(user, group_id)?;
        let q = HistoryQuery {
            order,
            before,
            after,
            limit,
            max_bytes,
        };
        let page = self.walk(&log, &q, None)?;
        Ok((page.messages, page.has_more))
    }

    /// READERS: of the group's members after the member id `cursor` (a page of `limit`, in id
    /// order, as GROUP_MEMBERS), those who have read the message at `seq`: read position at
    /// or past it, not its sender, and first joined before it. For members only (NOT_FOUND
    /// for anyone else); NOT_FOUND too for a seq the asker cannot see (none, past the last, or
    /// at or below a FROM_JOIN member's first join). One point read per member of the page.
    pub fn group_readers(
        &self,
        user: &str,
        group_id: &str,
        seq: Seq,
        cursor: &[u8],
        limit: usize,
    ) -> Result<Page<String>> {
        let seq = seq.0;
        let log = self.group_log(user, group_id)?;
        let no_message = || StoreError::refused(ErrorCode::NotFound, "no such message");
        if seq <= log.floor || seq > log.last {
            return Err(no_message());
        }
        let msg_id = self
            .value(Family::ConvLog, &keys::conv_log(&log.ck, seq), |v| {
                v.and_then(keys::u64_value)
            })?
            .ok_or_else(no_message)?;
        let sender = self
            .get_msg::<pb::Message>(Family::Content, &keys::content(msg_id))?
            .ok_or_else(|| StoreError::Corrupt(format!("message {msg_id} missing")))?
            .from_user;
        let (members, next_cursor) = self.member_page(group_id, cursor, limit)?;
        let mut read_by = Vec::new();
        for m in members {
            if m.user_id == sender || m.joined_seq >= seq {
                continue;
            }
            if self.get_u64(Family::Unread, &keys::read_pos(&m.user_id, &log.ck))? >= seq {
                read_by.push(m.user_id);
            }
        }
        Ok((read_by, next_cursor))
    }

    /// `user`'s read position in `conv` (committed): every message up to it is read.
    pub fn read_position(&self, user: &str, conv: &ConvKey) -> Result<u64> {
        self.get_u64(Family::Unread, &keys::read_pos(user, conv))
    }
}
