//! `media`: media over HTTP (PROTOCOL.md 28, issue #19). `--uploads` users at once each upload
//! `--files` files of `--size` bytes one after another, in `--chunk` PATCHes on a kept-alive
//! connection, and check that the digest each finish names is the one of the bytes sent; then `--downloads` downloaders ask
//! for random `--range-size` ranges of those files for `--duration` seconds and check every
//! byte. The bytes are a function of a seed per file and the offset, so neither side of the
//! harness holds a file. Reports upload MB/s (10^6 bytes, from the first create to the last
//! finish's answer: the server syncs every chunk and hashes the file at the finish), download
//! MB/s, time to first byte (from writing a range request to its first body byte),
//! and the server's CPU and resident memory (`--server-pid`): before, the peak of each phase,
//! after, and the growth while streaming (the peak over the run less the memory before),
//! which stays flat however large the file when the server streams it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::common::{cpu_secs, Env};
use crate::stats::{progress, Report};

mod args;
mod download;
mod http;
mod pattern;
mod upload;
mod watch;

pub use args::Args;
use download::{downloader, Counts, Target};
use http::Conn;
use pattern::Pattern;
use upload::upload;
use watch::Watch;

const MB: f64 = 1e6;
const MIB: f64 = 1024.0;

pub async fn run(env: &Env, args: &Args) -> Result<Report> {
    if args.uploads == 0 || args.size == 0 || args.chunk == 0 {
        bail!("--uploads, --size and --chunk must be at least 1");
    }
    let timeout = Duration::from_secs(args.timeout.max(1));
    let watch = Arc::new(Watch::start(args.server_pid.clone()));
    let rss_before = watch.rss();
    let mut r = Report::new("media");

    // The files' digests, before the clock starts, on as many threads as there are cores.
    let files = args.uploads * args.files.max(1);
    eprintln!(
        "missive-load: hashing {files} file(s) of {} bytes",
        args.size
    );
    let t0 = Instant::now();
    let patterns: Vec<Pattern> = (0..files)
        .map(|_| Pattern {
            seed: rand::random(),
            size: args.size,
        })
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let hashers: Vec<_> = (0..cores.min(files))
        .map(|i| {
            let mine: Vec<Pattern> = patterns.iter().skip(i).step_by(cores).copied().collect();
            tokio::task::spawn_blocking(move || {
                mine.iter().map(Pattern::sha256).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut shas = vec![[0u8; 32]; files];
    for (i, h) in hashers.into_iter().enumerate() {
        for (j, sha) in h.await.context("hashing")?.into_iter().enumerate() {
            shas[i + j * cores] = sha;
        }
    }
    let hash_secs = t0.elapsed().as_secs_f64();

    // Uploads: every uploader at once, its files one after another.
    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let ticker = {
        let (sent, done, watch) = (sent.clone(), done.clone(), watch.clone());
        let start = Instant::now();
        progress("media upload", move || {
            let bytes = sent.load(Relaxed) as f64;
            format!(
                "sent {:.1} MB ({:.1} MB/s), finished {}/{files}{}",
                bytes / MB,
                bytes / MB / start.elapsed().as_secs_f64().max(1e-9),
                done.load(Relaxed),
                rss_text(watch.latest())
            )
        })
    };
    let _ = watch.peak();
    let cpu = watch.cpu();
    let own_cpu = cpu_secs("self");
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(args.uploads);
    let mut tokens = Vec::with_capacity(args.uploads);
    let per = args.files.max(1);
    for k in 0..args.uploads {
        let token = env.token(&env.user("m", k))?;
        tokens.push(token.clone());
        let mine: Vec<(usize, Pattern, [u8; 32])> = (k * per..(k + 1) * per)
            .map(|i| (i, patterns[i], shas[i]))
            .collect();
        let (addr, sent, done, chunk) = (
            env.addr(k).to_string(),
            sent.clone(),
            done.clone(),
            args.chunk,
        );
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut conn = match Conn::connect(&addr).await {
                Ok(c) => c,
                Err(e) => return vec![(mine[0].0, Err(e))],
            };
            for (i, p, sha) in mine {
                let r = upload(&mut conn, &token, p, &sha, chunk, timeout, &sent).await;
                done.fetch_add(1, Relaxed);
                let failed = r.is_err();
                out.push((i, r));
                if failed {
                    break; // the connection is in no known state
                }
            }
            out
        }));
    }
    let mut targets = Vec::new();
    let mut upload_errors = Vec::new();
    let mut finish_max = Duration::ZERO;
    let mut content_types = Vec::new();
    for (k, t) in tasks.into_iter().enumerate() {
        let results = match t.await {
            Ok(results) => results,
            Err(e) => {
                upload_errors.push(format!("uploader {k}: {e}"));
                continue;
            }
        };
        for (i, r) in results {
            match r {
                Ok(u) => {
                    finish_max = finish_max.max(u.finish);
                    if !content_types.contains(&u.content_type) {
                        content_types.push(u.content_type.clone());
                    }
                    targets.push(Target {
                        media_id: u.media_id,
                        pattern: patterns[i],
                        token: tokens[k].clone(),
                    });
                }
                Err(e) => upload_errors.push(format!("file {i} (uploader {k}): {e:#}")),
            }
        }
    }
    let upload_secs = start.elapsed().as_secs_f64();
    let upload_cpu = watch.cpu_since(&cpu);
    let upload_own_cpu = cpu_use(own_cpu, upload_secs);
    let upload_peak = watch.peak();
    ticker.abort();
    let uploaded = args.size as f64 * targets.len() as f64;
    eprintln!(
        "missive-load: {} of {files} uploads finished in {upload_secs:.2} s",
        targets.len(),
    );

    r.add("uploaders", args.uploads as u64, "");
    r.add("files per uploader", per as u64, "");
    r.add("file size", args.size, "bytes");
    r.add("chunk size", args.chunk, "bytes");
    r.add_f("hashing before the clock (harness)", hash_secs, 2, "s");
    let targets_uploaded = targets.len();
    r.add("files uploaded", targets_uploaded as u64, "");
    r.add_f("uploaded", uploaded / MB, 1, "MB");
    r.add_f("upload time", upload_secs, 3, "s");
    r.add_f(
        "upload throughput",
        uploaded / MB / upload_secs.max(1e-9),
        1,
        "MB/s",
    );
    r.add_f("finish time max", finish_max.as_secs_f64() * 1e3, 1, "ms");
    r.add("content type", content_types.join(","), "");
    if let Some(c) = upload_cpu {
        r.add_f("server CPU while uploading", c, 1, "% of a core");
    }
    if let Some(c) = upload_own_cpu {
        r.add_f("harness CPU while uploading", c, 1, "% of a core");
    }
    r.add("upload failures", upload_errors.len() as u64, "");

    // Ranged downloads of what was uploaded, for the duration.
    let counts = Arc::new(Counts::default());
    let mut download_peak = None;
    if args.downloads > 0 && !targets.is_empty() {
        let targets = Arc::new(targets);
        let ticker = {
            let (counts, watch) = (counts.clone(), watch.clone());
            let start = Instant::now();
            progress("media download", move || {
                let bytes = counts.bytes.load(Relaxed) as f64;
                let h = counts.ttfb.snapshot();
                format!(
                    "{} ranges, {:.1} MB ({:.1} MB/s), ttfb p99 {:.2} ms, mismatched {}{}",
                    counts.ranges.load(Relaxed),
                    bytes / MB,
                    bytes / MB / start.elapsed().as_secs_f64().max(1e-9),
                    h.value_at_quantile(0.99) as f64 / 1e3,
                    counts.mismatched.load(Relaxed),
                    rss_text(watch.latest())
                )
            })
        };
        let _ = watch.peak();
        let cpu = watch.cpu();
        let own_cpu = cpu_secs("self");
        let start = Instant::now();
        let until = start + Duration::from_secs(args.duration);
        let mut tasks = Vec::with_capacity(args.downloads);
        for k in 0..args.downloads {
            tasks.push(tokio::spawn(downloader(
                env.addr(k).to_string(),
                targets.clone(),
                rand::random(),
                args.range_size,
                until,
                timeout,
                counts.clone(),
            )));
        }
        for t in tasks {
            if t.await.is_err() {
                counts.errors.fetch_add(1, Relaxed);
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let download_cpu = watch.cpu_since(&cpu);
        let download_own_cpu = cpu_use(own_cpu, secs);
        download_peak = watch.peak();
        ticker.abort();
        let bytes = counts.bytes.load(Relaxed) as f64;
        r.add("downloaders", args.downloads as u64, "");
        r.add("range size", args.range_size.min(args.size), "bytes");
        r.add("ranges downloaded", counts.ranges.load(Relaxed), "");
        r.add_f("downloaded", bytes / MB, 1, "MB");
        r.add_f("download time", secs, 3, "s");
        r.add_f(
            "download throughput",
            bytes / MB / secs.max(1e-9),
            1,
            "MB/s",
        );
        r.latency("ttfb", &counts.ttfb.snapshot());
        if let Some(c) = download_cpu {
            r.add_f("server CPU while downloading", c, 1, "% of a core");
        }
        if let Some(c) = download_own_cpu {
            r.add_f("harness CPU while downloading", c, 1, "% of a core");
        }
        r.add("range mismatches", counts.mismatched.load(Relaxed), "");
        r.add("download errors", counts.errors.load(Relaxed), "");
    }

    // The server's memory once the connections are gone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_after = watch.rss();
    if let Some(before) = rss_before {
        let peak = upload_peak.max(download_peak).unwrap_or(before);
        let mib = |kib: u64| kib as f64 / MIB;
        r.add_f("server RSS before", mib(before), 1, "MiB");
        if let Some(p) = upload_peak {
            r.add_f("server RSS peak while uploading", mib(p), 1, "MiB");
        }
        if let Some(p) = download_peak {
            r.add_f("server RSS peak while downloading", mib(p), 1, "MiB");
        }
        if let Some(a) = rss_after {
            r.add_f("server RSS after", mib(a), 1, "MiB");
        }
        r.add_f(
            "server RSS growth while streaming",
            mib(peak.saturating_sub(before)),
            1,
            "MiB",
        );
    }

    for e in upload_errors.iter().take(5) {
        r.add("sample error", e.clone(), "");
    }
    let samples = counts.samples.lock().expect("samples lock").clone();
    for e in samples {
        r.add("sample error", e, "");
    }
    if !upload_errors.is_empty() {
        r.fail(format!(
            "{} uploads failed ({} of {files} files uploaded)",
            upload_errors.len(),
            targets_uploaded
        ));
    }
    let mismatched = counts.mismatched.load(Relaxed);
    if mismatched > 0 {
        r.fail(format!("{mismatched} ranges were not the bytes uploaded"));
    }
    let errors = counts.errors.load(Relaxed);
    if errors > 0 {
        r.fail(format!("{errors} downloaders stopped on an error"));
    }
    if args.downloads > 0 && counts.ranges.load(Relaxed) == 0 && upload_errors.is_empty() {
        r.fail("no range was downloaded");
    }
    Ok(r)
}

/// The harness's CPU since it stood at `before` seconds, `secs` ago, in % of a core.
fn cpu_use(before: Option<f64>, secs: f64) -> Option<f64> {
    Some((cpu_secs("self")? - before?) / secs.max(1e-9) * 100.0)
}

/// ", server RSS N MiB" for a progress line, or nothing without a pid.
fn rss_text(kib: Option<u64>) -> String {
    kib.map_or(String::new(), |k| {
        format!(", server RSS {:.1} MiB", k as f64 / MIB)
    })
}
