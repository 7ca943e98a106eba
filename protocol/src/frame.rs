//! One frame: header, body and CRC32 trailer.
//!
//! ```text
//! offset  size  field
//!      0     4  length      u32 big-endian: bytes that follow this field (10 + body + 4)
//!      4     2  magic       "MS" (0x4d 0x53)
//!      6     1  version     1
//!      7     1  flags       bit 0 COMPRESSED, bit 1 RETRANSMIT, bits 2..7 zero
//!      8     2  command     u16 big-endian
//!     10     4  request id  u32 big-endian
//!     14     n  body        protobuf (zlib-compressed when COMPRESSED)
//!   14+n     4  crc32       u32 big-endian, CRC-32/ISO-HDLC of bytes 0 .. 14+n
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use std::io::Read;

use crate::command::{Command, Packet};
use crate::consts::{MAGIC, PROTOCOL_VERSION};
use crate::error::ProtocolError;

// Lives in `hexbytes` (which the generated `pb` types use); public here, where the CLI and
// the test vectors have always found it.
pub use crate::hexbytes::parse_hex;

/// Bytes before the body: length, magic, version, flags, command, request id.
pub const HEADER_LEN: usize = 14;
/// The CRC32 trailer.
pub const TRAILER_LEN: usize = 4;
/// The smallest valid value of the length field (an empty body).
pub const MIN_LENGTH_FIELD: usize = HEADER_LEN - 4 + TRAILER_LEN;

/// Frame flags (byte 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(pub u8);

impl Flags {
    /// The body is compressed with zlib (RFC 1950).
    pub const COMPRESSED: u8 = 0x01;
    /// This PUSH is a retransmission of one already sent on this connection.
    pub const RETRANSMIT: u8 = 0x02;
    /// Every defined bit; the others must be zero.
    pub const KNOWN: u8 = Self::COMPRESSED | Self::RETRANSMIT;

    pub fn compressed(self) -> bool {
        self.0 & Self::COMPRESSED != 0
    }

    pub fn retransmit(self) -> bool {
        self.0 & Self::RETRANSMIT != 0
    }
}

/// One frame as it travels: the body is still encoded (and possibly compressed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub flags: Flags,
    /// The raw command number; [`Frame::command`] checks it against the table.
    pub command: u16,
    pub request_id: u32,
    pub body: Bytes,
}

impl Frame {
    /// A frame carrying `packet`, uncompressed.
    pub fn new(packet: &Packet, request_id: u32) -> Frame {
        Frame {
            flags: Flags::default(),
            command: packet.command() as u16,
            request_id,
            body: Bytes::from(packet.encode_body()),
        }
    }

    /// A frame carrying `packet`, zlib-compressed when the body is at least `threshold` bytes
    /// and compression makes it smaller.
    pub fn compressed_above(packet: &Packet, request_id: u32, threshold: usize) -> Frame {
        let mut frame = Frame::new(packet, request_id);
        if frame.body.len() >= threshold {
            let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            let packed =
                std::io::Write::write_all(&mut enc, &frame.body).and_then(|_| enc.finish());
            if let Ok(packed) = packed {
                if packed.len() < frame.body.len() {
                    frame.body = Bytes::from(packed);
                    frame.flags.0 |= Flags::COMPRESSED;
                }
            }
        }
        frame
    }

    /// The frame with the RETRANSMIT flag set.
    pub fn retransmitted(mut self) -> Frame {
        self.flags.0 |= Flags::RETRANSMIT;
        self
    }

    /// The command, if it is in the table.
    pub fn command(&self) -> Result<Command, ProtocolError> {
        Command::from_u16(self.command)
    }

    /// Decodes the body into its type, inflating it first if it is compressed. An inflated body
    /// larger than `max_body_len` is refused as [`ProtocolError::BadBody`].
    pub fn packet(&self, max_body_len: usize) -> Result<Packet, ProtocolError> {
        let command = self.command()?;
        if !self.flags.compressed() {
            return Packet::decode_body(command, &self.body);
        }
        let bad = |reason: String| ProtocolError::BadBody {
            command: self.command,
            reason,
        };
        let mut plain = Vec::new();
        flate2::read::ZlibDecoder::new(&self.body[..])
            .take(max_body_len as u64 + 1)
            .read_to_end(&mut plain)
            .map_err(|e| bad(format!("zlib: {e}")))?;
        if plain.len() > max_body_len {
            return Err(bad(format!("inflates past {max_body_len} bytes")));
        }
        Packet::decode_body(command, &plain)
    }

    /// Total bytes on the wire, length prefix included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.body.len() + TRAILER_LEN
    }

    /// Appends the encoded frame to `dst`.
    pub fn write_to(&self, dst: &mut BytesMut) {
        let start = dst.len();
        dst.reserve(self.encoded_len());
        dst.put_u32((self.encoded_len() - 4) as u32);
        dst.put_slice(&MAGIC);
        dst.put_u8(PROTOCOL_VERSION);
        dst.put_u8(self.flags.0);
        dst.put_u16(self.command);
        dst.put_u32(self.request_id);
        dst.put_slice(&self.body);
        let crc = crc32fast::hash(&dst[start..]);
        dst.put_u32(crc);
    }

    /// The encoded frame as one buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.write_to(&mut buf);
        buf.freeze()
    }
}
