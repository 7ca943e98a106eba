//! [`FrameCodec`]: frames in and out of a byte stream.
//!
//! The decoder never panics, whatever bytes arrive, and never buffers more than the frame limit:
//! the length prefix is checked before the payload is waited for, and magic and version are
//! checked as soon as their bytes are in. It accepts frames split across reads at any byte.
//!
//! The read buffer grows only as a frame's bytes arrive, never to the length a peer announces:
//! a peer that announces a large frame and sends a few bytes of it costs a read's worth of
//! buffer, not the frame (see [`make_room`]).

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::consts::{DEFAULT_MAX_FRAME_LEN, MAGIC, PROTOCOL_VERSION};
use crate::error::ProtocolError;
use crate::frame::{Flags, Frame, MIN_LENGTH_FIELD, TRAILER_LEN};

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

    /// Changes the limit for the frames decoded from now on (the server raises it from
    /// [`crate::MAX_LOGIN_FRAME_LEN`] to its `max_frame_len` once a connection has logged in).
    pub fn set_max_frame_len(&mut self, max_frame_len: usize) {
        self.max_frame_len = max_frame_len.max(MIN_LENGTH_FIELD);
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

/// Least room [`make_room`] gives a full buffer (the server's read size).
const GROW_MIN: usize = 4096;

/// Gives `src`, which holds the first `src.len()` bytes of a frame of `total` bytes (at most the
/// limit plus the prefix, checked by the caller), room for more of it once it is full: as much
/// again as it holds, at least [`GROW_MIN`], never past the frame's end.
///
/// So the buffer grows only as bytes arrive, never to the length announced (a peer that
/// announces a 1 MiB frame and sends 20 bytes of it holds the buffer it was read into), and it
/// grows by doubling, so that reading a frame of n bytes copies fewer than 2n bytes in all. A
/// buffer with room left is read into as it is. The bytes move into a fresh buffer rather than
/// through `BytesMut::reserve`, which may double an allocation that already holds most of a
/// frame: the capacity given never exceeds `total`.
fn make_room(src: &mut BytesMut, total: usize) {
    let len = src.len();
    if src.capacity() > len || len >= total {
        return;
    }
    let mut fresh = BytesMut::with_capacity((len + len.max(GROW_MIN)).min(total));
    fresh.extend_from_slice(src);
    *src = fresh;
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
                ..Default::default()
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
        let b = Frame::new(
            &Packet::Heartbeat(pb::Heartbeat {
                client_time_ms: 5,
                ..Default::default()
            }),
            8,
        );
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

    /// Issue #18 item 10: the length alone reserves nothing. A peer that announces a frame at
    /// the limit and sends 20 bytes of it holds the buffer those bytes came in (given room for
    /// one more read once it is full), not the frame.
    #[test]
    fn an_announced_length_reserves_nothing() {
        let limit = 1 << 20;
        let mut header = (limit as u32).to_be_bytes().to_vec();
        header.extend_from_slice(b"MS\x01\x00\x00\x03\x00\x00\x00\x01");
        header.resize(20, 0);
        // A read buffer with room left is read into as it is.
        let mut buf = BytesMut::with_capacity(GROW_MIN);
        buf.extend_from_slice(&header);
        assert_eq!(FrameCodec::new(limit).decode(&mut buf).unwrap(), None);
        assert_eq!(buf.capacity(), GROW_MIN);
        // A full one gets room for one read more.
        let mut buf = BytesMut::from(&header[..]);
        assert_eq!(FrameCodec::new(limit).decode(&mut buf).unwrap(), None);
        assert!(
            buf.capacity() <= header.len() + GROW_MIN,
            "{}",
            buf.capacity()
        );
        assert_eq!(&buf[..], &header[..]);
    }

    /// Feeds `wire` to `codec` in reads of at most `chunk` bytes into the buffer's spare room,
    /// as a connection does (a full buffer with no frame begun gets `GROW_MIN` more, as the
    /// server's read loop gives it). Returns the frames, the largest capacity the buffer had,
    /// and the bytes the codec copied growing it.
    fn read_through(
        codec: &mut FrameCodec,
        mut buf: BytesMut,
        wire: &[u8],
        chunk: usize,
    ) -> (Vec<Frame>, usize, usize) {
        let (mut frames, mut peak, mut copied, mut fed) = (Vec::new(), 0, 0, 0);
        loop {
            loop {
                let (len, cap) = (buf.len(), buf.capacity());
                let out = codec.decode(&mut buf).unwrap();
                if buf.capacity() > cap && out.is_none() {
                    copied += len;
                }
                match out {
                    Some(f) => frames.push(f),
                    None => break,
                }
            }
            if fed == wire.len() {
                return (frames, peak, copied);
            }
            if buf.capacity() == buf.len() {
                let mut fresh = BytesMut::with_capacity(buf.len() + GROW_MIN);
                fresh.extend_from_slice(&buf);
                buf = fresh;
            }
            let n = (buf.capacity() - buf.len())
                .min(chunk)
                .min(wire.len() - fed);
            buf.extend_from_slice(&wire[fed..fed + n]);
            fed += n;
            peak = peak.max(buf.capacity());
        }
    }

    /// Reading a frame at the limit: the buffer grows by doubling as its bytes arrive, so the
    /// copies stay under twice the frame, and never beyond one frame. Fuzz finding 1
    /// (fuzz/README.md): with an earlier frame's allocation still in the buffer (the frame is
    /// held, so the allocation is shared), `reserve` grew it to twice the old size instead of to
    /// one frame.
    #[test]
    fn room_for_a_frame_grows_by_doubling_and_never_exceeds_one_frame() {
        let limit = 64 * 1024;
        let send = |n: usize, rid| {
            Frame::new(
                &Packet::Send(pb::Send {
                    client_msg_id: "c".into(),
                    to: None,
                    content_type: 1,
                    content: vec![7; n],
                    ..Default::default()
                }),
                rid,
            )
            .to_bytes()
        };
        let mut content = limit - 64;
        while send(content, 2).len() < 4 + limit {
            content += 1;
        }
        let at_limit = send(content, 2).to_vec();
        assert_eq!(at_limit.len(), 4 + limit);
        for chunk in [100, 1000, GROW_MIN, 100_000] {
            let mut codec = FrameCodec::new(limit);
            let (frames, peak, copied) =
                read_through(&mut codec, BytesMut::new(), &at_limit, chunk);
            assert_eq!(frames.len(), 1);
            assert_eq!(frames[0].to_bytes(), at_limit);
            assert!(peak <= 4 + limit, "chunk {chunk}: capacity {peak}");
            assert!(
                copied < 2 * at_limit.len(),
                "chunk {chunk}: {copied} bytes copied for a frame of {}",
                at_limit.len()
            );
        }
        // An earlier frame held, sharing the buffer, then the frame at the limit.
        let first = send(40_000, 1);
        let mut wire = first.to_vec();
        wire.extend_from_slice(&at_limit);
        let mut codec = FrameCodec::new(limit);
        let (frames, peak, _) = read_through(&mut codec, BytesMut::new(), &wire, GROW_MIN);
        assert_eq!(frames.len(), 2);
        assert!(peak <= 4 + limit, "capacity {peak}");
    }

    #[test]
    fn compressed_body_round_trips_and_inflation_is_bounded() {
        let packet = Packet::Send(pb::Send {
            client_msg_id: "c".into(),
            to: None,
            content_type: 1,
            content: vec![b'a'; 10_000],
            ..Default::default()
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
