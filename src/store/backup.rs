//! Backups of a running store: a RocksDB checkpoint ([`Core::checkpoint`]), and what a
//! checkpoint or a restored store holds ([`inspect`]), read from it opened read-only.
//!
//! A checkpoint is taken while the writer goes on committing. Each group commit is one
//! `WriteBatch`, and RocksDB applies a batch atomically, so a checkpoint holds a prefix of the
//! committed groups: every group committed (and so every change answered) before the checkpoint
//! started, none half, and perhaps some committed while it ran.

use std::collections::BTreeSet;
use std::path::Path;

use rocksdb::{Options, DB};

use super::core::{Core, Durability};
use super::error::{Result, StoreError};
use super::family::Family;
use super::media::MediaRecord;

/// What a store holds that a backup needs to know, read from the store itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inspected {
    /// The schema version stored (`Family::Meta`'s `schema`).
    pub schema: u32,
    /// RocksDB's sequence number of the last write the store holds.
    pub sequence: u64,
    /// The position in the cluster's partition log of the last replicated group it holds (0:
    /// none, or not a cluster's store).
    pub log_seq: u64,
    /// The largest message id stored (0: none); its high bits are its time in milliseconds.
    pub last_msg_id: u64,
    /// Finished media records.
    pub media: u64,
    /// The files (sha-256, 64 hex digits) the media records use: each one's bytes and, for an
    /// image, its thumbnail.
    pub files: BTreeSet<String>,
    /// Uploads in progress (their ids).
    pub uploads: Vec<String>,
}

impl Core {
    /// Writes a checkpoint of the store into `dir`, which must not exist yet (its parent must).
    /// Memtables are flushed first and the table files hard-linked (copied when `dir` is on
    /// another filesystem); the store keeps serving and the writer keeps committing meanwhile.
    /// The checkpoint holds a prefix of the committed groups (see the module's comment).
    pub fn checkpoint(&self, dir: &Path) -> Result<()> {
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&self.db)?;
        checkpoint.create_checkpoint(dir)?;
        Ok(())
    }
}

/// Opens the store in `dir` read-only (a checkpoint, or a data directory's `db` no server has
/// open) and reads what [`Inspected`] lists. Fails when a column family of the schema is
/// missing, or when the schema version is absent or unreadable.
pub fn inspect(dir: &Path) -> Result<Inspected> {
    let opts = Options::default();
    let names = DB::list_cf(&opts, dir)?;
    for family in Family::ALL {
        if !names.iter().any(|n| n == family.name()) {
            return Err(StoreError::Corrupt(format!(
                "{}: the column family {:?} is missing",
                dir.display(),
                family.name()
            )));
        }
    }
    let db = DB::open_cf_for_read_only(&opts, dir, &names, false)?;
    let core = Core::with_db(db, opts, Durability::Async);
    let schema = match core.db.get_cf(core.cf(Family::Meta), b"schema")? {
        Some(v) => u32::from_be_bytes(v[..].try_into().map_err(|_| {
            StoreError::Corrupt(format!(
                "{}: the schema version is unreadable",
                dir.display()
            ))
        })?),
        None => {
            return Err(StoreError::Corrupt(format!(
                "{}: no schema version is stored",
                dir.display()
            )))
        }
    };
    let mut out = Inspected {
        schema,
        sequence: core.db.latest_sequence_number(),
        log_seq: core.log_seq()?,
        last_msg_id: core.last_key_u64(Family::Content)?,
        uploads: core.stale_uploads(i64::MAX, usize::MAX)?,
        ..Inspected::default()
    };
    // Media records are the `m` + media id keys of `store::media`.
    for item in core.iter_prefix(Family::Media, b"m") {
        let (_, v) = item?;
        let record = <MediaRecord as prost::Message>::decode(&*v)?;
        out.media += 1;
        for sha in [record.sha256, record.thumbnail_sha256] {
            if !sha.is_empty() {
                if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(StoreError::Corrupt(format!(
                        "a media record names the file {sha:?}"
                    )));
                }
                out.files.insert(sha);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::conversation::SendRequest;
    use super::super::family::SCHEMA_VERSION;
    use super::super::media::UploadRecord;
    use super::super::writer::Store;
    use super::*;

    fn send(store: &Store, i: u32) {
        let req = SendRequest {
            from: "alice".into(),
            client_msg_id: format!("c{i}"),
            to: missive_protocol::pb::Conversation {
                kind: missive_protocol::pb::ConversationKind::Direct as i32,
                id: "bob".into(),
            },
            content_type: 1,
            content: format!("m{i}").into_bytes(),
            now_ms: 1_764_000_000_000,
            ..Default::default()
        };
        store.send_direct(req, None).wait().unwrap();
    }

    #[test]
    fn a_checkpoint_taken_while_writing_holds_every_earlier_write_and_its_media() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), Durability::Async).unwrap();
        for i in 0..50 {
            send(&store, i);
        }
        let up = UploadRecord {
            owner: "alice".into(),
            size: 10,
            ..Default::default()
        };
        let (a, b, m) = ("a".repeat(32), "b".repeat(32), "c".repeat(32));
        store.create_upload(&a, up.clone(), 1, 1000).wait().unwrap();
        store.create_upload(&b, up, 1, 1000).wait().unwrap();
        let record = MediaRecord {
            owner: "alice".into(),
            size: 10,
            sha256: "e".repeat(64),
            thumbnail_sha256: "f".repeat(64),
            ..Default::default()
        };
        store.finish_upload(&a, &m, record).wait().unwrap();
        let before = store.core().current_version("bob").unwrap();
        assert_eq!(before, 50);
        // Writes go on while the checkpoint is taken.
        std::thread::scope(|s| {
            let w = s.spawn(|| {
                for i in 50..250 {
                    send(&store, i);
                }
            });
            store.core().checkpoint(&dir.path().join("cp")).unwrap();
            w.join().unwrap();
        });
        let got = inspect(&dir.path().join("cp")).unwrap();
        assert_eq!(got.schema, SCHEMA_VERSION);
        assert_eq!(got.media, 1);
        assert_eq!(got.files, BTreeSet::from(["e".repeat(64), "f".repeat(64)]));
        assert_eq!(got.uploads, vec![b]);
        assert!(got.sequence > 0 && got.last_msg_id > 0);
        // The checkpoint opens as a store, with a gapless prefix of bob's inbox.
        let cp = Store::open(&dir.path().join("cp"), Durability::Async).unwrap();
        let n = cp.core().current_version("bob").unwrap();
        assert!((before..=250).contains(&n), "{n}");
        let page = cp
            .core()
            .inbox_after("bob", crate::ids::Version(0), 1000, 1 << 20)
            .unwrap();
        let versions: Vec<u64> = page.entries.iter().map(|e| e.version).collect();
        assert_eq!(versions, (1..=n).collect::<Vec<_>>());
    }

    #[test]
    fn inspect_refuses_a_store_without_every_family() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let db = DB::open_cf(&opts, dir.path(), ["meta", "content"]).unwrap();
        drop(db);
        let err = inspect(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is missing"), "{err}");
    }
}
