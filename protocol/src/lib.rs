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
//! - [`base64`]: the content of messages in the HTTP endpoints' JSON.
//!
//! The byte-level specification, written for client implementers, is `PROTOCOL.md` beside this
//! crate; `vectors/` holds test vectors that `tests/vectors.rs` checks in both directions.

#![forbid(unsafe_code)]

pub mod base64;
pub mod codec;
pub mod command;
mod consts;
pub mod error;
pub mod frame;
mod hexbytes;
pub mod ids;
pub mod pb;
pub mod token;

pub use codec::FrameCodec;
pub use command::{Command, Packet};
pub use consts::{DEFAULT_MAX_FRAME_LEN, MAGIC, MAX_LOGIN_FRAME_LEN, PROTOCOL_VERSION};
pub use error::{ErrorCode, ProtocolError};
pub use frame::{Flags, Frame};
