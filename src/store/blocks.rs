//! Blocks (BLOCK, BLOCK_LIST): per user, a key in `unread` for each user they blocked (listed by
//! BLOCK_LIST) and a count of them; per pair of users, one byte saying which blocked the other.
//! A direct send reads that byte (one key, both directions) inside its own change
//! ([`blocked_between`], called from `messages.rs`), so a block and a send racing each other are
//! ordered by the writer: the send is either stored before the block or refused after it.

use missive_protocol::ErrorCode;

use super::core::Core;
use super::error::{Result, StoreError};
use super::family::Family;
use super::keys;
use super::pending::Pending;
use super::read::Reader;
use super::writer::Store;

/// Which side of a direct conversation blocked the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockedBy {
    /// The sender blocked the recipient.
    Sender,
    /// The recipient blocked the sender.
    Recipient,
}

/// One page of a user's blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockPage {
    pub user_ids: Vec<String>,
    pub has_more: bool,
    pub total: u64,
}

impl Store {
    /// `user` blocks (`blocked`) or unblocks `other`; returns the state now. Idempotent. A new
    /// block beyond `max` blocks is LIMIT_EXCEEDED. The ids are checked by the caller.
    pub fn set_blocked(&self, user: &str, other: &str, blocked: bool, max: usize) -> Pending<bool> {
        let (user, other) = (user.to_owned(), other.to_owned());
        self.change(false, move |txn| {
            let key = keys::blocked(&user, &other);
            if txn.exists(Family::Unread, &key)? == blocked {
                return Ok(blocked);
            }
            let count = keys::block_count(&user);
            if blocked {
                if txn.counter(Family::Unread, &count)? >= max as u64 {
                    return Err(StoreError::refused(
                        ErrorCode::LimitExceeded,
                        format!(
                            "{user} blocked {max} users, the most one can (max_blocks_per_user)"
                        ),
                    ));
                }
                txn.put(Family::Unread, key, Vec::new());
                txn.add_counter(Family::Unread, count, 1)?;
            } else {
                txn.delete(Family::Unread, key);
                txn.add_counter(Family::Unread, count, -1)?;
            }
            // The pair's byte, which sends read.
            let pair = keys::block_pair(&user, &other);
            let mine = side(&user, &other);
            let before = pair_mask(txn, &pair)?;
            match if blocked {
                before | mine
            } else {
                before & !mine
            } {
                0 => txn.delete(Family::Unread, pair),
                now => txn.put(Family::Unread, pair, vec![now]),
            }
            Ok(blocked)
        })
    }
}

impl Core {
    /// Whether a direct message from `from` to `to` is blocked, and by whom, as committed.
    pub fn blocked(&self, from: &str, to: &str) -> Result<Option<BlockedBy>> {
        blocked_between(self, from, to)
    }

    /// The users `user` blocked after `after` (bytewise id order), at most `limit`.
    pub fn blocked_users(&self, user: &str, after: &str, limit: usize) -> Result<BlockPage> {
        let prefix = keys::blocked_prefix(user);
        let mut start = keys::blocked(user, after);
        if !after.is_empty() {
            // Past `after` itself.
            start.push(0);
        }
        let mut page = BlockPage {
            total: self.get_u64(Family::Unread, &keys::block_count(user))?,
            ..BlockPage::default()
        };
        for item in self.iter_prefix_from(Family::Unread, &prefix, &start) {
            let (k, _) = item?;
            if page.user_ids.len() == limit {
                page.has_more = true;
                break;
            }
            let id = std::str::from_utf8(&k[prefix.len()..])
                .map_err(|_| StoreError::Corrupt("block key is not UTF-8".into()))?;
            page.user_ids.push(id.to_owned());
        }
        Ok(page)
    }
}

/// Whether a direct message from `from` to `to` is blocked, and by whom (the recipient's block
/// first): one read, the pair's byte.
pub(crate) fn blocked_between(r: &impl Reader, from: &str, to: &str) -> Result<Option<BlockedBy>> {
    let mask = pair_mask(r, &keys::block_pair(from, to))?;
    Ok(if mask & side(to, from) != 0 {
        Some(BlockedBy::Recipient)
    } else if mask & side(from, to) != 0 {
        Some(BlockedBy::Sender)
    } else {
        None
    })
}

/// The bit of a pair's byte that says `user` blocked `other`.
pub(crate) fn side(user: &str, other: &str) -> u8 {
    if user <= other {
        keys::BLOCKED_BY_LOWER
    } else {
        keys::BLOCKED_BY_HIGHER
    }
}

/// A pair's byte (0 when absent).
pub(crate) fn pair_mask(r: &impl Reader, pair: &[u8]) -> Result<u8> {
    r.value(Family::Unread, pair, |v| {
        v.and_then(|v| v.first().copied()).unwrap_or(0)
    })
}

/// The refusal of a direct message to `to` that `by` blocked.
pub(crate) fn blocked_refusal(to: &str, by: BlockedBy) -> StoreError {
    StoreError::refused(
        ErrorCode::Blocked,
        match by {
            BlockedBy::Recipient => format!("{to} does not accept your messages"),
            BlockedBy::Sender => format!("you blocked {to}: unblock them to send"),
        },
    )
}
