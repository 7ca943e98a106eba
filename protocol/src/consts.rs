//! Protocol-wide constants: the version byte, the magic and the frame length limits.

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
