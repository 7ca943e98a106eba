//! Media (issue #19, docs/media.md): resumable uploads, finished into content-addressed files,
//! and the reads of them.
//!
//! Files live under `<data_dir>/media/`: an upload in progress in `uploads/<upload id>` (its
//! length is how much arrived), a finished file in `files/<ab>/<sha-256>` (identical bytes are
//! stored once, whoever uploaded them). Finishing hashes the file, sniffs its type from its
//! bytes, makes a thumbnail and an inline preview of an image (`missive-media`, on a blocking
//! thread), moves the file into place with a rename after an fsync, and only then writes the
//! media record: a crash at any point leaves an upload to resume or an orphan file, never a
//! record that looks finished without its bytes. A media is read by its uploader and by the
//! members of the conversations whose messages carry it (`store::media`).

use std::collections::HashSet;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use missive_protocol::ErrorCode;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

use super::refusal::Refusal;
use super::run::{outcome, small_read};
use crate::context::Shared;
use crate::offline_push::payload::signature;
use crate::store::{valid_media_id, MediaRecord, UploadRecord};

/// Held while a file is put in place and its record written, and while the collector decides a
/// file is unused and removes it: otherwise a finish could find identical bytes already in
/// place, drop its own copy, and see the collector remove the file it was counting on.
static FILES: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(|| tokio::sync::Mutex::new(()));

/// Finishes examining their file (hashing, decoding an image) at once, server-wide: one per
/// core, at least two. Each holds a decoded image (up to the pixel limit) while it runs, so
/// their number, not the number of uploads finishing, bounds that memory.
static EXAMINING: LazyLock<tokio::sync::Semaphore> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::sync::Semaphore::new(cores.max(2))
});

/// Uploads being appended to or finished now: a second request on one of them waits for
/// nothing, it is refused (409), so that two writers never interleave their bytes.
static BUSY: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

/// An upload's turn at its file; the upload is free again when it is dropped.
pub struct Busy(String);

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.lock().remove(&self.0);
    }
}

fn take_turn(id: &str) -> Result<Busy, MediaRefusal> {
    if BUSY.lock().insert(id.to_owned()) {
        Ok(Busy(id.to_owned()))
    } else {
        Err(MediaRefusal::new(
            409,
            ErrorCode::InvalidArgument,
            "another request is writing to this upload",
        ))
    }
}

/// A refused media request: the HTTP status, the protocol's code and a message, and for a
/// wrong offset where the upload stands.
#[derive(Debug)]
pub struct MediaRefusal {
    pub status: u16,
    pub code: ErrorCode,
    pub message: String,
    pub offset: Option<u64>,
}

impl MediaRefusal {
    pub fn new(status: u16, code: ErrorCode, message: impl Into<String>) -> MediaRefusal {
        MediaRefusal {
            status,
            code,
            message: message.into(),
            offset: None,
        }
    }

    fn not_found(what: &str) -> MediaRefusal {
        MediaRefusal::new(404, ErrorCode::NotFound, format!("no such {what}"))
    }
}

impl From<Refusal> for MediaRefusal {
    fn from(r: Refusal) -> MediaRefusal {
        let status = match r.code {
            ErrorCode::NotFound => 404,
            ErrorCode::LimitExceeded => 409,
            ErrorCode::ContentTooLarge => 413,
            ErrorCode::ServerBusy | ErrorCode::ShuttingDown => 503,
            ErrorCode::Internal => 500,
            _ => 400,
        };
        MediaRefusal::new(status, r.code, r.message)
    }
}

/// Where an upload's file is.
pub fn upload_path(shared: &Shared, id: &str) -> PathBuf {
    shared.config.data_dir.join("media/uploads").join(id)
}

/// Where the file of `sha256` (64 hex digits) is.
pub fn file_path(shared: &Shared, sha256: &str) -> PathBuf {
    shared
        .config
        .data_dir
        .join("media/files")
        .join(&sha256[..2])
        .join(sha256)
}

