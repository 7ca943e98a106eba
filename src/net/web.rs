//! HTTP on the public ports: the WebSocket transport (`GET /ws`) and the entry point
//! (`GET /v1/entry`), for clients on networks that only let HTTP through, and a user's send
//! over HTTP (`POST /v1/send`, answered by `http::user_send`: this layer cannot call the
//! service).
//!
//! A connection (plain, or inside TLS) whose first bytes are `GET /ws` or `GET /v1/entry`,
//! then a space or `?`, is an HTTP request: a binary frame starts with the top byte of its
//! length, and `G` (`0x47`) would make it far larger than any accepted frame. Any other bytes,
//! other HTTP requests included, are read as frames (and refused as FRAME_TOO_LARGE). Only the
//! request head is read (at most [`MAX_HEAD`] bytes, within the login timeout). `GET /ws` with a WebSocket upgrade becomes a [`WsIo`] that
//! the session serves exactly like a TCP connection; `GET /v1/entry` is answered with JSON and
//! the connection closed; anything else gets an HTTP error and is closed.

use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use tokio_util::sync::CancellationToken;

use super::entry;
use super::ws::{Io, WsIo};
use crate::config::Config;

/// The first byte of an HTTP request this server answers (`GET`).
pub const HTTP_FIRST: u8 = b'G';
/// The first byte of `POST /v1/send`: as a frame's first byte it would announce over 1.3 GB.
pub const HTTP_POST_FIRST: u8 = b'P';
/// A user's send over HTTP, with the user's login token.
pub const SEND_PATH: &str = "/v1/send";
/// The WebSocket endpoint.
pub use crate::config::WS_PATH;
/// The entry-point endpoint.
pub const ENTRY_PATH: &str = "/v1/entry";
/// The subprotocol the server confirms when the client offers it.
pub const SUBPROTOCOL: &str = "missive.v1";
/// Largest request head read.
pub const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 64;

/// The request-line starts that are HTTP here; each must be followed by a space or `?`, but
/// for the media ones (ending in `/`), which are prefixes of their paths.
/// (`GET /v1/send` is answered too, with 405: a browser or a mistyped curl learns the method.)
const ENDPOINTS: [&[u8]; 8] = [
    b"GET /ws",
    b"GET /v1/entry",
    b"POST /v1/send",
    b"GET /v1/send",
    b"GET /v1/media/",
    b"HEAD /v1/media/",
    b"POST /v1/media/",
    b"PATCH /v1/media/",
];

/// The media endpoints' paths start so (uploads and downloads, served by `http::media` over a
/// kept-alive HTTP/1.1 connection).
pub const MEDIA_PREFIX: &str = "/v1/media/";

/// Whether a connection's first byte may start a request for one of the endpoints (`G`, `P`,
/// `H`: as a frame's first byte each would announce over a gigabyte).
pub fn may_be_http(first: u8) -> bool {
    first == HTTP_FIRST || first == HTTP_POST_FIRST || first == b'H'
}

/// Whether `buf`, the first bytes of a connection, start a request for one of the endpoints
/// (`None`: not yet known). Anything else, other HTTP requests included, is read as frames.
pub fn is_endpoint_request(buf: &[u8]) -> Option<bool> {
    for e in ENDPOINTS {
        let n = buf.len().min(e.len());
        if buf[..n] != e[..n] {
            continue;
        }
        if e.ends_with(b"/") {
            return if buf.len() >= e.len() {
                Some(true)
            } else {
                None
            };
        }
        return match buf.get(e.len()) {
            None => None,
            Some(b' ' | b'?') => Some(true),
            Some(_) => continue,
        };
    }
    Some(false)
}

