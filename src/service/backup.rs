//! Online backups and their restore (issue #22, docs/operations.md "Backup and restore").
//!
//! A backup is a directory of `backup_dir` (never a path a caller names) called by the UTC
//! time it started, `20261207T181500Z`, holding what a data directory holds:
//!
//! - `db/`: a RocksDB checkpoint of the running store ([`crate::store::Core::checkpoint`]): a
//!   prefix of the committed groups, so every change answered before the backup started;
//! - `media/files/<ab>/<sha-256>`: every finished file a media record of the checkpoint uses
//!   (hard links, copies across filesystems). Files are linked twice over: every file there is
//!   before the checkpoint, then any the checkpoint names that was not there yet, and what the
//!   checkpoint does not name is dropped again. A file the media collector removes while the
//!   backup runs is kept by the first link; one placed while it runs is there for the second;
//!   a file named by the checkpoint and gone by then fails the backup rather than leave a record
//!   without its bytes;
//! - `media/uploads/<id>`: a copy of each upload in progress (an empty file when the upload
//!   finished meanwhile: its client resumes from where the restored server says it stands);
//! - `secret`: the token secret, when the server's comes from `<data_dir>/secret`;
//! - `BACKUP.json`: the [`Manifest`].
//!
//! It is written under `.tmp-<name>` and renamed when complete, so a directory with a
//! backup's name is a whole backup. One backup runs at a time per `backup_dir` ([`Turn`]).
//! [`restore`] copies a backup into a new data directory and checks what it copied.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use missive_protocol::ErrorCode;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::refusal::Refusal;
use crate::config::Config;
use crate::context::Shared;
use crate::store::{inspect, Store, SCHEMA_VERSION};

/// The manifest's file name in a backup.
pub const MANIFEST: &str = "BACKUP.json";
/// The checkpoint's directory, in a backup and in a data directory.
const DB: &str = "db";
/// Finished media files, and uploads in progress (as `service::media` lays them out).
const MEDIA_FILES: &str = "media/files";
const MEDIA_UPLOADS: &str = "media/uploads";
/// The token secret's file (as `server` reads it).
const SECRET: &str = "secret";
/// A backup being written is `.tmp-<name>`.
const TMP_PREFIX: &str = ".tmp-";

/// Files and bytes of one part of a backup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub files: u64,
    pub bytes: u64,
}

/// `BACKUP.json`: what a backup holds and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The directory's name: the UTC time the backup started, `YYYYMMDDTHHMMSSZ`.
    pub name: String,
    /// The same time, RFC 3339 (`2026-12-07T18:15:00Z`), and in Unix milliseconds.
    pub created_at: String,
    pub created_ms: i64,
    /// How long writing it took.
    pub took_ms: u64,
    /// The missived that wrote it (its crate version).
    pub missived_version: String,
    /// The store's schema version (`store::SCHEMA_VERSION` of that missived).
    pub schema_version: u32,
    /// RocksDB's sequence number of the last write in the checkpoint.
    pub rocksdb_sequence: u64,
    /// The newest message id in the checkpoint (a decimal string: ids pass 2^53), "0" if none.
    pub last_msg_id: String,
    /// Every file of the backup but `BACKUP.json`, and their bytes (hard-linked files count
    /// whole, although they share their blocks with the data directory).
    pub files: u64,
    pub bytes: u64,
    /// The parts: the checkpoint, finished media files, uploads in progress.
    pub store: Part,
    pub media: Part,
    pub uploads: Part,
    /// Finished media records in the checkpoint.
    pub media_records: u64,
    /// Whether `secret` (the token secret file) is in the backup: false when the server's
    /// secret is configured (`secret` setting), which a restored server must be given again.
    pub secret_file: bool,
}

/// A backup's name: `YYYYMMDDTHHMMSSZ` (16 characters, digits but the `T` and the `Z`), and
/// nothing else (no path, no other length).
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 8 || i == 15 || c.is_ascii_digit())
}