/// What a client declares when it creates an upload.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUpload {
    pub size: u64,
    #[serde(default)]
    pub content_type: String,
    #[serde(default)]
    pub sha256: String,
}

/// Where an upload stands.
#[derive(Debug, serde::Serialize)]
pub struct UploadState {
    pub upload_id: String,
    pub offset: u64,
    pub size: u64,
}

/// A finished media, as its uploader learns it.
#[derive(Debug, serde::Serialize)]
pub struct MediaInfo {
    pub media_id: String,
    pub size: u64,
    pub sha256: String,
    pub content_type: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub width: u32,
    #[serde(skip_serializing_if = "is_zero")]
    pub height: u32,
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub duration_ms: u64,
    /// A thumbnail is at `/v1/media/{media_id}/thumbnail`.
    pub thumbnail: bool,
    /// The inline preview (a tiny JPEG), base64; empty when there is none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub preview_base64: String,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

impl MediaInfo {
    pub fn of(media_id: &str, m: &MediaRecord) -> MediaInfo {
        MediaInfo {
            media_id: media_id.to_owned(),
            size: m.size,
            sha256: m.sha256.clone(),
            content_type: m.content_type.clone(),
            width: m.width,
            height: m.height,
            duration_ms: m.duration_ms,
            thumbnail: !m.thumbnail_sha256.is_empty(),
            preview_base64: missive_protocol::base64::encode(&m.preview),
        }
    }
}

/// Runs file work `f` on a blocking thread; a failure is logged (with `what`) and answered 500.
async fn on_thread<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, MediaRefusal> {
    let failed = |e: String| {
        tracing::error!("media: cannot {what}: {e}");
        MediaRefusal::new(500, ErrorCode::Internal, format!("cannot {what}"))
    };
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(failed(e.to_string())),
        Err(e) => Err(failed(e.to_string())),
    }
}

/// A fresh random id: 32 hex digits.
fn new_id() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

/// Days since the Unix epoch, for the daily quota.
fn today() -> u32 {
    (crate::clock::now_ms() / 86_400_000) as u32
}

/// Creates an upload of `req.size` bytes for `user`: an empty file, then its record (which
/// counts the size against the user's day).
pub async fn create(
    shared: &Arc<Shared>,
    user: &str,
    req: NewUpload,
) -> Result<UploadState, MediaRefusal> {
    let max = shared.config.media_max_file_bytes;
    if req.size == 0 {
        let msg = "size: an upload has at least one byte";
        return Err(MediaRefusal::new(400, ErrorCode::InvalidArgument, msg));
    }
    if req.size > max {
        let msg = format!("size: a file is at most {max} bytes");
        return Err(MediaRefusal::new(413, ErrorCode::ContentTooLarge, msg));
    }
    let sha256 = req.sha256.to_ascii_lowercase();
    if !sha256.is_empty() && (sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        let msg = "sha256: 64 hex digits";
        return Err(MediaRefusal::new(400, ErrorCode::InvalidArgument, msg));
    }
    if req.content_type.len() > 100 || req.content_type.chars().any(|c| c.is_control()) {
        let msg = "content_type: at most 100 characters, none of them control characters";
        return Err(MediaRefusal::new(400, ErrorCode::InvalidArgument, msg));
    }
    let id = new_id();
    let path = upload_path(shared, &id);
    let file = path.clone();
    on_thread("create the upload", move || {
        std::fs::create_dir_all(file.parent().expect("under uploads/"))?;
        std::fs::File::create_new(&file)?;
        Ok(())
    })
    .await?;
    let record = UploadRecord {
        owner: user.to_owned(),
        size: req.size,
        declared_type: req.content_type,
        sha256,
        created_ms: crate::clock::now_ms(),
    };
    let per_day = shared.config.media_max_bytes_per_day;
    let created = shared
        .store
        .create_upload(&id, record, today(), per_day)
        .await;
    if let Err(e) = outcome(shared, created) {
        let _ = std::fs::remove_file(&path);
        return Err(e.into());
    }
    Ok(UploadState {
        upload_id: id,
        offset: 0,
        size: req.size,
    })
}

