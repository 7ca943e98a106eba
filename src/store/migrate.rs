//! Upgrades of older data directories, run once when the store is opened.

use std::collections::HashMap;

use missive_protocol::pb::{FanoutMode, GroupInfo};
use prost::Message as _;

use super::{cf, keys, ConvKey, Core, Reader, Result};

/// Schema 2 to 3: groups store their fan-out mode; every member of a write fan-out group gets
/// its unread count stored (and added to its total), every member of a read fan-out group an
/// index entry; every user its group count. Modes are given by `fanout_threshold` (the
/// setting missived runs with). One atomic batch: a crash part way leaves schema 2 as it was,
/// and the next open starts again.
pub(super) fn to_3(core: &Core, fanout_threshold: usize) -> Result<()> {
    let mut batch = rocksdb::WriteBatch::default();
    let mut group_count: HashMap<String, u64> = HashMap::new();
    let mut added: HashMap<String, u64> = HashMap::new();
    for item in core.iter_from(cf::GROUPS, &[]) {
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
        batch.put_cf(core.cf(cf::GROUPS), &key, info.encode_to_vec());
        let ck = ConvKey::group(&info.group_id);
        let last = core.get_u64(cf::CONVS, &ck.0)?;
        for m in members {
            *group_count.entry(m.clone()).or_default() += 1;
            if mode == FanoutMode::Read {
                let k = keys::read_group(&m, &info.group_id);
                batch.put_cf(core.cf(cf::UNREAD), k, []);
                continue;
            }
            let pos = core.get_u64(cf::UNREAD, &keys::read_pos(&m, &ck))?;
            if last <= pos {
                continue;
            }
            let from = keys::recalled(&ck, pos + 1);
            let to = keys::recalled(&ck, last.saturating_add(1));
            let count = (last - pos).saturating_sub(core.count_keys(cf::RECALLED, &from, &to)?);
            if count > 0 {
                let k = keys::unread_conv(&m, &ck);
                batch.put_cf(core.cf(cf::UNREAD), k, count.to_be_bytes());
                *added.entry(m).or_default() += count;
            }
        }
    }
    for (user, n) in group_count {
        batch.put_cf(
            core.cf(cf::UNREAD),
            keys::group_count(&user),
            n.to_be_bytes(),
        );
    }
    for (user, n) in added {
        let total = core.get_u64(cf::UNREAD, &keys::unread_total(&user))? + n;
        let k = keys::unread_total(&user);
        batch.put_cf(core.cf(cf::UNREAD), k, total.to_be_bytes());
    }
    batch.put_cf(core.cf(cf::META), b"schema", 3u32.to_be_bytes());
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(true);
    core.db().write_opt(batch, &wo)?;
    Ok(())
}