/// Year, month, day of the day `days` after 1970-01-01 (the proleptic Gregorian calendar).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `ms` (Unix milliseconds) as UTC: (`YYYYMMDDTHHMMSSZ`, `YYYY-MM-DDTHH:MM:SSZ`).
fn utc(ms: i64) -> (String, String) {
    let secs = ms.div_euclid(1000);
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    let (h, mi, se) = (s / 3600, s % 3600 / 60, s % 60);
    (
        format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{se:02}Z"),
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{se:02}Z"),
    )
}

/// Backups being written now, by `backup_dir`, with the name of each.
static RUNNING: LazyLock<Mutex<HashMap<PathBuf, String>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The one backup of a `backup_dir` being written; the directory is free again when it goes.
pub struct Turn(PathBuf);

impl Drop for Turn {
    fn drop(&mut self) {
        RUNNING.lock().remove(&self.0);
    }
}

impl Turn {
    /// Takes `dir`'s turn for a backup (`what`: its name, for the refusal of the next one);
    /// LIMIT_EXCEEDED (409 in the API) while another backup into `dir` runs.
    pub fn take(dir: &Path, what: &str) -> Result<Turn, Refusal> {
        let mut running = RUNNING.lock();
        if let Some(other) = running.get(dir) {
            return Err(Refusal::new(
                ErrorCode::LimitExceeded,
                format!(
                    "a backup is already running ({other} into {}): one at a time; try again \
                     when it is done",
                    dir.display()
                ),
            ));
        }
        running.insert(dir.to_path_buf(), what.to_owned());
        Ok(Turn(dir.to_path_buf()))
    }
}

/// A backup and where it is.
#[derive(Debug, Clone, Serialize)]
pub struct Located {
    pub path: PathBuf,
    pub backup: Manifest,
}

/// Where `sha256`'s file is under `root` (a data directory or a backup), as in
/// `service::media::file_path`.
fn media_file(root: &Path, sha256: &str) -> PathBuf {
    root.join(MEDIA_FILES).join(&sha256[..2]).join(sha256)
}

fn internal(what: impl std::fmt::Display) -> Refusal {
    Refusal::new(ErrorCode::Internal, format!("backup failed: {what}"))
}

/// Writes a backup of the running server into `backup_dir`: 201's answer, or LIMIT_EXCEEDED
/// while another runs, INTERNAL (with the cause) when it cannot be written (nothing is left
/// behind then).
pub async fn create(shared: &Arc<Shared>) -> Result<Located, Refusal> {
    let dir = shared.config.backup_path();
    let turn = Turn::take(&dir, "one started just before")?;
    let s = shared.clone();
    tokio::task::spawn_blocking(move || {
        let _turn = turn;
        write(&s, &dir)
    })
    .await
    .map_err(internal)?
    .map_err(|e| {
        tracing::error!("backup failed: {e}");
        internal(e)
    })
}

