//! Media processing for Missive: what an upload is, how big an image is, its thumbnail and
//! inline preview, and how long a recording lasts.
//!
//! The server calls this crate from a blocking thread once an upload is complete. It does no
//! I/O of its own beyond reading the reader it is handed: no async, no networking, no storage.
//!
//! # What it does
//!
//! - [`sniff`]: the kind and content type of a file from its first bytes (magic numbers), never
//!   from what the client claimed. Pass the first [`SNIFF_LEN`] bytes (fewer is fine).
//! - [`probe`]: an image's dimensions from its header alone, without decoding pixels.
//! - [`process_image`]: decodes an image within [`Limits`], applies the EXIF orientation of a
//!   JPEG, and makes a thumbnail (JPEG, fitting within a square, never upscaled) and an inline
//!   preview of at most [`PREVIEW_MAX_BYTES`] (a tiny JPEG) that a chat message can carry.
//! - [`duration_ms`]: the duration of MP4/M4A/MOV (from `moov/mvhd`) and WAV (from `fmt ` and
//!   `data`) files, read from the container header; other formats give `None`.
//!
//! # Formats
//!
//! Recognised by [`sniff`]: JPEG, PNG, GIF, WebP (images: probed and thumbnailed, see
//! [`is_image`]); MP4 with its M4A/M4B (audio), QuickTime and 3GPP brands; WebM and Matroska;
//! Ogg; MP3; WAV; AAC (ADTS and ADIF); PDF. HEIF/HEIC and AVIF are named in the content type but
//! are [`Kind::Other`]: nothing here decodes them. Everything else is [`Kind::Other`],
//! `application/octet-stream`.
//!
//! GIF thumbnails show the first frame. Transparent images are flattened onto white, since the
//! thumbnail is a JPEG. Only JPEG's EXIF orientation is applied (phones write it; the
//! orientation that PNG and WebP can carry is rare and ignored).
//!
//! # Limits and safety
//!
//! Image files are hostile input. A decompression bomb, a small file whose header declares
//! 100,000 x 100,000 pixels, is refused with [`MediaError::TooLarge`] from its header, parsed
//! here by a few lines per format before any decoder is made, so nothing large is allocated.
//! The limits ([`Limits`]: longest side, pixel count, and memory for the decode) are then also
//! given to the decoder itself (`image::Limits`), and the decoder's own reading of the
//! dimensions is checked again. Truncated and corrupt files give an error, never a panic; a
//! panic inside a third-party decoder is caught and reported as [`MediaError::Corrupt`] as a
//! last line of defence (it needs the default `panic = "unwind"`).
//!
//! Memory: the decoded image is held once (width x height x bytes per pixel, at most
//! [`Limits::max_alloc`] with any conversion copy), and a JPEG's compressed bytes are held
//! during its decode (the `image` crate's JPEG decoder reads the whole input); PNG, GIF and
//! WebP are decoded from the reader as a stream. [`probe`] and [`duration_ms`] read headers
//! only.
//!
//! Decoding and encoding use the `image` crate (without its thread pool); no codec is written
//! here.

#![warn(missing_docs)]

mod duration;
mod error;
mod header;
mod limits;
mod process;
mod sniff;

pub use duration::duration_ms;
pub use error::MediaError;
pub use header::probe;
pub use limits::{Dimensions, Limits};
pub use process::{process_image, Encoded, Processed, PREVIEW_MAX_BYTES, THUMBNAIL_QUALITY};
pub use sniff::{is_image, sniff, Kind, Sniffed, SNIFF_LEN};
