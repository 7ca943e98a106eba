//! The byte side of a connection. An idle connection holds no read buffer (it waits for
//! readiness first and only then reads) and no write buffer (one is built per write).

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use missive_protocol::{Frame, FrameCodec, ProtocolError};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

/// A write that makes no progress for this long closes the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const READ_CHUNK: usize = 4096;

pub struct Conn {
    pub stream: TcpStream,
    rbuf: BytesMut,
    codec: FrameCodec,
}

/// What a read brought.
pub enum Filled {
    Data,
    Eof,
}

impl Conn {
    pub fn new(stream: TcpStream, max_frame_len: usize) -> Conn {
        Conn {
            stream,
            rbuf: BytesMut::new(),
            codec: FrameCodec::new(max_frame_len),
        }
    }

    /// The next complete frame already read, if any.
    pub fn buffered_frame(&mut self) -> Result<Option<Frame>, ProtocolError> {
        self.codec.decode(&mut self.rbuf)
    }

    /// Reads what the socket has, after `stream.readable()` resolved. Never waits.
    /// At end of stream inside a frame, returns the truncation error.
    pub fn try_fill(&mut self) -> Result<Filled, ProtocolError> {
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
            self.rbuf.reserve(READ_CHUNK);
        }
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(0) => match self.codec.decode_eof(&mut self.rbuf) {
                Err(e) => Err(e),
                Ok(_) => Ok(Filled::Eof),
            },
            Ok(_) => Ok(Filled::Data),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Filled::Data),
            Err(e) => Err(e.into()),
        }
    }

    /// Frees the read buffer when it holds nothing, so idle connections cost no buffer.
    pub fn release_idle(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            self.rbuf = BytesMut::new();
        }
    }

    /// Writes frames in one go.
    pub async fn write_frames(&mut self, frames: &[Frame]) -> io::Result<()> {
        let mut out = BytesMut::with_capacity(frames.iter().map(Frame::encoded_len).sum());
        for f in frames {
            f.write_to(&mut out);
        }
        match tokio::time::timeout(WRITE_TIMEOUT, self.stream.write_all(&out)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write stalled")),
        }
    }
}
