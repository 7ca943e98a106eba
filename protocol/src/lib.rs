//! The Missive wire protocol.
//!
//! # Layout
//! - [`frame`]: the frame header, flags and the CRC32 trailer; [`Frame`] is one decoded frame.
//! - [`codec`]: [`FrameCodec`], a `tokio_util::codec` decoder/encoder with a size limit that is
//!   checked from the length prefix before any payload is buffered.
//! - [`command`]: the command numbers and [`Packet`], a frame body decoded into its type.
//! - [`error`]: [`ProtocolError`] (what went wrong reading a frame) and [`ErrorCode`] (the code
//!   table sent in ERROR frames).
//! - [`ids`]: the one check every id passes (users, devices, groups, client message ids).
//! - [`pb`]: the protobuf types generated from `proto/missive.proto`.
//!
//! The byte-level specification, written for client implementers, is `PROTOCOL.md` beside this
//! crate; `vectors/` holds test vectors that `tests/vectors.rs` checks in both directions.

pub mod codec;
pub mod command;
pub mod error;
pub mod frame;
mod hexbytes;
pub mod ids;
pub mod token;

/// Protobuf bodies generated from `proto/missive.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/missive.v1.rs"));
}

pub use codec::FrameCodec;
pub use command::{Command, Packet};
pub use error::{ErrorCode, ProtocolError};
pub use frame::{Flags, Frame};

/// The protocol version this crate speaks (byte 6 of every frame).
pub const PROTOCOL_VERSION: u8 = 1;
/// Bytes 4..6 of every frame: ASCII "MS".
pub const MAGIC: [u8; 2] = *b"MS";
/// Default limit on the length field (1 MiB).
pub const DEFAULT_MAX_FRAME_LEN: usize = 1 << 20;
/// Largest length field accepted before a connection has logged in (a LOGIN is well under it:
/// a token of the longest ids is under 300 bytes). A larger one is FRAME_TOO_LARGE, so an
/// unauthenticated peer never makes a receiver wait for, or buffer, more than this.
pub const MAX_LOGIN_FRAME_LEN: usize = 4096;