/// [`create`]'s work, on a blocking thread, holding the turn.
fn write(shared: &Shared, dir: &Path) -> Result<Located, String> {
    let at = |p: &Path| {
        let p = p.to_path_buf();
        move |e: io::Error| format!("{}: {e}", p.display())
    };
    std::fs::create_dir_all(dir).map_err(at(dir))?;
    // What a crash (or a failure that could not clean up) left: no backup runs into `dir` now.
    for entry in std::fs::read_dir(dir).map_err(at(dir))?.flatten() {
        if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    // A name not taken yet: at most one backup a second.
    let (name, stamp, started_ms) = loop {
        let now = crate::clock::now_ms();
        let (name, stamp) = utc(now);
        if !dir.join(&name).exists() {
            break (name, stamp, now);
        }
        std::thread::sleep(std::time::Duration::from_millis(
            (1000 - now.rem_euclid(1000)) as u64,
        ));
    };
    RUNNING.lock().insert(dir.to_path_buf(), name.clone());
    let tmp = dir.join(format!("{TMP_PREFIX}{name}"));
    let written = write_into(shared, &tmp, &name, &stamp, started_ms);
    let manifest = match written {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let path = dir.join(&name);
    if let Err(e) = std::fs::rename(&tmp, &path) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(format!("{} -> {}: {e}", tmp.display(), path.display()));
    }
    sync_dir(dir).map_err(at(dir))?;
    tracing::info!(
        path = %path.display(),
        files = manifest.files,
        bytes = manifest.bytes,
        took_ms = manifest.took_ms,
        "backup written"
    );
    Ok(Located {
        path,
        backup: manifest,
    })
}

/// Writes the whole backup into `tmp` and returns its manifest (written there too).
fn write_into(
    shared: &Shared,
    tmp: &Path,
    name: &str,
    stamp: &str,
    started_ms: i64,
) -> Result<Manifest, String> {
    let at = |p: &Path| {
        let p = p.to_path_buf();
        move |e: io::Error| format!("{}: {e}", p.display())
    };
    let data = &shared.config.data_dir;
    std::fs::create_dir(tmp).map_err(at(tmp))?;
    // Every finished file there is now, before the checkpoint (see the module's comment).
    let files_dir = data.join(MEDIA_FILES);
    for (sha, path) in media_files(&files_dir).map_err(at(&files_dir))? {
        let target = media_file(tmp, &sha);
        match link_or_copy(&path, &target) {
            Ok(()) => {}
            // Removed by the collector since it was listed: not in the checkpoint either.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{} -> {}: {e}", path.display(), target.display())),
        }
    }
    let db = tmp.join(DB);
    shared
        .store
        .core()
        .checkpoint(&db)
        .map_err(|e| format!("checkpoint into {}: {e}", db.display()))?;
    let held = inspect(&db).map_err(|e| format!("reading the checkpoint back: {e}"))?;
    // Files the checkpoint names that were not there before it; then drop the others.
    for sha in &held.files {
        debug_assert_eq!(
            media_file(data, sha),
            super::media::file_path(shared, sha),
            "the media layout"
        );
        let target = media_file(tmp, sha);
        if target.exists() {
            continue;
        }
        let source = media_file(data, sha);
        link_or_copy(&source, &target).map_err(|e| {
            format!(
                "the media file {} that the checkpoint's records use: {e} (removed while the \
                 backup ran; try again)",
                source.display()
            )
        })?;
    }
    let backed_files = tmp.join(MEDIA_FILES);
    for (sha, path) in media_files(&backed_files).map_err(at(&backed_files))? {
        if !held.files.contains(&sha) {
            std::fs::remove_file(&path).map_err(at(&path))?;
            if let Some(parent) = path.parent() {
                let _ = std::fs::remove_dir(parent); // only if empty
            }
        }
    }
    // Uploads in progress: what arrived so far.
    for id in &held.uploads {
        let source = super::media::upload_path(shared, id);
        let target = tmp.join(MEDIA_UPLOADS).join(id);
        let parent = target.parent().expect("under uploads/");
        std::fs::create_dir_all(parent).map_err(at(parent))?;
        match std::fs::copy(&source, &target) {
            Ok(_) => {}
            // Finished or dropped since the checkpoint: resumed from 0 after a restore.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::File::create(&target).map_err(at(&target))?;
            }
            Err(e) => return Err(format!("{}: {e}", source.display())),
        }
        std::fs::File::open(&target)
            .and_then(|f| f.sync_all())
            .map_err(at(&target))?;
    }
    let secret_file = shared.config.secret.is_none();
    if secret_file {
        let source = data.join(SECRET);
        let target = tmp.join(SECRET);
        copy_private(&source, &target).map_err(at(&source))?;
    }
    let store = walk(&db).map_err(at(&db))?;
    let media = walk(&backed_files).map_err(at(&backed_files))?;
    let uploads_dir = tmp.join(MEDIA_UPLOADS);
    let uploads = walk(&uploads_dir).map_err(at(&uploads_dir))?;
    let secret_bytes = if secret_file {
        std::fs::metadata(tmp.join(SECRET)).map_or(0, |m| m.len())
    } else {
        0
    };
    let manifest = Manifest {
        name: name.to_owned(),
        created_at: stamp.to_owned(),
        created_ms: started_ms,
        took_ms: (crate::clock::now_ms() - started_ms).max(0) as u64,
        missived_version: env!("CARGO_PKG_VERSION").to_owned(),
        schema_version: held.schema,
        rocksdb_sequence: held.sequence,
        last_msg_id: held.last_msg_id.to_string(),
        files: store.files + media.files + uploads.files + u64::from(secret_file),
        bytes: store.bytes + media.bytes + uploads.bytes + secret_bytes,
        store,
        media,
        uploads,
        media_records: held.media,
        secret_file,
    };
    let path = tmp.join(MANIFEST);
    let mut text = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
    text.push(b'\n');
    let mut f = std::fs::File::create_new(&path).map_err(at(&path))?;
    f.write_all(&text)
        .and_then(|()| f.sync_all())
        .map_err(at(&path))?;
    for d in [
        tmp.to_path_buf(),
        tmp.join("media"),
        uploads_dir,
        backed_files,
    ] {
        if d.exists() {
            sync_dir(&d).map_err(at(&d))?;
        }
    }
    Ok(manifest)
}

