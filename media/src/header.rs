//! Image headers read by hand, and [`probe`], which returns what they say: the declared
//! dimensions of JPEG, PNG, GIF and WebP files (and a JPEG's EXIF orientation), from a few
//! dozen bytes, before any decoder is made. This is what lets a decompression bomb be refused
//! before anything large is allocated. Nothing here decodes pixels.
//!
//! For JPEG it also walks the whole file, marker by marker through the entropy-coded data, to
//! check that it ends with an end-of-image marker: the decoder used fills a truncated JPEG with
//! grey rather than failing, and an upload cut in half must be refused.

use std::io::{self, BufRead, Read, Seek, SeekFrom};

use image::metadata::Orientation;

use crate::error::MediaError;
use crate::limits::{Dimensions, Limits};
use crate::sniff::Kind;

/// The dimensions of an image, read from its header only, without decoding pixels, and
/// checked against `limits` (an image over them gives [`MediaError::TooLarge`], as
/// [`crate::process_image`] would).
///
/// `reader` is read from its start (it is rewound first). For JPEG this reads the segments
/// before the first scan (including the EXIF orientation); for PNG, GIF and WebP at most the
/// first 30 bytes.
/// A `kind` that is not an image ([`crate::is_image`]) gives [`MediaError::Unsupported`].
pub fn probe(
    mut reader: impl BufRead + Seek,
    kind: Kind,
    limits: &Limits,
) -> Result<Dimensions, MediaError> {
    let header = read(&mut reader, kind, false)?;
    limits.check(header.width, header.height)?;
    Ok(header.displayed())
}

/// What a header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// Stored width in pixels.
    pub width: u32,
    /// Stored height in pixels.
    pub height: u32,
    /// The EXIF orientation (JPEG only; `NoTransforms` otherwise).
    pub orientation: Orientation,
}

impl Header {
    /// The dimensions as displayed, after the orientation.
    pub fn displayed(&self) -> Dimensions {
        let turned = matches!(
            self.orientation,
            Orientation::Rotate90
                | Orientation::Rotate270
                | Orientation::Rotate90FlipH
                | Orientation::Rotate270FlipH
        );
        if turned {
            Dimensions {
                width: self.height,
                height: self.width,
            }
        } else {
            Dimensions {
                width: self.width,
                height: self.height,
            }
        }
    }
}

/// Reads the header of an image of `kind` from the start of `r`. With `whole` set, a JPEG is
/// walked to its end-of-image marker (and `Truncated` if the file ends first); otherwise the
/// walk stops at the first scan. On success `r` is left wherever reading stopped.
pub(crate) fn read<R: BufRead + Seek>(
    r: &mut R,
    kind: Kind,
    whole: bool,
) -> Result<Header, MediaError> {
    r.seek(SeekFrom::Start(0)).map_err(MediaError::from_io)?;
    let plain = |(width, height)| Header {
        width,
        height,
        orientation: Orientation::NoTransforms,
    };
    let header = match kind {
        Kind::Jpeg => jpeg(r, whole)?,
        Kind::Png => plain(png(r)?),
        Kind::Gif => plain(gif(r)?),
        Kind::Webp => plain(webp(r)?),
        _ => return Err(MediaError::Unsupported),
    };
    if header.width == 0 || header.height == 0 {
        return Err(MediaError::corrupt("the image has no pixels (a side of 0)"));
    }
    Ok(header)
}

/// Fills `buf` from `r`; `Truncated` if the file is shorter.
fn fill<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<(), MediaError> {
    r.read_exact(buf).map_err(MediaError::from_io)
}

fn be16(b: &[u8]) -> u32 {
    u32::from(u16::from_be_bytes([b[0], b[1]]))
}

fn le16(b: &[u8]) -> u32 {
    u32::from(u16::from_le_bytes([b[0], b[1]]))
}

fn le24(b: &[u8]) -> u32 {
    u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16
}

