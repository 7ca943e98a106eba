//! Online backup and restore (issue #22, docs/operations.md "Backup and restore"), against real
//! servers on 127.0.0.1 over real RocksDB in temp dirs and the real `missived --restore`:
//!
//! - a pair chats without pause while `POST /v1/backups` runs; none of their sends fails, and a
//!   server started on the restored data directory has every message acked before the backup
//!   was asked for, exactly once (SYNC from 0, versions gapless, the store's invariants and
//!   unread counts against a recount), the media uploaded before it byte for byte, an upload in
//!   progress where it stood, and the token secret (tokens minted before log in);
//! - backups are listed, deleted by their name only (no path tricks), one at a time (409);
//! - `--restore` refuses a data directory with something in it and leaves it alone.

mod common;
mod e2e;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::http::{Api, API_KEY};
use common::{noise, sync_all};
use e2e::{request, send_body};
use missive::check::{self, Acked, InboxRules, Ledger};
use missive::config::Config;
use missive::store::Durability;
use missive::{Server, ServerHandle};
use missive_client::{pb, Client, ClientConfig, Connection};
use missive_protocol::Packet;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server with its secret generated into `<data>/secret` (so that it is in the backup), the
/// API on, and its backups in `backups`.
fn config(data: &Path, backups: &Path) -> Config {
    Config {
        listen: vec!["127.0.0.1:0".into()],
        data_dir: data.to_path_buf(),
        secret: None,
        backup_dir: backups.to_path_buf(),
        durability: Durability::Async,
        http_listen: "127.0.0.1:0".into(),
        api_key: Some(API_KEY.into()),
        ..Config::default()
    }
}

fn api(h: &ServerHandle) -> Api {
    Api::new(h.http_addr().expect("API on"), Some(API_KEY))
}

/// A token of `user` signed with the secret in `data`'s `secret` file.
fn token(data: &Path, user: &str) -> String {
    let secret = std::fs::read_to_string(data.join("secret")).expect("the secret file");
    let expires = (missive::now_ms() / 1000) as u64 + 3600;
    missive_protocol::token::mint(secret.trim().as_bytes(), user, "phone", expires)
}

async fn login(addr: &str, token: &str) -> Connection {
    let mut conn = Connection::connect(addr).await.expect("connects");
    conn.login(token, "phone", 0).await.expect("login succeeds");
    conn
}

/// One HTTP request on the public port on a connection of its own: (status, body).
async fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    extra: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer \
         {token}\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut raw))
        .await
        .expect("an answer within 30 s")
        .expect("read");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let status = std::str::from_utf8(&raw[..end])
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap();
    (status.parse().unwrap(), raw[end + 4..].to_vec())
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(body)))
}

