//! The API's connections: at most `http_max_connections` open at once, each served by hyper's
//! HTTP/1.1 with deadlines, so that a client that stops half way cannot hold a connection (and
//! its task and buffers) for long:
//!
//! - the request head (request line and headers) must arrive within `http_header_timeout_ms`
//!   of the connection's opening or of its previous answer, else the connection is closed
//!   without an answer (hyper's `header_read_timeout`; its clock also runs while a keep-alive
//!   connection waits for its next request, so an idle connection is closed after as long);
//! - the request body must arrive whole within `http_body_timeout_ms` of its head, else the
//!   answer is 408 with `BAD_BODY` (6) and the connection is closed ([`body_deadline`]).
//!
//! A connection beyond the limit is answered 503 `SERVER_BUSY` (18) and closed at once, in the
//! accept loop, without a task or a read of its request ([`refuse`]).
//!
//! `missive_http_connections_refused_total` counts the refused connections,
//! `missive_http_timeouts_total` the requests cut off at a deadline (not idle connections
//! closed at the head timeout: [`Watched`] tells them apart).

use std::future::Future;
use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use missive_protocol::ErrorCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_util::task::TaskTracker;

use super::error::ApiError;
use super::state::AppState;
use crate::context::Shared;

/// `Retry-After` of the answer to a connection beyond the limit.
const BUSY_RETRY_MS: u32 = 1000;

/// Accepts API connections until the server shuts down; each is served by a task of `tasks`,
/// which finishes the request in flight when the server shuts down and then closes.
pub(super) async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    app: Router,
    tasks: TaskTracker,
) {
    let limit = Arc::new(Semaphore::new(shared.config.http_max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(shared.config.http_header_timeout_ms));
    let busy = busy_answer();
    let stop = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("HTTP API: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            shared.metrics.http_connections_refused.inc();
            shared.metrics.error(ErrorCode::ServerBusy);
            refuse(stream, &busy);
            continue;
        };
        let unanswered = Arc::new(AtomicBool::new(false));
        let io = TokioIo::new(Watched {
            stream,
            unanswered: unanswered.clone(),
        });
        let conn = http.serve_connection(io, TowerToHyperService::new(app.clone()));
        let (stop, shared) = (stop.clone(), shared.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let mut conn = std::pin::pin!(conn);
            let served = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    // Ends an idle connection now, one with a request under way after its
                    // answer (the deadlines still bound how long that takes).
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = served {
                // hyper's head timeout also ends idle connections: only one that had begun a
                // request is counted.
                if e.is_timeout() && unanswered.load(Ordering::Relaxed) {
                    shared.metrics.http_timeouts.inc();
                }
                tracing::debug!(%peer, "HTTP API connection: {e}");
            }
        });
    }
}

/// An API connection's socket that notes whether the client has sent anything since the
/// server last wrote: a head timeout then cut a request short, else it closed an idle
/// connection.
struct Watched {
    stream: TcpStream,
    unanswered: Arc<AtomicBool>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.stream).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.unanswered.store(true, Ordering::Relaxed);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.stream).poll_write(cx, buf))?;
        self.unanswered.store(false, Ordering::Relaxed);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.stream).poll_write_vectored(cx, bufs))?;
        self.unanswered.store(false, Ordering::Relaxed);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The whole answer to a connection beyond the limit: 503 with the API's error body.
fn busy_answer() -> Vec<u8> {
    let mut error = ApiError::new(
        ErrorCode::ServerBusy,
        "the HTTP API is at its connection limit (http_max_connections); retry later",
    );
    error.retry_after_ms = BUSY_RETRY_MS;
    let body = error.json().to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: {}\r\nconnection: close\r\n\r\n{body}",
        body.len(),
        BUSY_RETRY_MS.div_ceil(1000),
    )
    .into_bytes()
}

/// Answers `busy` and closes, without waiting for anything: the answer is written with one
/// non-blocking write (a new socket's send buffer has room for it), and what the client has
/// already sent is read and dropped first so that closing does not reset the connection under
/// the answer. A request that arrives later still meets a reset: then the client sees that
/// instead of the 503.
fn refuse(stream: TcpStream, busy: &[u8]) {
    // tokio's own `try_write` would see no write readiness yet on a socket this new.
    let Ok(mut socket) = stream.into_std() else {
        return;
    };
    let mut sink = [0u8; 4096];
    for _ in 0..4 {
        match socket.read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    let _ = socket.write(busy);
}

/// A missed body deadline, as the body's error.
#[derive(Debug)]
struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive within http_body_timeout_ms")
    }
}

impl std::error::Error for BodyTimeout {}

/// Gives each request body `http_body_timeout_ms` from now (its head has just been read) to
/// arrive; one that misses it fails whatever reads it, and the answer becomes 408 with
/// `BAD_BODY` and `Connection: close`. (There is no timeout code in the protocol's table:
/// `BAD_BODY` is what the socket protocol answers for a body that is not what was expected.)
pub(super) async fn body_deadline(
    State(shared): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let ms = shared.config.http_body_timeout_ms;
    let expired = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_millis(ms);
    let flag = expired.clone();
    let req = req.map(|inner| {
        Body::new(Deadline {
            inner,
            deadline,
            sleep: None,
            expired: flag,
        })
    });
    let response = next.run(req).await;
    if !expired.load(Ordering::Relaxed) {
        return response;
    }
    shared.metrics.http_timeouts.inc();
    let msg =
        format!("the request body did not arrive whole within http_body_timeout_ms ({ms} ms)");
    let mut response = ApiError::new(ErrorCode::BadBody, msg).into_response();
    *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
    // The rest of the body would be read as the next request.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request body that fails once `deadline` has passed, and then sets `expired`.
struct Deadline {
    inner: Body,
    deadline: Instant,
    /// Armed only when the body keeps its reader waiting: most arrive with their head.
    sleep: Option<Pin<Box<Sleep>>>,
    expired: Arc<AtomicBool>,
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(sleep.as_mut().poll(cx));
        this.expired.store(true, Ordering::Relaxed);
        Poll::Ready(Some(Err(axum::Error::new(BodyTimeout))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_answer_is_a_whole_http_response_with_the_error_body() {
        let text = String::from_utf8(busy_answer()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(head.contains("connection: close"), "{head}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], ErrorCode::ServerBusy as u32);
        assert_eq!(v["error"]["retry_after_ms"], BUSY_RETRY_MS);
    }
}
