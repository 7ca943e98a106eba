//! A minimal HTTP/1.1 client for the media endpoints (PROTOCOL.md 28), over the same byte
//! stream the CLI uses for the binary protocol (a `tokio` TCP stream to `--addr`).
//!
//! What it does, and no more: one kept-alive connection; a request is its head and a
//! `Content-Length` body (none, bytes in memory, or streamed from a reader, so a chunk of a
//! file is never held whole); an answer is its status line and headers, then exactly
//! `Content-Length` bytes, read into memory (small JSON answers) or copied to a writer (a
//! download). Chunked answers are refused: the server always sends a length on these
//! endpoints. A request with `Expect: 100-continue` sends its head, then its body only once
//! the server says to go on (or after [`CONTINUE_WAIT`] without an answer), so a server that
//! refuses a chunk before reading it (a wrong offset, a chunk too large, an upload busy) does
//! so before any byte of it is sent. And while a body is being written the answer is watched
//! for: a server that answers early, and may close the connection, stops the writing; the
//! refusal is read, and the next request goes on a new connection.
//!
//! Every read and write makes progress within the idle timeout, or the request fails with
//! [`std::io::ErrorKind::TimedOut`]; a slow but moving transfer is never cut.

use std::fmt;
use std::io;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf,
    WriteHalf,
};
use tokio::net::TcpStream;

/// The byte stream under a connection (TCP today; anything that reads and writes).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The largest answer head read (status line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// The buffer a streamed body is copied through.
const COPY_BUF: usize = 64 * 1024;
/// How long a request with `Expect: 100-continue` waits for the server's go-ahead before
/// sending its body anyway.
const CONTINUE_WAIT: Duration = Duration::from_secs(1);

/// A request's body.
pub enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// Exactly `len` bytes read from the reader as they are sent.
    Reader(&'a mut (dyn AsyncRead + Unpin + Send), u64),
}

impl Body<'_> {
    fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::Reader(_, n) => *n,
        }
    }
}

/// An answer's head; its body is read with [`Conn::body_bytes`] or [`Conn::body_to`].
#[derive(Debug, Clone)]
pub struct Head {
    pub status: u16,
    pub reason: String,
    /// Names in lowercase, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body's length (0 for a HEAD request, 204 and 304).
    pub content_length: u64,
}

impl Head {
    /// The first header of this name (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }
}

/// One HTTP/1.1 connection, kept alive between requests.
pub struct Conn {
    reader: BufReader<ReadHalf<Box<dyn Io>>>,
    writer: WriteHalf<Box<dyn Io>>,
    host: String,
    idle: Duration,
    /// Body bytes of the last answer not read yet.
    unread: u64,
    /// False once the connection cannot carry another request (the server said `close`, an
    /// answer came before its request's body was sent, an error).
    reusable: bool,
}

impl Conn {
    /// Opens a plain TCP connection to `authority` (`host:port`).
    pub async fn connect(authority: &str, idle: Duration) -> io::Result<Conn> {
        let tcp = with_timeout(idle, TcpStream::connect(authority))
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot connect to {authority}: {e}")))?;
        tcp.set_nodelay(true)?;
        Ok(Conn::over(Box::new(tcp), authority, idle))
    }

    /// A connection over an open stream (the `Host` header names `authority`).
    pub fn over(io: Box<dyn Io>, authority: &str, idle: Duration) -> Conn {
        let (r, w) = tokio::io::split(io);
        Conn {
            reader: BufReader::with_capacity(COPY_BUF, r),
            writer: w,
            host: authority.to_owned(),
            idle,
            unread: 0,
            reusable: true,
        }
    }

    /// Sets the idle timeout (each read and write must make progress within it).
    pub fn set_idle(&mut self, idle: Duration) {
        self.idle = idle;
    }

    /// Whether another request may be sent on this connection.
    pub fn reusable(&self) -> bool {
        self.reusable && self.unread == 0
    }

