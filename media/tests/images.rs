//! Images as a user sends them: real JPEG, PNG, GIF and WebP files made here with the `image`
//! crate's encoders go through sniff, probe and process_image, and what a user would check is
//! checked: kinds and content types, dimensions, thumbnails that fit and keep their shape,
//! previews small enough to ride in a message, EXIF rotation, flattening onto white, truncated
//! files refused, and a loop of mutated files that must never panic.

mod support;

use std::io::Cursor;
use std::time::Instant;

use missive_media::{
    is_image, probe, process_image, sniff, Dimensions, Kind, Limits, MediaError, Processed,
    PREVIEW_MAX_BYTES,
};
use support::*;

fn process(bytes: &[u8], max_side: u32) -> Result<Processed, MediaError> {
    let kind = sniff(bytes).kind;
    process_image(Cursor::new(bytes), kind, max_side, &Limits::default())
}

fn decode_jpeg(bytes: &[u8]) -> image::RgbImage {
    image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg)
        .expect("a JPEG that decodes")
        .into_rgb8()
}

/// The mean colour of a few pixels around (x, y).
fn around(img: &image::RgbImage, x: u32, y: u32) -> [u32; 3] {
    let mut sum = [0u32; 3];
    let mut n = 0;
    for yy in y.saturating_sub(2)..=(y + 2).min(img.height() - 1) {
        for xx in x.saturating_sub(2)..=(x + 2).min(img.width() - 1) {
            let p = img.get_pixel(xx, yy);
            for c in 0..3 {
                sum[c] += u32::from(p[c]);
            }
            n += 1;
        }
    }
    sum.map(|s| s / n)
}

#[test]
fn sniff_names_the_four_image_formats() {
    let cases = [
        (jpeg_gradient(64, 48), Kind::Jpeg, "image/jpeg"),
        (png_with_alpha(64, 48), Kind::Png, "image/png"),
        (gif_red_then_blue(64, 48), Kind::Gif, "image/gif"),
        (webp_with_alpha(64, 48), Kind::Webp, "image/webp"),
    ];
    for (bytes, kind, content_type) in cases {
        let s = sniff(&bytes);
        assert_eq!((s.kind, s.content_type), (kind, content_type));
        assert!(is_image(kind));
        // Only the first bytes are needed.
        assert_eq!(sniff(&bytes[..16]).kind, kind);
    }
}

#[test]
fn probe_reads_dimensions_of_each_format() {
    let cases = [
        (jpeg_gradient(1600, 1200), 1600, 1200),
        (png_with_alpha(300, 200), 300, 200),
        (gif_red_then_blue(77, 55), 77, 55),
        (webp_with_alpha(123, 45), 123, 45),
    ];
    for (bytes, width, height) in cases {
        let kind = sniff(&bytes).kind;
        let dims = probe(Cursor::new(&bytes), kind, &Limits::default()).unwrap();
        assert_eq!(dims, Dimensions { width, height }, "{kind:?}");
    }
}

#[test]
fn probe_refuses_what_is_not_an_image() {
    let pdf = b"%PDF-1.7\n...".to_vec();
    assert_eq!(
        probe(Cursor::new(&pdf), Kind::Pdf, &Limits::default()),
        Err(MediaError::Unsupported)
    );
    assert_eq!(
        process_image(Cursor::new(&pdf), Kind::Pdf, 320, &Limits::default()),
        Err(MediaError::Unsupported)
    );
}

