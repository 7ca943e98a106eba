//! [`Connection`]: one raw protocol connection, for tests and tools.
//!
//! It does exactly what it is told and nothing else: it never heartbeats, never acks a push and
//! never reconnects, so a test can watch the server's own behaviour (retransmits, timeouts,
//! kicks). Frames that arrive while [`Connection::request`] waits for its reply are kept and
//! returned, in order, by the next [`Connection::recv_frame`] calls.
//!
//! It runs over TCP or, for an address `ws://host:port/path`, over a WebSocket carrying the same
//! frames ([`crate::transport`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use missive_protocol::{pb, Command, Frame, FrameCodec, Packet, DEFAULT_MAX_FRAME_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Framed};

use crate::error::{ClientError, Result};
use crate::transport::{Endpoint, Transport};

/// The `client_version` this crate puts in LOGIN.
pub const CLIENT_VERSION: &str = concat!("missive-client/", env!("CARGO_PKG_VERSION"));

/// One connection (TCP or WebSocket) speaking Missive frames. Used by one task at a time.
#[derive(Debug)]
pub struct Connection {
    framed: Framed<Transport, FrameCodec>,
    queued: VecDeque<Frame>,
    next_request_id: u32,
    last_sent: Instant,
    peer: SocketAddr,
}

impl Connection {
    /// Connects to `addr`: over TCP (with TCP_NODELAY) for `host:port` or `tcp://host:port`,
    /// over a WebSocket for `ws://host:port/path` (path `/ws` if none is given).
    pub async fn connect(addr: &str) -> Result<Connection> {
        let (transport, peer) = Transport::connect(&Endpoint::parse(addr)?).await?;
        Ok(Connection::over(transport, peer))
    }

    /// Whether this connection runs over a WebSocket.
    pub fn is_websocket(&self) -> bool {
        matches!(self.framed.get_ref(), Transport::Ws(_))
    }