    /// Sends a request and reads its answer's head. `headers` are sent as given, after `Host`
    /// and before `Content-Length` (sent for every body, and for an empty POST or PATCH).
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> io::Result<Head> {
        if !self.reusable() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the connection cannot carry another request",
            ));
        }
        // Until the answer is read in full, a failure leaves the connection unusable.
        self.reusable = false;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        for (k, v) in headers {
            if [k, v].iter().any(|s| s.contains(['\r', '\n'])) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a header with a line break",
                ));
            }
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        let len = body.len();
        if len > 0 || method == "POST" || method == "PATCH" || method == "PUT" {
            head.push_str(&format!("Content-Length: {len}\r\n"));
        }
        head.push_str("\r\n");

        let idle = self.idle;
        let mut head = head.into_bytes();
        let expect = len > 0
            && headers.iter().any(|(k, v)| {
                k.eq_ignore_ascii_case("expect") && v.eq_ignore_ascii_case("100-continue")
            });
        if expect {
            // The head alone; the body only once the server says to go on (or does not answer
            // in time, RFC 9110 10.1.1). A refusal then comes before any byte of the body,
            // rather than racing it and being lost to a reset.
            with_timeout(idle, async {
                self.writer.write_all(&head).await?;
                self.writer.flush().await
            })
            .await?;
            head.clear();
            // fill_buf, not a head read: it can be given up without losing bytes.
            let answered = tokio::time::timeout(CONTINUE_WAIT, self.reader.fill_buf()).await;
            if let Ok(ready) = answered {
                ready?;
                let first = with_timeout(idle, read_one_head(&mut self.reader)).await?;
                if !(100..200).contains(&first.status) {
                    return Ok(self.answered(method, first, true));
                }
            }
        }
        let (answer, early) = {
            let sending = send(&mut self.writer, &head, body, idle);
            let answer = read_head(&mut self.reader, idle);
            tokio::pin!(sending, answer);
            tokio::select! {
                sent = &mut sending => match sent {
                    Ok(()) => (answer.await?, false),
                    // The server may have answered and closed before taking the body: read it.
                    Err(e) => match with_timeout(idle, &mut answer).await {
                        Ok(head) => (head, true),
                        Err(_) => return Err(e),
                    },
                },
                head = &mut answer => (head?, true),
            }
        };
        Ok(self.answered(method, answer, early))
    }

    /// Records an answer's head: its body's length and whether the connection goes on.
    /// `early`: it came before its request's body was all sent.
    fn answered(&mut self, method: &str, head: Head, early: bool) -> Head {
        let head = if method == "HEAD" {
            Head {
                content_length: 0,
                ..head
            }
        } else {
            head
        };
        self.unread = head.content_length;
        self.reusable = !early && !head.closes();
        head
    }

    /// The answer's body, in memory; at most `max` bytes (an answer over it is an error).
    pub async fn body_bytes(&mut self, max: u64) -> io::Result<Vec<u8>> {
        if self.unread > max {
            self.reusable = false;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "an answer of {} bytes (at most {max} expected)",
                    self.unread
                ),
            ));
        }
        let mut body = Vec::with_capacity(self.unread as usize);
        let mut sink = &mut body;
        self.body_to(&mut sink, |_| {}).await?;
        Ok(body)
    }

    /// Copies the answer's body to `out` as it arrives, calling `progress` with the bytes
    /// copied so far; returns how many were copied (all of them, or an error).
    pub async fn body_to(
        &mut self,
        out: &mut (dyn AsyncWrite + Unpin + Send),
        mut progress: impl FnMut(u64),
    ) -> io::Result<u64> {
        let total = self.unread;
        let mut done = 0u64;
        while self.unread > 0 {
            let buf = with_timeout(self.idle, self.reader.fill_buf()).await?;
            if buf.is_empty() {
                self.reusable = false;
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the connection closed after {done} of {total} bytes"),
                ));
            }
            let n = buf.len().min(self.unread as usize);
            let write = with_timeout(self.idle, out.write_all(&buf[..n])).await;
            if let Err(e) = write {
                self.reusable = false;
                return Err(e);
            }
            self.reader.consume(n);
            self.unread -= n as u64;
            done += n as u64;
            progress(done);
        }
        with_timeout(self.idle, out.flush()).await?;
        Ok(done)
    }

    /// Closes the connection (best effort).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.writer.shutdown()).await;
    }
}

