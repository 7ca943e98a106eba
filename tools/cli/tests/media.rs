//! `missive upload`, `missive download` and `missive send --media` against a real missived
//! (in-process, real TCP on 127.0.0.1, real RocksDB and media files in a temp dir): a file of a
//! few MB uploaded in several chunks, read back whole and by range, sent from alice to bob, read
//! by bob and refused to a third user; and an upload whose connection is cut mid-chunk, resumed.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

mod common;

use missive::ServerHandle;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

struct Setup {
    server: ServerHandle,
    addr: String,
    dir: tempfile::TempDir,
    files: tempfile::TempDir,
}

async fn start() -> Setup {
    start_with(|_| {}).await
}

async fn start_with(tweak: impl FnOnce(&mut missive::config::Config)) -> Setup {
    let (server, addr, dir) = common::server(tweak).await;
    Setup {
        server,
        addr,
        dir,
        files: tempfile::tempdir().unwrap(),
    }
}

impl Setup {
    /// The CLI as `user`, at `addr` (the server, or a proxy in front of it).
    fn cli_at(&self, addr: &str, user: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_missive"));
        cmd.args(["--addr", addr, "--data-dir"])
            .arg(self.dir.path())
            .args(["--user", user])
            .args(args)
            .env_remove("MISSIVE_ADDR")
            .env_remove("MISSIVE_TOKEN")
            .env_remove("MISSIVE_SECRET")
            .kill_on_drop(true);
        cmd
    }

    fn cli(&self, user: &str, args: &[&str]) -> Command {
        self.cli_at(&self.addr, user, args)
    }

    fn file(&self, name: &str) -> String {
        self.files.path().join(name).to_str().unwrap().to_owned()
    }
}

async fn run(mut cmd: Command) -> Output {
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the CLI finishes within 60 s")
        .expect("the CLI runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output) {
    assert!(o.status.success(), "failed: {}{}", stdout(o), stderr(o));
}

fn json(o: &Output) -> Value {
    ok(o);
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("not JSON: {:?} ({})", stdout(o), stderr(o)))
}

/// Deterministic bytes that do not compress.
fn noise(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

fn sha(data: &[u8]) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(data))
}