#[test]
fn jpeg_thumbnail_fits_keeps_aspect_and_preview_is_tiny() {
    let jpeg = jpeg_gradient(1600, 1200);
    // Three runs, timed (`cargo test --release -p missive-media -- --nocapture` shows them).
    let mut times = Vec::new();
    let mut p = None;
    for _ in 0..3 {
        let started = Instant::now();
        p = Some(process(&jpeg, 320).unwrap());
        times.push(started.elapsed());
    }
    let p = p.unwrap();
    eprintln!(
        "process_image 1600x1200 JPEG ({} bytes): {:?}; thumbnail {} bytes, preview {} bytes ({}x{})",
        jpeg.len(),
        times,
        p.thumbnail.bytes.len(),
        p.preview.bytes.len(),
        p.preview.width,
        p.preview.height
    );
    assert_eq!(
        p.dimensions,
        Dimensions {
            width: 1600,
            height: 1200
        }
    );
    assert_eq!((p.thumbnail.width, p.thumbnail.height), (320, 240));
    assert_eq!(p.thumbnail.content_type, "image/jpeg");
    let thumb = decode_jpeg(&p.thumbnail.bytes);
    assert_eq!(thumb.dimensions(), (320, 240));
    // The gradient survived: dark at the top left, red at the right, green at the bottom.
    let tl = around(&thumb, 2, 2);
    let tr = around(&thumb, 317, 2);
    let bl = around(&thumb, 2, 237);
    assert!(tl[0] < 40 && tl[1] < 40, "top left {tl:?}");
    assert!(tr[0] > 200 && tr[1] < 40, "top right {tr:?}");
    assert!(bl[1] > 200 && bl[0] < 40, "bottom left {bl:?}");

    assert_eq!(p.preview.content_type, "image/jpeg");
    assert!(
        p.preview.bytes.len() <= 1024 && p.preview.bytes.len() <= PREVIEW_MAX_BYTES,
        "preview of {} bytes",
        p.preview.bytes.len()
    );
    assert!(p.preview.width.max(p.preview.height) <= 32);
    let preview = decode_jpeg(&p.preview.bytes);
    assert_eq!(preview.dimensions(), (p.preview.width, p.preview.height));
    // Same shape as the image, to the pixel.
    assert_eq!((p.preview.width, p.preview.height), (32, 24));
}

#[test]
fn portrait_and_custom_sizes_fit_within_the_square() {
    for (w, h, side) in [
        (1200, 1600, 320),
        (3000, 100, 320),
        (500, 500, 128),
        (90, 2000, 64),
    ] {
        let p = process(&jpeg_gradient(w, h), side).unwrap();
        let (tw, th) = (p.thumbnail.width, p.thumbnail.height);
        assert!(tw <= side && th <= side, "{w}x{h} -> {tw}x{th}");
        assert_eq!(
            tw.max(th),
            side,
            "{w}x{h} -> {tw}x{th}: the long side fills the square"
        );
        // Aspect ratio kept to within the rounding of one pixel.
        let want = f64::from(w) / f64::from(h);
        let got = f64::from(tw) / f64::from(th);
        let slack = want / f64::from(tw.min(th)) + 1e-9;
        assert!((want - got).abs() <= slack, "{w}x{h} -> {tw}x{th}");
        assert_eq!(decode_jpeg(&p.thumbnail.bytes).dimensions(), (tw, th));
    }
}

#[test]
fn small_images_are_not_upscaled() {
    let p = process(&jpeg_gradient(100, 60), 320).unwrap();
    assert_eq!((p.thumbnail.width, p.thumbnail.height), (100, 60));
    let p = process(&png_with_alpha(20, 10), 320).unwrap();
    assert_eq!((p.thumbnail.width, p.thumbnail.height), (20, 10));
    assert_eq!((p.preview.width, p.preview.height), (20, 10));
    let p = process(&gif_red_then_blue(1, 1), 320).unwrap();
    assert_eq!((p.thumbnail.width, p.thumbnail.height), (1, 1));
}

#[test]
fn transparent_png_and_webp_are_flattened_onto_white() {
    for bytes in [png_with_alpha(400, 300), webp_with_alpha(400, 300)] {
        let kind = sniff(&bytes).kind;
        let p = process(&bytes, 320).unwrap();
        assert_eq!(
            (p.thumbnail.width, p.thumbnail.height),
            (320, 240),
            "{kind:?}"
        );
        let thumb = decode_jpeg(&p.thumbnail.bytes);
        let top = around(&thumb, 160, 40);
        let bottom = around(&thumb, 160, 200);
        // The transparent half is white, not the black its pixels are stored as.
        assert!(top.iter().all(|&c| c > 240), "{kind:?}: top {top:?}");
        assert!(
            bottom[1] > 170 && bottom[0] < 40 && bottom[2] < 40,
            "{kind:?}: bottom {bottom:?}"
        );
        assert!(p.preview.bytes.len() <= PREVIEW_MAX_BYTES);
        decode_jpeg(&p.preview.bytes);
    }
}