/// `fut`, failing with `TimedOut` if it does not finish within `idle`.
async fn with_timeout<T>(
    idle: Duration,
    fut: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match tokio::time::timeout(idle, fut).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no progress within {}s", idle.as_secs_f64()),
        )),
    }
}

/// Writes the head and the body.
async fn send(
    w: &mut WriteHalf<Box<dyn Io>>,
    head: &[u8],
    body: Body<'_>,
    idle: Duration,
) -> io::Result<()> {
    match body {
        Body::Empty => with_timeout(idle, w.write_all(head)).await?,
        Body::Bytes(b) => with_timeout(idle, w.write_all(&[head, b].concat())).await?,
        Body::Reader(r, len) => {
            if !head.is_empty() {
                with_timeout(idle, w.write_all(head)).await?;
            }
            let mut buf = vec![0u8; COPY_BUF];
            let mut left = len;
            while left > 0 {
                let want = left.min(COPY_BUF as u64) as usize;
                let n = with_timeout(idle, r.read(&mut buf[..want])).await?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the body ended {left} bytes short"),
                    ));
                }
                with_timeout(idle, w.write_all(&buf[..n])).await?;
                left -= n as u64;
            }
        }
    }
    with_timeout(idle, w.flush()).await
}

/// Reads an answer's head (skipping `1xx` interim answers).
async fn read_head(r: &mut BufReader<ReadHalf<Box<dyn Io>>>, idle: Duration) -> io::Result<Head> {
    loop {
        let head = with_timeout(idle, read_one_head(r)).await?;
        if !(100..200).contains(&head.status) {
            return Ok(head);
        }
    }
}

async fn read_one_head(r: &mut BufReader<ReadHalf<Box<dyn Io>>>) -> io::Result<Head> {
    let mut lines = Vec::new();
    let mut size = 0;
    loop {
        let mut line = Vec::new();
        let n = (&mut *r)
            .take((MAX_HEAD - size + 1) as u64)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                if lines.is_empty() {
                    "the server closed the connection without an answer"
                } else {
                    "the server closed the connection mid-answer"
                },
            ));
        }
        size += n;
        if size > MAX_HEAD {
            return Err(bad(format!("an answer head over {MAX_HEAD} bytes")));
        }
        let text =
            String::from_utf8(line).map_err(|_| bad("an answer head not in UTF-8".into()))?;
        let text = text.trim_end_matches(['\r', '\n']).to_owned();
        if text.is_empty() {
            if lines.is_empty() {
                continue; // a stray blank line before the status line
            }
            break;
        }
        lines.push(text);
    }
    parse_head(&lines)
}