/// Uploads `path` as alice in chunks of 1 MiB through `addr`; the finish's JSON.
async fn upload(s: &Setup, addr: &str, path: &str, extra: &[&str]) -> (Output, Value) {
    let mut args = vec!["--json", "upload", path, "--chunk", "1048576"];
    args.extend_from_slice(extra);
    let out = run(s.cli_at(addr, "alice", &args)).await;
    let v = json(&out);
    (out, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_download_by_range_and_send_to_bob_but_not_to_carol() {
    let s = start().await;
    let data = noise(3 * 1048576 + 12345, 7);
    let path = s.file("video.bin");
    std::fs::write(&path, &data).unwrap();

    // Four chunks (1 MiB, 1 MiB, 1 MiB, 12345 bytes), progress on stderr, the finish on stdout.
    let (out, info) = upload(&s, &s.addr, &path, &[]).await;
    let media = info["media_id"].as_str().expect("a media_id").to_owned();
    assert_eq!(media.len(), 32, "{info}");
    assert!(media.bytes().all(|b| b.is_ascii_hexdigit()), "{info}");
    assert_eq!(info["size"], data.len(), "{info}");
    assert_eq!(info["sha256"], sha(&data), "{info}");
    assert_eq!(info["content_type"], "application/octet-stream");
    let progress = stderr(&out);
    assert_eq!(
        progress.matches("upload: ").count(),
        1 + 4,
        "a head line and one per chunk: {progress}"
    );
    assert!(
        progress.contains(&format!(
            "upload: {}/{} bytes (100%)",
            data.len(),
            data.len()
        )),
        "{progress}"
    );

    // The text form names the media and how to attach it.
    let text = run(s.cli("alice", &["upload", &path])).await;
    ok(&text);
    assert!(
        stdout(&text).contains(&format!("{} bytes application/octet-stream", data.len())),
        "{}",
        stdout(&text)
    );
    assert!(stdout(&text).contains("attach it: missive send"));

    // Whole, to a file: exactly the upload, checked against the ETag.
    let whole = s.file("whole.bin");
    let got = run(s.cli("alice", &["download", &media, "-o", &whole])).await;
    ok(&got);
    assert!(
        std::fs::read(&whole).unwrap() == data,
        "the download is the upload"
    );
    let said = stderr(&got);
    assert!(
        said.contains(&format!("200 OK: {} bytes", data.len())) && said.contains("sha256 verified"),
        "{said}"
    );

    // Ranges: exactly the bytes asked for, to stdout or a file.
    let part = run(s.cli("alice", &["download", &media, "--range", "1000-1999"])).await;
    ok(&part);
    assert!(part.stdout == data[1000..2000], "bytes 1000-1999");
    let said = stderr(&part);
    assert!(
        said.contains("206 Partial Content: 1000 bytes")
            && said.contains(&format!("bytes 1000-1999/{}", data.len())),
        "{said}"
    );
    let tail = s.file("tail.bin");
    let got = run(s.cli(
        "alice",
        &["--json", "download", &media, "--range", "-100", "-o", &tail],
    ))
    .await;
    let v = json(&got);
    assert_eq!(v["status"], 206);
    assert_eq!(v["bytes"], 100);
    assert!(std::fs::read(&tail).unwrap() == data[data.len() - 100..]);
    let crossing = format!("{}-{}", 1048570, 2 * 1048576 + 5);
    let part = run(s.cli("alice", &["download", &media, "--range", &crossing])).await;
    ok(&part);
    assert!(
        part.stdout == data[1048570..=2 * 1048576 + 5],
        "a range across chunks"
    );
    // Past the end: 416, nothing written.
    let past = format!("{}-", data.len());
    let nothing = s.file("nothing.bin");
    let refused = run(s.cli(
        "alice",
        &["download", &media, "--range", &past, "-o", &nothing],
    ))
    .await;
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("416") && stderr(&refused).contains(&data.len().to_string()),
        "{}",
        stderr(&refused)
    );
    assert!(!Path::new(&nothing).exists());

    // Before any message carries it, bob cannot read it.
    let early = run(s.cli("bob", &["download", &media])).await;
    assert!(!early.status.success());
    assert!(stderr(&early).contains("404"), "{}", stderr(&early));

    // Alice sends it to bob.
    let ack = json(
        &run(s.cli(
            "alice",
            &[
                "--json",
                "send",
                "--to",
                "bob",
                "--text",
                "the video",
                "--media",
                &media,
            ],
        ))
        .await,
    );
    assert_eq!(ack["seq"], 1, "{ack}");
    // Bob's message carries the MediaRef, filled in by the server.
    let history = json(&run(s.cli("bob", &["--json", "history", "--to", "alice"])).await);
    let messages = history["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "{history}");
    let m = &messages[0];
    assert_eq!(m["from_user"], "alice");
    assert_eq!(m["media"].as_array().map(Vec::len), Some(1), "{m}");
    let r = &m["media"][0];
    assert_eq!(r["media_id"], media.as_str(), "{r}");
    assert_eq!(r["size"], data.len(), "{r}");
    assert_eq!(r["sha256"], sha(&data), "{r}");
    assert_eq!(r["content_type"], "application/octet-stream", "{r}");
    let synced = run(s.cli("bob", &["sync", "--all"])).await;
    ok(&synced);
    assert!(
        stdout(&synced).contains(&format!(
            "\"the video\" [media {media}: {} bytes",
            data.len()
        )),
        "{}",
        stdout(&synced)
    );

    // An id that does not exist is refused.
    let bogus = "0".repeat(32);
    let refused = run(s.cli("alice", &["send", "--to", "bob", "--media", &bogus])).await;
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("NOT_FOUND"),
        "{}",
        stderr(&refused)
    );

    // Bob may read it now; carol, who has only the id, gets 404.
    let bobs = s.file("bob.bin");
    let got = run(s.cli("bob", &["download", &media, "-o", &bobs])).await;
    ok(&got);
    assert!(
        std::fs::read(&bobs).unwrap() == data,
        "bob reads the upload"
    );
    let carols = s.file("carol.bin");
    let carol = run(s.cli("carol", &["download", &media, "-o", &carols])).await;
    assert!(!carol.status.success(), "carol must be refused");
    assert!(
        stderr(&carol).contains("404") && stderr(&carol).contains("NOT_FOUND"),
        "{}",
        stderr(&carol)
    );
    assert!(!Path::new(&carols).exists(), "nothing written for carol");
    let carol = run(s.cli("carol", &["--json", "download", &media])).await;
    assert!(!carol.status.success());
    let v: Value = serde_json::from_slice(&carol.stdout).expect("a JSON error");
    assert_eq!(v["error"]["status"], 404, "{v}");
    s.server.shutdown().await;
}

/// A proxy to `target` that cuts each of its first `cuts` connections after `after` bytes
/// from the client, as a phone losing its network, and relays the others. The server's side of
/// a cut connection is closed too, or with `hold`, left open and silent (the server learns of
/// the cut only from its read timeout).
async fn cutting_proxy(target: String, after: usize, cuts: usize, hold: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut client, _)) = listener.accept().await {
            let Ok(mut server) = TcpStream::connect(&target).await else {
                continue;
            };
            n += 1;
            if n > cuts {
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                continue;
            }
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                // Not into_split: its write half would send a FIN when dropped.
                let (mut sr, mut sw) = tokio::io::split(server);
                let down = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                });
                let mut buf = vec![0u8; 64 * 1024];
                let mut passed = 0;
                while passed < after {
                    let want = buf.len().min(after - passed);
                    match cr.read(&mut buf[..want]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => {
                            if sw.write_all(&buf[..k]).await.is_err() {
                                break;
                            }
                            passed += k;
                        }
                    }
                }
                down.abort();
                drop(cr);
                if hold {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                } else {
                    let _ = sw.shutdown().await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_mid_chunk_resumes_where_the_server_stands() {
    let s = start_with(|c| c.media_read_timeout_ms = 1500).await;
    let data = noise(3 * 1048576 + 999, 11);
    let path = s.file("cut.bin");
    std::fs::write(&path, &data).unwrap();

    // The first connection dies 1.5 MiB in, halfway through the second chunk, and the server
    // sees it end: the client asks where the upload stands and goes on from there.
    let proxy = cutting_proxy(s.addr.clone(), 1536 * 1024, 1, false).await;
    let (out, info) = upload(&s, &proxy, &path, &[]).await;
    assert_eq!(info["size"], data.len(), "{info}");
    assert_eq!(info["sha256"], sha(&data), "{info}");
    let said = stderr(&out);
    assert!(said.contains("retrying in 250 ms (1/5)"), "{said}");
    let resumed_at = said
        .split("upload: the server has ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("a resume: {said}"));
    assert!(
        resumed_at > 1048576 && resumed_at <= 1536 * 1024,
        "the server kept part of the cut chunk: {said}"
    );
    let media = info["media_id"].as_str().unwrap();
    let got = run(s.cli("alice", &["download", media])).await;
    ok(&got);
    assert!(got.stdout == data, "the resumed upload is the file");

    // The same cut, but the server's side stays open: the server holds the upload until its
    // read timeout ends the cut request (409 meanwhile); the client waits and goes on.
    let proxy = cutting_proxy(s.addr.clone(), 1536 * 1024, 1, true).await;
    let (out, info) = upload(&s, &proxy, &path, &[]).await;
    assert_eq!(info["sha256"], sha(&data), "{info}");
    let said = stderr(&out);
    assert!(said.contains("waiting for the server to let go"), "{said}");

    // With no retries allowed, the cut ends the upload with an error.
    let proxy = cutting_proxy(s.addr.clone(), 1536 * 1024, 1, false).await;
    let out = run(s.cli_at(
        &proxy,
        "alice",
        &["upload", &path, "--chunk", "1048576", "--retries", "0"],
    ))
    .await;
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("giving up"), "{}", stderr(&out));
    s.server.shutdown().await;
}