/// The finished files under `files` (`<ab>/<sha-256>`; nothing else, no temporary file):
/// (sha-256, path). None when `files` does not exist.
fn media_files(files: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let outer = match std::fs::read_dir(files) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for sub in outer {
        let sub = sub?;
        if !sub.file_type()?.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(sub.path())? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let sha =
                name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if sha && entry.file_type()?.is_file() {
                out.push((name, entry.path()));
            }
        }
    }
    Ok(out)
}

/// Hard-links `from` as `to` (its directory created), or copies it (synced) where a link cannot
/// be made (another filesystem). `NotFound` when `from` is gone.
fn link_or_copy(from: &Path, to: &Path) -> io::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(e),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(_) => {
            std::fs::copy(from, to)?;
            std::fs::File::open(to)?.sync_all()
        }
    }
}

/// Copies `from` to `to` readable by its owner only, synced.
fn copy_private(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = std::fs::read(from)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)?;
    f.write_all(&bytes)?;
    f.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Files under `dir` (recursively) and their bytes; nothing when it does not exist.
fn walk(dir: &Path) -> io::Result<Part> {
    let mut part = Part::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(part),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            let sub = walk(&entry.path())?;
            part.files += sub.files;
            part.bytes += sub.bytes;
        } else if kind.is_file() {
            part.files += 1;
            part.bytes += entry.metadata()?.len();
        }
    }
    Ok(part)
}

/// Reads a backup's manifest.
fn read_manifest(backup: &Path) -> Result<Manifest, String> {
    let path = backup.join(MANIFEST);
    let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The backups in `backup_dir`, oldest first: each directory with a backup's name and a
/// readable manifest (a backup being written has another name).
pub async fn list(shared: &Arc<Shared>) -> Result<(PathBuf, Vec<Located>), Refusal> {
    let dir = shared.config.backup_path();
    let d = dir.clone();
    let found = tokio::task::spawn_blocking(move || -> io::Result<Vec<Located>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !valid_name(&name) || !entry.file_type()?.is_dir() {
                continue;
            }
            match read_manifest(&entry.path()) {
                Ok(backup) => out.push(Located {
                    path: entry.path(),
                    backup,
                }),
                Err(e) => tracing::warn!("backup_dir: {name} is no backup: {e}"),
            }
        }
        out.sort_by(|a, b| a.backup.name.cmp(&b.backup.name));
        Ok(out)
    })
    .await
    .map_err(internal)?
    .map_err(|e| internal(format!("{}: {e}", dir.display())))?;
    Ok((dir, found))
}

/// Removes the backup `name` of `backup_dir`: INVALID_ARGUMENT for anything but a backup's
/// name ([`valid_name`]), NOT_FOUND when there is no backup of that name (a directory with its
/// manifest).
pub async fn delete(shared: &Arc<Shared>, name: &str) -> Result<(), Refusal> {
    if !valid_name(name) {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            format!(
                "{name:?} is not a backup's name (its UTC time as YYYYMMDDTHHMMSSZ, e.g. \
                 20261207T181500Z)"
            ),
        ));
    }
    let path = shared.config.backup_path().join(name);
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || {
        let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_dir());
        if !is_dir || !path.join(MANIFEST).is_file() {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                format!("no backup named {name}"),
            ));
        }
        std::fs::remove_dir_all(&path).map_err(|e| {
            Refusal::new(
                ErrorCode::Internal,
                format!("cannot remove {}: {e}", path.display()),
            )
        })?;
        tracing::info!(path = %path.display(), "backup removed");
        Ok(())
    })
    .await
    .map_err(internal)?
}

