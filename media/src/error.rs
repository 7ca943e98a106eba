//! The errors of media processing, with messages a user can read, and their mapping from the
//! `image` crate's errors.

use std::io;

/// Why a file could not be probed or processed. The `Display` text is fit to show a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// The file ends before the format says it should: an upload cut short.
    #[error("the file is incomplete: it ends before the image does")]
    Truncated,
    /// The image declares more pixels than the limits allow (a huge image, or a
    /// decompression bomb). Its declared dimensions, as stored (before any orientation).
    #[error("the image is too large to process ({width} x {height} pixels)")]
    TooLarge {
        /// Declared width in pixels.
        width: u32,
        /// Declared height in pixels.
        height: u32,
    },
    /// Not a format, or a variant of one, that this crate processes.
    #[error("this kind of file cannot be processed")]
    Unsupported,
    /// The file is damaged or is not what its first bytes say; the detail is for logs.
    #[error("the image is damaged: {0}")]
    Corrupt(String),
}

impl MediaError {
    /// `Corrupt` with a message.
    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        MediaError::Corrupt(what.into())
    }

    /// An I/O error of the reader: an early end is `Truncated`, anything else `Corrupt`.
    pub(crate) fn from_io(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            MediaError::Truncated
        } else {
            MediaError::Corrupt(format!("read failed: {e}"))
        }
    }

    /// An error of the `image` crate, for an image whose header declared `width` x `height`.
    pub(crate) fn from_image(e: image::ImageError, width: u32, height: u32) -> Self {
        use image::ImageError as E;
        match e {
            E::IoError(e) => MediaError::from_io(e),
            E::Limits(_) => MediaError::TooLarge { width, height },
            E::Unsupported(_) => MediaError::Unsupported,
            E::Decoding(d) => {
                // The decoders report an early end of data in their own words, not always as an
                // I/O error (the `image` crate keeps the source error but not its kind).
                let text = d.to_string();
                let lower = text.to_ascii_lowercase();
                if lower.contains("eof")
                    || lower.contains("end of file")
                    || lower.contains("unexpected end")
                    || lower.contains("truncated")
                    || lower.contains("not enough data")
                {
                    MediaError::Truncated
                } else {
                    MediaError::Corrupt(text)
                }
            }
            other => MediaError::Corrupt(other.to_string()),
        }
    }
}
