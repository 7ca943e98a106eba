//! The `missive` binary against a fake server on 127.0.0.1 (built from missive-client's raw
//! `Connection`, which works just as well on the server side of a socket).

use std::process::{Command, Output};
use std::time::Duration;

use missive_client::{pb, Connection};
use missive_protocol::{token, Frame, Packet};
use tokio::net::TcpListener;

const SECRET: &str = "test-secret-0123456789";
const WAIT: Duration = Duration::from_secs(10);

fn missive(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_missive"));
    cmd.args(args)
        .env_remove("MISSIVE_ADDR")
        .env_remove("MISSIVE_TOKEN");
    cmd.env_remove("MISSIVE_SECRET").env_remove("MISSIVE_USER");
    cmd
}

/// Runs the binary on a blocking thread while the test's fake server runs.
async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// Accepts one connection and answers its LOGIN (checking the minted token).
async fn accept_login(listener: &TcpListener, current_version: u64) -> Connection {
    accept_login_body(listener, current_version).await.0
}

/// [`accept_login`], also returning the LOGIN body.
async fn accept_login_body(
    listener: &TcpListener,
    current_version: u64,
) -> (Connection, pb::Login) {
    let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut conn = Connection::from_stream(stream).unwrap();
    let (frame, packet) = conn.recv_packet_timeout(WAIT).await.unwrap().unwrap();
    let Packet::Login(login) = packet else {
        panic!("{packet:?}")
    };
    let claims = token::verify(SECRET.as_bytes(), &login.token, 0).unwrap();
    assert_eq!(claims.device_id, login.device_id);
    let ack = pb::LoginAck {
        user_id: claims.user_id,
        server_time_ms: 1,
        heartbeat_interval_secs: 30,
        current_version,
        unread_total: 0,
        session_id: 1,
        ..Default::default()
    };
    let reply = Frame::new(&Packet::LoginAck(ack), frame.request_id);
    conn.send_frame(&reply).await.unwrap();
    (conn, login)
}

