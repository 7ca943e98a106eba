//! [`FrameCodec`]: frames in and out of a byte stream.
//!
//! The decoder never panics, whatever bytes arrive, and never buffers more than the frame limit:
//! the length prefix is checked before the payload is waited for, and magic and version are
//! checked as soon as their bytes are in. It accepts frames split across reads at any byte.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::ProtocolError;
use crate::frame::{Flags, Frame, MIN_LENGTH_FIELD, TRAILER_LEN};
use crate::{DEFAULT_MAX_FRAME_LEN, MAGIC, PROTOCOL_VERSION};

/// Decodes and encodes [`Frame`]s. After an error the stream is out of step and must be closed.
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    max_frame_len: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl FrameCodec {
    /// A codec that refuses frames whose length field exceeds `max_frame_len`.
    pub fn new(max_frame_len: usize) -> FrameCodec {
        FrameCodec {
            max_frame_len: max_frame_len.max(MIN_LENGTH_FIELD),
        }
    }

    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Checks what of the header has arrived; returns the length field once it is valid.
    fn check_header(&self, src: &[u8]) -> Result<Option<usize>, ProtocolError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > self.max_frame_len {
            return Err(ProtocolError::TooLarge {
                len,
                max: self.max_frame_len,
            });
        }
        if src.len() >= 6 && src[4..6] != MAGIC {
            return Err(ProtocolError::BadMagic([src[4], src[5]]));
        }
        if src.len() >= 7 && src[6] != PROTOCOL_VERSION {
            return Err(ProtocolError::UnsupportedVersion(src[6]));
        }
        if len < MIN_LENGTH_FIELD {
            return Err(ProtocolError::TooShort(len));
        }
        if src.len() >= 8 && src[7] & !Flags::KNOWN != 0 {
            return Err(ProtocolError::ReservedFlags(src[7]));
        }
        Ok(Some(len))
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        let Some(len) = self.check_header(src)? else {
            return Ok(None);
        };
        let total = 4 + len;
        if src.len() < total {
            make_room(src, total);
            return Ok(None);
        }
        let crc_at = total - TRAILER_LEN;
        let expected = u32::from_be_bytes([
            src[crc_at],
            src[crc_at + 1],
            src[crc_at + 2],
            src[crc_at + 3],
        ]);
        let actual = crc32fast::hash(&src[..crc_at]);
        if expected != actual {
            return Err(ProtocolError::BadCrc { expected, actual });
        }
        let mut frame = src.split_to(total);
        frame.advance(7);
        let flags = Flags(frame.get_u8());
        let command = frame.get_u16();
        let request_id = frame.get_u32();
        frame.truncate(frame.len() - TRAILER_LEN);
        Ok(Some(Frame {
            flags,
            command,
            request_id,
            body: frame.freeze(),
        }))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => {
                let need = if src.len() >= 4 {
                    4 + u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize
                } else {
                    4
                };
                Err(ProtocolError::Truncated {
                    have: src.len(),
                    need,
                })
            }
        }
    }
}

/// Gives `src` room for a whole frame of `total` bytes (at most the limit plus the prefix,
/// checked by the caller). `BytesMut::reserve` may double an allocation that already holds most
/// of a frame, so a short buffer is moved into one of exactly `total` bytes instead.
fn make_room(src: &mut BytesMut, total: usize) {
    if src.capacity() < total {
        let mut fresh = BytesMut::with_capacity(total);
        fresh.extend_from_slice(src);
        *src = fresh;
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = std::io::Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        self.encode(&frame, dst)
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = std::io::Error;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        frame.write_to(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Packet;
    use crate::pb;

    fn sample() -> Frame {
        Frame::new(
            &Packet::Send(pb::Send {
                client_msg_id: "c-1".into(),
                to: Some(pb::Conversation {
                    kind: pb::ConversationKind::Direct as i32,
                    id: "bob".into(),
                }),
                content_type: 1,
                content: b"hello".to_vec(),
            }),
            7,
        )
    }

    #[test]
    fn one_byte_at_a_time_decodes_the_same_as_whole() {
        let frame = sample();
        let wire = frame.to_bytes();
        let mut whole = BytesMut::from(&wire[..]);
        let decoded_whole = FrameCodec::default().decode(&mut whole).unwrap().unwrap();

        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        let mut got = None;
        for (i, b) in wire.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let out = codec.decode(&mut buf).unwrap();
            if i + 1 < wire.len() {
                assert!(out.is_none(), "frame completed early at byte {i}");
            } else {
                got = out;
            }
        }
        assert_eq!(got.as_ref(), Some(&decoded_whole));
        assert_eq!(decoded_whole, frame);
        assert!(buf.is_empty());
    }

    #[test]
    fn two_frames_in_one_read_and_a_split_third() {
        let a = sample();
        let b = Frame::new(&Packet::Heartbeat(pb::Heartbeat { client_time_ms: 5 }), 8);
        let mut wire = BytesMut::new();
        a.write_to(&mut wire);
        b.write_to(&mut wire);
        a.write_to(&mut wire);
        let cut = wire.len() - 3;
        let mut buf = BytesMut::from(&wire[..cut]);
        let mut codec = FrameCodec::default();
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(a.clone()));
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(b));
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&wire[cut..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(a));
    }

    #[test]
    fn oversized_length_is_refused_from_the_prefix_alone() {
        let mut buf = BytesMut::from(&[0x00, 0x10, 0x00, 0x01][..]);
        let err = FrameCodec::new(1 << 20).decode(&mut buf).unwrap_err();
        assert_eq!(
            err,
            ProtocolError::TooLarge {
                len: (1 << 20) + 1,
                max: 1 << 20
            }
        );
        assert!(
            buf.capacity() < 1 << 16,
            "nothing was buffered for the payload"
        );
    }

    /// Fuzz finding 1 (fuzz/README.md): with an earlier frame's allocation in the buffer,
    /// `reserve` grew it to twice the old size instead of to one frame.
    #[test]
    fn room_for_a_frame_never_exceeds_one_frame() {
        let limit = 64 * 1024;
        let mut codec = FrameCodec::new(limit);
        let first = Frame::new(
            &Packet::Send(pb::Send {
                client_msg_id: "c".into(),
                to: None,
                content_type: 1,
                content: vec![7; 40_000],
            }),
            1,
        )
        .to_bytes();
        // The header arrives first, then the rest: the codec makes room for the frame.
        let mut buf = BytesMut::from(&first[..8]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&first[8..]);
        let frame = codec.decode(&mut buf).unwrap().unwrap();
        drop(frame);
        // The next frame announces the full limit.
        buf.extend_from_slice(&(limit as u32).to_be_bytes());
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert!(
            buf.capacity() <= 4 + limit,
            "capacity {} for one frame of {}",
            buf.capacity(),
            4 + limit
        );
        assert!(buf.capacity() >= 4 + limit);
        assert_eq!(&buf[..], &(limit as u32).to_be_bytes());
    }

    #[test]
    fn compressed_body_round_trips_and_inflation_is_bounded() {
        let packet = Packet::Send(pb::Send {
            client_msg_id: "c".into(),
            to: None,
            content_type: 1,
            content: vec![b'a'; 10_000],
        });
        let frame = Frame::compressed_above(&packet, 1, 256);
        assert!(frame.flags.compressed());
        assert!(frame.body.len() < 1000);
        assert_eq!(frame.packet(1 << 20).unwrap(), packet);
        assert!(matches!(
            frame.packet(1000),
            Err(ProtocolError::BadBody { .. })
        ));
    }
}
