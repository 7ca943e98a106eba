//! Audio, video and document files: their first bytes, built here by hand, sniff to the right
//! kind and content type; random bytes are `Other`; and durations are read from hand-built MP4
//! (`ftyp` + `moov/mvhd`, versions 0 and 1) and WAV headers.

mod support;

use std::io::Cursor;

use missive_media::{duration_ms, is_image, sniff, Kind};
use support::Rng;

fn mp4_box(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(payload);
    out
}

fn ftyp(major: &[u8; 4], compatible: &[&[u8; 4]]) -> Vec<u8> {
    let mut payload = major.to_vec();
    payload.extend_from_slice(&0u32.to_be_bytes()); // minor version
    for brand in compatible {
        payload.extend_from_slice(*brand);
    }
    mp4_box(b"ftyp", &payload)
}

/// An `mvhd` box, all 100 (version 0) or 112 (version 1) bytes of it.
fn mvhd(version: u8, timescale: u32, duration: u64) -> Vec<u8> {
    let mut p = vec![version, 0, 0, 0];
    if version == 1 {
        p.extend_from_slice(&3_700_000_000u64.to_be_bytes()); // creation time
        p.extend_from_slice(&3_700_000_100u64.to_be_bytes()); // modification time
        p.extend_from_slice(&timescale.to_be_bytes());
        p.extend_from_slice(&duration.to_be_bytes());
    } else {
        p.extend_from_slice(&3_700_000_000u32.to_be_bytes());
        p.extend_from_slice(&3_700_000_100u32.to_be_bytes());
        p.extend_from_slice(&timescale.to_be_bytes());
        p.extend_from_slice(&(duration as u32).to_be_bytes());
    }
    p.extend_from_slice(&0x0001_0000u32.to_be_bytes()); // rate 1.0
    p.extend_from_slice(&0x0100u16.to_be_bytes()); // volume 1.0
    p.extend_from_slice(&[0; 10]); // reserved
    for m in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        p.extend_from_slice(&m.to_be_bytes()); // unity matrix
    }
    p.extend_from_slice(&[0; 24]); // pre-defined
    p.extend_from_slice(&2u32.to_be_bytes()); // next track id
    mp4_box(b"mvhd", &p)
}

/// ftyp, free, an mdat with a 64-bit size, then moov (udta, mvhd, trak): the movie header at
/// the end, as a phone that did not "fast start" the file writes it.
fn mp4(major: &[u8; 4], mvhd: Vec<u8>) -> Vec<u8> {
    let mut out = ftyp(major, &[b"isom", b"mp42"]);
    out.extend(mp4_box(b"free", &[0; 8]));
    let media = vec![0xAB; 1000];
    out.extend_from_slice(&1u32.to_be_bytes());
    out.extend_from_slice(b"mdat");
    out.extend_from_slice(&((media.len() + 16) as u64).to_be_bytes());
    out.extend_from_slice(&media);
    let mut moov = mp4_box(b"udta", &[0; 12]);
    moov.extend(mvhd);
    moov.extend(mp4_box(b"trak", &[0; 20]));
    out.extend(mp4_box(b"moov", &moov));
    out
}

fn wav(byte_rate: u32, data_len: u32) -> Vec<u8> {
    let mut fmt = Vec::new();
    fmt.extend_from_slice(&1u16.to_le_bytes()); // PCM
    fmt.extend_from_slice(&2u16.to_le_bytes()); // channels
    fmt.extend_from_slice(&44_100u32.to_le_bytes()); // sample rate
    fmt.extend_from_slice(&byte_rate.to_le_bytes());
    fmt.extend_from_slice(&4u16.to_le_bytes()); // block align
    fmt.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    let mut body = b"WAVE".to_vec();
    for (id, data) in [(b"fmt ", fmt), (b"LIST", b"INFOabc".to_vec())] {
        body.extend_from_slice(id);
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(&data);
        if data.len() % 2 == 1 {
            body.push(0); // pad byte
        }
    }
    body.extend_from_slice(b"data");
    body.extend_from_slice(&data_len.to_le_bytes());
    body.extend_from_slice(&[0; 64]); // the start of the samples
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32 + data_len - 64).to_le_bytes());
    out.extend(body);
    out
}

fn ogg_first_page(packet: &[u8]) -> Vec<u8> {
    let mut out = b"OggS\x00\x02".to_vec();
    out.extend_from_slice(&[0; 8]); // granule position
    out.extend_from_slice(&0x1234_5678u32.to_le_bytes()); // serial
    out.extend_from_slice(&0u32.to_le_bytes()); // sequence
    out.extend_from_slice(&[0; 4]); // CRC (not checked by sniffing)
    out.push(1); // one segment
    out.push(packet.len() as u8);
    out.extend_from_slice(packet);
    out
}