/// `user`'s upload `id` (NOT_FOUND for anyone else's: an id tells nothing).
async fn own_upload(
    shared: &Arc<Shared>,
    user: &str,
    id: &str,
) -> Result<UploadRecord, MediaRefusal> {
    if !valid_media_id(id) {
        return Err(MediaRefusal::not_found("upload"));
    }
    let key = id.to_owned();
    let record = small_read(shared, move |s| s.store.core().upload(&key)).await?;
    match record {
        Some(r) if r.owner == user => Ok(r),
        _ => Err(MediaRefusal::not_found("upload")),
    }
}

/// How many bytes of upload `id` arrived: its file's length.
fn arrived(shared: &Shared, id: &str) -> Result<u64, MediaRefusal> {
    std::fs::metadata(upload_path(shared, id))
        .map(|m| m.len())
        .map_err(|e| {
            tracing::error!("media upload {id}: {e}");
            MediaRefusal::new(500, ErrorCode::Internal, "the upload's file is missing")
        })
}

/// Where `user`'s upload `id` stands.
pub async fn status(
    shared: &Arc<Shared>,
    user: &str,
    id: &str,
) -> Result<UploadState, MediaRefusal> {
    let record = own_upload(shared, user, id).await?;
    Ok(UploadState {
        upload_id: id.to_owned(),
        offset: arrived(shared, id)?,
        size: record.size,
    })
}

/// A chunk being appended: the file, open at the upload's end, and how many bytes it takes.
pub struct Appending {
    pub file: tokio::fs::File,
    /// Where the chunk starts.
    pub offset: u64,
    /// The upload's declared size.
    pub size: u64,
    _turn: Busy,
}

/// Starts appending a chunk of `len` bytes at `offset` to `user`'s upload `id`: `offset` must
/// be where the upload stands (409 with the right offset otherwise), and the chunk must fit the
/// declared size and `media_max_chunk_bytes` (413), checked before any byte is read.
pub async fn append(
    shared: &Arc<Shared>,
    user: &str,
    id: &str,
    offset: u64,
    len: u64,
) -> Result<Appending, MediaRefusal> {
    let record = own_upload(shared, user, id).await?;
    let turn = take_turn(id)?;
    let at = arrived(shared, id)?;
    if offset != at {
        let mut r = MediaRefusal::new(
            409,
            ErrorCode::InvalidArgument,
            format!("Upload-Offset {offset}: the upload is at {at}"),
        );
        r.offset = Some(at);
        return Err(r);
    }
    let max = shared.config.media_max_chunk_bytes;
    if len > max {
        let msg = format!("a chunk is at most {max} bytes");
        return Err(MediaRefusal::new(413, ErrorCode::ContentTooLarge, msg));
    }
    if at + len > record.size {
        let msg = format!(
            "the chunk ends at {}, past the upload's size {}",
            at + len,
            record.size
        );
        return Err(MediaRefusal::new(413, ErrorCode::ContentTooLarge, msg));
    }
    let file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(upload_path(shared, id))
        .await
        .map_err(|e| {
            tracing::error!("media upload {id}: {e}");
            MediaRefusal::new(500, ErrorCode::Internal, "cannot open the upload")
        })?;
    Ok(Appending {
        file,
        offset,
        size: record.size,
        _turn: turn,
    })
}

