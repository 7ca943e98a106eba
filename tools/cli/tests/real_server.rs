//! The `missive` binary against a real missived (in-process, real TCP on 127.0.0.1, real
//! RocksDB in a temp dir): the README's walk-through, as a user would run it.

use std::process::Output;
use std::time::Duration;

mod common;

use missive::ServerHandle;
use tokio::process::Command;

struct Setup {
    server: ServerHandle,
    addr: String,
    dir: tempfile::TempDir,
}

/// A server with no configured secret, so it generates `<data_dir>/secret` as on first start.
async fn start() -> Setup {
    let (server, addr, dir) = common::server(|_| {}).await;
    Setup { server, addr, dir }
}

impl Setup {
    fn cli(&self, user: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_missive"));
        cmd.args(["--addr", &self.addr, "--data-dir"])
            .arg(self.dir.path())
            .args(["--user", user])
            .args(args)
            .env_remove("MISSIVE_ADDR")
            .env_remove("MISSIVE_TOKEN")
            .env_remove("MISSIVE_SECRET")
            .kill_on_drop(true);
        cmd
    }
}

async fn run(mut cmd: Command) -> Output {
    tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .expect("the CLI finishes within 20 s")
        .expect("the CLI runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("JSON output")
}

#[tokio::test]
async fn two_terminals_have_a_conversation() {
    let s = start().await;
    // Terminal 1: Bob watches for two entries.
    let watch = s
        .cli(
            "bob",
            &["--device", "phone", "watch", "--count", "2", "--for", "15"],
        )
        .output();
    let watcher =
        tokio::spawn(async move { tokio::time::timeout(Duration::from_secs(20), watch).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Terminal 2: Alice sends twice.
    let sent = run(s.cli("alice", &["send", "--to", "bob", "--text", "hello bob"])).await;
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert!(stdout(&sent).contains("seq 1"), "{}", stdout(&sent));
    let ack = json(
        &run(s.cli(
            "alice",
            &["--json", "send", "--to", "bob", "--text", "second"],
        ))
        .await,
    );
    assert_eq!(ack["seq"], 2);
    let watched = watcher.await.unwrap().expect("watch ends").unwrap();
    assert!(
        watched.status.success(),
        "{}",
        String::from_utf8_lossy(&watched.stderr)
    );
    let out = stdout(&watched);
    let first = out.find("hello bob").expect("first message printed");
    let second = out.find("second").expect("second message printed");
    assert!(first < second, "in order: {out}");

    // Bob's badge, then reading clears it.
    let unread = json(&run(s.cli("bob", &["--json", "unread"])).await);
    assert_eq!(unread["total"], 2);
    let read = run(s.cli("bob", &["read", "--conv", "alice", "--seq", "2"])).await;
    assert!(read.status.success());
    let unread = json(&run(s.cli("bob", &["--json", "unread"])).await);
    assert_eq!(unread["total"], 0);

    // History and contacts.
    let synced = run(s.cli("bob", &["sync", "--all"])).await;
    assert!(stdout(&synced).contains("hello bob") && stdout(&synced).contains("second"));
    let contacts = run(s.cli("alice", &["contacts"])).await;
    assert!(stdout(&contacts).contains("bob"), "{}", stdout(&contacts));
    s.server.shutdown().await;
}

/// The README's quick start: `watch` in one terminal, other commands as the same user in
/// another, all without `--device`. The watch must stay online (a command logging in as the
/// watch's device would replace it).
#[tokio::test]
async fn a_watch_stays_online_while_the_same_user_runs_other_commands() {
    let s = start().await;
    let watch = s
        .cli("bob", &["watch", "--count", "2", "--for", "15"])
        .output();
    let watcher =
        tokio::spawn(async move { tokio::time::timeout(Duration::from_secs(20), watch).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = run(s.cli("alice", &["send", "--to", "bob", "--text", "hello bob"])).await;
    assert!(sent.status.success());
    let unread = json(&run(s.cli("bob", &["--json", "unread"])).await);
    assert_eq!(unread["total"], 1);
    let sent = run(s.cli("alice", &["send", "--to", "bob", "--text", "after unread"])).await;
    assert!(sent.status.success());
    let watched = watcher.await.unwrap().expect("watch ends").unwrap();
    let out = stdout(&watched);
    assert!(
        watched.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&watched.stderr)
    );
    assert!(
        out.contains("hello bob") && out.contains("after unread"),
        "{out}"
    );
    assert!(!out.contains("kicked"), "{out}");
    s.server.shutdown().await;
}

#[tokio::test]
async fn recall_delete_ping_and_server_errors() {
    let s = start().await;
    let ack = json(
        &run(s.cli(
            "alice",
            &["--json", "send", "--to", "bob", "--text", "oops"],
        ))
        .await,
    );
    let msg_id = ack["msg_id"].to_string();
    let recalled = run(s.cli("alice", &["recall", "--to", "bob", "--msg-id", &msg_id])).await;
    assert!(
        recalled.status.success(),
        "{}",
        String::from_utf8_lossy(&recalled.stderr)
    );
    let unread = json(&run(s.cli("bob", &["--json", "unread"])).await);
    assert_eq!(unread["total"], 0, "the recall took back Bob's badge");
    let deleted = run(s.cli("bob", &["delete", "--to", "alice", "--msg-id", &msg_id])).await;
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    let ping = run(s.cli("alice", &["ping"])).await;
    assert!(ping.status.success());
    // Bob may not recall Alice's message: the server's code is printed, the exit is non-zero.
    let refused = run(s.cli("bob", &["recall", "--to", "alice", "--msg-id", &msg_id])).await;
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("FORBIDDEN") && err.contains("14"), "{err}");
    s.server.shutdown().await;
}

#[tokio::test]
async fn group_commands_work_end_to_end() {
    let s = start().await;
    let created = json(
        &run(s.cli(
            "alice",
            &[
                "--json",
                "group",
                "create",
                "--name",
                "team",
                "--members",
                "bob,carol",
            ],
        ))
        .await,
    );
    let group_id = created["group"]["group_id"]
        .as_str()
        .expect("group id")
        .to_owned();
    let sent = run(s.cli("bob", &["send", "--group", &group_id, "--text", "hi team"])).await;
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let history = run(s.cli("carol", &["group", "history", "--group", &group_id])).await;
    assert!(stdout(&history).contains("hi team"), "{}", stdout(&history));
    let members = run(s.cli("carol", &["group", "members", "--group", &group_id])).await;
    assert!(stdout(&members).contains("alice"), "{}", stdout(&members));
    let outsider = run(s.cli("mallory", &["group", "history", "--group", &group_id])).await;
    assert!(!outsider.status.success());
    s.server.shutdown().await;
}

#[tokio::test]
async fn decode_annotates_a_captured_frame() {
    let s = start().await;
    // Capture what the server answers to a HEARTBEAT before login: an ERROR frame.
    let raw = run(s.cli(
        "alice",
        &[
            "raw",
            "--wait",
            "1",
            "000000104d5301000002000000010805d6008e13",
        ],
    ))
    .await;
    assert!(stdout(&raw).contains("NOT_LOGGED_IN"), "{}", stdout(&raw));
    // A capture file of a real frame decodes with every field named.
    let frame = missive_protocol::Frame::new(
        &missive_protocol::Packet::Heartbeat(missive_protocol::pb::Heartbeat {
            client_time_ms: 5,
            ..Default::default()
        }),
        1,
    );
    let capture = s.dir.path().join("capture.bin");
    std::fs::write(&capture, frame.to_bytes()).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_missive"));
    cmd.args(["decode", "--file"]).arg(&capture);
    let decoded = run(cmd).await;
    let out = stdout(&decoded);
    assert!(
        decoded.status.success(),
        "{}",
        String::from_utf8_lossy(&decoded.stderr)
    );
    assert!(
        out.contains("HEARTBEAT") && out.contains("client_time_ms"),
        "{out}"
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn ws_flag_talks_over_a_websocket_on_the_same_port() {
    let s = start().await;
    let watch = s
        .cli(
            "bob",
            &[
                "--ws", "--device", "phone", "watch", "--count", "1", "--for", "15",
            ],
        )
        .output();
    let watcher =
        tokio::spawn(async move { tokio::time::timeout(Duration::from_secs(20), watch).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ack = json(
        &run(s.cli(
            "alice",
            &[
                "--ws",
                "--json",
                "send",
                "--to",
                "bob",
                "--text",
                "over websocket",
            ],
        ))
        .await,
    );
    assert_eq!(ack["seq"], 1);
    let watched = watcher.await.unwrap().expect("watch ends").unwrap();
    assert!(
        watched.status.success(),
        "{}",
        String::from_utf8_lossy(&watched.stderr)
    );
    assert!(
        stdout(&watched).contains("over websocket"),
        "{}",
        stdout(&watched)
    );
    // Ping names the WebSocket address it used.
    let ping = run(s.cli("alice", &["--ws", "ping"])).await;
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stderr)
    );
    let want = format!("ws://{}/ws", s.addr);
    assert!(stdout(&ping).contains(&want), "{}", stdout(&ping));
    s.server.shutdown().await;
}

/// `missive typing` reaches a watching terminal (as a JSON event) and nothing is stored;
/// `missive send --http` sends without a connection, and the same client_msg_id over the
/// socket afterwards is the same message (duplicate).
#[tokio::test]
async fn typing_and_a_send_over_http() {
    // The watch stays idle while it waits: parked, it gets the signal written in place.
    let (server, addr, dir) = common::server(|c| c.park_idle_ms = 10).await;
    let s = Setup { server, addr, dir };
    let watch = s
        .cli("bob", &["--json", "watch", "--count", "1", "--for", "15"])
        .output();
    let watcher =
        tokio::spawn(async move { tokio::time::timeout(Duration::from_secs(20), watch).await });
    tokio::time::sleep(Duration::from_millis(500)).await;

    let typed = run(s.cli("alice", &["typing", "--to", "bob"])).await;
    assert!(
        typed.status.success(),
        "{}",
        String::from_utf8_lossy(&typed.stderr)
    );
    assert!(
        stdout(&typed).contains("SIGNAL_KIND_TYPING"),
        "{}",
        stdout(&typed)
    );
    let to_self = run(s.cli("alice", &["typing", "--to", "alice"])).await;
    assert!(!to_self.status.success());
    let err = String::from_utf8_lossy(&to_self.stderr);
    assert!(err.contains("INVALID_ARGUMENT"), "{err}");

    let args = [
        "--json",
        "send",
        "--to",
        "bob",
        "--text",
        "hi",
        "--client-msg-id",
        "c-h1",
    ];
    let over_http = json(&run(s.cli("alice", &[&args[..], &["--http"]].concat())).await);
    assert_eq!(over_http["duplicate"], false);
    let again = json(&run(s.cli("alice", &args)).await);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["msg_id"], over_http["msg_id"]);

    let watched = watcher.await.unwrap().expect("watch ends").unwrap();
    let lines: Vec<serde_json::Value> = stdout(&watched)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let kinds: Vec<&str> = lines.iter().filter_map(|l| l["event"].as_str()).collect();
    assert_eq!(kinds, ["connected", "signal", "entry"], "{lines:?}");
    assert_eq!(lines[1]["signal"]["from_user"], "alice");
    // One message stored (the typing signal is not an entry, the resend not a second one).
    let synced = json(&run(s.cli("bob", &["--json", "sync"])).await);
    assert_eq!(
        synced["entries"].as_array().map(Vec::len),
        Some(1),
        "{synced}"
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn history_and_receipts_commands() {
    let s = start().await;
    for text in ["one", "two", "three"] {
        let sent = run(s.cli("alice", &["send", "--to", "bob", "--text", text])).await;
        assert!(sent.status.success());
    }
    // Alice waits for bob's read receipt.
    let watch = s
        .cli(
            "alice",
            &[
                "receipts", "--to", "bob", "--watch", "--count", "1", "--for", "15",
            ],
        )
        .output();
    let watcher =
        tokio::spawn(async move { tokio::time::timeout(Duration::from_secs(20), watch).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Bob's newest two, then everything page by page.
    let page = json(
        &run(s.cli(
            "bob",
            &["--json", "history", "--to", "alice", "--limit", "2"],
        ))
        .await,
    );
    let seqs: Vec<u64> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 2]);
    assert_eq!(
        (page["has_more"].as_bool(), page["next_seq"].as_u64()),
        (Some(true), Some(2))
    );
    let all = run(s.cli(
        "bob",
        &["history", "--to", "alice", "--limit", "1", "--all"],
    ))
    .await;
    let out = stdout(&all);
    assert!(
        all.status.success(),
        "{}",
        String::from_utf8_lossy(&all.stderr)
    );
    assert!(
        out.contains("\"one\"") && out.contains("\"two\"") && out.contains("\"three\""),
        "{out}"
    );
    let read = run(s.cli("bob", &["read", "--conv", "alice", "--seq", "3"])).await;
    assert!(read.status.success());
    let watched = watcher.await.unwrap().expect("watch ends").unwrap();
    let out = stdout(&watched);
    assert!(
        watched.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&watched.stderr)
    );
    assert!(out.contains("bob read up to seq 3"), "{out}");
    let positions = json(&run(s.cli("alice", &["--json", "receipts", "--to", "bob"])).await);
    assert_eq!(positions["peer_read_seq"], 3);
    assert_eq!(positions["read_seq"], 3, "alice sent them all");

    // A group: who read message 1.
    let created = json(
        &run(s.cli(
            "alice",
            &[
                "--json",
                "group",
                "create",
                "--name",
                "t",
                "--members",
                "bob,carol",
            ],
        ))
        .await,
    );
    let gid = created["group"]["group_id"].as_str().unwrap().to_owned();
    assert!(
        run(s.cli("alice", &["send", "--group", &gid, "--text", "hi"]))
            .await
            .status
            .success()
    );
    assert!(run(s.cli("bob", &["read", "--group", &gid, "--seq", "1"]))
        .await
        .status
        .success());
    let readers = json(
        &run(s.cli(
            "alice",
            &["--json", "receipts", "--group", &gid, "--seq", "1"],
        ))
        .await,
    );
    assert_eq!(readers["read_by"], serde_json::json!(["bob"]));
    let text = run(s.cli("carol", &["receipts", "--group", &gid, "--seq", "1"])).await;
    assert!(
        stdout(&text).contains("read by 1 member(s): bob"),
        "{}",
        stdout(&text)
    );
    let no_seq = run(s.cli("alice", &["receipts", "--group", &gid])).await;
    assert!(!no_seq.status.success());
    s.server.shutdown().await;
}

#[tokio::test]
async fn block_unblock_and_the_block_list() {
    let s = start().await;
    let blocked = run(s.cli("alice", &["block", "bob"])).await;
    assert_eq!(stdout(&blocked).trim(), "blocked");
    run(s.cli("alice", &["block", "carol"])).await;
    let list = stdout(&run(s.cli("alice", &["blocked", "--limit", "1"])).await);
    assert_eq!(
        list.lines().collect::<Vec<_>>(),
        ["2 blocked in all", "bob", "more: --after bob"]
    );
    let rest = json(&run(s.cli("alice", &["--json", "blocked", "--after", "bob"])).await);
    assert_eq!(rest["user_ids"], serde_json::json!(["carol"]));
    // Bob's message is refused, with the server's code and a non-zero exit.
    let refused = run(s.cli("bob", &["send", "--to", "alice", "--text", "hi"])).await;
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("BLOCKED") && err.contains("24"), "{err}");
    let unblocked = run(s.cli("alice", &["unblock", "bob"])).await;
    assert_eq!(stdout(&unblocked).trim(), "not blocked");
    let sent = run(s.cli("bob", &["send", "--to", "alice", "--text", "hi"])).await;
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    s.server.shutdown().await;
}
