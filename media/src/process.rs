//! Image processing: decode within the limits, apply a JPEG's EXIF orientation, and make the
//! thumbnail and the inline preview, both JPEG.

use std::io::{BufRead, Seek, SeekFrom};
use std::panic::{self, AssertUnwindSafe};

use image::codecs::jpeg::JpegEncoder;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, RgbImage};

use crate::error::MediaError;
use crate::header::{self, Header};
use crate::limits::{Dimensions, Limits};
use crate::sniff::Kind;

/// The JPEG quality of thumbnails (0-100).
pub const THUMBNAIL_QUALITY: u8 = 80;

/// The most bytes an inline preview takes.
pub const PREVIEW_MAX_BYTES: usize = 1024;

/// The sizes (longest side, pixels) and JPEG qualities tried for the inline preview, in order;
/// the first that fits in [`PREVIEW_MAX_BYTES`] is kept. Most of a tiny JPEG is its tables
/// (about 600 bytes), so the pixels have a few hundred bytes.
const PREVIEW_LADDER: [(u32, u8); 5] = [(32, 40), (32, 25), (24, 25), (16, 20), (8, 20)];

/// An encoded image made from the original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The encoded file.
    pub bytes: Vec<u8>,
    /// Its content type (`image/jpeg`).
    pub content_type: &'static str,
    /// Its width in pixels.
    pub width: u32,
    /// Its height in pixels.
    pub height: u32,
}

/// What [`process_image`] makes of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processed {
    /// The image's dimensions as displayed (after the EXIF orientation).
    pub dimensions: Dimensions,
    /// The thumbnail: fits within the requested square, aspect ratio kept, never upscaled,
    /// oriented, flattened onto white, JPEG at [`THUMBNAIL_QUALITY`].
    pub thumbnail: Encoded,
    /// A tiny JPEG (at most 32 px on its long side, at most [`PREVIEW_MAX_BYTES`]) for a
    /// message to carry inline, shown blurred until the thumbnail or image arrives.
    pub preview: Encoded,
}

/// Decodes an image of `kind` from the start of `reader` within `limits` and makes its
/// thumbnail, fitting within `thumb_max_side` x `thumb_max_side` (at least 1), and its inline
/// preview. GIF gives its first frame.
///
/// The header is read and checked against `limits` first, so a bomb is refused with
/// [`MediaError::TooLarge`] before anything large is allocated. A JPEG is also walked to its
/// end-of-image marker first, so a truncated one gives [`MediaError::Truncated`].
pub fn process_image(
    mut reader: impl BufRead + Seek,
    kind: Kind,
    thumb_max_side: u32,
    limits: &Limits,
) -> Result<Processed, MediaError> {
    let header = header::read(&mut reader, kind, true)?;
    limits.check(header.width, header.height)?;
    // The JPEG decoder reads the whole file into memory: count it against the budget.
    let held = if kind == Kind::Jpeg {
        reader.seek(SeekFrom::End(0)).map_err(MediaError::from_io)?
    } else {
        0
    };
    reader
        .seek(SeekFrom::Start(0))
        .map_err(MediaError::from_io)?;
    // A panic in a decoder is a bug there, but must not take the server's thread with it.
    let decoded = panic::catch_unwind(AssertUnwindSafe(|| {
        decode(reader, kind, &header, held, limits)
    }))
    .unwrap_or_else(|panic| Err(MediaError::corrupt(panic_text(&panic))))?;
    let max_side = thumb_max_side.max(1);
    panic::catch_unwind(AssertUnwindSafe(|| {
        make(decoded, header.orientation, max_side)
    }))
    .unwrap_or_else(|panic| Err(MediaError::corrupt(panic_text(&panic))))
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    format!("the decoder failed ({detail})")
}

/// Decodes the image, with the decoder's own limits set and its reading of the dimensions and
/// memory checked before the pixels are allocated. `held` is the bytes of input the decoder
/// keeps in memory besides the pixels.
fn decode<R: BufRead + Seek>(
    reader: R,
    kind: Kind,
    header: &Header,
    held: u64,
    limits: &Limits,
) -> Result<DynamicImage, MediaError> {
    let format = match kind {
        Kind::Jpeg => ImageFormat::Jpeg,
        Kind::Png => ImageFormat::Png,
        Kind::Gif => ImageFormat::Gif,
        Kind::Webp => ImageFormat::WebP,
        _ => return Err(MediaError::Unsupported),
    };
    let (w, h) = (header.width, header.height);
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side);
    decoder_limits.max_image_height = Some(limits.max_side);
    decoder_limits.max_alloc = Some(limits.max_alloc);
    let mut reader = image::ImageReader::with_format(reader, format);
    reader.limits(decoder_limits);
    let decoder = reader
        .into_decoder()
        .map_err(|e| MediaError::from_image(e, w, h))?;
    let (dw, dh) = decoder.dimensions();
    if (dw, dh) != (w, h) {
        return Err(MediaError::corrupt(format!(
            "the header says {w} x {h} pixels, the decoder {dw} x {dh}"
        )));
    }
    let pixels = decoder.total_bytes();
    // Flattening an image with alpha may convert it to 8-bit RGBA first: budget for the copy.
    let conversion = if decoder.color_type().has_alpha() {
        u64::from(w) * u64::from(h) * 4
    } else {
        0
    };
    if pixels.saturating_add(conversion).saturating_add(held) > limits.max_alloc {
        return Err(MediaError::TooLarge {
            width: w,
            height: h,
        });
    }
    DynamicImage::from_decoder(decoder).map_err(|e| MediaError::from_image(e, w, h))
}

