//! The byte side of a connection. An idle plain connection holds no read buffer (it waits for
//! readiness first and only then reads) and no write buffer (frames are gathered into one while
//! there is something to write, and it is freed after the write). A TLS connection waits in
//! `read_buf`, so it keeps a small read buffer (rustls keeps its own too), and so does a
//! WebSocket connection (`crate::net::ws::WsIo`, over TCP or TLS), which carries the same bytes in
//! binary messages.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use missive_protocol::{Frame, FrameCodec, ProtocolError};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::codec::Decoder;

/// A write that makes no progress for this long closes the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const READ_CHUNK: usize = 4096;

/// The transport under the frames.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Ws(Box<crate::net::ws::WsIo>),
}

/// What a write that does not wait ([`Stream::write_now`]) came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    /// All of it is on its way (in the socket, or in a TLS or WebSocket layer that has sent it).
    All,
    /// None of it was taken.
    None,
    /// Part was taken, and the rest is this (possibly empty, when a TLS or WebSocket layer
    /// took it all but could not pass it on yet): whoever writes next must write it first.
    Part(BytesMut),
    /// The stream failed.
    Failed,
}

impl Written {
    /// `n` of `bytes` taken, and passed on (`flushed`) or not.
    pub fn of(bytes: &[u8], n: usize, flushed: bool) -> Written {
        match n {
            0 => Written::None,
            n if n >= bytes.len() && flushed => Written::All,
            n => Written::Part(BytesMut::from(&bytes[n.min(bytes.len())..])),
        }
    }
}

impl Stream {
    /// Writes `bytes` without waiting: what the socket (and the TLS or WebSocket layer) takes
    /// now. For a parked session (`session::park`), whose stream is registered with tokio with
    /// the nest as its waker: the write registers no waker of its own (a no-op one).
    pub fn write_now(&mut self, bytes: &[u8]) -> Written {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        fn push<S: tokio::io::AsyncWrite + Unpin>(
            s: &mut S,
            cx: &mut Context<'_>,
            bytes: &[u8],
        ) -> Written {
            let mut n = 0;
            while n < bytes.len() {
                match Pin::new(&mut *s).poll_write(cx, &bytes[n..]) {
                    Poll::Ready(Ok(0)) | Poll::Pending => break,
                    Poll::Ready(Ok(k)) => n += k,
                    Poll::Ready(Err(_)) => return Written::Failed,
                }
            }
            if n == 0 {
                return Written::None;
            }
            match Pin::new(&mut *s).poll_flush(cx) {
                Poll::Ready(Ok(())) => Written::of(bytes, n, true),
                Poll::Pending => Written::of(bytes, n, false),
                Poll::Ready(Err(_)) => Written::Failed,
            }
        }
        match self {
            Stream::Plain(s) => match s.try_write(bytes) {
                Ok(n) => Written::of(bytes, n, true),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Written::None,
                Err(_) => Written::Failed,
            },
            Stream::Tls(s) => push(&mut **s, &mut cx, bytes),
            Stream::Ws(s) => push(&mut **s, &mut cx, bytes),
        }
    }
}

pub struct Conn {
    stream: Stream,
    rbuf: BytesMut,
    /// Frames gathered for the next write.
    wbuf: BytesMut,
    codec: FrameCodec,
    /// When the bytes of the incomplete frame now buffered began to arrive.
    partial_since: Option<tokio::time::Instant>,
}

/// What a read brought.
pub enum Filled {
    Data,
    Eof,
}

impl Conn {
    pub fn new(stream: Stream, max_frame_len: usize) -> Conn {
        Conn {
            stream,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            codec: FrameCodec::new(max_frame_len),
            partial_since: None,
        }
    }

    /// Changes the largest frame accepted from now on: a connection opens with
    /// [`missive_protocol::MAX_LOGIN_FRAME_LEN`] and gets the configured `max_frame_len` once
    /// logged in. A WebSocket's messages are limited to the same plus the length prefix.
    pub fn set_max_frame_len(&mut self, max_frame_len: usize) {
        self.codec.set_max_frame_len(max_frame_len);
        if let Stream::Ws(ws) = &mut self.stream {
            ws.set_max_message(max_frame_len + 4);
        }
    }

    /// Whether the transport is plain TCP (not TLS, not WebSocket).
    pub fn is_plain(&self) -> bool {
        matches!(self.stream, Stream::Plain(_))
    }

    /// The transport, without the buffers (for parking an idle session: both are empty then).
    pub fn into_stream(self) -> Stream {
        self.stream
    }

    /// Bytes of the stream already read (while telling the transport apart), to decode first.
    pub fn unread(&mut self, bytes: BytesMut) {
        self.rbuf = bytes;
    }

    /// The next complete frame already read, if any.
    pub fn buffered_frame(&mut self) -> Result<Option<Frame>, ProtocolError> {
        self.codec.decode(&mut self.rbuf)
    }