/// What finishing learned of the bytes, on a blocking thread.
struct Examined {
    sha256: String,
    content_type: &'static str,
    width: u32,
    height: u32,
    duration_ms: u64,
    /// The thumbnail's bytes and type, for an image.
    thumbnail: Option<(Vec<u8>, &'static str)>,
    preview: Vec<u8>,
}

/// Hashes, sniffs and (an image) thumbnails the file at `path`.
fn examine(path: &Path, thumb_px: u32, max_image: u64) -> Result<Examined, MediaRefusal> {
    let internal = |e: std::io::Error| {
        tracing::error!("media file {}: {e}", path.display());
        MediaRefusal::new(500, ErrorCode::Internal, "cannot read the upload")
    };
    let mut file = std::fs::File::open(path).map_err(internal)?;
    let size = file.metadata().map_err(internal)?.len();
    let mut head = vec![0u8; missive_media::SNIFF_LEN];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]).map_err(internal)? {
            0 => break,
            k => n += k,
        }
    }
    head.truncate(n);
    let sniffed = missive_media::sniff(&head);
    file.seek(SeekFrom::Start(0)).map_err(internal)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match file.read(&mut buf).map_err(internal)? {
            0 => break,
            k => hasher.update(&buf[..k]),
        }
    }
    let sha256 = hex(&hasher.finalize());
    let mut out = Examined {
        sha256,
        content_type: sniffed.content_type,
        width: 0,
        height: 0,
        duration_ms: 0,
        thumbnail: None,
        preview: Vec::new(),
    };
    file.seek(SeekFrom::Start(0)).map_err(internal)?;
    if missive_media::is_image(sniffed.kind) {
        let limits = missive_media::Limits::default();
        let bad = |e: missive_media::MediaError| {
            MediaRefusal::new(
                422,
                ErrorCode::InvalidArgument,
                format!("the {} image cannot be used: {e}", sniffed.content_type),
            )
        };
        if size <= max_image {
            let p =
                missive_media::process_image(BufReader::new(file), sniffed.kind, thumb_px, &limits)
                    .map_err(bad)?;
            out.width = p.dimensions.width;
            out.height = p.dimensions.height;
            out.thumbnail = Some((p.thumbnail.bytes, p.thumbnail.content_type));
            out.preview = p.preview.bytes;
        } else {
            let d =
                missive_media::probe(BufReader::new(file), sniffed.kind, &limits).map_err(bad)?;
            out.width = d.width;
            out.height = d.height;
        }
    } else if let Some(ms) = missive_media::duration_ms(file, sniffed.kind) {
        out.duration_ms = ms;
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Puts the bytes at `from` (or `bytes`) in place as the file of `sha256`, durably: the file
/// synced, renamed into `files/`, the directory synced. A file already there (the same bytes,
/// uploaded before) is kept and the new copy dropped.
fn store_file(target: &Path, from: Option<&Path>, bytes: Option<&[u8]>) -> std::io::Result<()> {
    let dir = target.parent().expect("under files/");
    std::fs::create_dir_all(dir)?;
    if target.exists() {
        if let Some(from) = from {
            std::fs::remove_file(from)?;
        }
        return Ok(());
    }
    let source = match (from, bytes) {
        (Some(from), _) => {
            std::fs::File::open(from)?.sync_all()?;
            from.to_path_buf()
        }
        (None, Some(bytes)) => {
            let tmp = dir.join(format!(".{}.tmp", new_id()));
            let mut f = std::fs::File::create_new(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            tmp
        }
        (None, None) => unreachable!("a file or bytes"),
    };
    std::fs::rename(&source, target)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Finishes `user`'s upload `id`: every declared byte must have arrived (409 otherwise), and
/// match the declared sha-256 and, for an image, decode within the limits (422 otherwise, and
/// the upload is dropped: nothing is stored).
pub async fn finish(shared: &Arc<Shared>, user: &str, id: &str) -> Result<MediaInfo, MediaRefusal> {
    let record = own_upload(shared, user, id).await?;
    let _turn = take_turn(id)?;
    let at = arrived(shared, id)?;
    if at != record.size {
        let mut r = MediaRefusal::new(
            409,
            ErrorCode::InvalidArgument,
            format!("{at} of {} bytes arrived: send the rest first", record.size),
        );
        r.offset = Some(at);
        return Err(r);
    }
    let path = upload_path(shared, id);
    let (thumb_px, max_image) = (
        shared.config.media_thumbnail_px,
        shared.config.media_max_image_bytes,
    );
    let p = path.clone();
    let _examining = EXAMINING
        .acquire()
        .await
        .map_err(|_| MediaRefusal::new(503, ErrorCode::ShuttingDown, "server shutting down"))?;
    let examined = tokio::task::spawn_blocking(move || examine(&p, thumb_px, max_image))
        .await
        .map_err(|e| {
            tracing::error!("media finish task: {e}");
            MediaRefusal::new(500, ErrorCode::Internal, "internal error")
        })?;
    let refuse = |r: MediaRefusal| async {
        let _ = tokio::fs::remove_file(&path).await;
        let _ = shared.store.discard_upload(id).await;
        Err(r)
    };
    let examined = match examined {
        Ok(e) => e,
        Err(r) if r.status == 422 => return refuse(r).await,
        Err(r) => return Err(r),
    };
    if !record.sha256.is_empty() && record.sha256 != examined.sha256 {
        let msg = format!(
            "the bytes' sha256 is {}, not the {} declared: the upload was dropped",
            examined.sha256, record.sha256
        );
        return refuse(MediaRefusal::new(422, ErrorCode::InvalidArgument, msg)).await;
    }
    let target = file_path(shared, &examined.sha256);
    let thumb = examined.thumbnail.as_ref().map(|(bytes, ty)| {
        let sha = hex(&Sha256::digest(bytes));
        (file_path(shared, &sha), sha, bytes.clone(), *ty)
    });
    let placing = FILES.lock().await;
    let (from, thumb_files) = (path.clone(), thumb.clone());
    on_thread("store the file", move || {
        if let Some((target, _, bytes, _)) = &thumb_files {
            store_file(target, None, Some(bytes))?;
        }
        store_file(&target, Some(&from), None)
    })
    .await?;
    let media_id = new_id();
    let media = MediaRecord {
        owner: user.to_owned(),
        size: record.size,
        sha256: examined.sha256,
        content_type: examined.content_type.to_owned(),
        width: examined.width,
        height: examined.height,
        duration_ms: examined.duration_ms,
        created_ms: crate::clock::now_ms(),
        thumbnail_sha256: thumb.as_ref().map(|t| t.1.clone()).unwrap_or_default(),
        thumbnail_type: thumb.as_ref().map(|t| t.3.to_owned()).unwrap_or_default(),
        preview: examined.preview,
    };
    let done = shared
        .store
        .finish_upload(id, &media_id, media.clone())
        .await;
    drop(placing);
    outcome(shared, done)?;
    Ok(MediaInfo::of(&media_id, &media))
}

/// What one collection removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    pub uploads: u64,
    pub media: u64,
    pub files: u64,
}

/// Items one collection handles of each kind at most (the next one goes on).
const COLLECT_BATCH: usize = 1000;

/// Collects media garbage older than `media_gc_grace_secs`: unfinished uploads (record and
/// file), media no message carries (record, then each file no media uses any more), and files
/// no record knows of (left by a crash between a file's rename and its record).
pub async fn collect(shared: &Arc<Shared>) -> Result<Collected, MediaRefusal> {
    let now = crate::clock::now_ms();
    let before = now - (shared.config.media_gc_grace_secs as i64) * 1000;
    let mut done = Collected::default();
    let stale = small_read(shared, move |s| {
        s.store.core().stale_uploads(before, COLLECT_BATCH)
    })
    .await?;
    for id in stale {
        outcome(shared, shared.store.discard_upload(&id).await)?;
        let _ = tokio::fs::remove_file(upload_path(shared, &id)).await;
        done.uploads += 1;
    }
    let unused = small_read(shared, move |s| {
        s.store.core().unreferenced_media(before, COLLECT_BATCH)
    })
    .await?;
    for id in unused {
        let Some(record) = outcome(shared, shared.store.drop_media(&id).await)? else {
            continue;
        };
        done.media += 1;
        for sha in [record.sha256, record.thumbnail_sha256] {
            if !sha.is_empty() && remove_if_unused(shared, &sha).await? {
                done.files += 1;
            }
        }
    }
    // Files and upload files nothing knows of, older than the grace period.
    let (files, uploads) = (
        shared.config.data_dir.join("media/files"),
        shared.config.data_dir.join("media/uploads"),
    );
    let grace = Duration::from_secs(shared.config.media_gc_grace_secs);
    let (old_files, old_uploads) = on_thread("list the media files", move || {
        Ok((
            old_entries(&files, grace, 2),
            old_entries(&uploads, grace, 1),
        ))
    })
    .await?;
    for path in old_files {
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if name.starts_with('.') {
            // A temporary file of a finish that did not complete.
            let _ = tokio::fs::remove_file(&path).await;
        } else if name.len() == 64 && remove_if_unused(shared, &name).await? {
            done.files += 1;
        }
    }
    for path in old_uploads {
        let Some(id) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        let key = id.clone();
        let known = small_read(shared, move |s| s.store.core().upload(&key)).await?;
        if known.is_none() {
            let _ = tokio::fs::remove_file(&path).await;
            done.uploads += 1;
        }
    }
    Ok(done)
}

/// Removes the file of `sha256` if no media uses it; whether it did.
async fn remove_if_unused(shared: &Arc<Shared>, sha256: &str) -> Result<bool, MediaRefusal> {
    let _files = FILES.lock().await;
    let sha = sha256.to_owned();
    if small_read(shared, move |s| s.store.core().blob_in_use(&sha)).await? {
        return Ok(false);
    }
    Ok(tokio::fs::remove_file(file_path(shared, sha256))
        .await
        .is_ok())
}

/// The files under `dir` (`depth` 1: its entries; 2: its subdirectories' entries) last changed
/// longer than `grace` ago, at most [`COLLECT_BATCH`].
fn old_entries(dir: &Path, grace: Duration, depth: u8) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        if out.len() >= COLLECT_BATCH {
            break;
        }
        let path = e.path();
        if depth > 1 {
            if path.is_dir() {
                out.extend(old_entries(&path, grace, depth - 1));
            }
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > grace);
        if old && path.is_file() {
            out.push(path);
        }
    }
    out
}