/// `--background` and `--heartbeat-secs` go into the LOGIN of any command (PROTOCOL.md 11).
#[tokio::test]
async fn background_and_heartbeat_flags_reach_the_login() {
    let (l, addr) = listener().await;
    let args = [
        "--addr",
        &addr,
        "--secret",
        SECRET,
        "--user",
        "alice",
        "--background",
        "--heartbeat-secs",
        "240",
        "unread",
    ];
    let fake = async {
        let (mut conn, login) = accept_login_body(&l, 0).await;
        assert!(login.background);
        assert_eq!(login.heartbeat_secs, 240);
        let (frame, packet) = conn.recv_packet_timeout(WAIT).await.unwrap().unwrap();
        assert!(matches!(packet, Packet::Unread(_)), "{packet:?}");
        let ack = Packet::UnreadAck(pb::UnreadAck::default());
        conn.send_frame(&Frame::new(&ack, frame.request_id))
            .await
            .unwrap();
    };
    let (out, ()) = tokio::join!(run(missive(&args)), fake);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

async fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn token_verifies_with_the_secret_file() {
    let dir = std::env::temp_dir().join(format!("missive-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret"), format!("{SECRET}\n")).unwrap();
    let out = missive(&[
        "token",
        "--user",
        "alice",
        "--data-dir",
        dir.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tok = text(&out.stdout).trim().to_string();
    let claims = token::verify(SECRET.as_bytes(), &tok, 0).unwrap();
    assert_eq!(
        (claims.user_id.as_str(), claims.device_id.as_str()),
        ("alice", "cli")
    );
    // v2: with an issue time (now), so that the server can revoke it.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let issued = claims.issued.expect("a v2 token");
    assert!(issued + 60 >= now && issued <= now, "{issued} vs {now}");
    assert_eq!(claims.expires, issued + 86_400);
    std::fs::remove_dir_all(dir).unwrap();
    // No secret anywhere: a clear error and a non-zero exit.
    let out = missive(&["token", "--user", "a", "--data-dir", "/nonexistent"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--secret"));
}

#[test]
fn encode_then_decode() {
    let out = missive(&[
        "encode",
        "--command",
        "SYNC",
        "--request-id",
        "9",
        "--body",
        r#"{"since_version":4}"#,
    ])
    .output()
    .unwrap();
    assert!(out.status.success());
    let hex = text(&out.stdout).trim().to_string();
    let out = missive(&["--json", "decode", &hex]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["frames"][0]["command_name"], "SYNC");
    assert_eq!(v["frames"][0]["request_id"], 9);
    assert_eq!(v["frames"][0]["body"]["since_version"], 4);
    assert_eq!(v["frames"][0]["crc"], "ok");
    let broken = format!("{}00", &hex[..hex.len() - 2]);
    let out = missive(&["decode", &broken]).output().unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stdout).contains("BAD (computed"));
}

#[tokio::test]
async fn send_prints_the_ack_and_server_errors_exit_non_zero() {
    let (l, addr) = listener().await;
    let args = [
        "--addr",
        &addr,
        "--secret",
        SECRET,
        "--user",
        "alice",
        "send",
        "--to",
        "bob",
        "--text",
        "hi",
        "--client-msg-id",
        "m-1",
    ];
    let fake = async {
        let mut conn = accept_login(&l, 0).await;
        let (frame, packet) = conn.recv_packet_timeout(WAIT).await.unwrap().unwrap();
        let Packet::Send(send) = packet else {
            panic!("{packet:?}")
        };
        assert_eq!(send.client_msg_id, "m-1");
        assert_eq!(send.content, b"hi");
        let ack = pb::SendAck {
            client_msg_id: send.client_msg_id,
            msg_id: 42,
            seq: 3,
            timestamp_ms: 1,
            version: 8,
            duplicate: true,
            content: Vec::new(),
        };
        conn.send_frame(&Frame::new(&Packet::SendAck(ack), frame.request_id))
            .await
            .unwrap();
    };
    let (out, ()) = tokio::join!(run(missive(&args)), fake);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("sent msg 42 seq 3 version 8 client_msg_id m-1 (duplicate"),
        "{stdout}"
    );

    let fake = async {
        let mut conn = accept_login(&l, 0).await;
        let (frame, _) = conn.recv_packet_timeout(WAIT).await.unwrap().unwrap();
        let err = pb::Error {
            code: 12,
            message: "content is over 65536 bytes".into(),
            fatal: false,
            retry_after_ms: 0,
            reason: String::new(),
        };
        conn.send_frame(&Frame::new(&Packet::Error(err), frame.request_id))
            .await
            .unwrap();
    };
    let (out, ()) = tokio::join!(run(missive(&args)), fake);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("CONTENT_TOO_LARGE (12)"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn watch_prints_entries_and_stops_after_count() {
    let (l, addr) = listener().await;
    let args = [
        "--addr", &addr, "--secret", SECRET, "--user", "bob", "--json", "watch", "--since", "0",
        "--count", "2",
    ];
    let fake = async {
        let mut conn = accept_login(&l, 0).await;
        for version in 1..=2u64 {
            let entry = pb::InboxEntry {
                version,
                conversation: Some(missive_client::direct("alice")),
                timestamp_ms: 1,
                body: Some(pb::inbox_entry::Body::Delete(pb::Delete {
                    msg_id: version,
                })),
            };
            let push = pb::Push {
                version,
                prev_version: version - 1,
                entry: Some(entry),
            };
            conn.send_frame(&Frame::new(&Packet::Push(push), 0))
                .await
                .unwrap();
            let (_, ack) = conn.recv_packet_timeout(WAIT).await.unwrap().unwrap();
            assert_eq!(ack, Packet::PushAck(pb::PushAck { version }));
        }
        conn
    };
    let (out, _conn) = tokio::join!(run(missive(&args)), fake);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let entries: Vec<_> = lines.iter().filter(|v| v["event"] == "entry").collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["entry"]["version"], 2);
}

#[tokio::test]
async fn raw_prints_what_the_server_answers() {
    let (l, addr) = listener().await;
    let fake = async {
        let (stream, _) = l.accept().await.unwrap();
        let mut conn = Connection::from_stream(stream).unwrap();
        let mut buf = [0u8; 4];
        let n = conn.read_raw(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"\xde\xad\xbe\xef"[..n].as_ref());
        let err = pb::Error {
            code: 1,
            message: "bad magic".into(),
            fatal: true,
            retry_after_ms: 0,
            reason: String::new(),
        };
        conn.send_frame(&Frame::new(&Packet::Error(err), 0))
            .await
            .unwrap();
    };
    let (out, ()) = tokio::join!(
        run(missive(&[
            "--addr", &addr, "raw", "--wait", "5", "deadbeef"
        ])),
        fake
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("the server closed the connection"),
        "{stdout}"
    );
    assert!(stdout.contains("0xffff ERROR"), "{stdout}");
    assert!(stdout.contains("bad magic"), "{stdout}");
}