fn ebml(doc_type: &[u8]) -> Vec<u8> {
    let mut body = vec![0x42, 0x86, 0x81, 0x01]; // EBMLVersion 1
    body.extend_from_slice(&[0x42, 0xF7, 0x81, 0x01]); // EBMLReadVersion 1
    body.extend_from_slice(&[0x42, 0x82, 0x80 | doc_type.len() as u8]); // DocType
    body.extend_from_slice(doc_type);
    let mut out = vec![0x1A, 0x45, 0xDF, 0xA3, 0x80 | body.len() as u8];
    out.extend(body);
    out.extend_from_slice(&[0x18, 0x53, 0x80, 0x67]); // Segment
    out
}

fn check(bytes: &[u8], kind: Kind, content_type: &str) {
    let s = sniff(bytes);
    assert_eq!((s.kind, s.content_type), (kind, content_type), "{bytes:?}");
    assert!(!is_image(kind));
}

#[test]
fn sniff_names_audio_video_and_pdf() {
    check(&mp4(b"isom", mvhd(0, 1000, 1)), Kind::Mp4, "video/mp4");
    check(&ftyp(b"mp42", &[b"isom"]), Kind::Mp4, "video/mp4");
    check(
        &ftyp(b"M4A ", &[b"M4A ", b"mp42", b"isom"]),
        Kind::Mp4,
        "audio/mp4",
    );
    check(&ftyp(b"qt  ", &[b"qt  "]), Kind::Mp4, "video/quicktime");
    check(&ftyp(b"3gp4", &[b"isom"]), Kind::Mp4, "video/3gpp");
    check(
        &ftyp(b"heic", &[b"mif1", b"heic"]),
        Kind::Other,
        "image/heic",
    );
    check(
        &ftyp(b"mif1", &[b"avif", b"mif1"]),
        Kind::Other,
        "image/avif",
    );
    check(&ebml(b"webm"), Kind::WebM, "video/webm");
    check(&ebml(b"matroska"), Kind::WebM, "video/x-matroska");
    let mut opus = b"OpusHead\x01\x02".to_vec();
    opus.extend_from_slice(&[0x38, 0x01, 0x80, 0xBB, 0, 0, 0, 0, 0]);
    check(&ogg_first_page(&opus), Kind::Ogg, "audio/ogg");
    check(
        &ogg_first_page(b"\x01vorbis\0\0\0\0\x02"),
        Kind::Ogg,
        "audio/ogg",
    );
    check(
        &ogg_first_page(b"\x80theora\x03\x02\x01"),
        Kind::Ogg,
        "video/ogg",
    );
    // MP3: an ID3v2 tag (10-byte header, 10 bytes of frames) then a frame; or a bare frame
    // (MPEG-1 layer III, 128 kbit/s, 44.1 kHz).
    let mut id3 = b"ID3\x03\x00\x00\x00\x00\x00\x0a".to_vec();
    id3.extend_from_slice(&[0; 10]);
    id3.extend_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
    check(&id3, Kind::Mp3, "audio/mpeg");
    check(
        &[0xFF, 0xFB, 0x90, 0x64, 0, 0, 0, 0],
        Kind::Mp3,
        "audio/mpeg",
    );
    // AAC: an ADTS header (MPEG-4, LC, 44.1 kHz, stereo); with an ID3 tag before it too.
    let adts = [0xFF, 0xF1, 0x50, 0x80, 0x02, 0x1F, 0xFC];
    check(&adts, Kind::Aac, "audio/aac");
    let mut id3_aac = b"ID3\x04\x00\x00\x00\x00\x00\x05".to_vec();
    id3_aac.extend_from_slice(&[0; 5]);
    id3_aac.extend_from_slice(&adts);
    check(&id3_aac, Kind::Aac, "audio/aac");
    check(&wav(176_400, 352_800), Kind::Wav, "audio/wav");
    check(
        b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n1 0 obj\n",
        Kind::Pdf,
        "application/pdf",
    );
}

