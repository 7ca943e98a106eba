//! A ranged downloader: one kept-alive connection, one `Range` request after another, each of a
//! file chosen at random, every byte checked against the file's pattern; time to first byte
//! from sending the request to the first body byte.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::http::Conn;
use super::pattern::Pattern;
use super::upload::within;
use crate::stats::Latency;

/// A file to read: its id, its bytes, and a token of a user who may read it (its uploader).
pub struct Target {
    pub media_id: String,
    pub pattern: Pattern,
    pub token: String,
}

/// What the downloaders share.
#[derive(Default)]
pub struct Counts {
    pub ranges: AtomicU64,
    pub bytes: AtomicU64,
    /// Ranges whose bytes, status or Content-Range were not those asked for.
    pub mismatched: AtomicU64,
    pub errors: AtomicU64,
    pub ttfb: Latency,
    /// The first few problems, for the report.
    pub samples: Mutex<Vec<String>>,
}

impl Counts {
    fn note(&self, what: String) {
        let mut s = self.samples.lock().expect("samples lock");
        if s.len() < 5 {
            s.push(what);
        }
    }
}

/// Downloads ranges of `range_size` until `until`; a connection error ends this downloader
/// (counted in `errors`).
pub async fn downloader(
    addr: String,
    targets: Arc<Vec<Target>>,
    seed: u64,
    range_size: u64,
    until: Instant,
    timeout: Duration,
    counts: Arc<Counts>,
) {
    if let Err(e) = ranges(&addr, &targets, seed, range_size, until, timeout, &counts).await {
        counts.errors.fetch_add(1, Relaxed);
        counts.note(format!("{e:#}"));
    }
}

async fn ranges(
    addr: &str,
    targets: &[Target],
    seed: u64,
    range_size: u64,
    until: Instant,
    timeout: Duration,
    counts: &Counts,
) -> Result<()> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut conn = Conn::connect(addr).await?;
    let mut scratch = Vec::new();
    while Instant::now() < until {
        let t = &targets[rng.random_range(0..targets.len())];
        let size = t.pattern.size;
        let len = range_size.clamp(1, size);
        let first = rng.random_range(0..=size - len);
        let last = first + len - 1;
        let what = format!("GET {} bytes={first}-{last}", t.media_id);
        let step = async {
            let path = format!("/v1/media/{}", t.media_id);
            let extra = [("Range", format!("bytes={first}-{last}"))];
            let sent = Instant::now();
            conn.send("GET", &path, &t.token, &extra, 0, &[]).await?;
            let head = conn.head().await?;
            if head.status != 206 {
                let body = conn.body(&head).await.unwrap_or_default();
                bail!("{} {}", head.status, String::from_utf8_lossy(&body));
            }
            let mut problem = None;
            let want_range = format!("bytes {first}-{last}/{size}");
            if head.content_range.as_deref() != Some(want_range.as_str()) || head.length != len {
                problem = Some(format!(
                    "Content-Range {:?} and Content-Length {} for {want_range}",
                    head.content_range, head.length
                ));
            }
            let mut at = first;
            let end = first + head.length;
            while at < end {
                let piece = conn.piece(end - at).await?;
                if at == first {
                    counts.ttfb.record(sent.elapsed());
                }
                if problem.is_none() {
                    if let Some((o, got, want)) =
                        t.pattern.first_difference(at, piece, &mut scratch)
                    {
                        problem =
                            Some(format!("byte {o} is {got:#04x}, the file's is {want:#04x}"));
                    }
                }
                at += piece.len() as u64;
                counts.bytes.fetch_add(piece.len() as u64, Relaxed);
            }
            if head.close {
                bail!("the server closed the connection");
            }
            anyhow::Ok(problem)
        };
        let problem = within(timeout, &what, step).await?;
        counts.ranges.fetch_add(1, Relaxed);
        if let Some(p) = problem {
            counts.mismatched.fetch_add(1, Relaxed);
            counts.note(format!("{what}: {p}"));
        }
    }
    Ok(())
}