    /// Waits for bytes and reads them. Cancel-safe: if dropped before it resolves, nothing was
    /// read. At end of stream inside a frame, returns the truncation error.
    pub async fn fill(&mut self) -> Result<Filled, ProtocolError> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// [`Conn::fill`] as a poll (the serving loop polls it by hand, so that its waiting state
    /// stays small).
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<Filled, ProtocolError>> {
        let read = match &mut self.stream {
            Stream::Plain(s) => {
                // Wait for readiness before taking a buffer, so idle connections hold none.
                if let Err(e) = ready!(s.poll_read_ready(cx)) {
                    return Poll::Ready(Err(e.into()));
                }
                reserve(&mut self.rbuf);
                // A read that returns less than the room it was given has emptied the socket's
                // receive queue: tokio's readiness is cleared at once (the closure's
                // `WouldBlock`), so the next wait does not first cost a read that finds nothing.
                // tokio clears it only if no new readiness event came in meanwhile.
                let rbuf = &mut self.rbuf;
                let mut drained = 0;
                let read = s.try_io(tokio::io::Interest::READABLE, || {
                    let room = rbuf.capacity() - rbuf.len();
                    match s.try_read_buf(rbuf)? {
                        n if n > 0 && n < room => {
                            drained = n;
                            Err(io::ErrorKind::WouldBlock.into())
                        }
                        n => Ok(n),
                    }
                });
                match read {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && drained > 0 => Ok(drained),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Poll::Ready(Ok(Filled::Data))
                    }
                    r => r,
                }
            }
            Stream::Tls(s) => {
                reserve(&mut self.rbuf);
                ready!(poll_read_buf(Pin::new(&mut **s), cx, &mut self.rbuf))
            }
            Stream::Ws(s) => {
                reserve(&mut self.rbuf);
                ready!(poll_read_buf(Pin::new(&mut **s), cx, &mut self.rbuf))
            }
        };
        Poll::Ready(match read {
            Ok(0) => match self.codec.decode_eof(&mut self.rbuf) {
                Err(e) => Err(e),
                Ok(_) => Ok(Filled::Eof),
            },
            Ok(_) => Ok(Filled::Data),
            Err(e) => Err(match crate::net::ws::MessageTooLong::of(&e) {
                // A WebSocket message over the limit: refused like the frame it would carry.
                Some(m) => ProtocolError::TooLarge {
                    len: m.size.saturating_sub(4),
                    max: m.max.saturating_sub(4),
                },
                None => e.into(),
            }),
        })
    }

    /// Frees the read buffer when it holds nothing, so idle connections cost no buffer, and
    /// notes when an incomplete frame started. A buffer that still holds a whole frame (the
    /// session stopped taking requests for a while: too many in flight, or replies unwritten)
    /// is not a frame arriving slowly: the frame timeout does not run for it.
    pub fn release_idle(&mut self) {
        if self.rbuf.is_empty() {
            self.partial_since = None;
            if self.rbuf.capacity() > 0 {
                self.rbuf = BytesMut::new();
            }
        } else if self.holds_a_frame() {
            self.partial_since = None;
        } else if self.partial_since.is_none() {
            self.partial_since = Some(tokio::time::Instant::now());
        }
    }

    /// Whether the read buffer starts with a complete frame (by its length prefix).
    pub fn holds_a_frame(&self) -> bool {
        match self.rbuf.get(..4) {
            Some(len) => {
                let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
                self.rbuf.len() >= len.saturating_add(4)
            }
            None => false,
        }
    }

    /// When the incomplete frame now buffered started to arrive, if there is one.
    pub fn partial_since(&self) -> Option<tokio::time::Instant> {
        self.partial_since
    }

    /// Bytes gathered for the next write.
    pub fn queued_len(&self) -> usize {
        self.wbuf.len()
    }

    /// Adds bytes already framed to the next write.
    pub fn queue_bytes(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    /// Adds a frame to the next write (see [`Conn::flush`]).
    pub fn queue(&mut self, frame: &Frame) {
        frame.write_to(&mut self.wbuf);
    }

    /// Writes every queued frame in one go (many frames, one system call), then frees the
    /// buffer. A write that makes no progress for `WRITE_TIMEOUT` fails.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        if let Stream::Plain(s) = &self.stream {
            // Usually the socket takes it all at once: no waiting, no timer.
            match s.try_write(&self.wbuf) {
                Ok(n) => self.wbuf.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if self.wbuf.is_empty() {
                self.wbuf = BytesMut::new();
                return Ok(());
            }
        }
        // Boxed: the waiting write and its timer are not part of every connection's task.
        Box::pin(self.write_out()).await
    }

    async fn write_out(&mut self) -> io::Result<()> {
        let out = std::mem::take(&mut self.wbuf);
        let write = async {
            match &mut self.stream {
                Stream::Plain(s) => s.write_all(&out).await,
                Stream::Tls(s) => {
                    s.write_all(&out).await?;
                    s.flush().await
                }
                Stream::Ws(s) => {
                    s.write_all(&out).await?;
                    s.flush().await
                }
            }
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write stalled")),
        }
    }

    /// Writes frames (after anything already queued) in one go.
    pub async fn write_frames(&mut self, frames: &[Frame]) -> io::Result<()> {
        for f in frames {
            self.queue(f);
        }
        self.flush().await
    }
}