/// PNG: the signature, then the IHDR chunk, which must come first.
fn png<R: Read>(r: &mut R) -> Result<(u32, u32), MediaError> {
    let mut b = [0u8; 24];
    fill(r, &mut b)?;
    if &b[..8] != b"\x89PNG\r\n\x1a\n" {
        return Err(MediaError::corrupt("not a PNG signature"));
    }
    if &b[12..16] != b"IHDR" {
        return Err(MediaError::corrupt("PNG does not start with IHDR"));
    }
    let width = u32::from_be_bytes([b[16], b[17], b[18], b[19]]);
    let height = u32::from_be_bytes([b[20], b[21], b[22], b[23]]);
    Ok((width, height))
}

/// GIF: the logical screen descriptor after the 6-byte signature. (A frame larger than the
/// screen is bounded by the decoder's own limits.)
fn gif<R: Read>(r: &mut R) -> Result<(u32, u32), MediaError> {
    let mut b = [0u8; 10];
    fill(r, &mut b)?;
    if &b[..6] != b"GIF87a" && &b[..6] != b"GIF89a" {
        return Err(MediaError::corrupt("not a GIF signature"));
    }
    Ok((le16(&b[6..8]), le16(&b[8..10])))
}

/// WebP: the RIFF header, then the first chunk, which is the lossy (`VP8 `) or lossless
/// (`VP8L`) bitstream, or the extended header (`VP8X`) with the canvas size.
fn webp<R: Read>(r: &mut R) -> Result<(u32, u32), MediaError> {
    let mut b = [0u8; 30];
    fill(r, &mut b)?;
    if &b[..4] != b"RIFF" || &b[8..12] != b"WEBP" {
        return Err(MediaError::corrupt("not a WebP header"));
    }
    match &b[12..16] {
        b"VP8 " => {
            // Frame tag (3 bytes), start code, then 14-bit width and height (2 bits of scale).
            if b[23..26] != [0x9D, 0x01, 0x2A] {
                return Err(MediaError::corrupt("WebP VP8 start code missing"));
            }
            Ok((le16(&b[26..28]) & 0x3FFF, le16(&b[28..30]) & 0x3FFF))
        }
        b"VP8L" => {
            if b[20] != 0x2F {
                return Err(MediaError::corrupt("WebP VP8L signature missing"));
            }
            let bits = u32::from_le_bytes([b[21], b[22], b[23], b[24]]);
            Ok(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1))
        }
        b"VP8X" => Ok((le24(&b[24..27]) + 1, le24(&b[27..30]) + 1)),
        _ => Err(MediaError::corrupt("unknown WebP chunk")),
    }
}

/// How an APP1 segment holding EXIF data starts; the TIFF structure that holds the orientation
/// follows. (An APP1 payload is at most 65,533 bytes, so reading it whole is cheap.)
const EXIF_PREFIX: &[u8] = b"Exif\0\0";