/// What [`restore`] put in place.
#[derive(Debug)]
pub struct Restored {
    pub manifest: Manifest,
    /// Files and bytes copied or linked.
    pub copied: Part,
    /// Media files and uploads found in place for the restored store's records.
    pub media_files: usize,
    pub uploads: usize,
}

/// Restores the backup at `backup` into `config.data_dir`, which must not exist or be empty:
/// copies the checkpoint, the media files (hard links where possible: they never change), the
/// uploads and the secret in; opens the store (upgrading an older schema, with the settings'
/// durability and fan-out threshold) and closes it; then reads it back: every column family of
/// the schema there, the schema version current, a file for every media record and upload.
/// On an error nothing is left in the data directory.
pub fn restore(backup: &Path, config: &Config) -> Result<Restored, String> {
    let manifest = read_manifest(backup).map_err(|e| {
        format!(
            "{} is not a backup ({MANIFEST} unreadable): {e}",
            backup.display()
        )
    })?;
    if manifest.schema_version > SCHEMA_VERSION {
        return Err(format!(
            "{} was written by a newer missived (schema {}, this one reads up to {SCHEMA_VERSION})",
            backup.display(),
            manifest.schema_version
        ));
    }
    let data = &config.data_dir;
    let exists = match std::fs::read_dir(data) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(format!(
                    "{} is not empty: restore into a new or empty directory (move the old data \
                     directory aside first)",
                    data.display()
                ));
            }
            true
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(format!("{}: {e}", data.display())),
    };
    if !backup.join(DB).join("CURRENT").is_file() {
        return Err(format!(
            "{}: no RocksDB store in {DB}/ (its CURRENT file is missing)",
            backup.display()
        ));
    }
    if !exists {
        std::fs::create_dir_all(data).map_err(|e| format!("{}: {e}", data.display()))?;
    }
    let created = !exists;
    match restore_into(backup, config, manifest) {
        Ok(r) => Ok(r),
        Err(e) => {
            if created {
                let _ = std::fs::remove_dir_all(data);
            } else if let Ok(entries) = std::fs::read_dir(data) {
                for entry in entries.flatten() {
                    let p = entry.path();
                    let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
                }
            }
            Err(e)
        }
    }
}

fn restore_into(backup: &Path, config: &Config, manifest: Manifest) -> Result<Restored, String> {
    let data = &config.data_dir;
    let mut copied = Part::default();
    copy_tree(backup, data, backup, &mut copied)
        .map_err(|e| format!("copying {} into {}: {e}", backup.display(), data.display()))?;
    let db = data.join(DB);
    let store = Store::open_with(&db, config.durability, config.fanout_threshold)
        .map_err(|e| format!("the restored store does not open: {e}"))?;
    store
        .core()
        .flush()
        .map_err(|e| format!("the restored store: {e}"))?;
    drop(store);
    let held = inspect(&db).map_err(|e| format!("the restored store: {e}"))?;
    if held.schema != SCHEMA_VERSION {
        return Err(format!(
            "the restored store has schema {}, not {SCHEMA_VERSION}",
            held.schema
        ));
    }
    let missing: BTreeSet<&String> = held
        .files
        .iter()
        .filter(|sha| !media_file(data, sha).is_file())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} media files the store's records use are not in the backup, e.g. {}",
            missing.len(),
            missing.iter().next().expect("not empty")
        ));
    }
    if let Some(id) = held
        .uploads
        .iter()
        .find(|id| !data.join(MEDIA_UPLOADS).join(id).is_file())
    {
        return Err(format!("the upload {id}'s file is not in the backup"));
    }
    Ok(Restored {
        manifest,
        copied,
        media_files: held.files.len(),
        uploads: held.uploads.len(),
    })
}

