//! Unread counts: what is stored, what is computed, and MARK_READ.
//!
//! A conversation's unread count is the number of messages from others after the user's read
//! position that are neither recalled nor deleted by the user (deletes count in direct
//! conversations only). Sending moves the sender's read position to its own message, so every
//! message after a read position is from someone else.
//!
//! - Direct conversations and write fan-out groups keep the count stored (`unread` + 1 +
//!   conversation), changed by each message, read, recall and delete, and the user's total
//!   (`unread` + 0) is the sum of those stored counts. A count that drops to 0 is deleted, so
//!   the listing only meets conversations with something unread.
//! - Read fan-out groups store nothing per message: their count is computed from the read
//!   position, the group's last seq and the recalled messages between them. Such groups are
//!   listed per user (`unread` + 4 + group), so the total and the listing visit exactly them.
//!
//! So UNREAD, LOGIN's total and MARK_READ cost O(read fan-out groups of the user), bounded by
//! `max_groups_per_user`, not O(every group or conversation).

use missive_protocol::pb::{self, inbox_entry::Body, Conversation, ConversationKind, MarkReadAck};
use missive_protocol::pb::{ConversationUnread, FanoutMode, UnreadAck};
use missive_protocol::ErrorCode;

use super::change::Change;
use super::conversation::group_conv;
use super::core::Core;
use super::error::{Result, StoreError};
use super::family::Family;
use super::keys::{self, ConvKey};
use super::membership::{group_info, mode_of, require_member};
use super::pending::Pending;
use super::read::Reader;
use super::writer::Store;
use crate::ids::Seq;

/// `user`'s computed count in a read fan-out group, as of the running change (pending writes
/// included).
pub(crate) fn group_unread_in(txn: &mut Change<'_>, user: &str, ck: &ConvKey) -> Result<u64> {
    let last = txn.counter(Family::Convs, &ck.0)?;
    let pos = txn.counter(Family::Unread, &keys::read_pos(user, ck))?;
    recount_group(last, pos, |from, to| {
        txn.count_range(
            Family::Recalled,
            &keys::recalled(ck, from),
            &keys::recalled(ck, to),
        )
    })
}

/// Messages in (`pos`, `last`] minus the recalled ones among them, counted by `recalled(from,
/// to)` over seqs `from..to`.
fn recount_group(
    last: u64,
    pos: u64,
    recalled: impl FnOnce(u64, u64) -> Result<u64>,
) -> Result<u64> {
    if last <= pos {
        return Ok(0);
    }
    let gone = recalled(pos.saturating_add(1), last.saturating_add(1))?;
    Ok((last - pos).saturating_sub(gone))
}

impl Core {
    /// `user`'s count in a group as stored or computed (committed data).
    pub(crate) fn group_unread(&self, user: &str, group_id: &str) -> Result<u64> {
        let ck = ConvKey::group(group_id);
        if self.exists(Family::Unread, &keys::read_group(user, group_id))? {
            let last = self.get_u64(Family::Convs, &ck.0)?;
            let pos = self.get_u64(Family::Unread, &keys::read_pos(user, &ck))?;
            return recount_group(last, pos, |from, to| {
                self.count_keys(
                    Family::Recalled,
                    &keys::recalled(&ck, from),
                    &keys::recalled(&ck, to),
                )
            });
        }
        self.get_u64(Family::Unread, &keys::unread_conv(user, &ck))
    }

    /// The ids of `user`'s read fan-out groups, in id order.
    pub(crate) fn read_groups(&self, user: &str) -> Result<Vec<String>> {
        let prefix = keys::read_group_prefix(user);
        let mut out = Vec::new();
        for item in self.iter_prefix(Family::Unread, &prefix) {
            let (k, _) = item?;
            let Some(id) = k.strip_prefix(prefix.as_slice()) else {
                break;
            };
            out.push(String::from_utf8_lossy(id).into_owned());
        }
        Ok(out)
    }

