//! Reads of the data as stored, for the invariant checks of the tests, the crash test and the
//! fuzz targets (`crate::check`): compiled only for them (feature `test-hooks`).

use missive_protocol::pb::{self, GroupInfo, GroupMember};

use super::core::Core;
use super::error::{Result, StoreError};
use super::family::Family;
use super::keys::{self, ConvKey};
use super::read::Reader;

impl Core {
    /// A conversation's log as stored: (seq, message id) in seq order. For the invariant checks
    /// ([`crate::check`]).
    pub fn conv_log(&self, conv: &ConvKey) -> Result<Vec<(u64, u64)>> {
        let mut out = Vec::new();
        for item in self.scan_prefix(Family::ConvLog, &conv.0, &conv.0) {
            let (k, v) = item?;
            if k.len() != conv.0.len() + 8 {
                continue;
            }
            let seq = keys::u64_value(&k[conv.0.len()..]).unwrap_or(0);
            let msg_id =
                keys::u64_value(&v).ok_or_else(|| StoreError::Corrupt("conv_log".into()))?;
            out.push((seq, msg_id));
        }
        Ok(out)
    }

    /// A conversation's last seq (0 if it has no message).
    pub fn last_seq(&self, conv: &ConvKey) -> Result<u64> {
        self.get_u64(Family::Convs, &conv.0)
    }

    /// The stored message `msg_id` (its conversation as the sender addressed it), if any.
    pub fn message(&self, msg_id: u64) -> Result<Option<pb::Message>> {
        self.get_msg(Family::Content, &keys::content(msg_id))
    }

    /// A group's record and its current members as stored (no membership check), if the group
    /// exists. For the invariant checks.
    pub fn group_record(&self, group_id: &str) -> Result<Option<(GroupInfo, Vec<GroupMember>)>> {
        let Some(info) = self.get_msg::<GroupInfo>(Family::Groups, &keys::group(group_id))? else {
            return Ok(None);
        };
        Ok(Some((info, self.member_page(group_id, &[], usize::MAX)?.0)))
    }

    /// Checks `user`'s stored invariants: inbox versions are 1..=n without gaps or repeats, and
    /// the unread total equals the sum of the per-conversation counts, each of which equals a
    /// recount from the conversation log; the count of the users it blocked equals their keys.
    /// Returns the number of inbox entries.
    pub fn check_user(&self, user: &str) -> Result<u64, String> {
        let err = |e: StoreError| e.to_string();
        let prefix = keys::user_prefix(user);
        let mut expect = 1;
        for item in self.scan_prefix(Family::Inbox, &prefix, &prefix) {
            let (k, _) = item.map_err(err)?;
            let v = keys::inbox_version(&k).ok_or("bad inbox key")?;
            if v != expect {
                return Err(format!("{user}: inbox version {v} where {expect} was due"));
            }
            expect += 1;
        }
        let summary = self.unread(user).map_err(err)?;
        let sum: u64 = summary.conversations.iter().map(|c| c.unread).sum();
        if sum != summary.total {
            return Err(format!(
                "{user}: unread total {} but sum {sum}",
                summary.total
            ));
        }
        for c in &summary.conversations {
            let conv = c
                .conversation
                .as_ref()
                .ok_or("unread without conversation")?;
            let ck = ConvKey::for_view(user, conv);
            let pos = self
                .get_u64(Family::Unread, &keys::read_pos(user, &ck))
                .map_err(err)?;
            let recount = self.count_unread_after(user, &ck, pos).map_err(err)?;
            if recount != c.unread {
                return Err(format!(
                    "{user}: conversation {:?} unread {} but recount {recount}",
                    conv.id, c.unread
                ));
            }
        }
        let blocks = keys::blocked_prefix(user);
        let mut listed = 0u64;
        for item in self.iter_prefix(Family::Unread, &blocks) {
            let (k, _) = item.map_err(|e| e.to_string())?;
            let other = std::str::from_utf8(&k[blocks.len()..]).map_err(|e| e.to_string())?;
            let mask =
                super::blocks::pair_mask(self, &keys::block_pair(user, other)).map_err(err)?;
            if mask & super::blocks::side(user, other) == 0 {
                return Err(format!(
                    "{user} blocked {other} but their pair's byte is {mask}"
                ));
            }
            listed += 1;
        }
        let counted = self
            .get_u64(Family::Unread, &keys::block_count(user))
            .map_err(err)?;
        if listed != counted {
            return Err(format!(
                "{user}: {listed} blocks stored but a count of {counted}"
            ));
        }
        Ok(expect - 1)
    }
}

impl Core {
    /// Messages from others in `conv` after `after_seq` that `user` still sees (not recalled,
    /// not deleted by `user`).
    fn count_unread_after(&self, user: &str, conv: &ConvKey, after_seq: u64) -> Result<u64> {
        let mut n = 0;
        // Group counts are computed from read positions and ignore deletes (see groups.rs).
        let respect_hidden = conv.0.first() != Some(&b'g');
        for msg_id in self.conv_log_after(conv, after_seq)? {
            if self.counts_as_unread(user, msg_id, respect_hidden)? {
                n += 1;
            }
        }
        Ok(n)
    }

    fn counts_as_unread(&self, user: &str, msg_id: u64, respect_hidden: bool) -> Result<bool> {
        let Some(msg) = self.get_msg::<pb::Message>(Family::Content, &keys::content(msg_id))?
        else {
            return Ok(false);
        };
        let hidden = respect_hidden && self.exists(Family::Unread, &keys::hidden(user, msg_id))?;
        Ok(msg.from_user != user && !msg.recalled && !hidden)
    }

    /// Message ids in `conv` with seq > `after_seq`, in seq order.
    fn conv_log_after(&self, conv: &ConvKey, after_seq: u64) -> Result<Vec<u64>> {
        let start = keys::conv_log(conv, after_seq.saturating_add(1));
        let mut out = Vec::new();
        let iter = self.iter_from(Family::ConvLog, &start);
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(&conv.0) || k.len() != conv.0.len() + 8 {
                break;
            }
            out.push(keys::u64_value(&v).ok_or_else(|| StoreError::Corrupt("conv_log".into()))?);
        }
        Ok(out)
    }
}