#[test]
fn random_and_unknown_bytes_are_other() {
    for bytes in [
        &b""[..],
        b"\x00",
        b"hello, world",
        b"RIFF\0\0\0\0AVI LIST",
        b"PK\x03\x04\x14\x00\x00\x00",
        b"\x7fELF\x02\x01\x01\x00",
        &[0xFF, 0xFB, 0xF0, 0x64], // bitrate index 15: not a frame
    ] {
        let s = sniff(bytes);
        assert_eq!(
            (s.kind, s.content_type),
            (Kind::Other, "application/octet-stream"),
            "{bytes:?}"
        );
    }
    let mut rng = Rng(19);
    for _ in 0..2000 {
        let mut bytes = rng.bytes(64);
        // A first byte that starts no magic number (0xFF starts JPEG, MP3 and AAC ones).
        while b"\xFF\x89GRO%\x1AIA".contains(&bytes[0]) {
            bytes[0] = rng.next() as u8;
        }
        bytes[4] = b'x'; // not "ftyp"
        assert_eq!(sniff(&bytes).kind, Kind::Other, "{bytes:?}");
    }
}

#[test]
fn mp4_duration_from_mvhd_version_0() {
    let file = mp4(b"isom", mvhd(0, 1000, 12_345));
    assert_eq!(duration_ms(Cursor::new(&file), Kind::Mp4), Some(12_345));
    // 90 kHz, 2 min 30.5 s.
    let file = mp4(b"isom", mvhd(0, 90_000, 13_545_000));
    assert_eq!(duration_ms(Cursor::new(&file), Kind::Mp4), Some(150_500));
    // An M4A voice message: 44.1 kHz, 7.5 s.
    let file = mp4(b"M4A ", mvhd(0, 44_100, 330_750));
    assert_eq!(sniff(&file).content_type, "audio/mp4");
    assert_eq!(duration_ms(Cursor::new(&file), Kind::Mp4), Some(7_500));
}

#[test]
fn mp4_duration_from_mvhd_version_1() {
    // 48 kHz, thirty hours and half a second: past 32 bits of samples.
    let duration = 48_000u64 * 108_000 + 24_000;
    assert!(duration > u64::from(u32::MAX));
    let file = mp4(b"mp42", mvhd(1, 48_000, duration));
    assert_eq!(
        duration_ms(Cursor::new(&file), Kind::Mp4),
        Some(108_000_500)
    );
}

#[test]
fn mp4_without_a_usable_header_has_no_duration() {
    // Unknown duration (all ones), a zero timescale, no moov, an mvhd cut short.
    for file in [
        mp4(b"isom", mvhd(0, 1000, u64::from(u32::MAX))),
        mp4(b"isom", mvhd(1, 1000, u64::MAX)),
        mp4(b"isom", mvhd(0, 0, 5000)),
        ftyp(b"isom", &[b"isom"]),
    ] {
        assert_eq!(duration_ms(Cursor::new(&file), Kind::Mp4), None);
    }
    let file = mp4(b"isom", mvhd(0, 1000, 12_345));
    // Keep 20 bytes of the 108 of mvhd (the trak box of 28 follows it): the duration is gone.
    let cut = file.len() - 28 - 108 + 20;
    assert_eq!(duration_ms(Cursor::new(&file[..cut]), Kind::Mp4), None);
    // Kinds without a cheap header.
    assert_eq!(duration_ms(Cursor::new(&file), Kind::Ogg), None);
    assert_eq!(duration_ms(Cursor::new(b"garbage"), Kind::Mp4), None);
}

#[test]
fn wav_duration_from_fmt_and_data() {
    // 16-bit stereo at 44.1 kHz: 176,400 bytes a second; 2 s of data.
    let file = wav(176_400, 352_800);
    assert_eq!(duration_ms(Cursor::new(&file), Kind::Wav), Some(2_000));
    assert_eq!(
        duration_ms(Cursor::new(&wav(176_400, 88_200)), Kind::Wav),
        Some(500)
    );
    assert_eq!(duration_ms(Cursor::new(&wav(0, 88_200)), Kind::Wav), None);
}

#[test]
fn random_container_bytes_never_panic() {
    let mut rng = Rng(7);
    let base = mp4(b"isom", mvhd(1, 600, 6000));
    let wav_base = wav(176_400, 352_800);
    for i in 0..2000 {
        let mut file = if i % 2 == 0 {
            base.clone()
        } else {
            wav_base.clone()
        };
        for _ in 0..1 + rng.below(6) {
            let at = rng.below(file.len());
            file[at] = rng.next() as u8;
        }
        let keep = rng.below(file.len() + 1);
        if rng.below(3) == 0 {
            file.truncate(keep);
        }
        let kind = sniff(&file).kind;
        let _ = duration_ms(Cursor::new(&file), kind);
        let _ = duration_ms(Cursor::new(&file), Kind::Mp4);
        let _ = duration_ms(Cursor::new(&file), Kind::Wav);
    }
}
