//! Key codecs. Integers are fixed-width big-endian so that prefix scans return them in order.
//!
//! A user id is written as one length byte and its bytes (ids are at most 64 bytes), so one
//! user's keys never run into another's.

use missive_protocol::pb::{Conversation, ConversationKind};

/// The canonical key of a conversation: the same for both sides of a direct conversation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConvKey(pub Vec<u8>);

impl ConvKey {
    /// `d` + the two user ids, sorted, each length-prefixed.
    pub fn direct(a: &str, b: &str) -> ConvKey {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let mut k = Vec::with_capacity(3 + lo.len() + hi.len());
        k.push(b'd');
        push_id(&mut k, lo);
        push_id(&mut k, hi);
        ConvKey(k)
    }

    /// `g` + the group id.
    pub fn group(id: &str) -> ConvKey {
        let mut k = Vec::with_capacity(2 + id.len());
        k.push(b'g');
        push_id(&mut k, id);
        ConvKey(k)
    }

    /// The key of `conv` as seen by `viewer`.
    pub fn for_view(viewer: &str, conv: &Conversation) -> ConvKey {
        if conv.kind == ConversationKind::Group as i32 {
            ConvKey::group(&conv.id)
        } else {
            ConvKey::direct(viewer, &conv.id)
        }
    }

    /// The conversation as `viewer` sees it, decoded from the key.
    pub fn view(&self, viewer: &str) -> Option<Conversation> {
        let (&tag, rest) = self.0.split_first()?;
        let (first, rest) = take_id(rest)?;
        match tag {
            b'g' => Some(Conversation {
                kind: ConversationKind::Group as i32,
                id: first.to_owned(),
            }),
            b'd' => {
                let (second, _) = take_id(rest)?;
                let peer = if first == viewer { second } else { first };
                Some(Conversation {
                    kind: ConversationKind::Direct as i32,
                    id: peer.to_owned(),
                })
            }
            _ => None,
        }
    }
}

fn push_id(k: &mut Vec<u8>, id: &str) {
    k.push(id.len() as u8);
    k.extend_from_slice(id.as_bytes());
}

fn take_id(b: &[u8]) -> Option<(&str, &[u8])> {
    let (&len, rest) = b.split_first()?;
    let len = len as usize;
    if rest.len() < len {
        return None;
    }
    let id = std::str::from_utf8(&rest[..len]).ok()?;
    Some((id, &rest[len..]))
}

/// The prefix of every key of one user.
pub fn user_prefix(user: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + user.len() + 24);
    push_id(&mut k, user);
    k
}

/// `revoked`: user.
pub fn revoked(user: &str) -> Vec<u8> {
    user_prefix(user)
}