    /// `user`'s computed counts in the read fan-out `groups`, in that order: two batched reads
    /// (the groups' last seqs, the user's read positions) and, for a group with messages past
    /// the position, a seek of one shared iterator over its recalled messages.
    fn read_group_counts(&self, user: &str, groups: &[String]) -> Result<Vec<u64>> {
        let convs: Vec<ConvKey> = groups.iter().map(|g| ConvKey::group(g)).collect();
        let last_keys: Vec<&[u8]> = convs.iter().map(|c| c.0.as_slice()).collect();
        let pos_keys: Vec<Vec<u8>> = convs.iter().map(|c| keys::read_pos(user, c)).collect();
        let opts = self.read_opts();
        let db = self.db();
        let lasts = db.batched_multi_get_cf_opt(self.cf(Family::Convs), &last_keys, false, &opts);
        let positions =
            db.batched_multi_get_cf_opt(self.cf(Family::Unread), &pos_keys, false, &opts);
        let number =
            |v: std::result::Result<Option<rocksdb::DBPinnableSlice<'_>>, rocksdb::Error>| match v?
            {
                None => Ok(0),
                Some(b) => keys::u64_value(&b).ok_or_else(|| StoreError::Corrupt("counter".into())),
            };
        let mut recalled = self.raw_iter(Family::Recalled);
        let mut out = Vec::with_capacity(groups.len());
        for ((ck, last), pos) in convs.iter().zip(lasts).zip(positions) {
            let (last, pos) = (number(last)?, number(pos)?);
            out.push(recount_group(last, pos, |from, to| {
                let end = keys::recalled(ck, to);
                recalled.seek(keys::recalled(ck, from));
                let mut n = 0;
                while let Some(k) = recalled.key() {
                    if k >= end.as_slice() {
                        break;
                    }
                    n += 1;
                    recalled.next();
                }
                recalled.status()?;
                Ok(n)
            })?);
        }
        Ok(out)
    }

    /// The user's total unread count: the stored total (direct conversations and write fan-out
    /// groups) plus each read fan-out group's computed count.
    pub fn unread_total(&self, user: &str) -> Result<u64> {
        let stored = self.get_u64(Family::Unread, &keys::unread_total(user))?;
        let groups = self.read_groups(user)?;
        Ok(stored + self.read_group_counts(user, &groups)?.iter().sum::<u64>())
    }

    /// [`Core::unread_total`], or `None` if the user is in more than `max` read fan-out groups
    /// (for callers that run it in place only while it is a few reads).
    pub fn unread_total_if_few(&self, user: &str, max: usize) -> Result<Option<u64>> {
        let prefix = keys::read_group_prefix(user);
        for (n, item) in self.iter_prefix(Family::Unread, &prefix).enumerate() {
            item?;
            if n >= max {
                return Ok(None);
            }
        }
        self.unread_total(user).map(Some)
    }

    /// One page of `user`'s unread counts: the total over everything, and up to `limit`
    /// conversations with unread messages after `cursor` (empty: from the start), stored counts
    /// first, then read fan-out groups, each with the user's read position (a point read).
    /// `next_cursor` is empty when nothing follows.
    pub fn unread_page(&self, user: &str, cursor: &[u8], limit: usize) -> Result<UnreadAck> {
        let limit = limit.max(1);
        let base = keys::user_prefix(user);
        let stored_total = self.get_u64(Family::Unread, &keys::unread_total(user))?;
        let groups = self.read_groups(user)?;
        let counts = self.read_group_counts(user, &groups)?;
        let total = stored_total + counts.iter().sum::<u64>();
        // The cursor is the key, without the user's prefix, of the last conversation listed.
        let resume = [base.as_slice(), cursor].concat();
        let mut conversations: Vec<(Vec<u8>, ConversationUnread)> = Vec::new();
        let mut next_cursor = Vec::new();
        let counts_prefix = keys::unread_conv_prefix(user);
        let start = if cursor.is_empty() || resume < counts_prefix {
            Some(counts_prefix.clone())
        } else if resume.starts_with(&counts_prefix) {
            Some([resume.as_slice(), &[0]].concat())
        } else {
            None
        };
        if let Some(start) = start {
            for item in self.iter_prefix_from(Family::Unread, &counts_prefix, &start) {
                let (k, v) = item?;
                let Some(rest) = k.strip_prefix(counts_prefix.as_slice()) else {
                    break;
                };
                if conversations.len() == limit {
                    next_cursor = listed_cursor(&base, &conversations);
                    break;
                }
                let unread = keys::u64_value(&v)
                    .ok_or_else(|| StoreError::Corrupt("unread count".into()))?;
                if unread == 0 {
                    continue;
                }
                let ck = ConvKey(rest.to_vec());
                let last_seq = self.get_u64(Family::Convs, &ck.0)?;
                let listed = ConversationUnread {
                    conversation: ck.view(user),
                    unread,
                    last_seq,
                    read_seq: self.get_u64(Family::Unread, &keys::read_pos(user, &ck))?,
                };
                conversations.push((k.to_vec(), listed));
            }
        }
        if next_cursor.is_empty() {
            for (g, unread) in groups.iter().zip(counts) {
                let key = keys::read_group(user, g);
                if key <= resume || unread == 0 {
                    continue;
                }
                if conversations.len() == limit {
                    next_cursor = listed_cursor(&base, &conversations);
                    break;
                }
                let ck = ConvKey::group(g);
                let last_seq = self.get_u64(Family::Convs, &ck.0)?;
                let listed = ConversationUnread {
                    conversation: Some(group_conv(g)),
                    unread,
                    last_seq,
                    read_seq: self.get_u64(Family::Unread, &keys::read_pos(user, &ck))?,
                };
                conversations.push((key, listed));
            }
        }
        Ok(UnreadAck {
            total,
            conversations: conversations.into_iter().map(|(_, c)| c).collect(),
            next_cursor,
        })
    }