#[test]
fn gif_thumbnail_is_the_first_frame() {
    let gif = gif_red_then_blue(200, 100);
    let p = process(&gif, 320).unwrap();
    assert_eq!(
        p.dimensions,
        Dimensions {
            width: 200,
            height: 100
        }
    );
    let thumb = decode_jpeg(&p.thumbnail.bytes);
    let mid = around(&thumb, 100, 50);
    assert!(mid[0] > 200 && mid[2] < 50, "first frame is red: {mid:?}");
}

#[test]
fn exif_orientation_6_swaps_dimensions_and_turns_the_picture() {
    // Stored 1600 x 1200, red on the left, blue on the right. Orientation 6: turn 90 degrees
    // clockwise to display, so the left (red) comes to the top.
    let jpeg = with_exif_orientation(&jpeg_red_left_blue_right(1600, 1200), 6);
    assert_eq!(sniff(&jpeg).kind, Kind::Jpeg);
    let dims = probe(Cursor::new(&jpeg), Kind::Jpeg, &Limits::default()).unwrap();
    assert_eq!(
        dims,
        Dimensions {
            width: 1200,
            height: 1600
        }
    );
    let p = process(&jpeg, 320).unwrap();
    assert_eq!(p.dimensions, dims);
    assert_eq!((p.thumbnail.width, p.thumbnail.height), (240, 320));
    let thumb = decode_jpeg(&p.thumbnail.bytes);
    assert_eq!(thumb.dimensions(), (240, 320));
    let top = around(&thumb, 120, 40);
    let bottom = around(&thumb, 120, 280);
    assert!(top[0] > 200 && top[2] < 60, "top is red: {top:?}");
    assert!(
        bottom[2] > 200 && bottom[0] < 60,
        "bottom is blue: {bottom:?}"
    );
    assert_eq!((p.preview.width, p.preview.height), (24, 32));

    // Orientation 1 changes nothing; 3 (upside down) keeps the dimensions.
    let upright = with_exif_orientation(&jpeg_gradient(160, 120), 1);
    assert_eq!(process(&upright, 320).unwrap().dimensions.width, 160);
    let upside_down = with_exif_orientation(&jpeg_gradient(160, 120), 3);
    assert_eq!(
        probe(Cursor::new(&upside_down), Kind::Jpeg, &Limits::default()).unwrap(),
        Dimensions {
            width: 160,
            height: 120
        }
    );
}

#[test]
fn truncated_files_are_refused() {
    let files = [
        jpeg_gradient(640, 480),
        png_with_alpha(640, 480),
        gif_red_then_blue(640, 480),
        webp_with_alpha(640, 480),
    ];
    for bytes in files {
        let kind = sniff(&bytes).kind;
        let half = &bytes[..bytes.len() / 2];
        let result = process_image(Cursor::new(half), kind, 320, &Limits::default());
        assert!(result.is_err(), "{kind:?} cut in half was accepted");
        eprintln!("{kind:?} cut in half: {}", result.unwrap_err());
        // Cut within the header (GIF's needs 10 bytes, the others' more): probe says so too.
        let stub = &bytes[..8];
        assert!(
            probe(Cursor::new(stub), kind, &Limits::default()).is_err(),
            "{kind:?}"
        );
    }
    let jpeg = jpeg_gradient(640, 480);
    assert_eq!(
        process_image(
            Cursor::new(&jpeg[..jpeg.len() / 2]),
            Kind::Jpeg,
            320,
            &Limits::default()
        ),
        Err(MediaError::Truncated)
    );
    // The end-of-image marker alone missing is enough.
    assert_eq!(
        process_image(
            Cursor::new(&jpeg[..jpeg.len() - 2]),
            Kind::Jpeg,
            320,
            &Limits::default()
        ),
        Err(MediaError::Truncated)
    );
    let png = png_with_alpha(640, 480);
    assert_eq!(
        process_image(
            Cursor::new(&png[..png.len() / 2]),
            Kind::Png,
            320,
            &Limits::default()
        ),
        Err(MediaError::Truncated)
    );
}

#[test]
fn error_messages_are_readable() {
    assert_eq!(
        MediaError::TooLarge {
            width: 100_000,
            height: 100_000
        }
        .to_string(),
        "the image is too large to process (100000 x 100000 pixels)"
    );
    assert!(MediaError::Truncated.to_string().contains("incomplete"));
}

