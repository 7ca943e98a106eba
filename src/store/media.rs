//! Media records (issue #19, docs/media.md), in the `media` family: uploads in progress, finished
//! media, which media use which file, and each user's bytes of the day. The bytes themselves
//! live in files under the data directory (`service::media`); a media record is written only
//! after its file is complete, synced and in place, so a crash never leaves a record that looks
//! finished without its bytes.
//!
//! Keys: `u` + upload id -> [`UploadRecord`]; `m` + media id -> [`MediaRecord`]; `b` + sha-256
//! (hex) + media id -> () (the media a stored file serves); `q` + user + day (u32) -> u64 bytes
//! (uploads created that day, counted at creation); `r` + media id + message id (u64) ->
//! conversation key: the messages that carry a media, which give their conversation's members
//! the right to read it, and keep it alive until each is recalled.

use missive_protocol::pb::{self, ConversationKind, MediaRef};
use missive_protocol::ErrorCode;

use super::change::Change;
use super::core::Core;
use super::error::{Result, StoreError};
use super::family::Family;
use super::keys::{self, ConvKey};
use super::membership::member_of;
use super::pending::Pending;
use super::read::Reader;
use super::writer::Store;

/// An upload in progress: what its creator declared. How much arrived is its file's length.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UploadRecord {
    #[prost(string, tag = "1")]
    pub owner: String,
    /// The size declared at creation: the upload is finished at exactly this many bytes.
    #[prost(uint64, tag = "2")]
    pub size: u64,
    /// The content type the client declared (the stored one is sniffed from the bytes).
    #[prost(string, tag = "3")]
    pub declared_type: String,
    /// The sha-256 the client declared (64 hex digits), or empty.
    #[prost(string, tag = "4")]
    pub sha256: String,
    #[prost(int64, tag = "5")]
    pub created_ms: i64,
}

/// A finished upload.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MediaRecord {
    #[prost(string, tag = "1")]
    pub owner: String,
    #[prost(uint64, tag = "2")]
    pub size: u64,
    /// The bytes' sha-256 (64 hex digits): also the name of its file.
    #[prost(string, tag = "3")]
    pub sha256: String,
    /// Sniffed from the bytes.
    #[prost(string, tag = "4")]
    pub content_type: String,
    #[prost(uint32, tag = "5")]
    pub width: u32,
    #[prost(uint32, tag = "6")]
    pub height: u32,
    #[prost(uint64, tag = "7")]
    pub duration_ms: u64,
    #[prost(int64, tag = "8")]
    pub created_ms: i64,
    /// The thumbnail's file (sha-256), for an image; empty otherwise.
    #[prost(string, tag = "9")]
    pub thumbnail_sha256: String,
    #[prost(string, tag = "10")]
    pub thumbnail_type: String,
    /// The inline preview (a tiny JPEG of a few hundred bytes), for an image.
    #[prost(bytes = "vec", tag = "11")]
    pub preview: Vec<u8>,
}

/// A media or upload id: 32 lowercase hex digits (128 random bits). Anything else (a path
/// trick, another length) is no id at all.
pub fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn upload_key(id: &str) -> Vec<u8> {
    [b"u", id.as_bytes()].concat()
}

fn media_key(id: &str) -> Vec<u8> {
    [b"m", id.as_bytes()].concat()
}

fn blob_key(sha256: &str, media_id: &str) -> Vec<u8> {
    [b"b", sha256.as_bytes(), media_id.as_bytes()].concat()
}

fn quota_key(user: &str, day: u32) -> Vec<u8> {
    let mut k = b"q".to_vec();
    k.extend_from_slice(&keys::user_prefix(user));
    k.extend_from_slice(&day.to_be_bytes());
    k
}

/// Media one message may carry.
pub const MAX_MEDIA: usize = 10;

/// Someone other than its uploader reads a media through one of the first this many messages
/// that carry it (bounded work per download and per forward).
const REFS_CHECKED: usize = 32;

fn ref_key(media_id: &str, msg_id: u64) -> Vec<u8> {
    [b"r", media_id.as_bytes(), &msg_id.to_be_bytes()].concat()
}

