//! The bounds on what is decoded, and image dimensions.

use crate::error::MediaError;

/// Bounds on the images this crate will decode. An image over any of them is refused with
/// [`MediaError::TooLarge`] before its pixels are decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest side, in pixels, of an image that is decoded (width and height each).
    pub max_side: u32,
    /// The most pixels (width x height) of an image that is decoded.
    pub max_pixels: u64,
    /// The most bytes the decode may hold at once: the decoded pixels, a conversion of them
    /// to 8-bit RGBA, and for JPEG the compressed file. Also given to the decoder as
    /// `image::Limits::max_alloc`.
    pub max_alloc: u64,
}

impl Default for Limits {
    /// 16384 px on a side, 50 megapixels, 512 MiB.
    fn default() -> Self {
        Limits {
            max_side: 16_384,
            max_pixels: 50_000_000,
            max_alloc: 512 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// `Err(TooLarge)` when an image of `width` x `height` is over `max_side` or `max_pixels`.
    pub fn check(&self, width: u32, height: u32) -> Result<(), MediaError> {
        let pixels = u64::from(width) * u64::from(height);
        if width > self.max_side || height > self.max_side || pixels > self.max_pixels {
            return Err(MediaError::TooLarge { width, height });
        }
        Ok(())
    }
}

/// The dimensions of an image as it is displayed: for a JPEG with an EXIF orientation that
/// turns it by 90 degrees, the width and height of the stored pixels swapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dimensions {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}