#[test]
fn the_decoders_memory_limit_is_applied() {
    // Within the side and pixel limits but not the memory one: 1600 x 1200 x 3 bytes > 1 MiB.
    let tight = Limits {
        max_alloc: 1 << 20,
        ..Limits::default()
    };
    let jpeg = jpeg_gradient(1600, 1200);
    assert_eq!(
        process_image(Cursor::new(&jpeg), Kind::Jpeg, 320, &tight),
        Err(MediaError::TooLarge {
            width: 1600,
            height: 1200
        })
    );
    let png = png_with_alpha(1600, 1200);
    assert_eq!(
        process_image(Cursor::new(&png), Kind::Png, 320, &tight),
        Err(MediaError::TooLarge {
            width: 1600,
            height: 1200
        })
    );
    // And the side limit, from the header.
    let narrow = Limits {
        max_side: 1000,
        ..Limits::default()
    };
    assert_eq!(
        probe(Cursor::new(&jpeg), Kind::Jpeg, &narrow),
        Err(MediaError::TooLarge {
            width: 1600,
            height: 1200
        })
    );
}

/// A few thousand inputs, seeded and so the same on every run: the four formats with bytes
/// flipped, cut short, spliced and overwritten, and random bytes behind each magic number.
/// Nothing may panic, and whatever `process_image` accepts must have made real JPEGs.
#[test]
fn mutated_and_random_inputs_never_panic() {
    let seeds = [
        jpeg_gradient(48, 32),
        with_exif_orientation(&jpeg_gradient(40, 24), 6),
        png_with_alpha(40, 30),
        gif_red_then_blue(30, 20),
        webp_with_alpha(36, 28),
    ];
    let magics: [&[u8]; 6] = [
        b"\xFF\xD8\xFF",
        b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR",
        b"GIF89a",
        b"RIFF\0\0\0\0WEBPVP8L",
        b"RIFF\0\0\0\0WEBPVP8 ",
        b"RIFF\0\0\0\0WEBPVP8X",
    ];
    // Tight limits keep a mutated header from asking for a large (slow, in a debug build)
    // decode.
    let limits = Limits {
        max_side: 1024,
        max_pixels: 200_000,
        max_alloc: 16 << 20,
    };
    let mut rng = Rng(0x006D_6973_7369_7665);
    let (mut accepted, mut refused) = (0u32, 0u32);
    let started = Instant::now();
    for i in 0..3000 {
        let mut input = if i % 10 == 9 {
            let mut v = magics[rng.below(magics.len())].to_vec();
            let n = rng.below(200);
            v.extend(rng.bytes(n));
            v
        } else {
            seeds[rng.below(seeds.len())].clone()
        };
        match rng.below(5) {
            0 => {
                for _ in 0..1 + rng.below(8) {
                    let at = rng.below(input.len());
                    input[at] ^= 1 << rng.below(8);
                }
            }
            1 => {
                let keep = rng.below(input.len() + 1);
                input.truncate(keep);
            }
            2 => {
                let at = rng.below(input.len() + 1);
                let n = rng.below(64);
                let junk = rng.bytes(n);
                input.splice(at..at, junk);
            }
            3 => {
                // Overwrite bytes in the first 64, where the headers are.
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(input.len().clamp(1, 64));
                    if at < input.len() {
                        input[at] = rng.next() as u8;
                    }
                }
            }
            _ => {
                let at = rng.below(input.len());
                input[at] = 0xFF;
            }
        }
        let sniffed = sniff(&input);
        let kind = if is_image(sniffed.kind) {
            sniffed.kind
        } else {
            [Kind::Jpeg, Kind::Png, Kind::Gif, Kind::Webp][rng.below(4)]
        };
        let _ = probe(Cursor::new(&input), kind, &limits);
        match process_image(Cursor::new(&input), kind, 16, &limits) {
            Ok(p) => {
                accepted += 1;
                assert!(p.thumbnail.width <= 16 && p.thumbnail.height <= 16);
                assert!(p.preview.bytes.len() <= PREVIEW_MAX_BYTES);
                decode_jpeg(&p.thumbnail.bytes);
            }
            Err(MediaError::Corrupt(detail)) if detail.contains("decoder failed") => {
                panic!("a decoder panicked on input {i}: {detail}");
            }
            Err(_) => refused += 1,
        }
    }
    eprintln!(
        "robustness loop: {accepted} accepted, {refused} refused, {:?}",
        started.elapsed()
    );
    assert!(accepted > 100 && refused > 100, "{accepted} / {refused}");
}
