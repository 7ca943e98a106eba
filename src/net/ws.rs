//! [`WsIo`]: a WebSocket connection seen as the byte stream the session reads and writes.
//!
//! Reading yields the payloads of binary messages one after another, so a message may hold any
//! part of a frame or several frames: the frame decoder reassembles them as it does for TCP.
//! Writing splits the bytes into frames by their length prefix and sends each complete frame as
//! one binary message; on flush, bytes that do not form a complete frame (never written by the
//! session, which writes whole frames) go out as one message of their own. Pings are answered;
//! a close message is the end of the stream; a text message is an error.
//!
//! It drives tungstenite's WebSocket state machine directly over a non-blocking bridge to the
//! async socket (a read or write that would wait returns `WouldBlock` with the task's waker
//! registered), the same way tokio-tungstenite does inside.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, WebSocket};

/// Any byte stream a WebSocket runs over (TCP or TLS).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Bytes gathered for writing past which complete frames are sent before more are taken.
const WRITE_HIGH: usize = 64 * 1024;

/// The async socket as a `std::io` stream that says `WouldBlock` instead of waiting.
struct Bridge {
    io: Box<dyn Io>,
    waker: Option<Waker>,
}

impl Bridge {
    fn poll<R>(
        &mut self,
        f: impl FnOnce(Pin<&mut dyn Io>, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> io::Result<R> {
        let Some(waker) = &self.waker else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let mut cx = Context::from_waker(waker);
        match f(Pin::new(&mut *self.io), &mut cx) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Read for Bridge {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.poll(|io, cx| {
            let mut rb = ReadBuf::new(buf);
            ready!(io.poll_read(cx, &mut rb))?;
            Poll::Ready(Ok(rb.filled().len()))
        })
    }
}

impl Write for Bridge {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.poll(|io, cx| io.poll_write(cx, buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.poll(|io, cx| io.poll_flush(cx))
    }
}

pub struct WsIo {
    ws: WebSocket<Bridge>,
    /// What is left of the last binary message read.
    rbuf: Bytes,
    /// Bytes written and not yet sent as messages.
    wbuf: BytesMut,
    /// tungstenite holds a message it could not write yet: flush before the next.
    blocked: bool,
    eof: bool,
    closing: bool,
}

impl WsIo {
    /// A WebSocket whose handshake is done on `io` (the server answered it, or, for `role`
    /// client, the client read the answer); `part` holds what was read past the handshake.
    pub fn new(io: Box<dyn Io>, part: Vec<u8>, role: Role, config: WebSocketConfig) -> WsIo {
        let bridge = Bridge { io, waker: None };
        WsIo {
            ws: WebSocket::from_partially_read(bridge, part, role, Some(config)),
            rbuf: Bytes::new(),
            wbuf: BytesMut::new(),
            blocked: false,
            eof: false,
            closing: false,
        }
    }

    /// Changes the largest message (and WebSocket frame) read from now on, in payload bytes.
    /// tungstenite reserves a frame's announced length as soon as its header is in, so the
    /// limit is what a peer can make the server reserve: before login it is the login cap.
    pub fn set_max_message(&mut self, max: usize) {
        self.ws.set_config(|c| {
            c.max_message_size = Some(max);
            c.max_frame_size = Some(max);
        });
    }

    fn register(&mut self, cx: &Context<'_>) {
        let bridge = self.ws.get_mut();
        match &bridge.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => bridge.waker = Some(cx.waker().clone()),
        }
    }

    /// Sends each complete frame in `wbuf` as a message; with `all`, also what is left.
    fn poll_send(&mut self, all: bool) -> Poll<io::Result<()>> {
        loop {
            if self.blocked {
                match self.ws.flush() {
                    Ok(()) => self.blocked = false,
                    Err(e) => return ws_poll(e),
                }
            }
            let n = match frame_end(&self.wbuf) {
                Some(n) if n <= self.wbuf.len() => n,
                _ if all && !self.wbuf.is_empty() => self.wbuf.len(),
                _ => return Poll::Ready(Ok(())),
            };
            let message = Message::Binary(self.wbuf.split_to(n).freeze());
            match self.ws.write(message) {
                Ok(()) => {}
                // The message is queued; what remains to be written waits for the socket.
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => self.blocked = true,
                Err(e) => return ws_poll(e),
            }
        }
    }
}

/// Where the frame at the start of `buf` ends (4 + its length field), once the field is there.
pub fn frame_end(buf: &[u8]) -> Option<usize> {
    let len: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    Some(4usize.saturating_add(u32::from_be_bytes(len) as usize))
}

/// A message (or WebSocket frame) longer than the limit, as the read error's inner error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("WebSocket message of {size} bytes over the limit of {max}")]
pub struct MessageTooLong {
    pub size: usize,
    pub max: usize,
}

impl MessageTooLong {
    /// The limit that `e`, a read error of a [`WsIo`], reports, if it is one.
    pub fn of(e: &io::Error) -> Option<MessageTooLong> {
        e.get_ref()?.downcast_ref::<MessageTooLong>().copied()
    }
}

/// A tungstenite error as a poll result: `WouldBlock` is `Pending` (the waker is registered).
fn ws_poll<T>(e: WsError) -> Poll<io::Result<T>> {
    Poll::Ready(Err(match e {
        WsError::Io(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
        WsError::Io(e) => e,
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => io::Error::new(
            io::ErrorKind::InvalidData,
            MessageTooLong {
                size,
                max: max_size,
            },
        ),
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "WebSocket closed")
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }))
}

impl AsyncRead for WsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.register(cx);
        loop {
            if !this.rbuf.is_empty() {
                let n = this.rbuf.len().min(buf.remaining());
                buf.put_slice(&this.rbuf.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match this.ws.read() {
                Ok(Message::Binary(data)) => this.rbuf = data,
                Ok(Message::Text(_)) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text WebSocket message: frames travel in binary messages",
                    )))
                }
                Ok(Message::Close(_)) => {
                    // tungstenite queued the answering close; send it if the socket takes it.
                    let _ = this.ws.flush();
                    this.eof = true;
                }
                Ok(_) => {} // ping (answered by tungstenite), pong
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => this.eof = true,
                Err(e) => return ws_poll(e),
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
        this.register(cx);
        if this.wbuf.len() >= WRITE_HIGH {
            ready!(this.poll_send(false))?;
        }
        this.wbuf.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.register(cx);
        ready!(this.poll_send(true))?;
        match this.ws.flush() {
            Ok(()) => Poll::Ready(Ok(())),
            Err(e) => ws_poll(e),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.register(cx);
        ready!(this.poll_send(true))?;
        if !this.closing {
            this.closing = true;
            match this.ws.close(None) {
                Ok(()) => {}
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    return Poll::Ready(Ok(()))
                }
                Err(e) => return ws_poll(e),
            }
        }
        match this.ws.flush() {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                let io = &mut this.ws.get_mut().io;
                Pin::new(io).poll_shutdown(cx)
            }
            Err(e) => ws_poll(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_end_reads_the_length_prefix() {
        assert_eq!(frame_end(&[0, 0, 0]), None);
        assert_eq!(frame_end(&[0, 0, 0, 14, 0x4d]), Some(18));
        assert_eq!(frame_end(&[0xff; 4]), Some(4 + u32::MAX as usize));
    }
}
