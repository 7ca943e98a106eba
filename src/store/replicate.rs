//! Replicating the store's commit groups to a log beyond this machine (the cluster's
//! partition log, docs/CLUSTER.md section 4), and the records that carry them.
//!
//! With a [`Replicator`] set, the committer appends each group as one record before it writes
//! the group to RocksDB; only an appended group is written and acknowledged. A record names
//! each column family by its on-disk name (family ids differ between data directories made by
//! different versions), so replaying it into any data directory of the same schema rebuilds
//! the same keys.
//!
//! A record: `G`, the number of writes (u32, big-endian), then per write: the family name's length (u8) and name, `1` put or `0`
//! delete, the key's length (u32, big-endian) and key, and for a put the value's length (u32)
//! and value. Records of other kinds (the log's `E` epoch records) carry no writes.

use super::family::Family;

/// Makes a commit group durable before it is written and acknowledged.
pub trait Replicator: Send + Sync {
    /// Appends `record`; returns its position in the log. An error fails the group (nothing
    /// acknowledged) and the store (it refuses every later change).
    fn append(&self, record: Vec<u8>) -> Result<u64, String>;
}

/// The `Meta` key holding the log position of the last group written (u64, big-endian).
pub const LOG_SEQ_KEY: &[u8] = b"log_seq";

/// The `Meta` key naming the cluster whose log a data directory follows (written locally, not
/// through the log; `Store::claim_for_cluster`).
pub const CLUSTER_KEY: &[u8] = b"cluster";

/// A record being built from a group's writes.
pub(super) struct RecordBuilder(Vec<u8>, u32);

impl RecordBuilder {
    pub(super) fn with_capacity(bytes: usize) -> RecordBuilder {
        let mut v = Vec::with_capacity(bytes + 5);
        v.push(b'G');
        v.extend_from_slice(&0u32.to_be_bytes());
        RecordBuilder(v, 0)
    }

    pub(super) fn write(&mut self, family: Family, key: &[u8], value: Option<&[u8]>) {
        let name = family.name().as_bytes();
        self.1 += 1;
        self.0.push(name.len() as u8);
        self.0.extend_from_slice(name);
        self.0.push(u8::from(value.is_some()));
        self.0.extend_from_slice(&(key.len() as u32).to_be_bytes());
        self.0.extend_from_slice(key);
        if let Some(v) = value {
            self.0.extend_from_slice(&(v.len() as u32).to_be_bytes());
            self.0.extend_from_slice(v);
        }
    }

    pub(super) fn finish(mut self) -> Vec<u8> {
        self.0[1..5].copy_from_slice(&self.1.to_be_bytes());
        self.0
    }
}

/// The first `n` bytes of `rest`, which moves past them.
fn cut<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if rest.len() < n {
        return Err("a group record ends early".into());
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

/// One write of a record.
pub(super) type Write<'a> = (Family, &'a [u8], Option<&'a [u8]>);

/// The writes of `record`: none for a record that is not a group; an error for a group that
/// does not parse or names a family this version does not know.
pub(super) fn writes(record: &[u8]) -> Result<Vec<Write<'_>>, String> {
    let Some((&b'G', mut rest)) = record.split_first() else {
        return Ok(Vec::new());
    };
    let count = u32::from_be_bytes(cut(&mut rest, 4)?.try_into().expect("4 bytes"));
    let mut out = Vec::with_capacity(count.min(1 << 16) as usize);
    for _ in 0..count {
        let len = cut(&mut rest, 1)?[0] as usize;
        let name = std::str::from_utf8(cut(&mut rest, len)?).map_err(|e| e.to_string())?;
        let family = Family::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| format!("a group record names an unknown family {name:?}"))?;
        let put = cut(&mut rest, 1)?[0] == 1;
        let klen = u32::from_be_bytes(cut(&mut rest, 4)?.try_into().expect("4 bytes")) as usize;
        let key = cut(&mut rest, klen)?;
        let value = if put {
            let vlen = u32::from_be_bytes(cut(&mut rest, 4)?.try_into().expect("4 bytes")) as usize;
            Some(cut(&mut rest, vlen)?)
        } else {
            None
        };
        out.push((family, key, value));
    }
    if !rest.is_empty() {
        return Err("a group record has bytes after its last write".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written_and_a_broken_one_is_an_error() {
        let mut b = RecordBuilder::with_capacity(64);
        b.write(Family::Inbox, b"k1", Some(b"v1"));
        b.write(Family::Contacts, b"k2", None);
        b.write(Family::Meta, b"", Some(b""));
        let record = b.finish();
        let w = writes(&record).unwrap();
        assert_eq!(
            w,
            vec![
                (Family::Inbox, &b"k1"[..], Some(&b"v1"[..])),
                (Family::Contacts, &b"k2"[..], None),
                (Family::Meta, &b""[..], Some(&b""[..])),
            ]
        );
        assert!(writes(b"Eepoch 3").unwrap().is_empty());
        for cut in 1..record.len() {
            assert!(writes(&record[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = record.clone();
        longer.push(0);
        assert!(writes(&longer).is_err());
    }
}