/// Collects media garbage every `media_gc_interval_secs` until the server stops.
pub async fn collector(shared: Arc<Shared>) {
    let every = Duration::from_millis(shared.config.media_gc_interval_ms);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shared.shutdown.cancelled() => return,
        }
        match collect(&shared).await {
            Ok(c) if c != Collected::default() => {
                tracing::info!(
                    "media collected: {} uploads, {} media, {} files",
                    c.uploads,
                    c.media,
                    c.files
                );
            }
            Ok(_) => {}
            Err(r) => tracing::warn!("media collection failed: {}", r.message),
        }
    }
}

/// The media `id` for `user` to read, and the path of its file (its thumbnail's with
/// `thumbnail`): its uploader reads it, and the members of a conversation one of whose
/// messages carries it; anyone else gets NOT_FOUND, as for an id that does not exist.
pub async fn open(
    shared: &Arc<Shared>,
    user: &str,
    id: &str,
    thumbnail: bool,
) -> Result<(MediaRecord, PathBuf), MediaRefusal> {
    if !valid_media_id(id) {
        return Err(MediaRefusal::not_found("media"));
    }
    let (key, reader) = (id.to_owned(), user.to_owned());
    let record = small_read(shared, move |s| {
        s.store.core().readable_media(&reader, &key)
    })
    .await?;
    with_file(shared, record, thumbnail)
}

