//! Content sniffing: the kind and content type of a file from its first bytes (magic numbers),
//! so that what the server stores and serves never depends on what the client claimed.

/// How many leading bytes [`sniff`] looks at, at most. Fewer work for every format but the two
/// that look past their first bytes: an MP3 whose ID3 tag is followed by AAC frames, and the
/// brands of an ISO file that names them late.
pub const SNIFF_LEN: usize = 512;

/// The kinds of file this crate tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// JPEG image (`image/jpeg`).
    Jpeg,
    /// PNG image, APNG included (`image/png`).
    Png,
    /// GIF image, animated or not (`image/gif`).
    Gif,
    /// WebP image, lossy or lossless (`image/webp`).
    Webp,
    /// An ISO base media file with an `ftyp` box: MP4 (`video/mp4`), M4A/M4B (`audio/mp4`),
    /// QuickTime (`video/quicktime`), 3GPP (`video/3gpp`, `video/3gpp2`).
    Mp4,
    /// WebM (`video/webm`) or another Matroska file (`video/x-matroska`).
    WebM,
    /// Ogg: Opus, Vorbis or FLAC (`audio/ogg`), Theora (`video/ogg`).
    Ogg,
    /// MPEG audio layer III, with or without an ID3 tag (`audio/mpeg`).
    Mp3,
    /// RIFF WAVE (`audio/wav`).
    Wav,
    /// AAC in ADTS or ADIF framing (`audio/aac`).
    Aac,
    /// PDF document (`application/pdf`).
    Pdf,
    /// Anything else: `application/octet-stream`, or for HEIF/HEIC and AVIF images (which this
    /// crate does not decode) `image/heic`, `image/heif` or `image/avif`.
    Other,
}

/// The result of [`sniff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sniffed {
    /// What the file is.
    pub kind: Kind,
    /// The content type to store and serve it with.
    pub content_type: &'static str,
}

impl Sniffed {
    fn new(kind: Kind, content_type: &'static str) -> Self {
        Sniffed { kind, content_type }
    }
}

/// Whether `kind` is one of the image formats that [`crate::probe`] and
/// [`crate::process_image`] handle: JPEG, PNG, GIF, WebP.
pub fn is_image(kind: Kind) -> bool {
    matches!(kind, Kind::Jpeg | Kind::Png | Kind::Gif | Kind::Webp)
}

/// What the bytes are, from their first bytes (`head`, ideally the first [`SNIFF_LEN`] bytes
/// of the file or all of a shorter file), never from the client's claim.
pub fn sniff(head: &[u8]) -> Sniffed {
    const OCTETS: &str = "application/octet-stream";
    if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Sniffed::new(Kind::Jpeg, "image/jpeg");
    }
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Sniffed::new(Kind::Png, "image/png");
    }
    if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        return Sniffed::new(Kind::Gif, "image/gif");
    }
    if head.len() >= 12 && (&head[..4] == b"RIFF" || &head[..4] == b"RF64") {
        match &head[8..12] {
            b"WEBP" if &head[..4] == b"RIFF" => return Sniffed::new(Kind::Webp, "image/webp"),
            b"WAVE" => return Sniffed::new(Kind::Wav, "audio/wav"),
            _ => return Sniffed::new(Kind::Other, OCTETS),
        }
    }
    if head.len() >= 12 && &head[4..8] == b"ftyp" {
        return iso_brand(head);
    }
    if head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        // EBML; the DocType element names the flavour, within the first few dozen bytes.
        return if contains(head, b"matroska") {
            Sniffed::new(Kind::WebM, "video/x-matroska")
        } else {
            Sniffed::new(Kind::WebM, "video/webm")
        };
    }
    if head.starts_with(b"OggS") {
        return ogg(head);
    }
    if head.starts_with(b"%PDF-") {
        return Sniffed::new(Kind::Pdf, "application/pdf");
    }
    if head.starts_with(b"ADIF") {
        return Sniffed::new(Kind::Aac, "audio/aac");
    }
    if head.starts_with(b"ID3") {
        // An ID3v2 tag is usually followed by MP3 frames, but AAC files carry one too.
        if let Some(after) = id3_end(head) {
            if head.len() > after && is_adts(&head[after..]) {
                return Sniffed::new(Kind::Aac, "audio/aac");
            }
        }
        return Sniffed::new(Kind::Mp3, "audio/mpeg");
    }
    if is_adts(head) {
        return Sniffed::new(Kind::Aac, "audio/aac");
    }
    if is_mp3_frame(head) {
        return Sniffed::new(Kind::Mp3, "audio/mpeg");
    }
    Sniffed::new(Kind::Other, OCTETS)
}