/// Creates an upload of `size` bytes and sends it `bytes` (all or a first part): its id.
async fn upload_part(addr: &str, token: &str, size: usize, bytes: &[u8]) -> String {
    let (status, body) = http(
        addr,
        "POST",
        "/v1/media/uploads",
        token,
        "",
        json!({ "size": size }).to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let id = json_of(&body)["upload_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/media/uploads/{id}");
    let (status, body) = http(addr, "PATCH", &path, token, "Upload-Offset: 0\r\n", bytes).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    id
}

fn run_missived(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_missived"))
        .args(args)
        .env_remove("MISSIVE_CONFIG")
        .env_remove("MISSIVE_DATA_DIR")
        .env_remove("MISSIVE_SECRET")
        .env_remove("MISSIVE_BACKUP_DIR")
        .output()
        .expect("missived runs")
}

/// Every file under `dir`, with its bytes.
fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(tree(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

/// One acknowledged send of the chat, and when its ack arrived.
struct Sent {
    acked: Acked,
    at: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_restores_every_acked_message_the_media_and_the_secret() {
    let root = tempfile::tempdir().unwrap();
    let (data, backups, restored) = (
        root.path().join("data"),
        root.path().join("backups"),
        root.path().join("restored"),
    );
    let server = Server::start(config(&data, &backups))
        .await
        .expect("starts");
    let addr = server.local_addrs()[0].to_string();
    let (alice_tok, bob_tok) = (token(&data, "alice"), token(&data, "bob"));

    // A photo alice sends bob, and an upload of hers half way.
    let photo = noise(300_000, 11);
    let id = upload_part(&addr, &alice_tok, photo.len(), &photo).await;
    let (status, body) = http(
        &addr,
        "POST",
        &format!("/v1/media/uploads/{id}/finish"),
        &alice_tok,
        "",
        b"",
    )
    .await;
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let media_id = json_of(&body)["media_id"].as_str().unwrap().to_owned();
    let half = upload_part(&addr, &alice_tok, 1000, &noise(400, 12)).await;
    let mut alice = login(&addr, &alice_tok).await;
    let mut with_photo = send_body("photo", "bob", b"the photo");
    with_photo.media = vec![pb::MediaRef {
        media_id: media_id.clone(),
        ..Default::default()
    }];
    let Packet::SendAck(photo_ack) = request(&mut alice, Packet::Send(with_photo)).await else {
        panic!("no SEND_ACK");
    };

    // The pair chats without pause until told to stop; any failed send fails the test.
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::new(Mutex::new(vec![Sent {
        acked: Acked::direct("alice", "bob", b"the photo", &photo_ack),
        at: Instant::now(),
    }]));
    let stop = Arc::new(AtomicBool::new(false));
    drop(alice);
    let mut chatters = Vec::new();
    for (me, peer, tok) in [("alice", "bob", &alice_tok), ("bob", "alice", &bob_tok)] {
        // Reliable clients: they acknowledge the pushes of the other's messages as a phone does.
        let mut cfg = ClientConfig::new(&addr, tok.clone(), "phone");
        cfg.auto_reconnect = false;
        let mut conn = Client::connect(cfg).await.expect("client connects");
        let mut events = conn.events().expect("events");
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        let (sent, stop) = (sent.clone(), stop.clone());
        chatters.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let content = format!("{me} #{i}");
                let body = send_body(&format!("{me}-{i}"), peer, content.as_bytes());
                let reply =
                    tokio::time::timeout(Duration::from_secs(10), conn.request(Packet::Send(body)))
                        .await
                        .unwrap_or_else(|_| panic!("{me}'s send #{i}: no answer in 10 s"))
                        .unwrap_or_else(|e| panic!("{me}'s send #{i} failed: {e}"));
                let Packet::SendAck(ack) = reply else {
                    panic!("{me}'s send #{i}: {reply:?}");
                };
                let acked = Acked::direct(me, peer, content.as_bytes(), &ack);
                sent.lock().unwrap().push(Sent {
                    acked,
                    at: Instant::now(),
                });
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let asked = Instant::now();
    let made = api(&server).raw("POST", "/v1/backups", Vec::new()).await;
    let answered = Instant::now();
    assert_eq!(made.status, 201, "{}", made.text());
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for c in chatters {
        c.await.expect("the pair's sends never failed");
    }
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    let before: Vec<Acked> = sent
        .iter()
        .filter(|s| s.at < asked)
        .map(|s| s.acked.clone())
        .collect();
    let during = sent
        .iter()
        .filter(|s| s.at >= asked && s.at < answered)
        .count();
    let after = sent.iter().filter(|s| s.at >= answered).count();
    println!(
        "acked before the backup: {}, while it ran ({} ms): {during}, after: {after}",
        before.len(),
        (answered - asked).as_millis()
    );
    assert!(before.len() > 20, "the pair chatted: {}", before.len());
    assert!(after > 0, "the server kept serving after the backup");

    // The answer, the manifest on disk and the list agree.
    let made = made.json();
    let path = PathBuf::from(made["path"].as_str().unwrap());
    let name = made["backup"]["name"].as_str().unwrap().to_owned();
    assert_eq!(path, backups.join(&name));
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(path.join("BACKUP.json")).unwrap()).unwrap();
    assert_eq!(on_disk, made["backup"]);
    assert_eq!(on_disk["schema_version"], missive::store::SCHEMA_VERSION);
    assert_eq!(on_disk["secret_file"], true);
    assert_eq!(on_disk["media_records"], 1);
    assert_eq!(
        on_disk["media"]["files"], 1,
        "the photo (no thumbnail: not an image)"
    );
    assert_eq!(on_disk["media"]["bytes"], photo.len());
    assert_eq!(on_disk["uploads"]["files"], 1);
    let listed = api(&server).get("/v1/backups").await.json();
    assert_eq!(listed["backups"][0]["backup"], made["backup"]);
    assert_eq!(listed["backups"].as_array().unwrap().len(), 1);
    server.shutdown().await;

    // Restoring into the data directory it came from (not empty) is refused, and changes nothing.
    let untouched = tree(&data);
    let refused = run_missived(&[
        "--restore".as_ref(),
        path.as_os_str(),
        "--data-dir".as_ref(),
        data.as_os_str(),
    ]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("is not empty"), "{err}");
    assert_eq!(tree(&data), untouched);

    let out = run_missived(&[
        "--restore".as_ref(),
        path.as_os_str(),
        "--data-dir".as_ref(),
        restored.as_os_str(),
    ]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("missived: restored"), "{said}");
    assert!(said.contains("1 media files and 1 uploads"), "{said}");
    assert_eq!(
        std::fs::read(restored.join("secret")).unwrap(),
        std::fs::read(data.join("secret")).unwrap()
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(restored.join("secret"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A server on the restored directory: the tokens minted before log in (the secret came
    // along), and every message acked before the backup was asked for is there once.
    let server = Server::start(config(&restored, &root.path().join("backups-2")))
        .await
        .expect("starts on the restored directory");
    let addr = server.local_addrs()[0].to_string();
    // Sends acked after the backup was asked for may or may not be in it, but nothing else.
    let mut ledger = Ledger::new(&before).unwrap();
    for s in sent.iter().filter(|s| s.at >= asked) {
        ledger.allow_unanswered(&s.acked.from, &s.acked.client_msg_id);
    }
    for (user, tok) in [("alice", &alice_tok), ("bob", &bob_tok)] {
        let mut conn = login(&addr, tok).await;
        let entries = sync_all(&mut conn, 0).await;
        let rules = InboxRules {
            only_messages: true,
            all_acked: false,
        };
        check::check_inbox(
            &ledger,
            user,
            &entries,
            "SYNC of the restored server",
            rules,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let ids: Vec<u64> = entries.iter().map(|e| common::message(e).msg_id).collect();
        for a in &before {
            let n = ids.iter().filter(|id| **id == a.msg_id).count();
            assert_eq!(
                n, 1,
                "{user}: message {} ({}) {n} times",
                a.msg_id, a.client_msg_id
            );
        }
        // What the backup holds of each sender's messages is a prefix of what they sent (one
        // after the other, each after the ack of the one before).
        let theirs: Vec<&str> = sent
            .iter()
            .filter(|s| s.acked.from == user && s.acked.client_msg_id != "photo")
            .map(|s| s.acked.client_msg_id.as_str())
            .collect();
        let kept: Vec<&str> = entries
            .iter()
            .map(common::message)
            .filter(|m| m.from_user == user && m.client_msg_id != "photo")
            .map(|m| m.client_msg_id.as_str())
            .collect();
        assert!(
            theirs.starts_with(&kept),
            "{user}: kept {} of {} sent, not a prefix",
            kept.len(),
            theirs.len()
        );
        let stored =
            check::check_store_user(server.store().core(), user).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stored.len(), entries.len());
    }
    // The photo, byte for byte, for bob; the upload where it stood, for alice.
    let (status, body) = http(
        &addr,
        "GET",
        &format!("/v1/media/{media_id}"),
        &bob_tok,
        "",
        b"",
    )
    .await;
    assert_eq!(status, 200);
    assert!(body == photo, "the restored photo differs");
    let (status, body) = http(
        &addr,
        "GET",
        &format!("/v1/media/uploads/{half}"),
        &alice_tok,
        "",
        b"",
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_of(&body)["offset"], 400);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_are_listed_deleted_by_name_only_and_taken_one_at_a_time() {
    let root = tempfile::tempdir().unwrap();
    let (data, backups) = (root.path().join("data"), root.path().join("backups"));
    let server = Server::start(config(&data, &backups))
        .await
        .expect("starts");
    let api = api(&server);
    let first = api.raw("POST", "/v1/backups", Vec::new()).await;
    assert_eq!(first.status, 201, "{}", first.text());
    let first = first.json()["backup"]["name"].as_str().unwrap().to_owned();

    // While a backup runs into the directory, another is refused.
    let turn = missive::service::backup::Turn::take(&backups, "the test's").unwrap();
    let busy = api.raw("POST", "/v1/backups", Vec::new()).await;
    assert_eq!(busy.status, 409, "{}", busy.text());
    assert_eq!(busy.error_code(), 23);
    assert!(busy.text().contains("already running"), "{}", busy.text());
    drop(turn);
    // Then it is taken again; a second in the same second waits for the next one.
    let second = api.raw("POST", "/v1/backups", Vec::new()).await;
    assert_eq!(second.status, 201, "{}", second.text());
    let second = second.json()["backup"]["name"].as_str().unwrap().to_owned();
    assert!(second > first, "{second} after {first}");

    // Four at once: each written whole or refused, never two at a time.
    let tries: Vec<_> = (0..4)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move { api.raw("POST", "/v1/backups", Vec::new()).await })
        })
        .collect();
    let mut made = 0;
    for t in tries {
        let a = t.await.unwrap();
        match a.status {
            201 => made += 1,
            409 => assert_eq!(a.error_code(), 23),
            other => panic!("{other}: {}", a.text()),
        }
    }
    assert!(made >= 1);
    let listed = api.get("/v1/backups").await.json();
    let names: Vec<String> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["backup"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 2 + made);
    assert!(
        names.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {names:?}"
    );
    assert_eq!(listed["backup_dir"], json!(backups));
    let on_disk: Vec<String> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        on_disk.len(),
        names.len(),
        "nothing half-written left: {on_disk:?}"
    );

    // Deleting takes a backup's name and nothing else.
    for bad in [
        "..%2F..",
        "..%2Fdata",
        "%2E%2E",
        "20261207T181500Z%2F..",
        "latest",
    ] {
        let a = api.delete(&format!("/v1/backups/{bad}")).await;
        assert_eq!(a.status, 400, "{bad}: {}", a.text());
        assert_eq!(a.error_code(), 11, "{bad}");
    }
    assert!(
        data.join("db").join("CURRENT").is_file(),
        "the data directory is intact"
    );
    let a = api.delete("/v1/backups/20000101T000000Z").await;
    assert_eq!(a.status, 404, "{}", a.text());
    let a = api.delete(&format!("/v1/backups/{first}")).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["deleted"], json!(first));
    assert!(!backups.join(&first).exists());
    assert!(backups.join(&second).join("BACKUP.json").is_file());
    let after = api.get("/v1/backups").await.json();
    assert_eq!(after["backups"].as_array().unwrap().len(), names.len() - 1);

    // The key is needed, as for every /v1 call.
    let anonymous = Api::new(server.http_addr().unwrap(), None);
    assert_eq!(
        anonymous
            .raw("POST", "/v1/backups", Vec::new())
            .await
            .status,
        401
    );
    assert_eq!(anonymous.get("/v1/backups").await.status, 401);
    assert_eq!(
        anonymous
            .delete(&format!("/v1/backups/{second}"))
            .await
            .status,
        401
    );
    server.shutdown().await;
}

#[test]
fn a_backup_dir_inside_the_data_dir_is_refused_at_start() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let out = run_missived(&[
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--print-config".as_ref(),
    ]);
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    let want = format!("backup_dir = \"{}-backups\"", data.display());
    assert!(printed.contains(&want), "{printed}");
    let out = Command::new(env!("CARGO_BIN_EXE_missived"))
        .args(["--print-config", "--data-dir"])
        .arg(&data)
        .env("MISSIVE_BACKUP_DIR", data.join("backups"))
        .env_remove("MISSIVE_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("backup_dir") && err.contains("inside data_dir"),
        "{err}"
    );
}