    /// Every conversation of `user` with unread messages (all pages), for checks and tests.
    pub fn unread(&self, user: &str) -> Result<UnreadAck> {
        let mut all = self.unread_page(user, &[], usize::MAX)?;
        all.next_cursor.clear();
        Ok(all)
    }

    /// Keys of `family` in `start..end` (committed).
    pub(crate) fn count_keys(&self, family: Family, start: &[u8], end: &[u8]) -> Result<u64> {
        let mut n = 0;
        for item in self.iter_from(family, start) {
            let (k, _) = item?;
            if &*k >= end {
                break;
            }
            n += 1;
        }
        Ok(n)
    }
}

/// The cursor after the last listed conversation: its key without the user's prefix.
fn listed_cursor(base: &[u8], listed: &[(Vec<u8>, ConversationUnread)]) -> Vec<u8> {
    listed
        .last()
        .map(|(k, _)| k[base.len()..].to_vec())
        .unwrap_or_default()
}

/// What a MARK_READ did: its ack, and the read position it moved to (0 if it moved nothing),
/// which the other side of a direct conversation is told as a receipt.
#[derive(Debug, Clone, PartialEq)]
pub struct MarkedRead {
    pub ack: MarkReadAck,
    pub moved_to: u64,
}

impl Store {
    /// Marks `conv` read up to `up_to` (clamped) for `user`. Idempotent: a read at or below
    /// the previous read position changes nothing and returns version 0. The ack's `total` is
    /// 0: read it with [`Core::unread_total`] once this is committed.
    pub fn mark_read(
        &self,
        user: &str,
        conv: &Conversation,
        up_to: Seq,
        now_ms: i64,
    ) -> Pending<MarkReadAck> {
        let (user, conv) = (user.to_owned(), conv.clone());
        self.change(false, move |txn| {
            mark_read(txn, &user, &conv, up_to.0, now_ms).map(|m| m.ack)
        })
    }

    /// [`Store::mark_read`], also saying where the read position moved to.
    pub fn mark_read_to(
        &self,
        user: &str,
        conv: &Conversation,
        up_to: Seq,
        now_ms: i64,
    ) -> Pending<MarkedRead> {
        let (user, conv) = (user.to_owned(), conv.clone());
        self.change(false, move |txn| {
            mark_read(txn, &user, &conv, up_to.0, now_ms)
        })
    }
}

