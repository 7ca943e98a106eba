//! Media processing for Missive: what an upload is, and how long a recording lasts.
//!
//! The server calls this crate from a blocking thread once an upload is complete. It does no
//! I/O of its own beyond reading the reader it is handed: no async, no networking, no storage.
//!
//! - [`sniff`]: the kind and content type of a file from its first bytes (magic numbers), never
//!   from what the client claimed. Pass the first [`SNIFF_LEN`] bytes (fewer is fine).
//! - [`duration_ms`]: the duration of MP4/M4A/MOV (from `moov/mvhd`) and WAV (from `fmt ` and
//!   `data`) files, read from the container header; other formats give `None`.
//!
//! Recognised by [`sniff`]: JPEG, PNG, GIF, WebP; MP4 with its M4A/M4B (audio), QuickTime and
//! 3GPP brands; WebM and Matroska; Ogg; MP3; WAV; AAC (ADTS and ADIF); PDF. HEIF/HEIC and AVIF
//! are named in the content type but are [`Kind::Other`]. Everything else is [`Kind::Other`],
//! `application/octet-stream`.

#![warn(missing_docs)]

mod duration;
mod sniff;

pub use duration::duration_ms;
pub use sniff::{is_image, sniff, Kind, Sniffed, SNIFF_LEN};
