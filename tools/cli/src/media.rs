//! `missive upload` and `missive download`: media over HTTP on the server's public port
//! (PROTOCOL.md 28), with the login token as a bearer, through the minimal client of
//! [`crate::http1`].
//!
//! An upload hashes the file first (SHA-256, declared at the upload's creation so the server
//! refuses bytes that changed), then sends it in chunks (`PATCH` with `Upload-Offset`) over one
//! kept-alive connection, reading each chunk from the file as it goes out. A chunk that fails
//! (a cut connection, a timeout, a 5xx or 408) is resumed: after a short backoff, on a new
//! connection, the client asks where the server's copy stands (`GET /v1/media/uploads/{id}`)
//! and goes on from there; a `409` names that offset itself. A bounded number of failures in a
//! row ends the upload. A connection cut without the server knowing leaves the upload busy
//! (409 without an offset) until the server's read timeout ends that request: the client waits
//! for it, up to three times its own timeout (30 s by default). Then `finish`, whose JSON is the
//! command's output.
//!
//! A download streams the answer to a file or stdout. With `--range` it asks for those bytes
//! and accepts only a `206` whose `Content-Range` is the range asked for; a whole file is
//! checked against its `ETag` (the bytes' sha-256).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWrite};

use crate::args::Global;
use crate::http1::{Body, Conn, Head, HttpError};
use crate::net::{login_token, timeout};
use sha2::{Digest, Sha256};

/// The largest JSON answer read (they are a few hundred bytes; a preview is at most 1 KiB).
const MAX_JSON: u64 = 1 << 20;
/// The first wait before a retry; doubled each time, up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(4);
/// How often to ask whether an upload the server still sees written to is free again.
const BUSY_WAIT: Duration = Duration::from_secs(1);

/// The host:port the media requests go to: `--addr`, whatever its scheme for the protocol.
fn authority(addr: &str) -> Result<String> {
    for tls in ["tls://", "wss://", "https://"] {
        if addr.starts_with(tls) {
            bail!("{addr}: this CLI connects without TLS (plain host:port, tcp:// or ws://)");
        }
    }
    let rest = ["tcp://", "ws://", "http://"]
        .iter()
        .find_map(|p| addr.strip_prefix(p))
        .unwrap_or(addr);
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() {
        bail!("--addr {addr:?}: expected host:port");
    }
    Ok(host.to_owned())
}

/// A path segment, percent-encoded (a media id is 32 hex digits; anything else is sent as
/// given, encoded, and the server answers 404).
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The media endpoints of one server, for one user: a connection kept between requests and
/// opened again when it cannot carry another.
struct MediaClient {
    authority: String,
    bearer: String,
    idle: Duration,
    conn: Option<Conn>,
}

impl MediaClient {
    fn new(g: &Global) -> Result<MediaClient> {
        Ok(MediaClient {
            authority: authority(&g.addr)?,
            bearer: format!("Bearer {}", login_token(g)?),
            idle: timeout(g),
            conn: None,
        })
    }

    /// The open connection, or a new one.
    async fn conn(&mut self) -> Result<&mut Conn> {
        if !self.conn.as_ref().is_some_and(Conn::reusable) {
            if let Some(old) = self.conn.take() {
                old.close().await;
            }
            let conn = Conn::connect(&self.authority, self.idle).await?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("just opened"))
    }

    /// Drops the connection (after a failure: the next request opens a new one).
    fn reset(&mut self) {
        self.conn = None;
    }

    /// Sends a request and reads its head; `idle` overrides the idle timeout.
    async fn head(
        &mut self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: Body<'_>,
        idle: Option<Duration>,
    ) -> Result<Head> {
        let bearer = self.bearer.clone();
        let normal = self.idle;
        let mut headers = vec![("Authorization", bearer.as_str())];
        headers.extend_from_slice(extra);
        let conn = self.conn().await?;
        if let Some(idle) = idle {
            conn.set_idle(idle);
        }
        let head = conn.request(method, path, &headers, body).await;
        conn.set_idle(normal);
        match head {
            Ok(h) => Ok(h),
            Err(e) => {
                self.reset();
                Err(anyhow::Error::new(e).context(format!("{method} {path}")))
            }
        }
    }