/// An ISO base media file (`ftyp` at offset 4): the major brand, then the compatible ones,
/// tell audio from video and HEIF/AVIF stills from movies.
fn iso_brand(head: &[u8]) -> Sniffed {
    let major = &head[8..12];
    let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let end = size.clamp(16, head.len().max(16)).min(head.len());
    let compatible: Vec<&[u8]> = head.get(16..end).unwrap_or(&[]).chunks_exact(4).collect();
    let has = |brand: &[u8]| major == brand || compatible.contains(&brand);
    match major {
        b"M4A " | b"M4B " | b"M4P " | b"F4A " | b"F4B " => Sniffed::new(Kind::Mp4, "audio/mp4"),
        b"qt  " => Sniffed::new(Kind::Mp4, "video/quicktime"),
        b"avif" | b"avis" => Sniffed::new(Kind::Other, "image/avif"),
        b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" => {
            Sniffed::new(Kind::Other, "image/heic")
        }
        b"mif1" | b"msf1" => {
            if has(b"avif") || has(b"avis") {
                Sniffed::new(Kind::Other, "image/avif")
            } else if has(b"heic") || has(b"heix") {
                Sniffed::new(Kind::Other, "image/heic")
            } else {
                Sniffed::new(Kind::Other, "image/heif")
            }
        }
        b"crx " => Sniffed::new(Kind::Other, "application/octet-stream"),
        m if m.starts_with(b"3g2") => Sniffed::new(Kind::Mp4, "video/3gpp2"),
        m if m.starts_with(b"3gp") => Sniffed::new(Kind::Mp4, "video/3gpp"),
        _ => Sniffed::new(Kind::Mp4, "video/mp4"),
    }
}

/// Ogg: the first packet of the first page names the codec.
fn ogg(head: &[u8]) -> Sniffed {
    // Page header: 27 bytes, then one lacing byte per segment, then the packet.
    let packet = head
        .get(26)
        .and_then(|&segments| head.get(27 + usize::from(segments)..));
    match packet {
        Some(p) if p.starts_with(b"\x80theora") => Sniffed::new(Kind::Ogg, "video/ogg"),
        _ => Sniffed::new(Kind::Ogg, "audio/ogg"),
    }
}

/// The offset just past an ID3v2 tag at the start of `head` (its size is "syncsafe": seven
/// bits a byte), if the header is whole.
fn id3_end(head: &[u8]) -> Option<usize> {
    let h = head.get(..10)?;
    if h[6..10].iter().any(|b| b & 0x80 != 0) {
        return None;
    }
    let size = h[6..10]
        .iter()
        .fold(0usize, |acc, &b| (acc << 7) | usize::from(b));
    let footer = if h[5] & 0x10 != 0 { 10 } else { 0 };
    Some(10 + size + footer)
}

/// An AAC ADTS frame header: a 12-bit sync word, layer 0, a valid sampling-rate index.
fn is_adts(b: &[u8]) -> bool {
    b.len() >= 4 && b[0] == 0xFF && b[1] & 0xF6 == 0xF0 && (b[2] >> 2) & 0x0F < 13
}

/// An MPEG audio layer III frame header: an 11-bit sync word, a version other than the
/// reserved one, layer III, and a bitrate and sampling rate that are not the invalid values.
fn is_mp3_frame(b: &[u8]) -> bool {
    if b.len() < 4 || b[0] != 0xFF || b[1] & 0xE0 != 0xE0 {
        return false;
    }
    let version = (b[1] >> 3) & 0x03;
    let layer = (b[1] >> 1) & 0x03;
    let bitrate = b[2] >> 4;
    let rate = (b[2] >> 2) & 0x03;
    version != 0b01 && layer == 0b01 && bitrate != 0 && bitrate != 0x0F && rate != 0x03
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