/// A head from its lines (status line first).
fn parse_head(lines: &[String]) -> io::Result<Head> {
    let status_line = &lines[0];
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(bad(format!("not an HTTP/1 answer: {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line: {status_line:?}")))?;
    let reason = parts.next().unwrap_or("").to_owned();
    let mut headers = Vec::new();
    for line in &lines[1..] {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line: {line:?}")))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let mut head = Head {
        status,
        reason,
        headers,
        content_length: 0,
    };
    if head.header("transfer-encoding").is_some() {
        return Err(bad(format!(
            "a {} answer with Transfer-Encoding (only Content-Length bodies are read)",
            head.status
        )));
    }
    head.content_length = match head.header("content-length") {
        Some(v) => v
            .parse()
            .map_err(|_| bad(format!("bad Content-Length: {v:?}")))?,
        None if status == 204 || status == 304 || (100..200).contains(&status) => 0,
        None => {
            return Err(bad(format!(
                "a {status} answer without Content-Length (not supported)"
            )))
        }
    };
    Ok(head)
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// A refusal from the media endpoints: the status and the JSON error
/// `{"error": {"code", "name", "message"[, "offset"]}}` (or the body as text).
#[derive(Debug)]
pub struct HttpError {
    pub status: u16,
    pub reason: String,
    pub code: Option<u32>,
    pub name: String,
    pub message: String,
    /// Where the upload stands (a wrong offset, an early finish, a stalled chunk).
    pub offset: Option<u64>,
}

impl HttpError {
    pub(crate) fn of(head: &Head, body: &[u8]) -> HttpError {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let e = &v["error"];
        let text = String::from_utf8_lossy(body).trim().to_owned();
        HttpError {
            status: head.status,
            reason: head.reason.clone(),
            code: e["code"].as_u64().map(|c| c as u32),
            name: e["name"].as_str().unwrap_or("").to_owned(),
            message: e["message"].as_str().map(str::to_owned).unwrap_or(text),
            offset: e["offset"]
                .as_u64()
                .or_else(|| head.header("upload-offset").and_then(|o| o.parse().ok())),
        }
    }

    /// The JSON form `--json` prints.
    pub fn to_json(&self) -> Value {
        let mut e = json!({"status": self.status, "message": self.message});
        if let Some(code) = self.code {
            e["code"] = code.into();
            e["name"] = self.name.clone().into();
        }
        if let Some(offset) = self.offset {
            e["offset"] = offset.into();
        }
        json!({ "error": e })
    }

    /// Worth another try: the server failed or a chunk stalled, not a refusal of the request.
    pub(crate) fn transient(&self) -> bool {
        self.status == 408 || self.status >= 500
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {} {}", self.status, self.reason)?;
        if let Some(code) = self.code {
            write!(f, ": server error {} ({code})", self.name)?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if let Some(offset) = self.offset {
            write!(f, " (the upload stands at byte {offset})")?;
        }
        Ok(())
    }
}

impl std::error::Error for HttpError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(idle: Duration) -> (Conn, tokio::io::DuplexStream) {
        let (client, server) = tokio::io::duplex(1 << 20);
        (Conn::over(Box::new(client), "h:1", idle), server)
    }

    #[tokio::test]
    async fn a_request_and_its_answer_then_another_on_the_same_connection() {
        let (mut conn, mut server) = pair(Duration::from_secs(5));
        let serve = tokio::spawn(async move {
            let mut got = vec![0u8; 4096];
            let mut all = Vec::new();
            // Two requests: read until both bodies arrived.
            while !String::from_utf8_lossy(&all).contains("world") {
                let n = server.read(&mut got).await.unwrap();
                assert!(n > 0, "the client closed early");
                all.extend_from_slice(&got[..n]);
                if String::from_utf8_lossy(&all).contains("hello") && all.ends_with(b"hello") {
                    server
                        .write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok")
                        .await
                        .unwrap();
                }
            }
            server
                .write_all(b"HTTP/1.1 206 Partial\r\nContent-Range: bytes 0-4/9\r\nContent-Length: 5\r\n\r\n12345")
                .await
                .unwrap();
            String::from_utf8(all).unwrap()
        });
        let head = conn
            .request("POST", "/a", &[("X-A", "1")], Body::Bytes(b"hello"))
            .await
            .unwrap();
        assert_eq!((head.status, head.content_length), (201, 2));
        assert!(!conn.reusable(), "its body is still unread");
        assert_eq!(conn.body_bytes(100).await.unwrap(), b"ok");
        assert!(conn.reusable());
        let mut src: &[u8] = b"world!!";
        let head = conn
            .request("PATCH", "/b", &[], Body::Reader(&mut src, 5))
            .await
            .unwrap();
        assert_eq!(head.status, 206);
        assert_eq!(head.header("content-range"), Some("bytes 0-4/9"));
        let mut out = Vec::new();
        let mut sink = &mut out;
        assert_eq!(conn.body_to(&mut sink, |_| {}).await.unwrap(), 5);
        assert_eq!(out, b"12345");
        let sent = serve.await.unwrap();
        assert!(
            sent.starts_with(
                "POST /a HTTP/1.1\r\nHost: h:1\r\nX-A: 1\r\nContent-Length: 5\r\n\r\nhello"
            ),
            "{sent}"
        );
        assert!(
            sent.ends_with("PATCH /b HTTP/1.1\r\nHost: h:1\r\nContent-Length: 5\r\n\r\nworld"),
            "{sent}"
        );
    }

    #[tokio::test]
    async fn an_answer_before_the_body_is_sent_stops_the_upload() {
        // A small pipe: the body cannot be written while nobody reads it.
        let (client, mut server) = tokio::io::duplex(1024);
        let mut conn = Conn::over(Box::new(client), "h", Duration::from_secs(5));
        let serve = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let _ = server.read(&mut buf).await.unwrap();
            let answer =
                b"HTTP/1.1 409 Conflict\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
            server.write_all(answer).await.unwrap();
            server // kept open, unread
        });
        let big = vec![7u8; 1 << 20];
        let head = conn
            .request("PATCH", "/u", &[], Body::Bytes(&big))
            .await
            .unwrap();
        assert_eq!(head.status, 409);
        assert_eq!(conn.body_bytes(10).await.unwrap(), b"{}");
        assert!(!conn.reusable());
        drop(serve.await.unwrap());
    }

    #[tokio::test]
    async fn with_expect_the_body_waits_for_the_go_ahead_and_a_refusal_stops_it() {
        let expect = [("Expect", "100-continue")];
        // Refused on its head: not a byte of the body is sent.
        let (mut conn, mut server) = pair(Duration::from_secs(5));
        let serve = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let n = server.read(&mut buf).await.unwrap();
            let answer = b"HTTP/1.1 409 Conflict\r\nContent-Length: 0\r\n\r\n";
            server.write_all(answer).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let more = tokio::time::timeout(Duration::from_millis(10), server.read(&mut buf)).await;
            (
                String::from_utf8_lossy(&buf[..n]).into_owned(),
                more.is_ok(),
            )
        });
        let head = conn
            .request("PATCH", "/u", &expect, Body::Bytes(b"0123456789"))
            .await
            .unwrap();
        assert_eq!(head.status, 409);
        assert!(!conn.reusable());
        let (got, more) = serve.await.unwrap();
        assert!(
            got.ends_with("Expect: 100-continue\r\nContent-Length: 10\r\n\r\n"),
            "{got}"
        );
        assert!(!more, "the body was not sent");

        // Told to go on: the body follows, then the answer.
        let (mut conn, mut server) = pair(Duration::from_secs(5));
        let serve = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let _ = server.read(&mut buf).await.unwrap();
            server
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .unwrap();
            let n = server.read(&mut buf).await.unwrap();
            let body = String::from_utf8_lossy(&buf[..n]).into_owned();
            server
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .unwrap();
            body
        });
        let head = conn
            .request("PATCH", "/u", &expect, Body::Bytes(b"0123456789"))
            .await
            .unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(conn.body_bytes(10).await.unwrap(), b"ok");
        assert!(conn.reusable());
        assert_eq!(serve.await.unwrap(), "0123456789");
    }

    #[tokio::test]
    async fn a_short_body_a_silent_server_and_a_chunked_answer_are_errors() {
        let (mut conn, mut server) = pair(Duration::from_millis(300));
        server
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            .await
            .unwrap();
        conn.request("GET", "/", &[], Body::Empty).await.unwrap();
        drop(server);
        let err = conn.body_bytes(100).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");

        let (mut conn, _server) = pair(Duration::from_millis(300));
        let err = conn
            .request("GET", "/", &[], Body::Empty)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");

        let (mut conn, mut server) = pair(Duration::from_secs(5));
        server
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        let err = conn
            .request("GET", "/", &[], Body::Empty)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("Transfer-Encoding"), "{err}");
    }
}