    /// The answer's body, read in full (small answers only).
    async fn small_body(&mut self) -> Result<Vec<u8>> {
        let conn = self.conn.as_mut().ok_or_else(|| anyhow!("no connection"))?;
        match conn.body_bytes(MAX_JSON).await {
            Ok(b) => Ok(b),
            Err(e) => {
                self.reset();
                Err(e.into())
            }
        }
    }

    /// A request whose answer is JSON: the JSON of a 2xx, else an [`HttpError`].
    async fn call(
        &mut self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: Body<'_>,
        idle: Option<Duration>,
    ) -> Result<Value> {
        let head = self.head(method, path, extra, body, idle).await?;
        let bytes = self.small_body().await?;
        if !(200..300).contains(&head.status) {
            return Err(HttpError::of(&head, &bytes).into());
        }
        serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{method} {path}: HTTP {} with a body that is not JSON: {:?}",
                head.status,
                String::from_utf8_lossy(&bytes)
            )
        })
    }
}

/// `offset` from an upload's JSON.
fn offset_of(v: &Value) -> Result<u64> {
    v["offset"]
        .as_u64()
        .ok_or_else(|| anyhow!("no offset in the server's answer: {v}"))
}

/// The SHA-256 of a file, in hex, read in blocks.
async fn file_sha256(file: &mut tokio::fs::File) -> Result<String> {
    file.seek(std::io::SeekFrom::Start(0)).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Progress on stderr: a line that rewrites itself on a terminal, a line per step otherwise.
struct Progress {
    tty: bool,
    what: &'static str,
    total: u64,
    shown: bool,
}

impl Progress {
    fn new(what: &'static str, total: u64) -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            what,
            total,
            shown: false,
        }
    }

    fn show(&mut self, done: u64) {
        // Rounded down: 100% only when it is all there.
        let pct = (done as u128 * 100)
            .checked_div(self.total as u128)
            .unwrap_or(100);
        let line = format!("{}: {done}/{} bytes ({pct}%)", self.what, self.total);
        if self.tty {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
        self.shown = true;
    }

    /// Ends the rewritten line before something else is printed.
    fn line_break(&mut self) {
        if self.tty && self.shown {
            eprintln!();
            self.shown = false;
        }
    }
}

/// `missive upload FILE`.
pub async fn upload(
    g: &Global,
    path: &Path,
    chunk: u64,
    content_type: Option<String>,
    retries: u32,
) -> Result<ExitCode> {
    let mut file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    let meta = file.metadata().await?;
    if !meta.is_file() {
        bail!("{} is not a file", path.display());
    }
    let size = meta.len();
    let sha = file_sha256(&mut file)
        .await
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut client = MediaClient::new(g)?;
    eprintln!(
        "upload: {}, {size} bytes, sha256 {sha}, to {}",
        path.display(),
        client.authority
    );

    let mut create = json!({"size": size, "sha256": sha});
    if let Some(t) = &content_type {
        create["content_type"] = t.clone().into();
    }
    let create = create.to_string();
    let created = client
        .call(
            "POST",
            "/v1/media/uploads",
            &[("Content-Type", "application/json")],
            Body::Bytes(create.as_bytes()),
            None,
        )
        .await
        .context("creating the upload")?;
    let id = created["upload_id"]
        .as_str()
        .ok_or_else(|| anyhow!("no upload_id in the server's answer: {created}"))?
        .to_owned();
    let upload_path = format!("/v1/media/uploads/{}", segment(&id));
    let mut offset = offset_of(&created)?;

    let mut progress = Progress::new("upload", size);
    let mut failures = 0u32;
    // After a failure: ask where the upload stands before sending more.
    let mut ask = false;
    // Since when the server has said the upload is busy (see below), and for how long to wait.
    let mut busy_since: Option<Instant> = None;
    let busy_patience = timeout(g).max(Duration::from_secs(10)) * 3;
    loop {
        let step: Result<()> = async {
            if ask {
                let at = client
                    .call("GET", &upload_path, &[], Body::Empty, None)
                    .await?;
                offset = offset_of(&at)?;
                ask = false;
                if busy_since.is_none() {
                    progress.line_break();
                    eprintln!("upload: the server has {offset} bytes; resuming from there");
                }
            }
            if offset >= size {
                return Ok(());
            }
            let len = chunk.min(size - offset);
            file.seek(std::io::SeekFrom::Start(offset)).await?;
            let mut piece = (&mut file).take(len);
            let at = offset.to_string();
            let answer = client
                .call(
                    "PATCH",
                    &upload_path,
                    &[
                        ("Upload-Offset", at.as_str()),
                        ("Content-Type", "application/offset+octet-stream"),
                        // A refusal (wrong offset, busy upload) before the chunk is sent.
                        ("Expect", "100-continue"),
                    ],
                    Body::Reader(&mut piece, len),
                    None,
                )
                .await?;
            let now = offset_of(&answer)?;
            if now <= offset {
                bail!("the server's offset did not move past {offset} ({answer})");
            }
            offset = now;
            progress.show(offset);
            Ok(())
        }
        .await;
        match step {
            Ok(()) => {
                failures = 0;
                busy_since = None;
                if offset >= size && !ask {
                    break;
                }
            }
            Err(e) => {
                progress.line_break();
                let http = e.downcast_ref::<HttpError>();
                // 409 without an offset: another request is writing to the upload, ours cut
                // off without the server knowing yet (it notices within its read timeout, 10 s
                // by default). Not a failure of this attempt: wait for it, for a while.
                if http.is_some_and(|h| h.status == 409 && h.offset.is_none()) {
                    let since = *busy_since.get_or_insert_with(|| {
                        eprintln!(
                            "upload: {}; waiting for the server to let go of it (up to {} s)",
                            crate::output::error_text(&e),
                            busy_patience.as_secs()
                        );
                        Instant::now()
                    });
                    if since.elapsed() >= busy_patience {
                        return Err(e.context(format!(
                            "upload {id} at byte {offset}: still busy after {} s",
                            busy_patience.as_secs()
                        )));
                    }
                    client.reset();
                    tokio::time::sleep(BUSY_WAIT).await;
                    ask = true;
                    continue;
                }
                failures += 1;
                if let Some(h) = http {
                    // A wrong offset: the answer says where to go on from.
                    if let (409, Some(at)) = (h.status, h.offset) {
                        eprintln!("upload: {h}; going on from byte {at}");
                        offset = at;
                        if failures > retries {
                            return Err(e.context(format!("giving up after {failures} tries")));
                        }
                        continue;
                    }
                    if !h.transient() {
                        return Err(e.context(format!("upload {id} at byte {offset}")));
                    }
                }
                if failures > retries {
                    return Err(e.context(format!(
                        "upload {id} at byte {offset}: giving up after {failures} failures in a row"
                    )));
                }
                let wait = BACKOFF_FIRST
                    .saturating_mul(1 << (failures - 1).min(8))
                    .min(BACKOFF_MAX);
                eprintln!(
                    "upload: {}; retrying in {} ms ({failures}/{retries})",
                    crate::output::error_text(&e),
                    wait.as_millis()
                );
                client.reset();
                tokio::time::sleep(wait).await;
                ask = true;
            }
        }
    }
    progress.line_break();

    // The finish hashes, sniffs and (for images) makes a thumbnail: give it longer.
    let finish_path = format!("{upload_path}/finish");
    let slow = timeout(g).max(Duration::from_secs(10)) * 6;
    let mut tries = 0;
    let info = loop {
        match client
            .call("POST", &finish_path, &[], Body::Empty, Some(slow))
            .await
        {
            Ok(v) => break v,
            Err(e) if e.downcast_ref::<HttpError>().is_none() && tries < retries => {
                tries += 1;
                eprintln!(
                    "upload: finish: {}; retrying (a 404 next means the first one finished)",
                    crate::output::error_text(&e)
                );
                client.reset();
                tokio::time::sleep(BACKOFF_FIRST).await;
            }
            Err(e) => return Err(e.context(format!("finishing upload {id}"))),
        }
    };
    client.reset();
    if info["sha256"].as_str().is_some_and(|s| s != sha) {
        bail!("the server stored sha256 {}, not {sha}", info["sha256"]);
    }
    if g.json {
        println!("{info}");
    } else {
        println!("{}", media_text(&info));
        if let Some(id) = info["media_id"].as_str() {
            println!("attach it: missive send --to USER --media {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `media 5f0c...: 52133 bytes image/jpeg 640x480, thumbnail, preview 612 bytes, sha256 ...`.
fn media_text(v: &Value) -> String {
    let mut extra = String::new();
    if let (Some(w), Some(h)) = (v["width"].as_u64(), v["height"].as_u64()) {
        extra.push_str(&format!(" {w}x{h}"));
    }
    if let Some(d) = v["duration_ms"].as_u64() {
        extra.push_str(&format!(" {d} ms"));
    }
    if v["thumbnail"].as_bool() == Some(true) {
        extra.push_str(", thumbnail");
    }
    if let Some(p) = v["preview_base64"].as_str() {
        match missive_protocol::base64::decode(p) {
            Some(bytes) => extra.push_str(&format!(", preview {} bytes", bytes.len())),
            None => extra.push_str(", preview (not base64)"),
        }
    }
    format!(
        "media {}: {} bytes {}{extra}, sha256 {}",
        v["media_id"].as_str().unwrap_or("?"),
        v["size"],
        v["content_type"].as_str().unwrap_or("?"),
        v["sha256"].as_str().unwrap_or("?"),
    )
}

/// A `--range`: `a-b`, `a-` or `-n` (a `bytes=` prefix is allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    From(u64, Option<u64>),
    Last(u64),
}

impl Want {
    fn parse(s: &str) -> Result<Want> {
        let spec = s.trim();
        let spec = spec.strip_prefix("bytes=").unwrap_or(spec);
        let bad = || anyhow!("--range {s:?}: expected a-b, a- or -n (bytes, from 0)");
        let (a, b) = spec.split_once('-').ok_or_else(bad)?;
        let num = |t: &str| t.trim().parse::<u64>().map_err(|_| bad());
        match (a.trim().is_empty(), b.trim().is_empty()) {
            (true, false) if num(b)? > 0 => Ok(Want::Last(num(b)?)),
            (false, true) => Ok(Want::From(num(a)?, None)),
            (false, false) if num(a)? <= num(b)? => Ok(Want::From(num(a)?, Some(num(b)?))),
            _ => Err(bad()),
        }
    }

    fn header(&self) -> String {
        match self {
            Want::From(a, Some(b)) => format!("bytes={a}-{b}"),
            Want::From(a, None) => format!("bytes={a}-"),
            Want::Last(n) => format!("bytes=-{n}"),
        }
    }

    /// The bytes `first..=last` of a file of `size` this range means.
    fn bounds(&self, size: u64) -> Option<(u64, u64)> {
        match *self {
            Want::From(a, _) if a >= size => None,
            Want::From(a, b) => Some((a, b.unwrap_or(u64::MAX).min(size - 1))),
            Want::Last(n) if size > 0 => Some((size - n.min(size), size - 1)),
            Want::Last(_) => None,
        }
    }
}

/// `bytes first-last/size` of a `Content-Range`.
fn content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, size) = rest.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    Some((
        first.trim().parse().ok()?,
        last.trim().parse().ok()?,
        size.trim().parse().ok()?,
    ))
}

/// A writer that hashes what passes through it.
struct Hashing<'a> {
    inner: &'a mut (dyn AsyncWrite + Unpin + Send),
    hasher: Sha256,
}

impl AsyncWrite for Hashing<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let n = std::task::ready!(Pin::new(&mut *this.inner).poll_write(cx, buf))?;
        this.hasher.update(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

/// `missive download MEDIA_ID`.
pub async fn download(
    g: &Global,
    media_id: &str,
    output: Option<PathBuf>,
    range: Option<String>,
    thumbnail: bool,
) -> Result<ExitCode> {
    let want = range.as_deref().map(Want::parse).transpose()?;
    let output = output.filter(|p| p.as_os_str() != "-");
    let mut client = MediaClient::new(g)?;
    let path = format!(
        "/v1/media/{}{}",
        segment(media_id),
        if thumbnail { "/thumbnail" } else { "" }
    );
    let range_header = want.map(|w| w.header());
    let mut extra = Vec::new();
    if let Some(r) = &range_header {
        extra.push(("Range", r.as_str()));
    }
    let head = client.head("GET", &path, &extra, Body::Empty, None).await?;
    let content_type = head.header("content-type").unwrap_or("?").to_owned();
    let got_range = head.header("content-range").map(str::to_owned);

    // Only what was asked for is written.
    let refuse =
        |why: String| -> Result<ExitCode> { Err(anyhow!("GET {path}: {why}; nothing written")) };
    match (head.status, want) {
        (200, None) => {}
        (206, Some(w)) => {
            let Some((first, last, size)) = got_range.as_deref().and_then(content_range) else {
                return refuse(format!("a 206 with Content-Range {got_range:?}"));
            };
            if w.bounds(size) != Some((first, last)) {
                return refuse(format!(
                    "asked for {}, got bytes {first}-{last} of {size}",
                    w.header()
                ));
            }
            if head.content_length != last - first + 1 {
                return refuse(format!(
                    "Content-Range bytes {first}-{last} but Content-Length {}",
                    head.content_length
                ));
            }
        }
        (200, Some(w)) => {
            return refuse(format!(
                "asked for {} but the server sent the whole file (200, {} bytes)",
                w.header(),
                head.content_length
            ))
        }
        (status, _) if (200..300).contains(&status) => {
            return refuse(format!("unexpected HTTP {status} {}", head.reason));
        }
        _ => {
            let body = client.small_body().await.unwrap_or_default();
            let mut e = HttpError::of(&head, &body);
            if head.status == 416 {
                if let Some(size) = got_range
                    .as_deref()
                    .and_then(|r| r.strip_prefix("bytes */"))
                {
                    e.message = format!("{} (the file has {size} bytes)", e.message);
                }
            }
            return Err(anyhow::Error::new(e).context(format!("GET {path}")));
        }
    }

    let total = head.content_length;
    let etag_sha = head
        .header("etag")
        .map(|e| e.trim_matches('"').to_owned())
        .filter(|e| e.len() == 64 && e.bytes().all(|b| b.is_ascii_hexdigit()));
    let mut file = match &output {
        Some(p) => Some(
            tokio::fs::File::create(p)
                .await
                .with_context(|| format!("cannot create {}", p.display()))?,
        ),
        None => None,
    };
    let mut stdout = tokio::io::stdout();
    let sink: &mut (dyn AsyncWrite + Unpin + Send) = match &mut file {
        Some(f) => f,
        None => &mut stdout,
    };
    let mut hashing = Hashing {
        inner: sink,
        hasher: Sha256::new(),
    };
    let mut progress = Progress::new("download", total);
    let tty = progress.tty;
    let mut last_shown = 0u64;
    let copied = client
        .conn
        .as_mut()
        .ok_or_else(|| anyhow!("no connection"))?
        .body_to(&mut hashing, |done| {
            // On a terminal only, at most every MiB: the summary follows.
            if tty && (done - last_shown >= 1 << 20 || done == total) {
                last_shown = done;
                progress.show(done);
            }
        })
        .await;
    progress.line_break();
    let hash = hex::encode(hashing.hasher.finalize());
    let fail = |e: anyhow::Error| -> Result<ExitCode> {
        if let Some(p) = &output {
            let _ = std::fs::remove_file(p);
        }
        Err(e)
    };
    let bytes = match copied {
        Ok(n) => n,
        Err(e) => return fail(anyhow::Error::new(e).context(format!("GET {path}"))),
    };
    if let Some(f) = file.as_mut() {
        if let Err(e) = f.sync_all().await {
            return fail(anyhow::Error::new(e).context("cannot write the file"));
        }
    }
    // A whole file is its ETag's sha-256.
    let verified = match (&etag_sha, head.status) {
        (Some(expected), 200) if !expected.eq_ignore_ascii_case(&hash) => {
            return fail(anyhow!(
                "GET {path}: the bytes' sha256 is {hash}, the ETag says {expected}"
            ))
        }
        (Some(_), 200) => true,
        _ => false,
    };
    client.reset();

    let to = output
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "stdout".into());
    if g.json {
        let v = json!({
            "status": head.status, "bytes": bytes, "content_type": content_type,
            "content_range": got_range, "etag": head.header("etag"),
            "sha256_verified": verified, "output": to,
        });
        // On stdout unless the bytes went there.
        if output.is_some() {
            println!("{v}");
        } else {
            eprintln!("{v}");
        }
    } else {
        eprintln!(
            "{} {}: {bytes} bytes {content_type}{}{} -> {to}",
            head.status,
            head.reason,
            got_range.map(|r| format!(", {r}")).unwrap_or_default(),
            if verified { ", sha256 verified" } else { "" },
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_match_what_the_server_sends() {
        assert_eq!(Want::parse("0-99").unwrap(), Want::From(0, Some(99)));
        assert_eq!(Want::parse("bytes=5-").unwrap(), Want::From(5, None));
        assert_eq!(Want::parse("-100").unwrap(), Want::Last(100));
        for bad in ["", "5", "9-1", "-0", "a-b", "1-2-3", "-"] {
            assert!(Want::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Want::From(0, Some(99)).bounds(1000), Some((0, 99)));
        assert_eq!(Want::From(990, Some(5000)).bounds(1000), Some((990, 999)));
        assert_eq!(Want::From(900, None).bounds(1000), Some((900, 999)));
        assert_eq!(Want::Last(100).bounds(1000), Some((900, 999)));
        assert_eq!(Want::Last(5000).bounds(1000), Some((0, 999)));
        assert_eq!(Want::From(1000, None).bounds(1000), None);
        assert_eq!(Want::Last(100).header(), "bytes=-100");
        assert_eq!(content_range("bytes 0-99/1000"), Some((0, 99, 1000)));
        assert_eq!(content_range("bytes */1000"), None);
    }

    #[test]
    fn addresses_and_ids() {
        assert_eq!(authority("127.0.0.1:7000").unwrap(), "127.0.0.1:7000");
        assert_eq!(authority("tcp://h:1").unwrap(), "h:1");
        assert_eq!(authority("ws://h:80/ws").unwrap(), "h:80");
        assert!(authority("tls://h:443").is_err());
        assert_eq!(segment("0123abcdef"), "0123abcdef");
        assert_eq!(segment("../x y"), "..%2Fx%20y");
    }

    #[test]
    fn an_error_answer_reads_as_the_server_wrote_it() {
        let head = Head {
            status: 409,
            reason: "Conflict".into(),
            headers: vec![("upload-offset".into(), "7".into())],
            content_length: 0,
        };
        let body = br#"{"error":{"code":11,"name":"INVALID_ARGUMENT","message":"wrong offset","offset":5}}"#;
        let e = HttpError::of(&head, body);
        assert_eq!((e.status, e.code, e.offset), (409, Some(11), Some(5)));
        assert_eq!(
            e.to_string(),
            "HTTP 409 Conflict: server error INVALID_ARGUMENT (11): wrong offset (the upload stands at byte 5)"
        );
        let e = HttpError::of(&head, b"oops");
        assert_eq!(
            (e.code, e.offset, e.message.as_str()),
            (None, Some(7), "oops")
        );
    }
}