/// Longest life of a signed download URL.
pub const MAX_URL_SECS: u64 = 7 * 86_400;

/// The signature of a download URL of media `id` (its thumbnail with `thumbnail`) valid until
/// `expires` (Unix seconds): an HMAC-SHA256 keyed by the server's secret (through a key of its
/// own, so that it can sign nothing else), 64 hex digits.
fn url_signature(shared: &Shared, id: &str, thumbnail: bool, expires: u64) -> String {
    let key = signature(&shared.secret, b"missive media url v1");
    let what = if thumbnail { "thumbnail" } else { "file" };
    let sig = signature(
        key.as_bytes(),
        format!("{id}\n{what}\n{expires}").as_bytes(),
    );
    sig.trim_start_matches("sha256=").to_owned()
}

/// A signed URL for `user` to hand to a player or a CDN: the path and query of media `id` (its
/// thumbnail with `thumbnail`) that anyone may GET, without a token, for `secs` seconds (at
/// most [`MAX_URL_SECS`]). Only someone who may read the media gets one.
pub async fn signed_url(
    shared: &Arc<Shared>,
    user: &str,
    id: &str,
    thumbnail: bool,
    secs: u64,
) -> Result<(String, u64), MediaRefusal> {
    if secs == 0 || secs > MAX_URL_SECS {
        let msg = format!("expires_in: 1 to {MAX_URL_SECS} seconds");
        return Err(MediaRefusal::new(400, ErrorCode::InvalidArgument, msg));
    }
    open(shared, user, id, thumbnail).await?;
    let expires = (crate::clock::now_ms() / 1000) as u64 + secs;
    let sig = url_signature(shared, id, thumbnail, expires);
    let path = if thumbnail {
        format!("/v1/media/{id}/thumbnail")
    } else {
        format!("/v1/media/{id}")
    };
    Ok((format!("{path}?expires={expires}&sig={sig}"), expires))
}

