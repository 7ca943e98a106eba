//! End to end: media uploads and downloads over HTTP on the public port (docs/media.md), against
//! a real server: a 20 MB resumable upload cut off and resumed, ranges, a stranger refused, bad
//! uploads that store nothing, thumbnails of a real JPEG and PNG, and a SIGKILL mid-upload.

mod common;
mod e2e;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::observe::account;
use common::*;
use e2e::{create_group, dm, request, request_err};
use missive_client::{pb, Connection};
use missive_protocol::{ErrorCode, Packet};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HTTP answer.
struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// One request on a connection of its own (`Connection: close`), read to the end.
async fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    http_on(tcp, method, path, token, extra, body).await
}

/// [`http`] on a connection of the caller's (TLS, say).
async fn http_on<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut tcp: S,
    method: &str,
    path: &str,
    token: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    if !token.is_empty() {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PATCH" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut raw))
        .await
        .expect("an answer within 30 s")
        .expect("read");
    parse(&raw)
}

fn parse(raw: &[u8]) -> Answer {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn create(addr: &str, token: &str, body: Value) -> Answer {
    http(
        addr,
        "POST",
        "/v1/media/uploads",
        token,
        &[],
        body.to_string().as_bytes(),
    )
    .await
}

async fn get(addr: &str, token: &str, path: &str) -> Answer {
    http(addr, "GET", path, token, &[], b"").await
}

async fn finish(addr: &str, token: &str, id: &str) -> Answer {
    let path = format!("/v1/media/uploads/{id}/finish");
    http(addr, "POST", &path, token, &[], b"").await
}

async fn patch(addr: &str, token: &str, id: &str, offset: u64, bytes: &[u8]) -> Answer {
    let path = format!("/v1/media/uploads/{id}");
    let offset = offset.to_string();
    http(
        addr,
        "PATCH",
        &path,
        token,
        &[("Upload-Offset", &offset)],
        bytes,
    )
    .await
}

/// Sends a chunk's head announcing `announced` bytes, then only `bytes`, then closes the
/// connection (a phone losing its network mid-chunk).
async fn cut_short(addr: &str, token: &str, id: &str, offset: u64, announced: usize, bytes: &[u8]) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PATCH /v1/media/uploads/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Upload-Offset: {offset}\r\nContent-Length: {announced}\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    tcp.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(tcp);
}