    /// [`Connection::connect`], giving up after `timeout`.
    pub async fn connect_timeout(addr: &str, timeout: Duration) -> Result<Connection> {
        tokio::time::timeout(timeout, Connection::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// Wraps an already connected stream (sets TCP_NODELAY).
    pub fn from_stream(stream: TcpStream) -> Result<Connection> {
        stream.set_nodelay(true)?;
        let peer = stream.peer_addr()?;
        Ok(Connection::over(Transport::Tcp(stream), peer))
    }

    fn over(transport: Transport, peer: SocketAddr) -> Connection {
        Connection {
            framed: Framed::new(transport, FrameCodec::default()),
            queued: VecDeque::new(),
            next_request_id: 1,
            last_sent: Instant::now(),
            peer,
        }
    }

    /// The server's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// When a byte was last written (any frame counts as a sign of life for the server).
    pub fn last_sent(&self) -> Instant {
        self.last_sent
    }

    /// Allocates the next request id: 1, 2, 3, ... (0 is skipped on wrap-around: it means
    /// "server-initiated").
    pub fn next_request_id(&mut self) -> u32 {
        let id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
        id
    }

    /// Writes one frame and flushes it.
    pub async fn send_frame(&mut self, frame: &Frame) -> Result<()> {
        self.framed.send(frame).await?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// Adds a frame to the write buffer; [`Connection::flush`] writes everything added, in one
    /// go (the buffer is written early if it grows past 8 KiB).
    pub async fn feed_frame(&mut self, frame: &Frame) -> Result<()> {
        self.framed.feed(frame).await?;
        Ok(())
    }

    /// Writes every frame added by [`Connection::feed_frame`].
    pub async fn flush(&mut self) -> Result<()> {
        SinkExt::<&Frame>::flush(&mut self.framed).await?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// A frame already received and buffered, if there is one; never waits. Lets a reader
    /// handle a burst of frames before it answers (one PUSH_ACK for all of them, say).
    pub fn buffered_frame(&mut self) -> Result<Option<Frame>> {
        if let Some(frame) = self.queued.pop_front() {
            return Ok(Some(frame));
        }
        let mut codec = *self.framed.codec();
        codec
            .decode(self.framed.read_buffer_mut())
            .map_err(ClientError::Protocol)
    }

    /// Sends `packet` with a fresh request id and returns that id.
    pub async fn send_packet(&mut self, packet: Packet) -> Result<u32> {
        let id = self.feed_packet(packet).await?;
        self.flush().await?;
        Ok(id)
    }

    /// Adds `packet` with a fresh request id to the write buffer (sent by the next
    /// [`Connection::flush`]) and returns that id.
    pub async fn feed_packet(&mut self, packet: Packet) -> Result<u32> {
        let id = self.next_request_id();
        self.feed_frame(&Frame::new(&packet, id)).await?;
        Ok(id)
    }

    /// Receives the next frame: first any kept while a request waited, then from the socket.
    /// `Ok(None)` means the server closed the connection cleanly (between frames).
    ///
    /// Cancel-safe: dropping the future loses nothing, so it can be used in `tokio::select!`.
    pub async fn recv_frame(&mut self) -> Result<Option<Frame>> {
        if let Some(frame) = self.queued.pop_front() {
            return Ok(Some(frame));
        }
        match self.framed.next().await {
            Some(Ok(frame)) => Ok(Some(frame)),
            Some(Err(e)) => Err(ClientError::Protocol(e)),
            None => Ok(None),
        }
    }

    /// [`Connection::recv_frame`], failing with [`ClientError::Timeout`] after `timeout`.
    pub async fn recv_frame_timeout(&mut self, timeout: Duration) -> Result<Option<Frame>> {
        tokio::time::timeout(timeout, self.recv_frame())
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// Receives the next frame and decodes its body (inflating it if compressed).
    pub async fn recv_packet(&mut self) -> Result<Option<(Frame, Packet)>> {
        match self.recv_frame().await? {
            Some(frame) => {
                let packet = frame.packet(DEFAULT_MAX_FRAME_LEN)?;
                Ok(Some((frame, packet)))
            }
            None => Ok(None),
        }
    }

    /// [`Connection::recv_packet`], failing with [`ClientError::Timeout`] after `timeout`.
    pub async fn recv_packet_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<(Frame, Packet)>> {
        tokio::time::timeout(timeout, self.recv_packet())
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// Sends `packet` and waits for the frame with the same request id.
    ///
    /// The reply's body is returned decoded. An ERROR reply becomes [`ClientError::Server`], as
    /// does a fatal ERROR with request id 0 (the server could not read our frame). Every other
    /// frame that arrives meanwhile (PUSH, GROUP_NOTIFY, KICK, ...) is kept for `recv_frame`.
    /// If the server closes the connection first: [`ClientError::Closed`].
    pub async fn request(&mut self, packet: Packet) -> Result<Packet> {
        let expected = reply_command(packet.command());
        let id = self.send_packet(packet).await?;
        loop {
            let frame = match self.framed.next().await {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => return Err(ClientError::Protocol(e)),
                None => return Err(ClientError::Closed),
            };
            let is_error = frame.command == Command::Error as u16;
            if frame.request_id == id || (is_error && frame.request_id == 0) {
                let reply = frame.packet(DEFAULT_MAX_FRAME_LEN)?;
                match reply {
                    Packet::Error(e) if e.fatal || frame.request_id == id => {
                        return Err(ClientError::from_server(&e))
                    }
                    Packet::Error(_) => {}
                    reply if reply.command() == expected => return Ok(reply),
                    other => {
                        return Err(ClientError::UnexpectedReply {
                            expected: expected.name(),
                            got: other.command().name(),
                        })
                    }
                }
            }
            self.queued.push_back(frame);
        }
    }

    /// [`Connection::request`], failing with [`ClientError::Timeout`] after `timeout`.
    pub async fn request_timeout(&mut self, packet: Packet, timeout: Duration) -> Result<Packet> {
        tokio::time::timeout(timeout, self.request(packet))
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// Logs in with `token` (minted for `device_id`), declaring the highest inbox version this
    /// device holds. Pushes may follow the LOGIN_ACK at once; they wait in the connection.
    pub async fn login(
        &mut self,
        token: &str,
        device_id: &str,
        last_version: u64,
    ) -> Result<pb::LoginAck> {
        self.login_with(pb::Login {
            token: token.to_string(),
            device_id: device_id.to_string(),
            platform: pb::Platform::Unspecified as i32,
            last_version,
            client_version: CLIENT_VERSION.to_string(),
            ..Default::default()
        })
        .await
    }

    /// Logs in with a LOGIN body built by the caller.
    pub async fn login_with(&mut self, login: pb::Login) -> Result<pb::LoginAck> {
        match self.request(Packet::Login(login)).await? {
            Packet::LoginAck(ack) => Ok(ack),
            other => Err(ClientError::UnexpectedReply {
                expected: "LOGIN_ACK",
                got: other.command().name(),
            }),
        }
    }

    /// Sends a HEARTBEAT and waits for its HEARTBEAT_ACK.
    pub async fn heartbeat(&mut self) -> Result<pb::HeartbeatAck> {
        match self.request(Packet::Heartbeat(heartbeat_body())).await? {
            Packet::HeartbeatAck(ack) => Ok(ack),
            other => Err(ClientError::UnexpectedReply {
                expected: "HEARTBEAT_ACK",
                got: other.command().name(),
            }),
        }
    }

    /// Sends a PUSH_ACK for every push up to `version` (no reply comes).
    pub async fn push_ack(&mut self, version: u64) -> Result<u32> {
        self.send_packet(Packet::PushAck(pb::PushAck { version }))
            .await
    }

    /// Sends a SIGNAL (no reply comes unless the server refuses it: an ERROR with the returned
    /// request id).
    pub async fn signal(
        &mut self,
        to: pb::Conversation,
        kind: pb::SignalKind,
        payload: Vec<u8>,
    ) -> Result<u32> {
        let body = pb::Signal {
            to: Some(to),
            kind: kind as i32,
            payload,
        };
        self.send_packet(Packet::Signal(body)).await
    }

    /// Writes bytes as they are, for tools that send malformed frames on purpose.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        // Anything the codec still buffers goes first, so the byte order stays the caller's.
        SinkExt::<&Frame>::flush(&mut self.framed).await?;
        let stream = self.framed.get_mut();
        stream.write_all(bytes).await?;
        stream.flush().await?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// Reads whatever bytes are available (at most `buf.len()`); 0 means the server closed.
    /// Bytes the frame decoder has buffered but not yet decoded come first. Frames already
    /// decoded and kept by [`Connection::request`] are not returned here.
    pub async fn read_raw(&mut self, buf: &mut [u8]) -> Result<usize> {
        let pending = self.framed.read_buffer_mut();
        if !pending.is_empty() {
            let n = pending.len().min(buf.len());
            buf[..n].copy_from_slice(&pending.split_to(n));
            return Ok(n);
        }
        Ok(self.framed.get_mut().read(buf).await?)
    }

    /// Closes the write half (the server sees end of stream); reading still works.
    pub async fn shutdown(&mut self) -> Result<()> {
        Ok(self.framed.get_mut().shutdown().await?)
    }
}

/// The reply command of a request command (`0x00xx` -> `0x80xx`).
pub fn reply_command(request: Command) -> Command {
    Command::from_u16(request as u16 | 0x8000).unwrap_or(Command::Error)
}

/// A HEARTBEAT body stamped with the current time.
pub(crate) fn heartbeat_body() -> pb::Heartbeat {
    pb::Heartbeat {
        client_time_ms: now_ms(),
        ..Default::default()
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