/// Whether `user` may read media `id` (record `m`): its uploader, or a member of a conversation
/// one of whose messages carries it.
fn may_read(core: &Core, user: &str, id: &str, m: &MediaRecord) -> Result<bool> {
    if m.owner == user {
        return Ok(true);
    }
    let prefix = [b"r", id.as_bytes()].concat();
    for item in core.iter_prefix(Family::Media, &prefix).take(REFS_CHECKED) {
        let (_, conv) = item?;
        let conv = ConvKey(conv.to_vec());
        // The conversation as `user` would see it: a group to be a member of, or a direct
        // conversation that is `user`'s exactly when rebuilt with `user` as one side.
        let member = match conv.view(user) {
            Some(c) if c.kind == ConversationKind::Group as i32 => {
                member_of(core, &c.id, user)?.is_some()
            }
            Some(c) => ConvKey::direct(user, &c.id) == conv,
            None => false,
        };
        if member {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The media of a message `from` sends, by id, as stored: each must exist and be readable by
/// `from` (NOT_FOUND otherwise, as for an id that does not exist).
pub(crate) fn resolve(txn: &Change<'_>, from: &str, ids: &[String]) -> Result<Vec<MediaRef>> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let record: Option<MediaRecord> = txn.get_msg(Family::Media, &media_key(id))?;
        let Some(m) = record else {
            return Err(no_such_media(id));
        };
        if !may_read(txn.core(), from, id, &m)? {
            return Err(no_such_media(id));
        }
        out.push(MediaRef {
            media_id: id.clone(),
            content_type: m.content_type,
            size: m.size,
            width: m.width,
            height: m.height,
            duration_ms: m.duration_ms,
            preview: m.preview,
            thumbnail: !m.thumbnail_sha256.is_empty(),
            sha256: m.sha256,
        });
    }
    Ok(out)
}

fn no_such_media(id: &str) -> StoreError {
    StoreError::refused(ErrorCode::NotFound, format!("media: no such media {id}"))
}

/// Records that message `msg_id` of `conv` carries `media`.
pub(crate) fn add_refs(txn: &mut Change<'_>, msg_id: u64, conv: &ConvKey, media: &[MediaRef]) {
    for m in media {
        txn.put(Family::Media, ref_key(&m.media_id, msg_id), conv.0.clone());
    }
}

/// Forgets that message `msg` carries its media (it was recalled).
pub(crate) fn drop_refs(txn: &mut Change<'_>, msg: &pb::Message) {
    for m in &msg.media {
        txn.delete(Family::Media, ref_key(&m.media_id, msg.msg_id));
    }
}

impl Core {
    /// Media `id` if `user` may read it: its uploader, or a member of a conversation one of
    /// whose messages carries it (one of the first 32 such messages). `None` for anyone else,
    /// as for an id that does not exist.
    pub fn readable_media(&self, user: &str, id: &str) -> Result<Option<MediaRecord>> {
        match self.media(id)? {
            Some(m) if may_read(self, user, id, &m)? => Ok(Some(m)),
            _ => Ok(None),
        }
    }

    /// Messages that carry media `id` now (at most `limit` counted).
    pub fn media_refs(&self, id: &str, limit: usize) -> Result<usize> {
        let prefix = [b"r", id.as_bytes()].concat();
        let mut n = 0;
        for item in self.iter_prefix(Family::Media, &prefix).take(limit) {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// The upload `id`, if it is in progress.
    pub fn upload(&self, id: &str) -> Result<Option<UploadRecord>> {
        self.get_msg(Family::Media, &upload_key(id))
    }

    /// The media `id`, if it was finished.
    pub fn media(&self, id: &str) -> Result<Option<MediaRecord>> {
        self.get_msg(Family::Media, &media_key(id))
    }

    /// Bytes of uploads `user` created on `day` (days since the Unix epoch).
    pub fn uploaded_on(&self, user: &str, day: u32) -> Result<u64> {
        self.get_u64(Family::Media, &quota_key(user, day))
    }

    /// Uploads in progress created before `before_ms`: their ids (at most `limit`).
    pub fn stale_uploads(&self, before_ms: i64, limit: usize) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for item in self.iter_prefix(Family::Media, b"u") {
            let (k, v) = item?;
            let record = <UploadRecord as prost::Message>::decode(&*v)?;
            if record.created_ms < before_ms {
                out.push(String::from_utf8_lossy(&k[1..]).into_owned());
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Media created before `before_ms` that no message carries: their ids (at most `limit`).
    pub fn unreferenced_media(&self, before_ms: i64, limit: usize) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for item in self.iter_prefix(Family::Media, b"m") {
            let (k, v) = item?;
            let record = <MediaRecord as prost::Message>::decode(&*v)?;
            let id = String::from_utf8_lossy(&k[1..]).into_owned();
            if record.created_ms < before_ms && self.media_refs(&id, 1)? == 0 {
                out.push(id);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Whether a media record uses the file of `sha256`.
    pub fn blob_in_use(&self, sha256: &str) -> Result<bool> {
        let prefix = [b"b", sha256.as_bytes()].concat();
        let mut it = self.raw_iter(Family::Media);
        it.seek(&prefix);
        it.status()?;
        Ok(it.key().is_some_and(|k| k.starts_with(&prefix)))
    }
}

impl Store {
    /// Records upload `id`, counting its size against its owner's bytes of `day`: refused with
    /// LIMIT_EXCEEDED when that would pass `per_day`.
    pub fn create_upload(
        &self,
        id: &str,
        record: UploadRecord,
        day: u32,
        per_day: u64,
    ) -> Pending<()> {
        let id = id.to_owned();
        self.change(false, move |txn| {
            let key = quota_key(&record.owner, day);
            let used = txn.get_u64(Family::Media, &key)?;
            if used.saturating_add(record.size) > per_day {
                return Err(StoreError::refused(
                    ErrorCode::LimitExceeded,
                    format!(
                        "uploads are limited to {per_day} bytes a day per user \
                         ({used} used today)"
                    ),
                ));
            }
            txn.put(
                Family::Media,
                key,
                (used + record.size).to_be_bytes().to_vec(),
            );
            txn.put(
                Family::Media,
                upload_key(&id),
                prost::Message::encode_to_vec(&record),
            );
            Ok(())
        })
    }

    /// Finishes upload `upload_id` as media `media_id`, in one write: the media record, its use
    /// of the file, and the upload gone. Refused with NOT_FOUND when the upload is not (or no
    /// longer) in progress.
    pub fn finish_upload(
        &self,
        upload_id: &str,
        media_id: &str,
        record: MediaRecord,
    ) -> Pending<()> {
        let (upload_id, media_id) = (upload_id.to_owned(), media_id.to_owned());
        self.change(false, move |txn| {
            if !txn.exists(Family::Media, &upload_key(&upload_id))? {
                return Err(StoreError::refused(ErrorCode::NotFound, "no such upload"));
            }
            txn.delete(Family::Media, upload_key(&upload_id));
            txn.put(
                Family::Media,
                blob_key(&record.sha256, &media_id),
                Vec::new(),
            );
            if !record.thumbnail_sha256.is_empty() {
                txn.put(
                    Family::Media,
                    blob_key(&record.thumbnail_sha256, &media_id),
                    Vec::new(),
                );
            }
            txn.put(
                Family::Media,
                media_key(&media_id),
                prost::Message::encode_to_vec(&record),
            );
            Ok(())
        })
    }

    /// Removes media `id` if no message carries it (the messages of the changes pending before
    /// it included): its record and its use of its files. Returns the record removed (`None`
    /// when it is gone already or a message carries it now).
    pub fn drop_media(&self, id: &str) -> Pending<Option<MediaRecord>> {
        let id = id.to_owned();
        self.change(true, move |txn| {
            let record: Option<MediaRecord> = txn.get_msg(Family::Media, &media_key(&id))?;
            let Some(record) = record else {
                return Ok(None);
            };
            if txn.core().media_refs(&id, 1)? > 0 {
                return Ok(None);
            }
            txn.delete(Family::Media, media_key(&id));
            txn.delete(Family::Media, blob_key(&record.sha256, &id));
            if !record.thumbnail_sha256.is_empty() {
                txn.delete(Family::Media, blob_key(&record.thumbnail_sha256, &id));
            }
            Ok(Some(record))
        })
    }

    /// Forgets upload `id` (a bad finish: its bytes were not what was declared).
    pub fn discard_upload(&self, id: &str) -> Pending<()> {
        let id = id.to_owned();
        self.change(false, move |txn| {
            txn.delete(Family::Media, upload_key(&id));
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::core::Durability;
    use super::*;

    #[test]
    fn ids_are_32_lowercase_hex_digits_only() {
        assert!(valid_id("0123456789abcdef0123456789abcdef"));
        for bad in [
            "",
            "0123456789abcdef0123456789abcde",
            "0123456789ABCDEF0123456789ABCDEF",
            "../../../../etc/passwd0123456789",
            "0123456789abcdef0123456789abcde/",
            "0123456789abcdef0123456789abcdef0",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn uploads_count_against_the_day_and_finish_into_media() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Durability::Async).unwrap();
        let up = |size| UploadRecord {
            owner: "alice".into(),
            size,
            ..Default::default()
        };
        let (a, b, c) = ("a".repeat(32), "b".repeat(32), "c".repeat(32));
        store.create_upload(&a, up(600), 7, 1000).wait().unwrap();
        let over = store.create_upload(&b, up(401), 7, 1000).wait();
        assert!(matches!(
            over,
            Err(StoreError::Refused {
                code: ErrorCode::LimitExceeded,
                ..
            })
        ));
        store.create_upload(&b, up(400), 7, 1000).wait().unwrap();
        store.create_upload(&c, up(900), 8, 1000).wait().unwrap();
        assert_eq!(store.core().uploaded_on("alice", 7).unwrap(), 1000);

        let sha = "f".repeat(64);
        assert!(!store.core().blob_in_use(&sha).unwrap());
        let record = MediaRecord {
            owner: "alice".into(),
            size: 600,
            sha256: sha.clone(),
            ..Default::default()
        };
        let m = "d".repeat(32);
        store.finish_upload(&a, &m, record.clone()).wait().unwrap();
        assert_eq!(store.core().media(&m).unwrap(), Some(record.clone()));
        assert_eq!(store.core().upload(&a).unwrap(), None);
        assert!(store.core().blob_in_use(&sha).unwrap());
        // Finished once only.
        assert!(store.finish_upload(&a, &m, record).wait().is_err());
        store.discard_upload(&b).wait().unwrap();
        assert_eq!(store.core().upload(&b).unwrap(), None);
    }
}