/// Copies what is under `from` (a part of the backup `root`) into `to`: `BACKUP.json` left out,
/// media files hard-linked where possible, everything else copied and synced, the secret
/// readable by its owner only.
fn copy_tree(from: &Path, to: &Path, root: &Path, copied: &mut Part) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&source, &target, root, copied)?;
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let rel = source.strip_prefix(root).unwrap_or(&source);
        if rel == Path::new(MANIFEST) {
            continue;
        }
        if rel == Path::new(SECRET) {
            copy_private(&source, &target)?;
        } else if rel.starts_with(MEDIA_FILES) {
            link_or_copy(&source, &target)?;
        } else {
            std::fs::copy(&source, &target)?;
            std::fs::File::open(&target)?.sync_all()?;
        }
        copied.files += 1;
        copied.bytes += entry.metadata()?.len();
    }
    sync_dir(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_utc_times_and_nothing_else() {
        assert_eq!(utc(0).0, "19700101T000000Z");
        assert_eq!(
            utc(1_796_667_300_000),
            (
                "20261207T181500Z".to_owned(),
                "2026-12-07T18:15:00Z".to_owned()
            )
        );
        assert_eq!(utc(951_868_799_999).1, "2000-02-29T23:59:59Z");
        assert_eq!(utc(4_107_542_400_000).1, "2100-03-01T00:00:00Z");
        assert!(valid_name("20261207T181500Z"));
        for bad in [
            "",
            "..",
            "../..",
            "..%2F..",
            "20261207T181500",
            "20261207T181500Z/",
            "2026120ZT181500Z",
            "20261207t181500z",
            "/20261207T18150Z",
            ".tmp-20261207T181500Z",
            "20261207T1815000Z",
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn one_backup_at_a_time_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let first = Turn::take(&a, "first").unwrap();
        let refused = Turn::take(&a, "second").err().expect("refused");
        assert_eq!(refused.code, ErrorCode::LimitExceeded);
        assert!(
            refused.message.contains("already running (first"),
            "{}",
            refused.message
        );
        let other = Turn::take(&b, "elsewhere").unwrap();
        drop(first);
        Turn::take(&a, "third").unwrap();
        drop(other);
    }

    #[test]
    fn restore_refuses_a_directory_with_something_in_it_and_a_non_backup() {
        let dir = tempfile::tempdir().unwrap();
        let backup = dir.path().join("20261207T181500Z");
        std::fs::create_dir_all(backup.join(DB)).unwrap();
        let config = |data: PathBuf| Config {
            data_dir: data,
            ..Config::default()
        };
        let err = restore(&backup, &config(dir.path().join("new"))).unwrap_err();
        assert!(err.contains("is not a backup"), "{err}");
        let manifest = Manifest {
            name: "20261207T181500Z".into(),
            created_at: "2026-12-07T18:15:00Z".into(),
            created_ms: 1_796_667_300_000,
            took_ms: 1,
            missived_version: "0".into(),
            schema_version: SCHEMA_VERSION,
            rocksdb_sequence: 0,
            last_msg_id: "0".into(),
            files: 0,
            bytes: 0,
            store: Part::default(),
            media: Part::default(),
            uploads: Part::default(),
            media_records: 0,
            secret_file: false,
        };
        std::fs::write(
            backup.join(MANIFEST),
            serde_json::to_vec(&manifest).unwrap(),
        )
        .unwrap();
        let full = dir.path().join("full");
        std::fs::create_dir_all(&full).unwrap();
        std::fs::write(full.join("keep"), b"x").unwrap();
        let err = restore(&backup, &config(full.clone())).unwrap_err();
        assert!(err.contains("is not empty"), "{err}");
        assert_eq!(
            std::fs::read(full.join("keep")).unwrap(),
            b"x",
            "left alone"
        );
        // An empty db/ is no store: refused, and nothing is made of the attempt.
        let fresh = dir.path().join("fresh");
        let err = restore(&backup, &config(fresh.clone())).unwrap_err();
        assert!(err.contains("no RocksDB store"), "{err}");
        assert!(!fresh.exists());
    }
}
