//! Upgrades of older data directories, run once when the store is opened.

use std::collections::HashMap;

use missive_protocol::pb::{FanoutMode, GroupInfo};
use prost::Message as _;

use super::core::Core;
use super::error::Result;
use super::family::Family;
use super::keys::{self, ConvKey};
use super::read::Reader;

/// Schema 2 to 3: groups store their fan-out mode; every member of a write fan-out group gets
/// its unread count stored (and added to its total), every member of a read fan-out group an
/// index entry; every user its group count. Modes are given by `fanout_threshold` (the
/// setting missived runs with). One atomic batch: a crash part way leaves schema 2 as it was,
/// and the next open starts again.
pub(super) fn to_3(core: &Core, fanout_threshold: usize) -> Result<()> {
    let mut batch = rocksdb::WriteBatch::default();
    let mut group_count: HashMap<String, u64> = HashMap::new();
    let mut added: HashMap<String, u64> = HashMap::new();
    for item in core.iter_from(Family::Groups, &[]) {
        let (key, value) = item?;
        let mut info = GroupInfo::decode(&value[..])?;
        let members = core.member_ids(&info.group_id)?;
        let mode = if members.len() > fanout_threshold {
            FanoutMode::Read
        } else {
            FanoutMode::Write
        };
        info.fanout = mode as i32;
        info.member_count = members.len() as u32;
        batch.put_cf(core.cf(Family::Groups), &key, info.encode_to_vec());
        let ck = ConvKey::group(&info.group_id);
        let last = core.get_u64(Family::Convs, &ck.0)?;
        for m in members {
            *group_count.entry(m.clone()).or_default() += 1;
            if mode == FanoutMode::Read {
                let k = keys::read_group(&m, &info.group_id);
                batch.put_cf(core.cf(Family::Unread), k, []);
                continue;
            }
            let pos = core.get_u64(Family::Unread, &keys::read_pos(&m, &ck))?;
            if last <= pos {
                continue;
            }
            let from = keys::recalled(&ck, pos.saturating_add(1));
            let to = keys::recalled(&ck, last.saturating_add(1));
            let count =
                (last - pos).saturating_sub(core.count_keys(Family::Recalled, &from, &to)?);
            if count > 0 {
                let k = keys::unread_conv(&m, &ck);
                batch.put_cf(core.cf(Family::Unread), k, count.to_be_bytes());
                *added.entry(m).or_default() += count;
            }
        }
    }
    for (user, n) in group_count {
        batch.put_cf(
            core.cf(Family::Unread),
            keys::group_count(&user),
            n.to_be_bytes(),
        );
    }
    for (user, n) in added {
        let total = core.get_u64(Family::Unread, &keys::unread_total(&user))? + n;
        let k = keys::unread_total(&user);
        batch.put_cf(core.cf(Family::Unread), k, total.to_be_bytes());
    }
    batch.put_cf(core.cf(Family::Meta), b"schema", 3u32.to_be_bytes());
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(true);
    core.db().write_opt(batch, &wo)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use missive_protocol::pb::{FanoutMode, GroupInfo, GroupMember};
    use prost::Message as _;
    use rocksdb::{Options, DB};

    use super::super::conversation::group_conv;
    use super::super::core::Durability;
    use super::super::family::Family;
    use super::super::keys::{self, ConvKey};
    use super::super::read::Reader;
    use super::super::writer::Store;

    /// A schema 2 directory: one group of three (alice owns; bob read up to 2, carol up to 0)
    /// with 5 messages, seq 4 recalled.
    fn schema_2(dir: &std::path::Path) {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let db = DB::open_cf(&opts, dir, Family::ALL.map(Family::name)).unwrap();
        let put = |family: Family, k: &[u8], v: &[u8]| {
            db.put_cf(db.cf_handle(family.name()).unwrap(), k, v)
                .unwrap();
        };
        put(Family::Meta, b"schema", &2u32.to_be_bytes());
        let info = GroupInfo {
            group_id: "g1".into(),
            owner: "alice".into(),
            member_count: 3,
            ..Default::default()
        };
        put(Family::Groups, &keys::group("g1"), &info.encode_to_vec());
        let ck = ConvKey::group("g1");
        for (user, pos) in [("alice", 5u64), ("bob", 2), ("carol", 0)] {
            let m = GroupMember {
                user_id: user.into(),
                ..Default::default()
            };
            put(
                Family::Members,
                &keys::member("g1", user),
                &m.encode_to_vec(),
            );
            put(Family::UserGroups, &keys::user_group(user, "g1"), b"");
            put(
                Family::Unread,
                &keys::read_pos(user, &ck),
                &pos.to_be_bytes(),
            );
        }
        put(Family::Convs, &ck.0, &5u64.to_be_bytes());
        for seq in 1..=5u64 {
            let msg = missive_protocol::pb::Message {
                msg_id: seq,
                from_user: "alice".into(),
                conversation: Some(group_conv("g1")),
                seq,
                recalled: seq == 4,
                ..Default::default()
            };
            put(Family::Content, &keys::content(seq), &msg.encode_to_vec());
            put(
                Family::ConvLog,
                &keys::conv_log(&ck, seq),
                &seq.to_be_bytes(),
            );
        }
        put(Family::Recalled, &keys::recalled(&ck, 4), b"");
    }

    #[test]
    fn a_schema_2_group_gets_stored_counts_in_write_fanout() {
        let dir = tempfile::tempdir().unwrap();
        schema_2(dir.path());
        let store = Store::open_with(dir.path(), Durability::Async, 100).unwrap();
        let ck = ConvKey::group("g1");
        let count = |u: &str| {
            store
                .core()
                .get_u64(Family::Unread, &keys::unread_conv(u, &ck))
                .unwrap()
        };
        // Messages after the position, less the recalled seq 4.
        assert_eq!((count("alice"), count("bob"), count("carol")), (0, 2, 4));
        assert_eq!(
            store.core().unread_total("bob").unwrap(),
            2,
            "the stored total gets the group's"
        );
        assert_eq!(store.core().unread_total("carol").unwrap(), 4);
        for u in ["alice", "bob", "carol"] {
            assert_eq!(
                store
                    .core()
                    .get_u64(Family::Unread, &keys::group_count(u))
                    .unwrap(),
                1
            );
            assert!(store.core().read_groups(u).unwrap().is_empty());
        }
        let info = store.core().group("g1").unwrap();
        assert_eq!(info.fanout(), FanoutMode::Write);
        for u in ["alice", "bob", "carol"] {
            store.core().check_user(u).unwrap();
        }
        drop(store);
        // Opening again changes nothing (the schema is 3 now).
        let store = Store::open_with(dir.path(), Durability::Async, 100).unwrap();
        assert_eq!(store.core().unread_total("bob").unwrap(), 2);
    }

    #[test]
    fn a_schema_2_group_above_the_threshold_becomes_read_fanout() {
        let dir = tempfile::tempdir().unwrap();
        schema_2(dir.path());
        let store = Store::open_with(dir.path(), Durability::Async, 2).unwrap();
        assert_eq!(store.core().group("g1").unwrap().fanout(), FanoutMode::Read);
        for u in ["alice", "bob", "carol"] {
            assert_eq!(store.core().read_groups(u).unwrap(), ["g1"], "{u}");
        }
        // Computed, not stored: the same counts.
        assert_eq!(store.core().unread_total("bob").unwrap(), 2);
        assert_eq!(store.core().unread_total("carol").unwrap(), 4);
        assert_eq!(store.core().unread_total("alice").unwrap(), 0);
        for u in ["alice", "bob", "carol"] {
            store.core().check_user(u).unwrap();
        }
    }
}