/// Reads the first bytes of a connection into `buf` until [`is_endpoint_request`] can tell (a
/// connection silent past `deadline` is left to the frame path). `None`: the client went away.
pub async fn sniff<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    deadline: Instant,
) -> Option<bool> {
    loop {
        if let Some(known) = is_endpoint_request(buf) {
            return Some(known);
        }
        buf.reserve(64);
        match tokio::time::timeout_at(deadline, io.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return None,
            Err(_) => return Some(false),
        }
    }
}

/// A parsed request head.
#[derive(Debug)]
pub struct Head {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query, without the `?` (empty when there is none).
    pub query: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether header `name` holds `token` in its comma-separated list (case-insensitive).
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// Parses a request head (the bytes up to and including the blank line).
pub fn parse_head(bytes: &[u8]) -> Result<Head, &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "request head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let mut parts = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("bad request line");
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err("not HTTP/1.x");
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if !path.starts_with('/') {
        return Err("bad request target");
    }
    let mut headers = Vec::new();
    for line in lines.take_while(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err("bad header line");
        };
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err("bad header name");
        }
        if headers.len() == MAX_HEADERS {
            return Err("too many headers");
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    Ok(Head {
        method: method.to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        version: version.to_owned(),
        headers,
    })
}

/// The end of the head (after `\r\n\r\n`) in `buf`, if it is all there.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// A complete response that closes the connection.
pub fn response(status: &str, content_type: &str, extra: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

fn error(status: &str, message: &str) -> Vec<u8> {
    response(
        status,
        "text/plain; charset=utf-8",
        &[],
        format!("{message}\n").as_bytes(),
    )
}

/// What answering HTTP on the public ports needs to know of the server.
pub struct Site<'a> {
    pub config: &'a Config,
    /// The bound listener addresses (for the entry point).
    pub bound: &'a [std::net::SocketAddr],
    /// Cancelled at shutdown: a request still arriving is abandoned.
    pub shutdown: &'a CancellationToken,
    /// In a cluster: the client addresses to list for a user (`None`: no `user=`), the node
    /// that serves the user first (docs/CLUSTER.md section 6). Empty: as a single node.
    pub cluster_entry: Option<&'a EntryAddresses>,
}

/// The client addresses a cluster lists for a user (`GET /v1/entry?user=`).
pub type EntryAddresses = dyn Fn(Option<&str>) -> Vec<String> + Send + Sync;

/// What an HTTP request on a public port turned into, once its head was read.
pub enum Accepted {
    /// A WebSocket, to serve as a session.
    Ws(Box<WsIo>),
    /// `POST /v1/send`: for the caller to answer (`http::user_send`). Its body is not read
    /// yet ([`read_body`]), so that a request without a valid token costs no body's memory.
    Send(Post),
    /// A request under [`MEDIA_PREFIX`]: the connection, with every byte read so far (the
    /// first request's head included), for the caller to serve as HTTP/1.1 (`http::media`).
    Media(MediaConn),
}

/// A connection whose first request is for the media endpoints.
pub struct MediaConn {
    pub io: Box<dyn Io>,
    /// What was read of it so far, from its first byte.
    pub read: BytesMut,
    pub secure: bool,
}

/// A `POST` whose head was read and whose body was not (`part` is what arrived with the head).
pub struct Post {
    pub io: Box<dyn Io>,
    pub head: Head,
    pub part: Vec<u8>,
    pub secure: bool,
}