/// MARK_READ: moves `user`'s read position in `conv` to `up_to_seq` (clamped to the last seq)
/// and writes a READ_SYNC entry, unless it is not past the current position (then nothing is
/// written and the version is 0). The reply's `total` is left 0: the caller reads it after the
/// commit, off the writer (it costs a read per read fan-out group of the user).
///
/// The work is O(1) plus a count over the seqs the read moves past, or over those after it,
/// whichever is fewer (each seq is passed once: amortized O(1) per message received); no scan
/// of the committed store, so it never makes the writer commit first.
pub(crate) fn mark_read(
    txn: &mut Change<'_>,
    user: &str,
    conv: &pb::Conversation,
    up_to_seq: u64,
    now_ms: i64,
) -> Result<MarkedRead> {
    let group = conv.kind == ConversationKind::Group as i32;
    let mode = if group {
        require_member(txn, &conv.id, user)?;
        mode_of(&group_info(txn, &conv.id)?)
    } else {
        FanoutMode::Write
    };
    let ck = ConvKey::for_view(user, conv);
    let last = txn.counter(Family::Convs, &ck.0)?;
    if last == 0 && !group {
        return Err(StoreError::refused(
            ErrorCode::NotFound,
            "no such conversation",
        ));
    }
    let up = up_to_seq.min(last);
    let pos = txn.counter(Family::Unread, &keys::read_pos(user, &ck))?;
    let stored = mode == FanoutMode::Write;
    let current = if stored {
        txn.counter(Family::Unread, &keys::unread_conv(user, &ck))?
    } else {
        group_unread_in(txn, user, &ck)?
    };
    if up <= pos {
        let ack = MarkReadAck {
            unread: current,
            total: 0,
            version: 0,
        };
        return Ok(MarkedRead { ack, moved_to: 0 });
    }
    let unread = if group {
        // Messages after `up`, less the recalled ones.
        let gone = txn.count_range(
            Family::Recalled,
            &keys::recalled(&ck, up.saturating_add(1)),
            &keys::recalled(&ck, last.saturating_add(1)),
        )?;
        (last - up).saturating_sub(gone)
    } else if up - pos <= last - up {
        current.saturating_sub(counted_between(txn, user, &ck, pos, up)?)
    } else {
        counted_between(txn, user, &ck, up, last)?.min(current)
    };
    txn.set_counter(Family::Unread, keys::read_pos(user, &ck), up);
    if stored {
        txn.set_counter(Family::Unread, keys::unread_conv(user, &ck), unread);
        let delta = unread as i64 - current as i64;
        txn.add_counter(Family::Unread, keys::unread_total(user), delta)?;
    }
    txn.read_event(user, &ck, up, now_ms);
    let read = Body::ReadSync(pb::ReadSync {
        up_to_seq: up,
        unread,
    });
    let version = txn.append_own(user, conv, now_ms, read)?;
    let ack = MarkReadAck {
        unread,
        total: 0,
        version,
    };
    Ok(MarkedRead { ack, moved_to: up })
}

/// Messages of a direct conversation with seq in (`after`, `through`] that count as unread for
/// `user`: from the peer, not recalled, not deleted by `user`. Point reads through the running
/// change (so pending messages count), one seq after the other.
fn counted_between(
    txn: &mut Change<'_>,
    user: &str,
    ck: &ConvKey,
    after: u64,
    through: u64,
) -> Result<u64> {
    let mut n = 0;
    for seq in after.saturating_add(1)..=through {
        let Some(msg_id) = txn.value(Family::ConvLog, &keys::conv_log(ck, seq), |v| {
            v.and_then(keys::u64_value)
        })?
        else {
            continue;
        };
        let Some(msg) = txn.get_msg::<pb::Message>(Family::Content, &keys::content(msg_id))? else {
            continue;
        };
        if msg.from_user != user
            && !msg.recalled
            && !txn.exists(Family::Unread, &keys::hidden(user, msg_id))?
        {
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_recount_subtracts_recalled_messages_after_the_position() {
        assert_eq!(recount_group(10, 10, |_, _| Ok(0)).unwrap(), 0);
        assert_eq!(
            recount_group(3, 7, |_, _| Ok(0)).unwrap(),
            0,
            "position past last"
        );
        let mut asked = None;
        let n = recount_group(10, 4, |a, b| {
            asked = Some((a, b));
            Ok(2)
        })
        .unwrap();
        assert_eq!((n, asked), (4, Some((5, 11))));
        assert_eq!(recount_group(u64::MAX, 0, |_, b| Ok(b)).unwrap(), 0);
    }
}
