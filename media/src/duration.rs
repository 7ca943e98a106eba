//! Durations of audio and video read from container headers: MP4/M4A/MOV (`moov/mvhd`) and WAV
//! (`fmt ` byte rate and `data` size). Boxes and chunks are skipped by seeking, so a `moov` at
//! the end of a large file costs a few reads.

use std::io::{Read, Seek, SeekFrom};

use crate::sniff::Kind;

/// The most boxes or chunks looked at before giving up, so a file of tiny boxes cannot keep
/// the caller busy.
const MAX_ITEMS: u32 = 4096;

/// The duration in milliseconds of an audio or video file, where the container header says it
/// cheaply: [`Kind::Mp4`] (MP4, M4A, MOV, 3GP: the movie header `moov/mvhd`) and [`Kind::Wav`]
/// (`data` size over the byte rate of `fmt `). `None` for other kinds, for a file without that
/// header, for a damaged one, and for an unknown duration. `reader` may be anywhere; it is
/// read from the start.
pub fn duration_ms(mut reader: impl Read + Seek, kind: Kind) -> Option<u64> {
    reader.seek(SeekFrom::Start(0)).ok()?;
    match kind {
        Kind::Mp4 => mp4(&mut reader),
        Kind::Wav => wav(&mut reader),
        _ => None,
    }
}

fn read_array<const N: usize, R: Read>(r: &mut R) -> Option<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b).ok()?;
    Some(b)
}

/// Finds the box `name` among the boxes from the current position to `end` (`None`: to the end
/// of the file), and returns the end of its payload, leaving `r` at its payload's start.
fn find_box<R: Read + Seek>(r: &mut R, name: &[u8; 4], end: Option<u64>) -> Option<u64> {
    let mut at = r.stream_position().ok()?;
    for _ in 0..MAX_ITEMS {
        if end.is_some_and(|end| at + 8 > end) {
            return None;
        }
        let head: [u8; 8] = read_array(r)?;
        let size32 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let (size, header_len) = match size32 {
            // A 64-bit size follows the type.
            1 => (u64::from_be_bytes(read_array(r)?), 16),
            // The box runs to the end of its parent, or of the file.
            0 => match end {
                Some(end) => (end - at, 8),
                None => (r.seek(SeekFrom::End(0)).ok()? - at, 8),
            },
            n => (u64::from(n), 8),
        };
        if size < header_len {
            return None;
        }
        let box_end = at.checked_add(size)?;
        if end.is_some_and(|end| box_end > end) {
            return None;
        }
        if &head[4..8] == name {
            r.seek(SeekFrom::Start(at + header_len)).ok()?;
            return Some(box_end);
        }
        at = r.seek(SeekFrom::Start(box_end)).ok()?;
    }
    None
}

/// MP4: the top-level `moov` box, then its `mvhd`: version 0 has 32-bit times and duration,
/// version 1 64-bit ones; the duration is in units of the timescale.
fn mp4<R: Read + Seek>(r: &mut R) -> Option<u64> {
    let moov_end = find_box(r, b"moov", None)?;
    let mvhd_end = find_box(r, b"mvhd", Some(moov_end))?;
    let version_flags: [u8; 4] = read_array(r)?;
    let (timescale, duration, needed) = match version_flags[0] {
        0 => {
            let b: [u8; 16] = read_array(r)?;
            let timescale = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
            let duration = u32::from_be_bytes([b[12], b[13], b[14], b[15]]);
            let duration = (duration != u32::MAX).then_some(u64::from(duration));
            (timescale, duration, 20)
        }
        1 => {
            let b: [u8; 28] = read_array(r)?;
            let timescale = u32::from_be_bytes([b[16], b[17], b[18], b[19]]);
            let mut d = [0u8; 8];
            d.copy_from_slice(&b[20..28]);
            let duration = u64::from_be_bytes(d);
            let duration = (duration != u64::MAX).then_some(duration);
            (timescale, duration, 32)
        }
        _ => return None,
    };
    // The fields read must lie within the box.
    let start = r.stream_position().ok()? - needed;
    if start + needed > mvhd_end || timescale == 0 {
        return None;
    }
    let ms = u128::from(duration?) * 1000 / u128::from(timescale);
    u64::try_from(ms).ok()
}

/// WAV: the RIFF chunks `fmt ` (byte rate at offset 8) and `data` (its size), in any order;
/// chunks are padded to an even size.
fn wav<R: Read + Seek>(r: &mut R) -> Option<u64> {
    let riff: [u8; 12] = read_array(r)?;
    if &riff[..4] != b"RIFF" || &riff[8..12] != b"WAVE" {
        return None;
    }
    let mut byte_rate = None;
    let mut data_len = None;
    let mut at = 12u64;
    for _ in 0..MAX_ITEMS {
        let head: [u8; 8] = read_array(r)?;
        let len = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
        match &head[..4] {
            b"fmt " if len >= 12 => {
                let fmt: [u8; 12] = read_array(r)?;
                byte_rate = Some(u32::from_le_bytes([fmt[8], fmt[9], fmt[10], fmt[11]]));
            }
            // A streaming writer that never came back leaves the size at its maximum.
            b"data" if len < u64::from(u32::MAX) => data_len = Some(len),
            b"data" => return None,
            _ => {}
        }
        if let (Some(rate), Some(len)) = (byte_rate, data_len) {
            if rate == 0 {
                return None;
            }
            return Some(len * 1000 / u64::from(rate));
        }
        at += 8 + len + (len & 1);
        r.seek(SeekFrom::Start(at)).ok()?;
    }
    None
}