/// Serves an HTTP request on a public port: `buf` holds what was already read of it, `secure`
/// says whether it came inside TLS, `local` is the address it arrived at. Returns the WebSocket
/// to serve as a session or the POST to answer, or `None` once the request was answered (or
/// the client went away).
pub async fn accept(
    site: &Site<'_>,
    mut io: Box<dyn Io>,
    mut buf: BytesMut,
    secure: bool,
    local: SocketAddr,
    deadline: Instant,
) -> Option<Accepted> {
    let end = loop {
        if let Some(end) = head_end(&buf) {
            break end;
        }
        if buf.len() >= MAX_HEAD {
            let reply = error(
                "431 Request Header Fields Too Large",
                "request head too large",
            );
            answer_and_close(io, &reply).await;
            return None;
        }
        buf.reserve(1024);
        let read = tokio::select! {
            r = tokio::time::timeout_at(deadline, io.read_buf(&mut buf)) => r,
            _ = site.shutdown.cancelled() => return None,
        };
        match read {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return None,
            Err(_) => {
                answer_and_close(io, &error("408 Request Timeout", "request timeout")).await;
                return None;
            }
        }
    };
    let head = match parse_head(&buf[..end]) {
        Ok(h) => h,
        Err(why) => {
            answer_and_close(io, &error("400 Bad Request", why)).await;
            return None;
        }
    };
    if head.path.starts_with(MEDIA_PREFIX) {
        return Some(Accepted::Media(MediaConn {
            io,
            read: buf,
            secure,
        }));
    }
    let part = buf[end..].to_vec();
    if head.method == "POST" && head.path == SEND_PATH {
        return Some(Accepted::Send(Post {
            io,
            head,
            part,
            secure,
        }));
    }
    let (reply, upgrade) = route(site, &head, secure, local);
    if !upgrade {
        answer_and_close(io, &reply).await;
        return None;
    }
    let written = tokio::time::timeout_at(deadline, async {
        io.write_all(&reply).await?;
        io.flush().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        return None;
    }
    // Until LOGIN_ACK a message holds at most a frame of the login cap (the session raises the
    // limit to `max_frame_len + 4` then): tungstenite reserves a frame's announced length as
    // soon as its header is in.
    let max = missive_protocol::MAX_LOGIN_FRAME_LEN + 4;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    Some(Accepted::Ws(Box::new(WsIo::new(
        io,
        part,
        Role::Server,
        config,
    ))))
}

/// Why a POST's body could not be read: the answer to give (already made), or nothing when the
/// client went away.
pub type BodyError = Option<Vec<u8>>;

/// Reads the body of `post`, of the length its `Content-Length` announces, at most `max`
/// bytes, within `deadline`; the length is checked before anything more is read, so a client
/// costs at most `max` bytes of memory. A chunked body (no length) is refused with 411, a
/// longer one with 413, one too slow with 408 (as JSON errors: CONTENT_TOO_LARGE and
/// BAD_BODY carry the protocol's code names, like the send's other refusals).
pub async fn read_body(
    post: &mut Post,
    max: usize,
    deadline: Instant,
) -> Result<Vec<u8>, BodyError> {
    use missive_protocol::ErrorCode;
    let Some(len) = post.head.header("content-length") else {
        return Err(Some(json_error(
            "411 Length Required",
            ErrorCode::BadBody,
            "a Content-Length is required (no chunked bodies)",
        )));
    };
    let Ok(len) = len.parse::<usize>() else {
        let msg = "Content-Length is not a number";
        return Err(Some(json_error("400 Bad Request", ErrorCode::BadBody, msg)));
    };
    if len > max {
        let msg = format!("the body is limited to {max} bytes");
        return Err(Some(json_error(
            "413 Payload Too Large",
            ErrorCode::ContentTooLarge,
            &msg,
        )));
    }
    let mut body = std::mem::take(&mut post.part);
    if body.len() > len {
        let msg = "more bytes than Content-Length (one request per connection)";
        return Err(Some(json_error("400 Bad Request", ErrorCode::BadBody, msg)));
    }
    if body.len() < len && post.head.has_token("expect", "100-continue") {
        // curl waits a second for this before it sends a body over 1 KiB.
        let cont = b"HTTP/1.1 100 Continue\r\n\r\n";
        if tokio::time::timeout_at(deadline, post.io.write_all(cont))
            .await
            .is_err()
        {
            return Err(None);
        }
    }
    body.reserve_exact(len - body.len());
    while body.len() < len {
        let mut limited = (&mut post.io).take((len - body.len()) as u64);
        match tokio::time::timeout_at(deadline, limited.read_buf(&mut body)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return Err(None),
            Err(_) => {
                let msg = "the body did not arrive within the login timeout";
                return Err(Some(json_error(
                    "408 Request Timeout",
                    ErrorCode::BadBody,
                    msg,
                )));
            }
        }
    }
    Ok(body)
}

/// A JSON error answer, `{"error": {"code", "name", "message"}}` as the HTTP API gives.
pub fn json_error(status: &str, code: missive_protocol::ErrorCode, message: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "error": { "code": code as u32, "name": code.name(), "message": message }
    });
    response(status, "application/json", &[], body.to_string().as_bytes())
}

