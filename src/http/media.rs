//! The media endpoints on the public ports (docs/media.md, issue #19): resumable uploads and
//! downloads with `Range`, for a user with its login token as a bearer. `net::web` hands over a
//! connection whose first request is under `/v1/media/`; it is served here as HTTP/1.1 with
//! keep-alive (hyper), so that an upload's chunks and a player's range requests reuse it.
//!
//! - `POST /v1/media/uploads` `{"size", "content_type"?, "sha256"?}` -> 201 `{"upload_id", "offset", "size"}`
//! - `GET /v1/media/uploads/{id}` -> `{"upload_id", "offset", "size"}`: how much arrived
//! - `PATCH /v1/media/uploads/{id}` with `Upload-Offset` and the chunk -> `{..., "offset"}`
//! - `POST /v1/media/uploads/{id}/finish` -> 201 `{"media_id", "size", "sha256", "content_type", ...}`
//! - `GET`/`HEAD /v1/media/{id}` and `/v1/media/{id}/thumbnail`: the bytes, `Range` honoured
//! - `POST /v1/media/{id}/url` `{"expires_in"?, "thumbnail"?}` -> 201 `{"url", "expires"}`: a
//!   signed URL that anyone may GET without a token until it expires (for a player or a CDN)
//!
//! A chunk is streamed to its file as it arrives (no chunk is held in memory); a read that makes
//! no progress for `media_read_timeout_ms` ends the request (what arrived is kept: the client
//! resumes from it). Downloads stream from the file.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::BytesMut;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use missive_protocol::ErrorCode;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncSeekExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::error::ApiError;
use super::user_send::authenticate;
use crate::context::Shared;
use crate::net::web::MediaConn;
use crate::net::ws::Io;
use crate::service::media::{self, MediaRefusal, NewUpload};

/// What every handler of one connection holds.
#[derive(Clone)]
struct Ctx {
    shared: Arc<Shared>,
    ip: IpAddr,
    secure: bool,
    /// The `Authorization` a request of this connection passed with: a later request with the
    /// same one is checked again but takes no second place in the login rate (a player's range
    /// requests or an upload's chunks are one login, not one each).
    passed: Arc<parking_lot::Mutex<Option<String>>>,
}

/// Serves `conn` (its first request's bytes already read) until the client closes it, a head
/// is slower than `media_read_timeout_ms`, or the server stops.
pub async fn serve(shared: &Arc<Shared>, conn: MediaConn, ip: IpAddr) {
    let ctx = Ctx {
        shared: shared.clone(),
        ip,
        secure: conn.secure,
        passed: Arc::default(),
    };
    let app = Router::new()
        .route("/v1/media/uploads", post(create))
        .route("/v1/media/uploads/{id}", get(status).patch(append))
        .route("/v1/media/uploads/{id}/finish", post(finish))
        .route("/v1/media/{id}", get(download))
        .route("/v1/media/{id}/thumbnail", get(thumbnail))
        .route("/v1/media/{id}/url", post(sign))
        .fallback(|| async {
            refusal(MediaRefusal::new(
                404,
                ErrorCode::NotFound,
                "no such endpoint",
            ))
        })
        .with_state(ctx);
    let io = TokioIo::new(Prefixed {
        read: conn.read,
        io: conn.io,
    });
    let timeout = Duration::from_millis(shared.config.media_read_timeout_ms);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeout);
    let serving = builder.serve_connection(io, TowerToHyperService::new(app));
    tokio::select! {
        _ = serving => {}
        _ = shared.shutdown.cancelled() => {}
    }
}