/// Flattens, shrinks, orients and encodes.
fn make(
    image: DynamicImage,
    orientation: Orientation,
    max_side: u32,
) -> Result<Processed, MediaError> {
    let image = flatten_onto_white(image);
    let stored = (image.width(), image.height());
    let turned = matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    );
    let swap = |(a, b): (u32, u32)| if turned { (b, a) } else { (a, b) };
    let dimensions = {
        let (width, height) = swap(stored);
        Dimensions { width, height }
    };
    // Shrink first, in the stored orientation, then orient the small image: turning the full
    // image would copy all of it.
    let target = swap(fit(dimensions.width, dimensions.height, max_side));
    let mut small = if target == stored {
        image
    } else {
        image.thumbnail_exact(target.0, target.1)
    };
    small.apply_orientation(orientation);
    let small = small.into_rgb8();
    let thumbnail = encode(&small, THUMBNAIL_QUALITY)?;
    let preview = preview(&small)?;
    Ok(Processed {
        dimensions,
        thumbnail,
        preview,
    })
}

/// The largest size within `max` x `max` with the aspect ratio of `width` x `height`, or the
/// size itself if it already fits (never larger). Each side is at least 1.
fn fit(width: u32, height: u32, max: u32) -> (u32, u32) {
    if width <= max && height <= max {
        return (width, height);
    }
    let scale = |side: u32, long: u32| -> u32 {
        let scaled = (u64::from(side) * u64::from(max) + u64::from(long) / 2) / u64::from(long);
        (scaled as u32).clamp(1, max)
    };
    if width >= height {
        (max, scale(height, width))
    } else {
        (scale(width, height), max)
    }
}

/// Blends an image with an alpha channel onto white, in place when it is 8-bit RGBA. Without
/// this, transparent pixels (often stored black) would come out black in a JPEG.
fn flatten_onto_white(image: DynamicImage) -> DynamicImage {
    if !image.color().has_alpha() {
        return image;
    }
    let mut rgba = image.into_rgba8();
    for p in rgba.pixels_mut() {
        let a = u32::from(p[3]);
        for c in 0..3 {
            p[c] = ((u32::from(p[c]) * a + 255 * (255 - a) + 127) / 255) as u8;
        }
        p[3] = 255;
    }
    DynamicImage::ImageRgba8(rgba)
}

fn encode(image: &RgbImage, quality: u8) -> Result<Encoded, MediaError> {
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode_image(image)
        .map_err(|e| MediaError::corrupt(format!("encoding the thumbnail failed: {e}")))?;
    Ok(Encoded {
        bytes,
        content_type: "image/jpeg",
        width: image.width(),
        height: image.height(),
    })
}

/// The inline preview: the first rung of [`PREVIEW_LADDER`] that fits in
/// [`PREVIEW_MAX_BYTES`] (the last rung, 8 px, always does).
fn preview(thumbnail: &RgbImage) -> Result<Encoded, MediaError> {
    let mut last = None;
    for (side, quality) in PREVIEW_LADDER {
        let (w, h) = fit(thumbnail.width(), thumbnail.height(), side);
        let tiny = image::imageops::thumbnail(thumbnail, w, h);
        let encoded = encode(&tiny, quality)?;
        if encoded.bytes.len() <= PREVIEW_MAX_BYTES {
            return Ok(encoded);
        }
        last = Some(encoded);
    }
    // Not reached for any image seen: an 8 x 8 JPEG is its tables and a few dozen bytes.
    last.ok_or_else(|| MediaError::corrupt("no preview was made"))
}

#[cfg(test)]
mod tests {
    use super::fit;

    #[test]
    fn fit_keeps_aspect_and_never_upscales() {
        assert_eq!(fit(1600, 1200, 320), (320, 240));
        assert_eq!(fit(1200, 1600, 320), (240, 320));
        assert_eq!(fit(100, 50, 320), (100, 50));
        assert_eq!(fit(320, 320, 320), (320, 320));
        assert_eq!(fit(10_000, 1, 320), (320, 1));
        assert_eq!(fit(1, 10_000, 32), (1, 32));
        assert_eq!(fit(333, 111, 32), (32, 11));
    }
}