/// JPEG: walks the markers. The first start-of-frame segment gives the dimensions; an APP1
/// `Exif` segment gives the orientation. Without `whole` the walk stops at the first scan.
fn jpeg<R: BufRead>(r: &mut R, whole: bool) -> Result<Header, MediaError> {
    let mut soi = [0u8; 2];
    fill(r, &mut soi)?;
    if soi != [0xFF, 0xD8] {
        return Err(MediaError::corrupt("not a JPEG start-of-image marker"));
    }
    let mut dims: Option<(u32, u32)> = None;
    let mut orientation = Orientation::NoTransforms;
    let mut pending: Option<u8> = None;
    loop {
        let marker = match pending.take() {
            Some(m) => m,
            None => next_marker(r)?,
        };
        match marker {
            0xD8 => return Err(MediaError::corrupt("a second JPEG start-of-image marker")),
            0xD9 => break,
            // Standalone markers without a length: restart markers, TEM.
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let mut len = [0u8; 2];
        fill(r, &mut len)?;
        let len = be16(&len);
        if len < 2 {
            return Err(MediaError::corrupt("a JPEG segment length under 2"));
        }
        let payload = u64::from(len - 2);
        match marker {
            // Start of frame, every coding process (C4 is DHT, C8 reserved, CC is DAC).
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                if dims.is_some() {
                    return Err(MediaError::corrupt("a second JPEG frame header"));
                }
                if payload < 6 {
                    return Err(MediaError::corrupt("a JPEG frame header too short"));
                }
                let mut b = [0u8; 5];
                fill(r, &mut b)?;
                let (height, width) = (be16(&b[1..3]), be16(&b[3..5]));
                if height == 0 {
                    // The height would come later, in a DNL segment; nobody writes that.
                    return Err(MediaError::Unsupported);
                }
                dims = Some((width, height));
                skip(r, payload - 5)?;
            }
            0xE1 if payload >= EXIF_PREFIX.len() as u64 => {
                let mut data = vec![0u8; payload as usize];
                fill(r, &mut data)?;
                if let Some(tiff) = data.strip_prefix(EXIF_PREFIX) {
                    if let Some(o) = Orientation::from_exif_chunk(tiff) {
                        orientation = o;
                    }
                }
            }
            0xDA => {
                if dims.is_none() {
                    return Err(MediaError::corrupt("a JPEG scan before its frame header"));
                }
                skip(r, payload)?;
                if !whole {
                    break;
                }
                pending = Some(skip_entropy_coded(r)?);
            }
            _ => skip(r, payload)?,
        }
    }
    let (width, height) =
        dims.ok_or_else(|| MediaError::corrupt("a JPEG without a frame header"))?;
    Ok(Header {
        width,
        height,
        orientation,
    })
}

/// Reads the next marker between segments: 0xFF, any fill 0xFF bytes, then the marker byte.
/// Stray bytes before it, which some writers leave, are skipped (up to a bound).
fn next_marker<R: BufRead>(r: &mut R) -> Result<u8, MediaError> {
    let mut stray = 0u32;
    let mut byte = [0u8; 1];
    loop {
        fill(r, &mut byte)?;
        if byte[0] == 0xFF {
            break;
        }
        stray += 1;
        if stray > 4096 {
            return Err(MediaError::corrupt("no JPEG marker where one was due"));
        }
    }
    loop {
        fill(r, &mut byte)?;
        if byte[0] != 0xFF {
            return Ok(byte[0]);
        }
    }
}

/// Skips the entropy-coded data after a scan header and returns the marker that ends it (any
/// marker but a stuffed zero and the restart markers). Reads the buffer in place: nothing is
/// allocated.
fn skip_entropy_coded<R: BufRead>(r: &mut R) -> Result<u8, MediaError> {
    let mut after_ff = false;
    loop {
        let buf = r.fill_buf().map_err(MediaError::from_io)?;
        if buf.is_empty() {
            return Err(MediaError::Truncated);
        }
        let mut used = 0;
        let mut found = None;
        while used < buf.len() {
            let b = buf[used];
            used += 1;
            if after_ff {
                match b {
                    0x00 | 0xD0..=0xD7 => after_ff = false,
                    0xFF => {}
                    m => {
                        found = Some(m);
                        break;
                    }
                }
            } else if b == 0xFF {
                after_ff = true;
            } else if let Some(at) = buf[used..].iter().position(|&x| x == 0xFF) {
                used += at + 1;
                after_ff = true;
            } else {
                used = buf.len();
            }
        }
        r.consume(used);
        if let Some(m) = found {
            return Ok(m);
        }
    }
}

/// Skips `n` bytes of `r`; `Truncated` if it ends first.
fn skip<R: Read>(r: &mut R, n: u64) -> Result<(), MediaError> {
    let copied = io::copy(&mut r.take(n), &mut io::sink()).map_err(MediaError::from_io)?;
    if copied < n {
        return Err(MediaError::Truncated);
    }
    Ok(())
}