/// The connection's bytes: those already read first, then the socket's.
struct Prefixed {
    read: BytesMut,
    io: Box<dyn Io>,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A refusal as JSON: `{"error": {"code", "name", "message"[, "offset"]}}` with its status.
fn refusal(r: MediaRefusal) -> Response {
    let mut error = json!({"code": r.code as u32, "name": r.code.name(), "message": r.message});
    if let Some(offset) = r.offset {
        error["offset"] = offset.into();
    }
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (status, Json(json!({ "error": error }))).into_response();
    if let Some(offset) = r.offset {
        response
            .headers_mut()
            .insert("upload-offset", HeaderValue::from(offset));
    }
    response
}

/// The request's user, by its bearer token (checked as `POST /v1/send` checks it).
async fn user(ctx: &Ctx, headers: &HeaderMap) -> Result<String, Response> {
    let shared = &ctx.shared;
    if !ctx.secure && !shared.config.allow_plain {
        let e = ApiError::new(
            ErrorCode::TlsRequired,
            "this server accepts TLS only (https://)",
        );
        return Err(e.into_response());
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let rated = authorization.is_none() || *ctx.passed.lock() != authorization.map(str::to_owned);
    match authenticate(shared, authorization, ctx.ip, rated).await {
        Ok((user, _device)) => {
            *ctx.passed.lock() = authorization.map(str::to_owned);
            Ok(user)
        }
        Err(e) => {
            shared.metrics.error(e.code);
            Err(e.into_response())
        }
    }
}

macro_rules! user_or_answer {
    ($ctx:expr, $headers:expr) => {
        match user(&$ctx, &$headers).await {
            Ok(u) => u,
            Err(response) => return response,
        }
    };
}

async fn create(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    let user = user_or_answer!(ctx, headers);
    let req: NewUpload = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("body: {e}");
            return refusal(MediaRefusal::new(400, ErrorCode::BadBody, msg));
        }
    };
    match media::create(&ctx.shared, &user, req).await {
        Ok(state) => (StatusCode::CREATED, Json(state)).into_response(),
        Err(r) => refusal(r),
    }
}

async fn status(State(ctx): State<Ctx>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let user = user_or_answer!(ctx, headers);
    match media::status(&ctx.shared, &user, &id).await {
        Ok(state) => state_response(state),
        Err(r) => refusal(r),
    }
}

/// The least rate a chunk must arrive at, past the read timeout (slow senders hold a socket and
/// the upload's turn, so they are bounded too).
const MIN_RATE: u64 = 8 * 1024;

async fn append(State(ctx): State<Ctx>, Path(id): Path<String>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let user = user_or_answer!(ctx, parts.headers);
    let number = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let Some(offset) = number("upload-offset") else {
        let msg = "Upload-Offset: the chunk's offset is required";
        return refusal(MediaRefusal::new(400, ErrorCode::InvalidArgument, msg));
    };
    let Some(len) = number("content-length") else {
        let msg = "Content-Length is required (no chunked bodies)";
        return refusal(MediaRefusal::new(411, ErrorCode::BadBody, msg));
    };
    let shared = &ctx.shared;
    let mut chunk = match media::append(shared, &user, &id, offset, len).await {
        Ok(a) => a,
        Err(r) => return refusal(r),
    };
    let timeout = Duration::from_millis(shared.config.media_read_timeout_ms);
    let deadline = tokio::time::Instant::now() + timeout + Duration::from_secs(len / MIN_RATE);
    let mut body = body;
    let mut got = 0u64;
    let ended = loop {
        let wait = timeout.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(wait, body.frame()).await {
            Err(_) => break Some("the chunk stopped arriving (read timeout)"),
            Ok(None) => break None,
            Ok(Some(Err(_))) => break Some("the chunk was cut short"),
            Ok(Some(Ok(frame))) => {
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                if got + data.len() as u64 > len {
                    break Some("the body is longer than its Content-Length");
                }
                if let Err(e) = chunk.file.write_all(data).await {
                    tracing::error!("media upload {id}: {e}");
                    let r = MediaRefusal::new(500, ErrorCode::Internal, "cannot write the upload");
                    return refusal(r);
                }
                got += data.len() as u64;
            }
        }
    };
    // What arrived is kept, synced, whatever ended the chunk: the client resumes from it.
    if let Err(e) = chunk.file.sync_data().await {
        tracing::error!("media upload {id}: {e}");
        return refusal(MediaRefusal::new(
            500,
            ErrorCode::Internal,
            "cannot sync the upload",
        ));
    }
    let (offset, size) = (chunk.offset + got, chunk.size);
    // The upload's turn ends here: the client may resume at once.
    drop(chunk);
    if let Some(why) = ended {
        let mut r = MediaRefusal::new(
            408,
            ErrorCode::BadBody,
            format!("{why}; resume at {offset}"),
        );
        r.offset = Some(offset);
        return refusal(r);
    }
    state_response(media::UploadState {
        upload_id: id,
        offset,
        size,
    })
}