/// Where the upload stands, once the server has taken in what arrived.
async fn offset_now(addr: &str, token: &str, id: &str) -> u64 {
    let path = format!("/v1/media/uploads/{id}");
    let mut last = u64::MAX;
    // The server notices the cut when it reads the end of the connection; ask until it settles.
    for _ in 0..50 {
        let a = get(addr, token, &path).await;
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        let offset = a.json()["offset"].as_u64().unwrap();
        if offset == last {
            return offset;
        }
        last = offset;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_mb_upload_cut_off_twice_resumes_and_is_read_back_by_range() {
    let server = TestServer::start().await;
    let addr = server.addr.clone();
    let alice = server.token("alice", "phone");
    let data = noise(20 << 20, 7);
    let sha = hex(&Sha256::digest(&data));

    let a = create(&addr, &alice, json!({"size": data.len(), "sha256": sha})).await;
    assert_eq!(a.status, 201, "{}", String::from_utf8_lossy(&a.body));
    let id = a.json()["upload_id"].as_str().unwrap().to_owned();
    assert_eq!(a.json()["offset"], 0);

    // Two chunks of 8 MiB announced, each cut off after 3 MiB.
    cut_short(&addr, &alice, &id, 0, 8 << 20, &data[..3 << 20]).await;
    let at = offset_now(&addr, &alice, &id).await;
    assert!(at > 0 && at <= 3 << 20, "{at}");
    cut_short(
        &addr,
        &alice,
        &id,
        at,
        8 << 20,
        &data[at as usize..at as usize + (3 << 20)],
    )
    .await;
    let mut at = offset_now(&addr, &alice, &id).await;
    assert!(at > 3 << 20 && at <= 6 << 20, "{at}");

    // A chunk at the wrong offset is refused with where the upload stands.
    let wrong = patch(&addr, &alice, &id, at - 1, &data[..10]).await;
    assert_eq!(wrong.status, 409);
    assert_eq!(wrong.json()["error"]["offset"], at);
    assert_eq!(wrong.header("upload-offset"), Some(at.to_string().as_str()));

    // Finishing early says how far it got.
    let early = finish(&addr, &alice, &id).await;
    assert_eq!(early.status, 409);
    assert_eq!(early.json()["error"]["offset"], at);

    while (at as usize) < data.len() {
        let end = (at as usize + (8 << 20)).min(data.len());
        let a = patch(&addr, &alice, &id, at, &data[at as usize..end]).await;
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        at = a.json()["offset"].as_u64().unwrap();
        assert_eq!(at as usize, end);
    }
    let done = finish(&addr, &alice, &id).await;
    assert_eq!(done.status, 201, "{}", String::from_utf8_lossy(&done.body));
    let info = done.json();
    assert_eq!(info["size"], data.len());
    assert_eq!(info["sha256"], sha);
    assert_eq!(info["content_type"], "application/octet-stream");
    assert_eq!(info["thumbnail"], false);
    let media = info["media_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/media/{media}");

    // The whole file, then ranges: exactly the bytes asked for.
    let whole = get(&addr, &alice, &path).await;
    assert_eq!(whole.status, 200);
    assert!(whole.body == data, "the download is the upload");
    let etag = whole.header("etag").unwrap().to_owned();
    assert_eq!(etag, format!("\"{sha}\""));
    for (range, first, last) in [
        ("bytes=1000-1999", 1000, 1999),
        ("bytes=-100", data.len() - 100, data.len() - 1),
        ("bytes=20971000-", 20971000, data.len() - 1),
    ] {
        let part = http(&addr, "GET", &path, &alice, &[("Range", range)], b"").await;
        assert_eq!(part.status, 206, "{range}");
        assert!(part.body == data[first..=last], "{range}");
        assert_eq!(
            part.header("content-range").unwrap(),
            format!("bytes {first}-{last}/{}", data.len())
        );
    }
    let past = http(
        &addr,
        "GET",
        &path,
        &alice,
        &[("Range", "bytes=20971520-")],
        b"",
    )
    .await;
    assert_eq!(past.status, 416);
    assert_eq!(past.header("content-range"), Some("bytes */20971520"));
    let held = http(
        &addr,
        "GET",
        &path,
        &alice,
        &[("If-None-Match", &etag)],
        b"",
    )
    .await;
    assert_eq!((held.status, held.body.len()), (304, 0));
    let head = http(&addr, "HEAD", &path, &alice, &[], b"").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("20971520"));

    // Someone with only the id: 404, as for no media at all; no token: 401.
    let mallory = server.token("mallory", "phone");
    let stranger = get(&addr, &mallory, &path).await;
    assert_eq!(stranger.status, 404);
    let nobody = http(&addr, "GET", &path, "", &[], b"").await;
    assert_eq!(nobody.status, 401);
    let other = get(&addr, &mallory, &format!("/v1/media/uploads/{id}")).await;
    assert_eq!(other.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_get_clear_errors_and_store_nothing() {
    let server = TestServer::start_with(|c| {
        c.media_max_chunk_bytes = 64 * 1024;
        c.media_max_file_bytes = 1 << 20;
        c.media_max_bytes_per_day = 3 << 20;
    })
    .await;
    let addr = server.addr.clone();
    let alice = server.token("alice", "phone");
    let files = server.dir.path().join("media/files");
    let stored = || walk(&files);

    // Too large, empty, a bad sha256, not JSON.
    for (body, status) in [
        (json!({"size": (1 << 20) + 1}), 413),
        (json!({"size": 0}), 400),
        (json!({"size": 10, "sha256": "abc"}), 400),
        (json!({"size": 10, "extra": 1}), 400),
    ] {
        let a = create(&addr, &alice, body.clone()).await;
        assert_eq!(
            a.status,
            status,
            "{body}: {}",
            String::from_utf8_lossy(&a.body)
        );
    }
    let a = create(&addr, &alice, json!({"size": 100_000})).await;
    let id = a.json()["upload_id"].as_str().unwrap().to_owned();
    // A chunk larger than the chunk limit, or past the declared size: refused before a byte.
    let big = patch(&addr, &alice, &id, 0, &noise(64 * 1024 + 1, 1)).await;
    assert_eq!(big.status, 413, "{}", String::from_utf8_lossy(&big.body));
    let small = create(&addr, &alice, json!({"size": 10})).await;
    let small_id = small.json()["upload_id"].as_str().unwrap().to_owned();
    let past = patch(&addr, &alice, &small_id, 0, &noise(11, 1)).await;
    assert_eq!(past.status, 413);
    assert_eq!(offset_now(&addr, &alice, &id).await, 0);

    // A sha256 that does not match: 422, and the upload is gone.
    let bytes = noise(1000, 2);
    let a = create(
        &addr,
        &alice,
        json!({"size": 1000, "sha256": "0".repeat(64)}),
    )
    .await;
    let bad_sha = a.json()["upload_id"].as_str().unwrap().to_owned();
    assert_eq!(patch(&addr, &alice, &bad_sha, 0, &bytes).await.status, 200);
    let fin = finish(&addr, &alice, &bad_sha).await;
    assert_eq!(fin.status, 422, "{}", String::from_utf8_lossy(&fin.body));
    let gone = get(&addr, &alice, &format!("/v1/media/uploads/{bad_sha}")).await;
    assert_eq!(gone.status, 404);

    // A truncated PNG and a decompression bomb: 422, nothing stored.
    let png = png_bytes(64, 48);
    let bomb = bomb_png(100_000, 100_000);
    for (what, bytes) in [("truncated", &png[..png.len() / 2]), ("bomb", &bomb[..])] {
        let a = create(&addr, &alice, json!({"size": bytes.len()})).await;
        let id = a.json()["upload_id"].as_str().unwrap().to_owned();
        assert_eq!(
            patch(&addr, &alice, &id, 0, bytes).await.status,
            200,
            "{what}"
        );
        let fin = finish(&addr, &alice, &id).await;
        assert_eq!(
            fin.status,
            422,
            "{what}: {}",
            String::from_utf8_lossy(&fin.body)
        );
    }
    assert!(stored().is_empty(), "nothing stored: {:?}", stored());

    // Ids that are not ids, path tricks: 404.
    for path in [
        "/v1/media/..%2F..%2Fsecret",
        "/v1/media/../../secret",
        "/v1/media/ABCDEF0123456789ABCDEF0123456789",
        "/v1/media/uploads/..",
        "/v1/media/",
    ] {
        let a = get(&addr, &alice, path).await;
        assert_eq!(a.status, 404, "{path}");
    }

    // The day's quota: 3 MiB of uploads created (1 + 0.1 + ... MiB so far), then refused.
    let mut refused = false;
    for _ in 0..4 {
        let a = create(&addr, &alice, json!({"size": 1 << 20})).await;
        if a.status == 409 {
            assert_eq!(a.json()["error"]["name"], "LIMIT_EXCEEDED");
            refused = true;
            break;
        }
        assert_eq!(a.status, 201);
    }
    assert!(refused, "the daily quota holds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_jpeg_and_png_get_a_thumbnail_and_an_inline_preview() {
    let server = TestServer::start().await;
    let addr = server.addr.clone();
    let alice = server.token("alice", "phone");
    for (what, bytes, w, h, ty) in [
        ("jpeg", jpeg_bytes(1600, 1200), 1600, 1200, "image/jpeg"),
        ("png", png_bytes(400, 900), 400, 900, "image/png"),
    ] {
        let a = create(
            &addr,
            &alice,
            json!({"size": bytes.len(), "content_type": "lies/not-this"}),
        )
        .await;
        let id = a.json()["upload_id"].as_str().unwrap().to_owned();
        assert_eq!(patch(&addr, &alice, &id, 0, &bytes).await.status, 200);
        let fin = finish(&addr, &alice, &id).await;
        assert_eq!(
            fin.status,
            201,
            "{what}: {}",
            String::from_utf8_lossy(&fin.body)
        );
        let info = fin.json();
        assert_eq!(info["content_type"], ty, "sniffed, not declared");
        assert_eq!(
            (info["width"].as_u64(), info["height"].as_u64()),
            (Some(w), Some(h))
        );
        assert_eq!(info["thumbnail"], true);
        let preview =
            missive_protocol::base64::decode(info["preview_base64"].as_str().unwrap()).unwrap();
        assert!(
            !preview.is_empty() && preview.len() <= 1024,
            "{what}: {}",
            preview.len()
        );
        let media = info["media_id"].as_str().unwrap();
        let thumb = get(&addr, &alice, &format!("/v1/media/{media}/thumbnail")).await;
        assert_eq!(thumb.status, 200);
        assert_eq!(thumb.header("content-type"), Some("image/jpeg"));
        let img = image::load_from_memory(&thumb.body).expect("the thumbnail decodes");
        let (tw, th) = (img.width(), img.height());
        assert!(tw.max(th) == 320, "{what}: fits 320 ({tw}x{th})");
        let ratio = |a: u32, b: u32| a as f64 / b as f64;
        assert!(
            (ratio(tw, th) - ratio(w as u32, h as u32)).abs() < 0.02,
            "{what}: aspect kept"
        );
        let preview = image::load_from_memory(&preview).expect("the preview decodes");
        assert!(preview.width() <= 32 && preview.height() <= 32);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_mid_upload_leaves_nothing_that_looks_finished() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let start = || {
        Daemon(
            Command::new(env!("CARGO_BIN_EXE_missived"))
                .args(["--listen", &addr, "--secret", SECRET, "--log", "warn"])
                .arg("--data-dir")
                .arg(dir.path())
                .env_remove("MISSIVE_CONFIG")
                .stdin(Stdio::null())
                .spawn()
                .expect("missived starts"),
        )
    };
    let mut daemon = start();
    drop(connect_when_up(&addr, "alice").await);
    let expires = (missive::now_ms() / 1000) as u64 + 600;
    let alice = missive_protocol::token::mint(SECRET.as_bytes(), "alice", "phone", expires);
    let data = noise(4 << 20, 3);
    let a = create(&addr, &alice, json!({"size": data.len()})).await;
    let id = a.json()["upload_id"].as_str().unwrap().to_owned();
    assert_eq!(
        patch(&addr, &alice, &id, 0, &data[..1 << 20]).await.status,
        200
    );
    // A chunk in flight when the server dies.
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PATCH /v1/media/uploads/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\n\
         Upload-Offset: {}\r\nContent-Length: {}\r\n\r\n",
        1 << 20,
        3 << 20
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&data[1 << 20..2 << 20]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();
    drop(tcp);
    assert!(
        walk(&dir.path().join("media/files")).is_empty(),
        "no finished file"
    );

    let _daemon = start();
    drop(connect_when_up(&addr, "alice").await);
    let at = offset_now(&addr, &alice, &id).await;
    assert!((1 << 20..=2 << 20).contains(&at), "{at}");
    let early = finish(&addr, &alice, &id).await;
    assert_eq!(early.status, 409, "not finished");
    // Resumed from where the file stands, it finishes as the same bytes.
    let mut at = at as usize;
    while at < data.len() {
        let end = (at + (1 << 20)).min(data.len());
        assert_eq!(
            patch(&addr, &alice, &id, at as u64, &data[at..end])
                .await
                .status,
            200
        );
        at = end;
    }
    let done = finish(&addr, &alice, &id).await;
    assert_eq!(done.status, 201);
    assert_eq!(done.json()["sha256"], hex(&Sha256::digest(&data)));
}

/// Every file under `dir` (none if it does not exist).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn jpeg_bytes(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

fn png_bytes(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbaImage::from_fn(w, h, |x, y| {
        image::Rgba([(x % 256) as u8, (y % 256) as u8, 60, (x % 200) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A PNG whose header declares `w` x `h` pixels, with a tiny body.
fn bomb_png(w: u32, h: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut c = kind.to_vec();
        c.extend_from_slice(data);
        out.extend_from_slice(&c);
        out.extend_from_slice(&crc32(&c).to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Uploads `bytes` as `token`'s user in one chunk: the finish's answer.
async fn upload(addr: &str, token: &str, bytes: &[u8]) -> Value {
    let a = create(addr, token, json!({"size": bytes.len()})).await;
    let id = a.json()["upload_id"].as_str().unwrap().to_owned();
    assert_eq!(patch(addr, token, &id, 0, bytes).await.status, 200);
    let fin = finish(addr, token, &id).await;
    assert_eq!(fin.status, 201, "{}", String::from_utf8_lossy(&fin.body));
    fin.json()
}

fn send_media(id: &str, to: pb::Conversation, media: &[&str]) -> Packet {
    Packet::Send(pb::Send {
        client_msg_id: id.into(),
        to: Some(to),
        content_type: 2,
        content: b"a photo".to_vec(),
        media: media
            .iter()
            .map(|m| pb::MediaRef {
                media_id: (*m).to_owned(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    })
}

async fn acked(conn: &mut Connection, packet: Packet) -> pb::SendAck {
    match request(conn, packet).await {
        Packet::SendAck(a) => a,
        other => panic!("expected SEND_ACK, got {other:?}"),
    }
}

/// Recalls message `msg_id` of the direct conversation with `peer`.
async fn recall(conn: &mut Connection, peer: &str, msg_id: u64) {
    let recall = Packet::Recall(pb::RecallMessage {
        msg_id,
        conversation: Some(dm(peer)),
    });
    assert!(matches!(request(conn, recall).await, Packet::RecallAck(_)));
}

/// `token`'s user reading media `id`: the status.
async fn read_status(addr: &str, token: &str, id: &str) -> u16 {
    get(addr, token, &format!("/v1/media/{id}")).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_carrying_media_lets_its_conversation_read_it_until_recalled() {
    let server = TestServer::start_api(|_| {}).await;
    let addr = server.addr.clone();
    let tok = |u: &str| server.token(u, "phone");
    let photo = jpeg_bytes(640, 480);
    let info = upload(&addr, &tok("alice"), &photo).await;
    let m = info["media_id"].as_str().unwrap().to_owned();
    assert_eq!(
        read_status(&addr, &tok("bob"), &m).await,
        404,
        "not yet bob's to read"
    );

    // Alice sends it to Bob: the message carries it as stored, and Bob may read it.
    let (mut alice, _) = server.login("alice", "phone").await;
    acked(&mut alice, send_media("p1", dm("bob"), &[&m])).await;
    let bob_view = account(&server, "bob").await;
    let Some(pb::inbox_entry::Body::Message(msg)) = bob_view.entries[0].body.clone() else {
        panic!("{:?}", bob_view.entries)
    };
    assert_eq!(msg.media.len(), 1);
    let r = &msg.media[0];
    assert_eq!(
        (
            r.media_id.as_str(),
            r.content_type.as_str(),
            r.size,
            r.width,
            r.height
        ),
        (m.as_str(), "image/jpeg", photo.len() as u64, 640, 480)
    );
    assert!(r.thumbnail && !r.preview.is_empty() && r.preview.len() <= 1024);
    assert_eq!(r.sha256, info["sha256"].as_str().unwrap());
    assert_eq!(read_status(&addr, &tok("bob"), &m).await, 200);
    let thumb = http(
        &addr,
        "GET",
        &format!("/v1/media/{m}/thumbnail"),
        &tok("bob"),
        &[],
        b"",
    )
    .await;
    assert_eq!(thumb.status, 200);
    assert_eq!(
        read_status(&addr, &tok("carol"), &m).await,
        404,
        "carol is in no such conversation"
    );

    // Carol cannot send an id she cannot read (as if it did not exist); Bob can forward it.
    let (mut carol, _) = server.login("carol", "phone").await;
    let (code, _) = request_err(&mut carol, send_media("c1", dm("dave"), &[&m])).await;
    assert_eq!(code, ErrorCode::NotFound);
    let (mut bob, _) = server.login("bob", "phone").await;
    acked(&mut bob, send_media("f1", dm("carol"), &[&m])).await;
    assert_eq!(
        read_status(&addr, &tok("carol"), &m).await,
        200,
        "forwarded to carol"
    );

    // A group message: every member reads it.
    let q = upload(&addr, &tok("alice"), &png_bytes(100, 80)).await["media_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let group = create_group(&mut alice, &["erin", "frank"]).await;
    acked(&mut alice, send_media("g1", group, &[&q])).await;
    for u in ["erin", "frank"] {
        assert_eq!(read_status(&addr, &tok(u), &q).await, 200, "{u}");
    }
    assert_eq!(read_status(&addr, &tok("bob"), &q).await, 404);

    // Recalled: the message no longer carries it, and the right it gave goes with it.
    let r = upload(&addr, &tok("alice"), &noise(5000, 9)).await["media_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ack = acked(&mut alice, send_media("r1", dm("gina"), &[&r])).await;
    assert_eq!(read_status(&addr, &tok("gina"), &r).await, 200);
    recall(&mut alice, "gina", ack.msg_id).await;
    assert_eq!(read_status(&addr, &tok("gina"), &r).await, 404);
    assert_eq!(
        read_status(&addr, &tok("alice"), &r).await,
        200,
        "still the uploader's"
    );
    let gina = account(&server, "gina").await;
    let recalled = gina.entries.iter().find_map(|e| match &e.body {
        Some(pb::inbox_entry::Body::Message(msg)) if msg.msg_id == ack.msg_id => Some(msg.clone()),
        _ => None,
    });
    let recalled = recalled.expect("the message is in gina's inbox");
    assert!(recalled.recalled && recalled.media.is_empty());

    // The Server API sends media too.
    let api = server.api();
    let sent = api
        .post(
            "/v1/messages",
            json!({"from": "alice", "to": {"user": "hank"}, "client_msg_id": "api1", "content": "look", "media": [m]}),
        )
        .await;
    assert_eq!(sent.status, 201, "{}", sent.text());
    assert_eq!(read_status(&addr, &tok("hank"), &m).await, 200);

    // Bad references: not an id, too many.
    let (code, _) = request_err(&mut alice, send_media("x1", dm("bob"), &["../secret"])).await;
    assert_eq!(code, ErrorCode::InvalidArgument);
    let eleven: Vec<String> = (0..11).map(|i| format!("{i:032x}")).collect();
    let ids: Vec<&str> = eleven.iter().map(String::as_str).collect();
    let (code, _) = request_err(&mut alice, send_media("x2", dm("bob"), &ids)).await;
    assert_eq!(code, ErrorCode::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_removes_what_no_message_carries_and_keeps_the_rest() {
    let server = TestServer::start_with(|c| {
        c.media_gc_grace_secs = 1;
        c.media_gc_interval_ms = 200;
    })
    .await;
    let addr = server.addr.clone();
    let alice = server.token("alice", "phone");
    let files = server.dir.path().join("media/files");
    let kept = upload(&addr, &alice, &noise(3000, 11)).await;
    let unsent = upload(&addr, &alice, &jpeg_bytes(200, 100)).await;
    let unfinished = create(&addr, &alice, json!({"size": 100})).await.json()["upload_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        patch(&addr, &alice, &unfinished, 0, &noise(50, 1))
            .await
            .status,
        200
    );
    let kept_id = kept["media_id"].as_str().unwrap().to_owned();
    let unsent_id = unsent["media_id"].as_str().unwrap().to_owned();
    let (mut conn, _) = server.login("alice", "phone").await;
    let ack = acked(&mut conn, send_media("k1", dm("bob"), &[&kept_id])).await;
    // An unfinished upload, and two files (the image and its thumbnail) no message uses.
    assert_eq!(walk(&files).len(), 3);

    let gone = |what: &'static str, addr: String, token: String, path: String| async move {
        for _ in 0..50 {
            if get(&addr, &token, &path).await.status == 404 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what} was not collected");
    };
    gone(
        "the unsent media",
        addr.clone(),
        alice.clone(),
        format!("/v1/media/{unsent_id}"),
    )
    .await;
    gone(
        "the unfinished upload",
        addr.clone(),
        alice.clone(),
        format!("/v1/media/uploads/{unfinished}"),
    )
    .await;
    assert!(!server
        .dir
        .path()
        .join("media/uploads")
        .join(&unfinished)
        .exists());
    let left = walk(&files);
    assert_eq!(left.len(), 1, "only the sent media's file: {left:?}");
    assert!(left[0].ends_with(kept["sha256"].as_str().unwrap()));
    for who in ["alice", "bob"] {
        let status = read_status(&addr, &server.token(who, "phone"), &kept_id).await;
        assert_eq!(status, 200, "{who}: a message carries it");
    }

    // Deleted from alice's view only, bob still has it: kept. Deleted by bob too, it is
    // nobody's: collected (the other way a message stops keeping its media is a recall, below).
    let both = upload(&addr, &alice, &noise(2000, 12)).await;
    let both_id = both["media_id"].as_str().unwrap().to_owned();
    let sent = acked(&mut conn, send_media("d1", dm("bob"), &[&both_id])).await;
    let delete = |msg_id: u64, peer: &str| {
        Packet::Delete(pb::DeleteMessage {
            msg_id,
            conversation: Some(dm(peer)),
        })
    };
    assert!(matches!(
        request(&mut conn, delete(sent.msg_id, "bob")).await,
        Packet::DeleteAck(_)
    ));
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let bob = server.token("bob", "phone");
    assert_eq!(
        read_status(&addr, &bob, &both_id).await,
        200,
        "bob still has it"
    );
    let (mut bob_conn, _) = server.login("bob", "phone").await;
    assert!(matches!(
        request(&mut bob_conn, delete(sent.msg_id, "alice")).await,
        Packet::DeleteAck(_)
    ));
    gone(
        "the media of a message both deleted",
        addr.clone(),
        alice.clone(),
        format!("/v1/media/{both_id}"),
    )
    .await;

    // Recalled, it is no message's any more: collected too.
    recall(&mut conn, "bob", ack.msg_id).await;
    gone(
        "the recalled media",
        addr.clone(),
        alice.clone(),
        format!("/v1/media/{kept_id}"),
    )
    .await;
    for _ in 0..50 {
        if walk(&files).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(walk(&files).is_empty(), "{:?}", walk(&files));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_urls_serve_anyone_without_a_token_until_they_expire() {
    let server = TestServer::start().await;
    let addr = server.addr.clone();
    let alice = server.token("alice", "phone");
    let photo = jpeg_bytes(400, 300);
    let m = upload(&addr, &alice, &photo).await["media_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sign = |token: String, body: Value| {
        let (addr, m) = (addr.clone(), m.clone());
        async move {
            let path = format!("/v1/media/{m}/url");
            http(
                &addr,
                "POST",
                &path,
                &token,
                &[],
                body.to_string().as_bytes(),
            )
            .await
        }
    };
    let made = sign(alice.clone(), json!({"expires_in": 2})).await;
    assert_eq!(made.status, 201, "{}", String::from_utf8_lossy(&made.body));
    let url = made.json()["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&format!("/v1/media/{m}?expires=")), "{url}");

    // No token: the bytes, ranges too, cacheable by a CDN until the URL expires.
    let whole = http(&addr, "GET", &url, "", &[], b"").await;
    assert_eq!(whole.status, 200);
    assert!(whole.body == photo);
    assert!(whole
        .header("cache-control")
        .unwrap()
        .starts_with("public, max-age="));
    let part = http(&addr, "GET", &url, "", &[("Range", "bytes=10-19")], b"").await;
    assert_eq!(part.status, 206);
    assert!(part.body == photo[10..20]);
    let thumb = sign(alice.clone(), json!({"thumbnail": true})).await.json()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(thumb.starts_with(&format!("/v1/media/{m}/thumbnail?")));
    let t = http(&addr, "GET", &thumb, "", &[], b"").await;
    assert_eq!(
        (t.status, t.header("content-type")),
        (200, Some("image/jpeg"))
    );

    // A changed signature, the file's signature on the thumbnail, another media's id: refused.
    let mut bad = url.clone();
    let last = bad.pop().unwrap();
    bad.push(if last == '0' { '1' } else { '0' });
    assert_eq!(http(&addr, "GET", &bad, "", &[], b"").await.status, 403);
    let query = url.split_once('?').unwrap().1;
    let swapped = format!("/v1/media/{m}/thumbnail?{query}");
    assert_eq!(http(&addr, "GET", &swapped, "", &[], b"").await.status, 403);
    let other = upload(&addr, &alice, &noise(100, 5)).await["media_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let moved = format!("/v1/media/{other}?{query}");
    assert_eq!(http(&addr, "GET", &moved, "", &[], b"").await.status, 403);

    // Only someone who may read the media gets a URL; lifetimes are bounded.
    assert_eq!(
        sign(server.token("bob", "phone"), json!({})).await.status,
        404
    );
    for bad in [
        json!({"expires_in": 0}),
        json!({"expires_in": 7 * 86400 + 1}),
    ] {
        assert_eq!(sign(alice.clone(), bad.clone()).await.status, 400, "{bad}");
    }

    // Expired.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let late = http(&addr, "GET", &url, "", &[], b"").await;
    assert_eq!(late.status, 403);
    assert!(late.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("expired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_senders_are_cut_at_the_read_timeout_and_keep_what_arrived() {
    let server = TestServer::start_with(|c| c.media_read_timeout_ms = 500).await;
    let addr = server.addr.clone();
    let alice = server.token("alice", "phone");
    let id = create(&addr, &alice, json!({"size": 100_000})).await.json()["upload_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A chunk that stops after 10,000 of its 100,000 bytes.
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PATCH /v1/media/uploads/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\n\
         Upload-Offset: 0\r\nContent-Length: 100000\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&noise(10_000, 4)).await.unwrap();
    let started = std::time::Instant::now();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    // The answer comes at the read timeout, without the client sending or closing anything.
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("an answer, not a hang")
            .unwrap();
        raw.extend_from_slice(&buf[..n]);
        if n == 0 || raw.windows(4).any(|w| w == b"\r\n\r\n") && raw.ends_with(b"}") {
            break;
        }
    }
    let waited = started.elapsed();
    let a = parse(&raw);
    assert_eq!(a.status, 408, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json()["error"]["offset"], 10_000);
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    assert_eq!(offset_now(&addr, &alice, &id).await, 10_000);

    // A connection that sends one request, then half a head and nothing more, is closed.
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    let first = format!(
        "GET /v1/media/uploads/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\n\r\n"
    );
    tcp.write_all(first.as_bytes()).await.unwrap();
    tcp.write_all(b"GET /v1/media/uploads/x HTTP/1.1\r\nHost:")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut all))
        .await
        .expect("closed, not held open")
        .ok();
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(
        all.starts_with(b"HTTP/1.1 200"),
        "the first request was answered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_and_downloads_work_inside_tls_and_plain_is_refused_when_tls_is_required() {
    use tokio_rustls::rustls::{self, pki_types::ServerName};
    let cert_dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (
        cert_dir.path().join("cert.pem"),
        cert_dir.path().join("key.pem"),
    );
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let server = TestServer::start_with(|c| {
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
        c.allow_plain = false;
    })
    .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let addr = server.addr.clone();
    let tls = || {
        let (connector, addr) = (connector.clone(), addr.clone());
        async move {
            let tcp = TcpStream::connect(&addr).await.unwrap();
            connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .expect("TLS handshake")
        }
    };
    let alice = server.token("alice", "phone");
    let data = noise(300_000, 8);
    let body = json!({"size": data.len()}).to_string();
    let made = http_on(
        tls().await,
        "POST",
        "/v1/media/uploads",
        &alice,
        &[],
        body.as_bytes(),
    )
    .await;
    assert_eq!(made.status, 201, "{}", String::from_utf8_lossy(&made.body));
    let id = made.json()["upload_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/media/uploads/{id}");
    let sent = http_on(
        tls().await,
        "PATCH",
        &path,
        &alice,
        &[("Upload-Offset", "0")],
        &data,
    )
    .await;
    assert_eq!(sent.status, 200);
    let done = http_on(
        tls().await,
        "POST",
        &format!("{path}/finish"),
        &alice,
        &[],
        b"",
    )
    .await;
    assert_eq!(done.status, 201);
    let m = done.json()["media_id"].as_str().unwrap().to_owned();
    let range = [("Range", "bytes=1000-1999")];
    let got = http_on(
        tls().await,
        "GET",
        &format!("/v1/media/{m}"),
        &alice,
        &range,
        b"",
    )
    .await;
    assert_eq!(got.status, 206);
    assert!(got.body == data[1000..2000]);
    // Plain HTTP to a TLS-only server: refused with TLS_REQUIRED, nothing created.
    let plain = create(&addr, &alice, json!({"size": 10})).await;
    assert_eq!(
        plain.json()["error"]["name"],
        "TLS_REQUIRED",
        "{}",
        String::from_utf8_lossy(&plain.body)
    );
}

/// Reads one answer of a kept-alive connection (its head, then `Content-Length` bytes).
async fn read_answer(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> Answer {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = parse(&buf[..end + 4]);
            let len: usize = head
                .header("content-length")
                .unwrap_or("0")
                .parse()
                .unwrap();
            if buf.len() >= end + 4 + len {
                let answer = parse(&buf[..end + 4 + len]);
                buf.drain(..end + 4 + len);
                return answer;
            }
        }
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut chunk))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed early");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_is_one_login_not_one_per_request() {
    let server = TestServer::start_with(|c| c.logins_per_sec = 2).await;
    let addr = server.addr.clone();
    let alice = server.token("alice", "phone");
    let data = noise(10_000, 13);
    // The upload, then 20 range requests as a player makes them, all on one connection: every
    // one served, though the login rate allows 2 a second.
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    let mut buf = Vec::new();
    let auth = format!("Authorization: Bearer {alice}");
    let create = format!(
        "POST /v1/media/uploads HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Length: 15\r\n\r\n\
         {{\"size\": 10000}}"
    );
    tcp.write_all(create.as_bytes()).await.unwrap();
    let made = read_answer(&mut tcp, &mut buf).await;
    assert_eq!(made.status, 201, "{}", String::from_utf8_lossy(&made.body));
    let id = made.json()["upload_id"].as_str().unwrap().to_owned();
    let patch = format!(
        "PATCH /v1/media/uploads/{id} HTTP/1.1\r\nHost: x\r\n{auth}\r\nUpload-Offset: 0\r\n\
         Content-Length: 10000\r\n\r\n"
    );
    tcp.write_all(patch.as_bytes()).await.unwrap();
    tcp.write_all(&data).await.unwrap();
    assert_eq!(read_answer(&mut tcp, &mut buf).await.status, 200);
    let finish = format!(
        "POST /v1/media/uploads/{id}/finish HTTP/1.1\r\nHost: x\r\n{auth}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    tcp.write_all(finish.as_bytes()).await.unwrap();
    let done = read_answer(&mut tcp, &mut buf).await;
    assert_eq!(done.status, 201);
    let m = done.json()["media_id"].as_str().unwrap().to_owned();
    for i in 0..20usize {
        let req = format!(
            "GET /v1/media/{m} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\n\
             Range: bytes={}-{}\r\n\r\n",
            i * 100,
            i * 100 + 99
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let a = read_answer(&mut tcp, &mut buf).await;
        assert_eq!(
            a.status,
            206,
            "request {i}: {}",
            String::from_utf8_lossy(&a.body)
        );
        assert!(a.body == data[i * 100..i * 100 + 100]);
    }
    // Another token on the same connection is a login of its own, checked as one.
    let bad =
        format!("GET /v1/media/{m} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x{alice}\r\n\r\n");
    tcp.write_all(bad.as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut tcp, &mut buf).await.status, 401);
    // One connection per request: each a login, and the login rate (2 a second) refuses some.
    let mut busy = 0;
    for _ in 0..10 {
        if get(&addr, &alice, &format!("/v1/media/{m}")).await.status == 503 {
            busy += 1;
        }
    }
    assert!(busy > 0, "separate connections take the login rate");
}
