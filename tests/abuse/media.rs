//! Media under attack (issue #19): one user makes the server decode large images, holds
//! chunks that trickle in, and asks for large downloads it never reads, all at once, while the
//! honest pair chats. What each costs is bounded: decodes run a few at a time off the
//! connection threads, a trickling chunk holds a socket and is cut at the read timeout, and an
//! unread download is held back by the socket, not buffered.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::TestServer;
use crate::honest::{exclusive, ms, HonestPair};

/// The honest pair's delivery and heartbeat bound under attack (a debug build on a loaded
/// 2-core box).
const HONEST_BOUND: Duration = Duration::from_millis(1000);

/// The test process's resident memory (the server runs in it), in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// One request on its own connection, read to the end: the status and the body.
async fn http(addr: &str, token: &str, head: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{head} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    tcp.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), tcp.read_to_end(&mut raw))
        .await
        .expect("an answer")
        .unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let status = std::str::from_utf8(&raw[9..12]).unwrap().parse().unwrap();
    (status, raw[end..].to_vec())
}

fn field(body: &[u8], name: &str) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    v[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} in {v}"))
        .to_owned()
}

/// Creates an upload of `bytes` and sends them all: its id.
async fn uploaded(addr: &str, token: &str, bytes: &[u8]) -> String {
    let body = format!("{{\"size\": {}}}", bytes.len());
    let (status, answer) = http(addr, token, "POST /v1/media/uploads", body.as_bytes()).await;
    assert_eq!(status, 201);
    let id = field(&answer, "upload_id");
    let head = format!("PATCH /v1/media/uploads/{id}");
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{head} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\
         Upload-Offset: 0\r\nContent-Length: {}\r\n\r\n",
        bytes.len()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap();
    assert!(
        raw.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    id
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x ^ y) % 256) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decodes_trickles_and_unread_downloads_leave_the_pair_alone() {
    let _g = exclusive();
    let server = TestServer::start_with(|c| {
        c.media_read_timeout_ms = 2000;
        // The 32 MiB file goes up in one chunk.
        c.media_max_chunk_bytes = 64 << 20;
    })
    .await;
    let addr = server.addr.clone();
    let mallory = server.token("mallory", "phone");
    // Ready before the pair starts: four large photos (uploaded, not finished) and one large
    // file to download.
    let photo = jpeg(3000, 2000);
    let mut photos = Vec::new();
    for _ in 0..4 {
        photos.push(uploaded(&addr, &mallory, &photo).await);
    }
    let big = vec![7u8; 32 << 20];
    let big_id = uploaded(&addr, &mallory, &big).await;
    let (status, answer) = http(
        &addr,
        &mallory,
        &format!("POST /v1/media/uploads/{big_id}/finish"),
        b"",
    )
    .await;
    assert_eq!(status, 201);
    let big_media = field(&answer, "media_id");

    let before = rss();
    let pair = HonestPair::start(&server).await;
    let started = Instant::now();
    // The four finishes at once: each decodes a 6-megapixel image.
    let mut finishes = Vec::new();
    for id in &photos {
        let (addr, token, id) = (addr.clone(), mallory.clone(), id.clone());
        finishes.push(tokio::spawn(async move {
            let head = format!("POST /v1/media/uploads/{id}/finish");
            http(&addr, &token, &head, b"").await.0
        }));
    }
    // 20 chunks that announce 1 MiB and send 10 bytes.
    let mut trickles = Vec::new();
    for _ in 0..20 {
        let body = b"{\"size\": 1048576}";
        let (_, answer) = http(&addr, &mallory, "POST /v1/media/uploads", body).await;
        let id = field(&answer, "upload_id");
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        let req = format!(
            "PATCH /v1/media/uploads/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {mallory}\r\n\
             Upload-Offset: 0\r\nContent-Length: 1048576\r\n\r\n0123456789"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        trickles.push(tcp);
    }
    // 10 downloads of the 32 MiB file that are never read.
    let mut unread = Vec::new();
    for _ in 0..10 {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        let req = format!(
            "GET /v1/media/{big_media} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {mallory}\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        unread.push(tcp);
    }
    let mut peak = rss();
    let mut statuses = Vec::new();
    for f in finishes {
        statuses.push(f.await.unwrap());
        peak = peak.max(rss());
    }
    let decoded = started.elapsed();
    while started.elapsed() < Duration::from_secs(3) {
        peak = peak.max(rss());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = pair.finish().await;
    // Each trickling chunk was answered at the read timeout (408), keeping its 10 bytes.
    let mut cut = 0;
    for mut tcp in trickles {
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut raw)).await;
        if raw.starts_with(b"HTTP/1.1 408") {
            cut += 1;
        }
    }
    drop(unread);
    let held = peak.saturating_sub(before);
    println!(
        "4 finishes of 6 MP JPEGs ({} bytes each) in {:.0} ms, 20 trickling chunks ({cut} cut \
         at the read timeout), 10 unread 32 MiB downloads: memory grew by at most {:.1} MiB; {}",
        photo.len(),
        ms(decoded),
        held as f64 / (1 << 20) as f64,
        report.summary()
    );
    assert_eq!(statuses, vec![201; 4], "every photo finished");
    assert_eq!(cut, 20, "every trickle was cut");
    // Unread downloads are not buffered (10 x 32 MiB would be 320 MiB); decodes run a few at a
    // time (four 6 MP images decoded at once would hold about 100 MiB of pixels).
    assert!(held < 160 << 20, "the server held {held} bytes");
    report.assert_healthy(HONEST_BOUND);
    server.stop().await;
}