/// Media `id` (or its thumbnail) by a signed URL: its record and file, when `sig` is the
/// signature of `expires` and `expires` has not passed (403 otherwise: the URL is wrong or
/// stale; 404 when the media is gone).
pub async fn open_signed(
    shared: &Arc<Shared>,
    id: &str,
    thumbnail: bool,
    expires: u64,
    sig: &str,
) -> Result<(MediaRecord, PathBuf), MediaRefusal> {
    if !valid_media_id(id) {
        return Err(MediaRefusal::not_found("media"));
    }
    let good = url_signature(shared, id, thumbnail, expires);
    let same = good.len() == sig.len()
        && good
            .bytes()
            .zip(sig.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        let msg = "the URL's signature is not valid";
        return Err(MediaRefusal::new(403, ErrorCode::Forbidden, msg));
    }
    if (crate::clock::now_ms() / 1000) as u64 > expires {
        let msg = "the URL has expired: ask for a new one";
        return Err(MediaRefusal::new(403, ErrorCode::Forbidden, msg));
    }
    let key = id.to_owned();
    let record = small_read(shared, move |s| s.store.core().media(&key)).await?;
    with_file(shared, record, thumbnail)
}

/// A media found (or not) and the path of its file, or of its thumbnail's with `thumbnail`.
fn with_file(
    shared: &Shared,
    record: Option<MediaRecord>,
    thumbnail: bool,
) -> Result<(MediaRecord, PathBuf), MediaRefusal> {
    let Some(record) = record else {
        return Err(MediaRefusal::not_found("media"));
    };
    let sha = if thumbnail {
        &record.thumbnail_sha256
    } else {
        &record.sha256
    };
    if sha.is_empty() {
        return Err(MediaRefusal::not_found("thumbnail"));
    }
    let path = file_path(shared, sha);
    Ok((record, path))
}