/// Where an upload stands, as JSON and in `Upload-Offset`.
fn state_response(state: media::UploadState) -> Response {
    let offset = state.offset;
    let mut r = Json(state).into_response();
    r.headers_mut()
        .insert("upload-offset", HeaderValue::from(offset));
    r
}

async fn finish(State(ctx): State<Ctx>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let user = user_or_answer!(ctx, headers);
    match media::finish(&ctx.shared, &user, &id).await {
        Ok(info) => (StatusCode::CREATED, Json(info)).into_response(),
        Err(r) => refusal(r),
    }
}

async fn download(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    serve_file(ctx, id, query, headers, false).await
}

async fn thumbnail(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    serve_file(ctx, id, query, headers, true).await
}

/// What a signed URL asks for.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SignBody {
    /// Seconds the URL lives (default an hour, at most a week).
    #[serde(default = "an_hour")]
    expires_in: u64,
    /// The thumbnail's URL instead of the file's.
    #[serde(default)]
    thumbnail: bool,
}

fn an_hour() -> u64 {
    3600
}

async fn sign(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let user = user_or_answer!(ctx, headers);
    let req: SignBody = if body.is_empty() {
        SignBody {
            expires_in: an_hour(),
            thumbnail: false,
        }
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                let msg = format!("body: {e}");
                return refusal(MediaRefusal::new(400, ErrorCode::BadBody, msg));
            }
        }
    };
    match media::signed_url(&ctx.shared, &user, &id, req.thumbnail, req.expires_in).await {
        Ok((url, expires)) => (
            StatusCode::CREATED,
            Json(json!({"url": url, "expires": expires})),
        )
            .into_response(),
        Err(r) => refusal(r),
    }
}

/// `expires` and `sig` of a signed URL's query, if it has them.
fn signed_query(query: Option<&str>) -> Option<(u64, String)> {
    let (mut expires, mut sig) = (None, None);
    for pair in query?.split('&') {
        match pair.split_once('=') {
            Some(("expires", v)) => expires = v.parse().ok(),
            Some(("sig", v)) => sig = Some(v.to_owned()),
            _ => {}
        }
    }
    Some((expires?, sig?))
}