/// How long an answered connection is drained before it is closed.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// Writes a final answer, ends the stream and reads (and drops) what the client still sends for
/// up to [`LINGER`] or 64 KiB, so that closing with unread input does not reset the connection
/// before the client has read the answer.
pub async fn answer_and_close(mut io: Box<dyn Io>, reply: &[u8]) {
    let finish = async {
        io.write_all(reply).await?;
        io.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < 64 * 1024 {
            match io.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(LINGER, finish).await;
}

/// The response to `head`, and whether it switches the connection to WebSocket.
fn route(site: &Site<'_>, head: &Head, secure: bool, local: SocketAddr) -> (Vec<u8>, bool) {
    if head.method != "GET" || head.path == SEND_PATH {
        let allow = if head.path == SEND_PATH {
            "POST"
        } else {
            "GET"
        };
        let reply = response(
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            &[("Allow", allow)],
            format!("only {allow}\n").as_bytes(),
        );
        return (reply, false);
    }
    match head.path.as_str() {
        ENTRY_PATH => {
            let listed = site
                .cluster_entry
                .map(|f| f(query_value(&head.query, "user").as_deref()));
            let body = entry::document(
                site.config,
                site.bound,
                head.header("host"),
                local,
                listed.as_deref(),
            );
            let reply = response("200 OK", "application/json", &[], &body);
            (reply, false)
        }
        WS_PATH => websocket(site.config, head, secure),
        _ => (error("404 Not Found", "not found"), false),
    }
}

/// The value of `name` in a query (`a=1&b=2`), percent-decoded; `None` if it is absent or not
/// UTF-8 once decoded.
pub fn query_value(query: &str, name: &str) -> Option<String> {
    let raw = query
        .split('&')
        .find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == name))?
        .1;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = raw.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The answer to a WebSocket upgrade request (RFC 6455 section 4.2).
fn websocket(config: &Config, head: &Head, secure: bool) -> (Vec<u8>, bool) {
    let key = head.header("sec-websocket-key").unwrap_or("");
    if head.version != "HTTP/1.1"
        || !head.has_token("upgrade", "websocket")
        || !head.has_token("connection", "upgrade")
        || key.len() != 24
    {
        let reply = response(
            "426 Upgrade Required",
            "text/plain; charset=utf-8",
            &[("Upgrade", "websocket"), ("Connection", "close")],
            b"a WebSocket upgrade is needed here\n",
        );
        return (reply, false);
    }
    if head.header("sec-websocket-version") != Some("13") {
        let reply = response(
            "426 Upgrade Required",
            "text/plain; charset=utf-8",
            &[("Sec-WebSocket-Version", "13")],
            b"WebSocket version 13 is needed\n",
        );
        return (reply, false);
    }
    if !secure && !config.allow_plain {
        return (
            error("403 Forbidden", "this server accepts TLS only (wss://)"),
            false,
        );
    }
    let mut reply = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n",
        derive_accept_key(key.as_bytes())
    );
    if head.has_token("sec-websocket-protocol", SUBPROTOCOL) {
        reply.push_str(&format!("Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n"));
    }
    reply.push_str("\r\n");
    (reply.into_bytes(), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_found_and_percent_decoded() {
        assert_eq!(query_value("user=alice", "user").as_deref(), Some("alice"));
        assert_eq!(
            query_value("a=1&user=b%40c+d", "user").as_deref(),
            Some("b@c d")
        );
        assert_eq!(query_value("users=x", "user"), None);
        assert_eq!(query_value("user=%zz", "user"), None);
        assert_eq!(query_value("user=%4", "user"), None);
        assert_eq!(query_value("", "user"), None);
    }

    #[test]
    fn parses_a_websocket_request_head() {
        let raw = b"GET /ws?x=1 HTTP/1.1\r\nHost: chat.example:80\r\nUpgrade: WebSocket\r\n\
                    Connection: keep-alive, Upgrade\r\n\r\n";
        let end = head_end(raw).unwrap();
        assert_eq!(end, raw.len());
        let head = parse_head(&raw[..end]).unwrap();
        assert_eq!((head.method.as_str(), head.path.as_str()), ("GET", "/ws"));
        assert_eq!(head.header("HOST"), Some("chat.example:80"));
        assert!(head.has_token("connection", "upgrade"));
        assert!(head.has_token("upgrade", "websocket"));
        assert!(!head.has_token("connection", "close"));
    }

    #[test]
    fn only_requests_for_the_endpoints_are_http() {
        assert_eq!(is_endpoint_request(b"G"), None);
        assert_eq!(is_endpoint_request(b"GET /"), None);
        assert_eq!(is_endpoint_request(b"GET /ws"), None);
        assert_eq!(is_endpoint_request(b"GET /ws HTTP/1.1"), Some(true));
        assert_eq!(is_endpoint_request(b"GET /ws?v=1 "), Some(true));
        assert_eq!(is_endpoint_request(b"GET /v1/entry HTTP/1.1"), Some(true));
        assert_eq!(is_endpoint_request(b"GET / HTTP/1.1"), Some(false));
        assert_eq!(is_endpoint_request(b"GET /wsx "), Some(false));
        assert_eq!(is_endpoint_request(b"GET /v1/med"), None);
        assert_eq!(
            is_endpoint_request(b"GET /v1/media/0a HTTP/1.1"),
            Some(true)
        );
        assert_eq!(
            is_endpoint_request(b"PATCH /v1/media/uploads/1"),
            Some(true)
        );
        assert_eq!(is_endpoint_request(b"HEAD /v1/media/"), Some(true));
        assert_eq!(is_endpoint_request(b"HEAD /v1/mediax"), Some(false));
        assert_eq!(is_endpoint_request(b"PUT /v1/media/"), Some(false));
        assert_eq!(is_endpoint_request(b"GET /ws\r\n"), Some(false));
        assert_eq!(is_endpoint_request(b"\x00\x00\x00\x10MS"), Some(false));
        assert_eq!(is_endpoint_request(b"POST /v1/send HTTP/1.1"), Some(true));
        assert_eq!(is_endpoint_request(b"POST /v1/sen"), None);
        assert_eq!(is_endpoint_request(b"POST /v1/sendx "), Some(false));
        assert_eq!(is_endpoint_request(b"POST /ws "), Some(false));
    }

    #[test]
    fn refuses_malformed_heads() {
        assert!(parse_head(b"GET /ws\r\n\r\n").is_err());
        assert!(parse_head(b"GET /ws HTTP/2\r\n\r\n").is_err());
        assert!(parse_head(b"GET ws HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_head(b"GET /ws HTTP/1.1\r\nno colon\r\n\r\n").is_err());
        assert!(parse_head(b"GET /ws HTTP/1.1\r\nBad Name: x\r\n\r\n").is_err());
        assert!(parse_head(&[b'G', 0xff, b'\r', b'\n']).is_err());
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }

    /// RFC 6455 section 1.3's example key and answer.
    #[test]
    fn accept_key_matches_the_rfc() {
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
