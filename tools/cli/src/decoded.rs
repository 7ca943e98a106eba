//! Frames read back from bytes: [`decode_stream`] annotates every frame of a byte stream
//! ([`FrameInfo`]) and says how the stream ended ([`StreamEnd`]). `wire` feeds it, `output`
//! prints what it returns.

use bytes::{Bytes, BytesMut};
use missive_protocol::frame::{HEADER_LEN, TRAILER_LEN};
use missive_protocol::DEFAULT_MAX_FRAME_LEN;
use missive_protocol::{Flags, Frame, FrameCodec, ProtocolError};
use serde_json::Value;
use tokio_util::codec::Decoder;

/// One frame read from a byte stream, with everything a person debugging it wants to see.
#[derive(Debug, Clone)]
pub struct FrameInfo {
    pub offset: usize,
    /// The length field (bytes after it).
    pub length: usize,
    pub magic: String,
    pub version: u8,
    pub flags: u8,
    pub command: u16,
    pub command_name: String,
    pub request_id: u32,
    pub crc_ok: bool,
    pub crc_frame: u32,
    pub crc_computed: u32,
    pub body: Option<Value>,
    pub body_error: Option<String>,
}

/// How a stream of frames ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    Clean,
    Error { offset: usize, message: String },
}

/// `BAD_CRC (4): bad CRC32: ...`
pub fn describe(e: &ProtocolError) -> String {
    let code = e.code();
    format!("{} ({}): {e}", code.name(), code as u32)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A command by name (`SEND`) or number (`0x0003`, `3`). Unknown numbers are allowed.
pub fn parse_command(text: &str) -> anyhow::Result<u16> {
    if let Some(c) = missive_protocol::Command::from_name(&text.to_ascii_uppercase()) {
        return Ok(c as u16);
    }
    let n = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(h) => u16::from_str_radix(h, 16),
        None => text.parse(),
    };
    n.map_err(|_| {
        anyhow::anyhow!("unknown command {text:?} (a name like SEND, or a number like 0x0003)")
    })
}

/// Annotates the frame at the start of `raw`, whose header the codec has accepted.
fn annotate(raw: &[u8], offset: usize) -> FrameInfo {
    let length = be32(raw) as usize;
    let total = 4 + length;
    let frame = Frame {
        flags: Flags(raw[7]),
        command: u16::from_be_bytes([raw[8], raw[9]]),
        request_id: be32(&raw[10..]),
        body: Bytes::copy_from_slice(&raw[HEADER_LEN..total - TRAILER_LEN]),
    };
    let crc_frame = be32(&raw[total - TRAILER_LEN..]);
    let rebuilt = frame.to_bytes();
    let crc_computed = be32(&rebuilt[rebuilt.len() - TRAILER_LEN..]);
    let (body, body_error) = match frame.packet(DEFAULT_MAX_FRAME_LEN) {
        Ok(p) => (Some(p.body_to_json()), None),
        Err(e) => (None, Some(describe(&e))),
    };
    FrameInfo {
        offset,
        length,
        magic: String::from_utf8_lossy(&raw[4..6]).into_owned(),
        version: raw[6],
        flags: frame.flags.0,
        command: frame.command,
        command_name: frame
            .command()
            .map(|c| c.name().to_string())
            .unwrap_or_else(|_| "UNKNOWN".into()),
        request_id: frame.request_id,
        crc_ok: crc_frame == crc_computed,
        crc_frame,
        crc_computed,
        body,
        body_error,
    }
}

/// Reads every frame of `bytes`. A bad CRC is reported on the frame and reading goes on (the
/// length is known); any other framing error ends the stream, as it does for the server.
pub fn decode_stream(bytes: &[u8]) -> (Vec<FrameInfo>, StreamEnd) {
    let mut frames = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let mut buf = BytesMut::from(rest);
        match FrameCodec::default().decode_eof(&mut buf) {
            Ok(Some(_)) | Err(ProtocolError::BadCrc { .. }) => {
                let info = annotate(rest, offset);
                offset += 4 + info.length;
                frames.push(info);
            }
            Ok(None) => break,
            Err(e) => {
                let message = describe(&e);
                return (frames, StreamEnd::Error { offset, message });
            }
        }
    }
    (frames, StreamEnd::Clean)
}