/// `inbox`: user + version.
pub fn inbox(user: &str, version: u64) -> Vec<u8> {
    let mut k = user_prefix(user);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// The version in an `inbox` key.
pub fn inbox_version(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// `content`: message id.
pub fn content(msg_id: u64) -> [u8; 8] {
    msg_id.to_be_bytes()
}

/// `contacts`: user + conversation.
pub fn contact(user: &str, conv: &ConvKey) -> Vec<u8> {
    let mut k = user_prefix(user);
    k.extend_from_slice(&conv.0);
    k
}

const UNREAD_TOTAL: u8 = 0;
const UNREAD_CONV: u8 = 1;
const READ_POS: u8 = 2;
const HIDDEN: u8 = 3;
const READ_GROUP: u8 = 4;
const GROUP_COUNT: u8 = 5;
const MUTED: u8 = 6;
const BLOCKED: u8 = 7;
const BLOCK_COUNT: u8 = 8;
const SEEN: u8 = 9;

/// `unread`: user + 0: the user's total unread count.
pub fn unread_total(user: &str) -> Vec<u8> {
    let mut k = user_prefix(user);
    k.push(UNREAD_TOTAL);
    k
}

/// `unread`: user + 1 + conversation: the conversation's unread count.
pub fn unread_conv(user: &str, conv: &ConvKey) -> Vec<u8> {
    let mut k = user_prefix(user);
    k.push(UNREAD_CONV);
    k.extend_from_slice(&conv.0);
    k
}

/// The prefix of all of a user's per-conversation unread counts.
pub fn unread_conv_prefix(user: &str) -> Vec<u8> {
    let mut k = user_prefix(user);
    k.push(UNREAD_CONV);
    k
}

/// `unread`: user + 2 + conversation: the seq the user has read up to.
pub fn read_pos(user: &str, conv: &ConvKey) -> Vec<u8> {
    let mut k = user_prefix(user);
    k.push(READ_POS);
    k.extend_from_slice(&conv.0);
    k
}

/// `unread`: user + 3 + message id: the user deleted this message from their view.
pub fn hidden(user: &str, msg_id: u64) -> Vec<u8> {
    let mut k = user_prefix(user);
    k.push(HIDDEN);
    k.extend_from_slice(&msg_id.to_be_bytes());
    k
}

/// `unread`: user + 4 + group id: the user is a member of this read fan-out group, whose unread
/// count is computed (not stored).
pub fn read_group(user: &str, group_id: &str) -> Vec<u8> {
    let mut k = user_prefix(user);
    k.push(READ_GROUP);
    k.extend_from_slice(group_id.as_bytes());
    k
}

/// `unread`: user + 5: the number of groups the user belongs to.
pub fn group_count(user: &str) -> Vec<u8> {
    let mut k = user_prefix(user);
    k.push(GROUP_COUNT);
    k
}

/// `unread`: user + 6 + conversation: the user muted the conversation (no offline push but
/// @mentions).
pub fn muted(user: &str, conv: &ConvKey) -> Vec<u8> {
    let mut k = user_prefix(user);
    k.push(MUTED);
    k.extend_from_slice(&conv.0);
    k
}

/// `unread`: user + 7 + other user: the user blocked the other user (BLOCK).
pub fn blocked(user: &str, other: &str) -> Vec<u8> {
    let mut k = blocked_prefix(user);
    k.extend_from_slice(other.as_bytes());
    k
}

/// The prefix of the users `user` blocked ([`blocked`] keys, in user id order).
pub fn blocked_prefix(user: &str) -> Vec<u8> {
    let mut k = user_prefix(user);
    k.push(BLOCKED);
    k
}

/// `unread`: `b` + the direct conversation of two users: which of them blocked the other (one
/// byte: [`BLOCKED_BY_LOWER`], [`BLOCKED_BY_HIGHER`], by the ids' order), so that a send reads
/// one key for both directions. A user key never starts with `b` (its first byte is a length,
/// at most 64).
pub fn block_pair(a: &str, b: &str) -> Vec<u8> {
    let conv = ConvKey::direct(a, b);
    let mut k = Vec::with_capacity(1 + conv.0.len());
    k.push(b'b');
    k.extend_from_slice(&conv.0);
    k
}

/// In a [`block_pair`] value: the user whose id sorts first blocked the other.
pub const BLOCKED_BY_LOWER: u8 = 1;
/// In a [`block_pair`] value: the user whose id sorts last blocked the other.
pub const BLOCKED_BY_HIGHER: u8 = 2;

/// `unread`: user + 8: the number of users the user blocked.
pub fn block_count(user: &str) -> Vec<u8> {
    let mut k = user_prefix(user);
    k.push(BLOCK_COUNT);
    k
}

/// `unread`: user + 9: the user logged in once (`user.first_seen` was queued).
pub fn seen(user: &str) -> Vec<u8> {
    let mut k = user_prefix(user);
    k.push(SEEN);
    k
}

/// The smallest key above every key that starts with `prefix` (`None`: no such key, the
/// prefix being all 0xff bytes): an iterator's upper bound.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The prefix of a user's read fan-out groups ([`read_group`] keys).
pub fn read_group_prefix(user: &str) -> Vec<u8> {
    let mut k = user_prefix(user);
    k.push(READ_GROUP);
    k
}

/// `dedup`: sender + client message id.
pub fn dedup(user: &str, client_msg_id: &str) -> Vec<u8> {
    let mut k = user_prefix(user);
    k.extend_from_slice(client_msg_id.as_bytes());
    k
}

/// `conv_log`: conversation + seq.
pub fn conv_log(conv: &ConvKey, seq: u64) -> Vec<u8> {
    let mut k = conv.0.clone();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `groups`: group id.
pub fn group(id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + id.len());
    push_id(&mut k, id);
    k
}

const MEMBER_ACTIVE: u8 = 0;
const MEMBER_FORMER: u8 = 1;

/// `members`: group + 0 + user: a current member.
pub fn member(group_id: &str, user: &str) -> Vec<u8> {
    let mut k = member_prefix(group_id);
    k.extend_from_slice(user.as_bytes());
    k
}

/// The prefix of a group's current members.
pub fn member_prefix(group_id: &str) -> Vec<u8> {
    let mut k = group(group_id);
    k.push(MEMBER_ACTIVE);
    k
}

/// `members`: group + 1 + user: a former member (keeps the first join position).
pub fn former_member(group_id: &str, user: &str) -> Vec<u8> {
    let mut k = group(group_id);
    k.push(MEMBER_FORMER);
    k.extend_from_slice(user.as_bytes());
    k
}

/// `user_groups`: user + group id.
pub fn user_group(user: &str, group_id: &str) -> Vec<u8> {
    let mut k = user_prefix(user);
    k.extend_from_slice(group_id.as_bytes());
    k
}

/// `recalled`: conversation + seq.
pub fn recalled(conv: &ConvKey, seq: u64) -> Vec<u8> {
    conv_log(conv, seq)
}

/// `push_queue`: message id + user (the user id unprefixed: it runs to the end of the key).
pub fn push(msg_id: u64, user: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + user.len());
    k.extend_from_slice(&msg_id.to_be_bytes());
    k.extend_from_slice(user.as_bytes());
    k
}

/// The message id and user of a `push_queue` key.
pub fn push_parts(key: &[u8]) -> Option<(u64, &str)> {
    let id = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let user = std::str::from_utf8(key.get(8..)?).ok()?;
    (!user.is_empty()).then_some((id, user))
}

/// Big-endian u64 value.
pub fn u64_value(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_above_every_key_of_the_prefix_and_below_the_rest() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        let p = read_group_prefix("u");
        let end = prefix_end(&p).unwrap();
        assert!(read_group("u", "g\u{10ffff}").as_slice() < end.as_slice());
        assert!(
            end.as_slice()
                <= user_prefix("u")
                    .iter()
                    .chain(&[READ_GROUP + 1])
                    .copied()
                    .collect::<Vec<u8>>()
                    .as_slice()
        );
    }

    #[test]
    fn direct_key_is_symmetric_and_views_the_peer() {
        let k = ConvKey::direct("bob", "alice");
        assert_eq!(k, ConvKey::direct("alice", "bob"));
        assert_eq!(k.view("alice").unwrap().id, "bob");
        assert_eq!(k.view("bob").unwrap().id, "alice");
        let g = ConvKey::group("g1");
        let v = g.view("anyone").unwrap();
        assert_eq!(
            (v.kind, v.id.as_str()),
            (ConversationKind::Group as i32, "g1")
        );
        let conv = Conversation {
            kind: ConversationKind::Direct as i32,
            id: "bob".into(),
        };
        assert_eq!(ConvKey::for_view("alice", &conv), k);
    }

    #[test]
    fn inbox_keys_sort_by_version_and_round_trip() {
        let a = inbox("u", 2);
        let b = inbox("u", 256);
        assert!(a < b);
        assert_eq!(inbox_version(&b), Some(256));
        // One user's keys never interleave with a user whose id extends it.
        assert!(inbox("u", u64::MAX) < inbox("uu", 0));
    }

    #[test]
    fn push_keys_sort_by_message_and_round_trip() {
        let a = push(5, "zed");
        let b = push(6, "al");
        assert!(a < b, "message order first");
        assert_eq!(push_parts(&b), Some((6, "al")));
        assert_eq!(push_parts(&push(7, "")), None);
        assert_eq!(push_parts(&[1, 2]), None);
    }

    #[test]
    fn conv_log_and_values_round_trip() {
        let c = ConvKey::group("g");
        assert!(conv_log(&c, 9) < conv_log(&c, 10));
        assert_eq!(u64_value(&42u64.to_be_bytes()), Some(42));
        assert_eq!(u64_value(&[1, 2]), None);
    }
}
