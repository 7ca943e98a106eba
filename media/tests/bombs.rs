//! Decompression bombs: small files whose headers declare enormous images must be refused
//! with `TooLarge` at once, without a large allocation. A counting allocator records the
//! largest single allocation each thread makes, so the test sees what the code under test
//! asked for.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Cursor;
use std::time::{Duration, Instant};

use missive_media::{probe, process_image, sniff, Kind, Limits, MediaError};
use support::*;

struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: allocations during thread teardown, after the slot is gone, are not counted.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f`, returning its result, how long it took and the largest allocation it made.
fn measured<T>(f: impl FnOnce() -> T) -> (T, Duration, usize) {
    LARGEST.with(|l| l.set(0));
    let started = Instant::now();
    let out = f();
    let took = started.elapsed();
    (out, took, LARGEST.with(|l| l.get()))
}

fn assert_refused_quickly(name: &str, bytes: &[u8], kind: Kind, width: u32, height: u32) {
    assert_eq!(sniff(bytes).kind, kind, "{name}");
    let too_large = Err(MediaError::TooLarge { width, height });
    let (result, took, largest) =
        measured(|| process_image(Cursor::new(bytes), kind, 320, &Limits::default()));
    eprintln!("{name}: process_image {result:?} in {took:?}, largest allocation {largest} bytes");
    assert_eq!(result.map(|p| p.dimensions), too_large, "{name}");
    assert!(took < Duration::from_millis(200), "{name}: took {took:?}");
    assert!(
        largest < 1 << 20,
        "{name}: allocated {largest} bytes at once"
    );

    let (result, took, largest) = measured(|| probe(Cursor::new(bytes), kind, &Limits::default()));
    assert_eq!(result, too_large, "{name}");
    assert!(took < Duration::from_millis(200), "{name}: took {took:?}");
    assert!(
        largest < 1 << 20,
        "{name}: allocated {largest} bytes at once"
    );
}

#[test]
fn png_declaring_100000_by_100000_is_refused_from_its_header() {
    let bomb = png_bomb(100_000, 100_000);
    assert!(bomb.len() < 100, "the bomb is {} bytes", bomb.len());
    assert_refused_quickly("PNG bomb", &bomb, Kind::Png, 100_000, 100_000);
}

#[test]
fn jpeg_declaring_65000_by_65000_is_refused_from_its_header() {
    let bomb = jpeg_bomb(65_000, 65_000);
    assert_refused_quickly("JPEG bomb", &bomb, Kind::Jpeg, 65_000, 65_000);
}

#[test]
fn a_bomb_within_the_side_limit_is_refused_by_its_pixel_count() {
    // 10,000 x 10,000 is under 16,384 a side but 100 megapixels.
    let bomb = png_bomb(10_000, 10_000);
    assert_refused_quickly("PNG 100 MP", &bomb, Kind::Png, 10_000, 10_000);
}

#[test]
fn gif_and_webp_headers_are_checked_too() {
    // GIF: logical screen 65535 x 65535, nothing else.
    let mut gif = b"GIF89a".to_vec();
    gif.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x3B]);
    assert_refused_quickly("GIF bomb", &gif, Kind::Gif, 65_535, 65_535);
    // WebP: an extended header declaring a 16,777,216 x 16,777,216 canvas.
    let mut webp = b"RIFF\x16\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0".to_vec();
    webp.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
    assert_refused_quickly("WebP bomb", &webp, Kind::Webp, 1 << 24, 1 << 24);
}

#[test]
fn the_allocation_counter_sees_a_real_decode() {
    // The check above would pass vacuously if the counter saw nothing: a real 1000 x 1000
    // decode allocates its 3 MB of pixels at once.
    let jpeg = jpeg_gradient(1000, 1000);
    let (result, _, largest) =
        measured(|| process_image(Cursor::new(&jpeg), Kind::Jpeg, 320, &Limits::default()));
    assert!(result.is_ok());
    assert!(largest >= 3_000_000, "largest allocation {largest}");
}