/// A media file (or its thumbnail): whole, or the one range asked for; 304 when the client
/// holds it already (its ETag is the bytes' sha-256: media never change). With a signed URL's
/// `expires` and `sig` in the query, no token is needed.
async fn serve_file(
    ctx: Ctx,
    id: String,
    query: Option<String>,
    headers: HeaderMap,
    thumbnail: bool,
) -> Response {
    let signed = signed_query(query.as_deref());
    let opened = match &signed {
        Some((expires, sig)) => {
            if !ctx.secure && !ctx.shared.config.allow_plain {
                let msg = "this server accepts TLS only (https://)";
                return ApiError::new(ErrorCode::TlsRequired, msg).into_response();
            }
            media::open_signed(&ctx.shared, &id, thumbnail, *expires, sig).await
        }
        None => {
            let user = user_or_answer!(ctx, headers);
            media::open(&ctx.shared, &user, &id, thumbnail).await
        }
    };
    let (record, path) = match opened {
        Ok(found) => found,
        Err(r) => return refusal(r),
    };
    let (sha, content_type) = if thumbnail {
        (record.thumbnail_sha256, record.thumbnail_type)
    } else {
        (record.sha256, record.content_type)
    };
    let etag = format!("\"{sha}\"");
    let mut common = HeaderMap::new();
    let value = |s: &str| HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""));
    common.insert(header::ETAG, value(&etag));
    // A signed URL may be cached by anyone (a CDN) until it expires; a token's answer only by
    // the client.
    let cache = match &signed {
        Some((expires, _)) => {
            let left = expires.saturating_sub((crate::clock::now_ms() / 1000) as u64);
            format!("public, max-age={left}, immutable")
        }
        None => "private, max-age=31536000, immutable".to_owned(),
    };
    common.insert(header::CACHE_CONTROL, value(&cache));
    common.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let held = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if held {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("media {id}: {}: {e}", path.display());
            return refusal(MediaRefusal::new(
                500,
                ErrorCode::Internal,
                "the file is missing",
            ));
        }
    };
    let size = match file.metadata().await {
        Ok(m) => m.len(),
        Err(_) => {
            return refusal(MediaRefusal::new(
                500,
                ErrorCode::Internal,
                "the file is missing",
            ))
        }
    };
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, size));
    let (status, start, len) = match range {
        None | Some(Range::Ignored) => (StatusCode::OK, 0, size),
        Some(Range::Unsatisfiable) => {
            common.insert(header::CONTENT_RANGE, value(&format!("bytes */{size}")));
            let r = MediaRefusal::new(
                416,
                ErrorCode::InvalidArgument,
                "the range is not in the file",
            );
            let mut response = refusal(r);
            response.headers_mut().extend(common);
            return response;
        }
        Some(Range::Bytes(first, last)) => {
            let cr = format!("bytes {first}-{last}/{size}");
            common.insert(header::CONTENT_RANGE, value(&cr));
            (StatusCode::PARTIAL_CONTENT, first, last - first + 1)
        }
    };
    if start > 0 && file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return refusal(MediaRefusal::new(
            500,
            ErrorCode::Internal,
            "cannot read the file",
        ));
    }
    common.insert(header::CONTENT_TYPE, value(&content_type));
    common.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    let stream = tokio_util::io::ReaderStream::with_capacity(
        tokio::io::AsyncReadExt::take(file, len),
        64 * 1024,
    );
    (status, common, Body::from_stream(stream)).into_response()
}

/// A `Range` header's meaning for a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
enum Range {
    /// Bytes `first..=last`.
    Bytes(u64, u64),
    /// A range past the end: 416.
    Unsatisfiable,
    /// Not one byte range this server serves (another unit, several ranges, bad syntax): the
    /// whole file, as HTTP allows.
    Ignored,
}

fn parse_range(value: &str, size: u64) -> Range {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Range::Ignored;
    };
    if spec.contains(',') {
        return Range::Ignored;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Range::Ignored;
    };
    let (a, b) = (a.trim(), b.trim());
    match (a.parse::<u64>(), b.parse::<u64>()) {
        // The last `n` bytes.
        (Err(_), Ok(n)) if a.is_empty() => {
            if n == 0 || size == 0 {
                Range::Unsatisfiable
            } else {
                Range::Bytes(size - n.min(size), size - 1)
            }
        }
        (Ok(first), Err(_)) if b.is_empty() => {
            if first >= size {
                Range::Unsatisfiable
            } else {
                Range::Bytes(first, size - 1)
            }
        }
        (Ok(first), Ok(last)) if first <= last => {
            if first >= size {
                Range::Unsatisfiable
            } else {
                Range::Bytes(first, last.min(size - 1))
            }
        }
        _ => Range::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_as_http_says() {
        use Range::*;
        assert_eq!(parse_range("bytes=0-99", 1000), Bytes(0, 99));
        assert_eq!(parse_range("bytes=900-", 1000), Bytes(900, 999));
        assert_eq!(parse_range("bytes=-100", 1000), Bytes(900, 999));
        assert_eq!(parse_range("bytes=-5000", 1000), Bytes(0, 999));
        assert_eq!(parse_range("bytes=990-5000", 1000), Bytes(990, 999));
        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=1000-1001", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 1000), Ignored);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Ignored);
        assert_eq!(parse_range("items=0-1", 1000), Ignored);
        assert_eq!(parse_range("bytes=x-y", 1000), Ignored);
    }
}