/// Reads from `s` into the room left in `buf` (at most `READ_CHUNK`), without growing it.
fn poll_read_buf(
    s: Pin<&mut impl AsyncRead>,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    let mut chunk = [0u8; READ_CHUNK];
    let room = (buf.capacity() - buf.len()).clamp(1, READ_CHUNK);
    let mut read = ReadBuf::new(&mut chunk[..room]);
    ready!(s.poll_read(cx, &mut read))?;
    buf.extend_from_slice(read.filled());
    Poll::Ready(Ok(read.filled().len()))
}

/// Makes room for a read when the buffer is full (or unallocated): `READ_CHUNK` more. A buffer
/// with any room left is read into as it is: while a frame is being read the codec grows it
/// (doubling as the frame's bytes arrive, never past its end), and growing it here with
/// `BytesMut::reserve` could double an allocation that holds most of a frame. So the buffer
/// never exceeds one frame (limit + 4) or `len + READ_CHUNK`, whichever is larger, and a peer
/// that announces a frame and sends little of it holds one read chunk.
fn reserve(buf: &mut BytesMut) {
    if buf.capacity() == buf.len() {
        let mut fresh = BytesMut::with_capacity(buf.len() + READ_CHUNK);
        fresh.extend_from_slice(buf);
        *buf = fresh;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use missive_protocol::pb;
    use missive_protocol::Packet;

    /// Issue #18 item 10: a peer announces a frame at the limit and sends 20 bytes of it; the
    /// connection holds the read chunk they came in, not the frame.
    #[test]
    fn a_frame_announced_and_not_sent_holds_a_read_chunk() {
        let limit = 1 << 20;
        let mut codec = FrameCodec::new(limit);
        let mut buf = BytesMut::new();
        reserve(&mut buf);
        buf.extend_from_slice(&(limit as u32).to_be_bytes());
        buf.extend_from_slice(b"MS\x01\x00\x00\x03\x00\x00\x00\x01");
        buf.resize(20, 0);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        reserve(&mut buf);
        assert_eq!(buf.capacity(), READ_CHUNK);
    }

    /// Fuzz finding 2 (fuzz/README.md): once fewer than 1 KiB of a frame were missing, the read
    /// loop reserved 4 KiB more and `BytesMut` doubled the frame's buffer. And reading a frame
    /// grows its buffer by doubling as the bytes arrive: fewer than twice its bytes copied.
    #[test]
    fn reading_a_frame_at_the_limit_holds_one_frame() {
        let limit = 64 * 1024;
        let mut codec = FrameCodec::new(limit);
        let packet = Packet::Send(pb::Send {
            client_msg_id: "c".into(),
            to: None,
            content_type: 1,
            content: vec![1; limit - 64],
            ..Default::default()
        });
        let wire = Frame::new(&packet, 1).to_bytes();
        assert!(wire.len() > limit - 64 && wire.len() <= limit + 4);
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let mut peak = 0;
        let mut frames = 0;
        // Bytes moved into a larger buffer, by the codec or by `reserve`.
        let mut copied = 0;
        while fed < wire.len() {
            loop {
                let (len, cap) = (buf.len(), buf.capacity());
                match codec.decode(&mut buf).unwrap() {
                    Some(_f) => frames += 1,
                    None => {
                        if buf.capacity() > cap {
                            copied += len;
                        }
                        break;
                    }
                }
            }
            let (len, cap) = (buf.len(), buf.capacity());
            reserve(&mut buf);
            if buf.capacity() > cap {
                copied += len;
            }
            // A socket read: what fits, at most READ_CHUNK.
            let n = (buf.capacity() - buf.len())
                .min(READ_CHUNK)
                .min(wire.len() - fed);
            buf.extend_from_slice(&wire[fed..fed + n]);
            fed += n;
            peak = peak.max(buf.capacity());
        }
        frames += usize::from(codec.decode(&mut buf).unwrap().is_some());
        assert_eq!(frames, 1);
        assert!(
            peak <= wire.len().max(READ_CHUNK),
            "buffer grew to {peak} for a frame of {}",
            wire.len()
        );
        assert!(
            copied < 2 * wire.len(),
            "{copied} bytes copied reading a frame of {}",
            wire.len()
        );
    }
}
