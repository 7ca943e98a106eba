//! [`Transport`]: the byte stream under a [`crate::Connection`]: TCP, or a WebSocket
//! (`ws://host:port/path`) for networks that only let HTTP through.
//!
//! Over WebSocket the frames are exactly those of TCP (PROTOCOL.md, "WebSocket transport"):
//! each frame written goes out as one binary message (bytes that are not a whole frame, as
//! [`crate::Connection::write_raw`] may write, go out as one message when flushed), and the
//! payloads of the binary messages received are read back to back, so a message holding
//! several frames or part of one is read correctly.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use crate::error::{ClientError, Result};

/// Bytes gathered for writing past which complete frames are sent before more are taken.
const WRITE_HIGH: usize = 64 * 1024;

/// Where to connect: `host:port` or `tcp://host:port` for TCP, `ws://host:port/path` for a
/// WebSocket (the path defaults to `/ws`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(String),
    Ws { authority: String, url: String },
}

impl Endpoint {
    pub fn parse(addr: &str) -> Result<Endpoint> {
        if let Some(rest) = addr.strip_prefix("ws://") {
            let (authority, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/ws"),
            };
            if authority.is_empty() {
                return Err(bad_addr(addr));
            }
            let url = format!("ws://{authority}{path}");
            return Ok(Endpoint::Ws {
                authority: authority.to_owned(),
                url,
            });
        }
        if addr.starts_with("wss://") || addr.starts_with("tls://") {
            return Err(ClientError::Io(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{addr}: this client speaks tcp:// and ws:// only"),
            )));
        }
        Ok(Endpoint::Tcp(
            addr.strip_prefix("tcp://").unwrap_or(addr).to_owned(),
        ))
    }
}

fn bad_addr(addr: &str) -> ClientError {
    ClientError::Io(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{addr}: expected host:port, tcp://host:port or ws://host:port/path"),
    ))
}

/// TCP or a WebSocket over TCP, as one byte stream.
#[derive(Debug)]
pub enum Transport {
    Tcp(TcpStream),
    Ws(Box<WsIo>),
}

impl Transport {
    /// Connects to `endpoint` (TCP_NODELAY set; for WebSocket, the handshake done).
    pub async fn connect(endpoint: &Endpoint) -> Result<(Transport, SocketAddr)> {
        match endpoint {
            Endpoint::Tcp(addr) => {
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let peer = tcp.peer_addr()?;
                Ok((Transport::Tcp(tcp), peer))
            }
            Endpoint::Ws { authority, url } => {
                let tcp = TcpStream::connect(authority.as_str()).await?;
                tcp.set_nodelay(true)?;
                let peer = tcp.peer_addr()?;
                let (ws, _) = tokio_tungstenite::client_async(url.as_str(), tcp)
                    .await
                    .map_err(|e| match e {
                        tungstenite::Error::Io(e) => ClientError::Io(e),
                        other => ClientError::Io(io::Error::other(format!(
                            "WebSocket handshake with {url}: {other}"
                        ))),
                    })?;
                Ok((Transport::Ws(Box::new(WsIo::new(ws))), peer))
            }
        }
    }
}

/// A WebSocket as a byte stream of frames (see the module documentation).
#[derive(Debug)]
pub struct WsIo {
    ws: WebSocketStream<TcpStream>,
    rbuf: Bytes,
    wbuf: BytesMut,
    eof: bool,
}

impl WsIo {
    fn new(ws: WebSocketStream<TcpStream>) -> WsIo {
        WsIo {
            ws,
            rbuf: Bytes::new(),
            wbuf: BytesMut::new(),
            eof: false,
        }
    }

    /// Sends each complete frame in `wbuf` as a message; with `all`, also what is left.
    fn poll_send(&mut self, cx: &mut Context<'_>, all: bool) -> Poll<io::Result<()>> {
        loop {
            let n = match frame_end(&self.wbuf) {
                Some(n) if n <= self.wbuf.len() => n,
                _ if all && !self.wbuf.is_empty() => self.wbuf.len(),
                _ => return Poll::Ready(Ok(())),
            };
            ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io_error)?;
            let message = Message::Binary(self.wbuf.split_to(n).freeze());
            Pin::new(&mut self.ws)
                .start_send(message)
                .map_err(io_error)?;
        }
    }
}

/// Where the frame at the start of `buf` ends (4 + its length field), once the field is there.
fn frame_end(buf: &[u8]) -> Option<usize> {
    let len: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    Some(4usize.saturating_add(u32::from_be_bytes(len) as usize))
}

fn io_error(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "WebSocket closed")
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl AsyncRead for WsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.rbuf.is_empty() {
                let n = this.rbuf.len().min(buf.remaining());
                buf.put_slice(&this.rbuf.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => this.rbuf = data,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text WebSocket message: frames travel in binary messages",
                    )))
                }
                Some(Ok(Message::Close(_))) | None => this.eof = true,
                Some(Ok(_)) => {} // ping (answered by tungstenite), pong
                Some(Err(tungstenite::Error::ConnectionClosed)) => this.eof = true,
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
    }
}

impl AsyncWrite for WsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.wbuf.len() >= WRITE_HIGH {
            ready!(this.poll_send(cx, false))?;
        }
        this.wbuf.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx, true))?;
        Pin::new(&mut this.ws).poll_flush(cx).map_err(io_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx, true))?;
        match ready!(Pin::new(&mut this.ws).poll_close(cx)) {
            Ok(()) | Err(tungstenite::Error::ConnectionClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => poll_read_tcp(s, cx, buf),
            Transport::Ws(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

/// Reads from a TCP socket. A read that fills less than the room it was given has emptied the
/// socket's receive queue, so the socket's readiness is cleared at once (as `EAGAIN` would);
/// otherwise the next poll (a frame decoder asks again after every frame) would make a second
/// `recvfrom` only to find `EAGAIN`. Tokio keeps the readiness if an event came in meanwhile,
/// so nothing that arrives in between is missed.
fn poll_read_tcp(
    s: &TcpStream,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    loop {
        ready!(s.poll_read_ready(cx))?;
        let room = buf.remaining();
        let mut drained = false;
        let read = s.try_io(tokio::io::Interest::READABLE, || {
            match s.try_read_buf(buf)? {
                n if n > 0 && n < room => {
                    drained = true;
                    Err(io::ErrorKind::WouldBlock.into())
                }
                _ => Ok(()),
            }
        });
        match read {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && drained => {
                return Poll::Ready(Ok(()))
            }
            // Readiness cleared with nothing read: wait for the next event.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return Poll::Ready(r),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Ws(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_flush(cx),
            Transport::Ws(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Ws(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            Endpoint::parse("127.0.0.1:80").unwrap(),
            Endpoint::Tcp("127.0.0.1:80".into())
        );
        assert_eq!(
            Endpoint::parse("tcp://h:1").unwrap(),
            Endpoint::Tcp("h:1".into())
        );
        assert_eq!(
            Endpoint::parse("ws://h:80").unwrap(),
            Endpoint::Ws {
                authority: "h:80".into(),
                url: "ws://h:80/ws".into()
            }
        );
        match Endpoint::parse("ws://h:80/chat?x=1").unwrap() {
            Endpoint::Ws { url, .. } => assert_eq!(url, "ws://h:80/chat?x=1"),
            other => panic!("{other:?}"),
        }
        assert!(Endpoint::parse("ws:///ws").is_err());
        assert!(Endpoint::parse("wss://h:443/ws").is_err());
    }
}
