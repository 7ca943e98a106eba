//! `chat --kill-pid --kill-at --kill-signal` against a real single-node `missived`: the harness
//! sends the server SIGTERM 2 s into the window; the test starts it again on the same data
//! directory and port as soon as it has exited; every user must be counted as affected, logged
//! in and served again, and nothing lost or duplicated (the sends waiting across the restart
//! are resent by the clients and acknowledged once). The server is `missived` of the same
//! target directory (built by `cargo test --workspace`), or the binary named by `MISSIVED`.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SECRET: &str = "chat-kill-test-secret-0123456789";

/// The `missived` binary: `MISSIVED`, else the one next to this crate's `missive-load`.
fn missived() -> PathBuf {
    if let Some(path) = std::env::var_os("MISSIVED") {
        return PathBuf::from(path);
    }
    let path = Path::new(env!("CARGO_BIN_EXE_missive-load")).with_file_name("missived");
    assert!(
        path.exists(),
        "no {} (build it: cargo build -p missive --bin missived, or set MISSIVED)",
        path.display()
    );
    path
}

/// A `missived` on `port` over `dir`, killed when dropped.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn start(dir: &Path, port: u16, n: u32) -> Server {
        let log = dir.join(format!("server{n}.log"));
        let out = File::create(&log).expect("server log");
        let child = Command::new(missived())
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir.join("data"))
            .args(["--secret", SECRET, "--http-listen", "", "--log", "warn"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("missived starts");
        let mut server = Server { child, log };
        let log = server.log.clone();
        common::wait_listening(
            &mut server.child,
            port,
            Duration::from_secs(20),
            "missived",
            || std::fs::read_to_string(&log).unwrap_or_default(),
        );
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_server_stopped_by_sigterm_and_started_again_serves_every_user_again_with_nothing_lost() {
    let port = common::free_port();
    let dir = common::test_dir("missive-load-kill-test", port);
    let mut first = Server::start(&dir, port, 1);
    let (users, rate, duration) = (20u64, 200u64, 6u64);
    let (out, err) = (dir.join("load.out"), dir.join("load.err"));
    let mut load = Command::new(env!("CARGO_BIN_EXE_missive-load"))
        .args(["chat", "--addr", &format!("127.0.0.1:{port}")])
        .args(["--secret", SECRET, "--threads", "1", "--json"])
        .args(["--users", &users.to_string(), "--rate", &rate.to_string()])
        .args(["--duration", &duration.to_string(), "--grace", "10"])
        .args([
            "--kill-pid",
            &first.child.id().to_string(),
            "--kill-at",
            "2",
        ])
        .args(["--kill-signal", "TERM"])
        .stdin(Stdio::null())
        .stdout(File::create(&out).expect("load.out"))
        .stderr(File::create(&err).expect("load.err"))
        .spawn()
        .expect("missive-load starts");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    // The harness stops the server; it is started again once it has exited.
    let status = common::wait_exit(
        &mut first.child,
        Duration::from_secs(20),
        "missived",
        || {
            let _ = load.kill();
            read(&err)
        },
    );
    assert!(status.success(), "SIGTERM is a graceful stop: {status}");
    let second = Server::start(&dir, port, 2);
    let status = common::wait_exit(&mut load, Duration::from_secs(40), "missive-load", || {
        read(&err)
    });
    let (stdout, stderr) = (read(&out), read(&err));
    assert!(
        status.success(),
        "missive-load chat failed ({status}):\n{stderr}\nserver: {}{}",
        first.log(),
        second.log()
    );
    let r = common::summary(&stdout, &stderr);
    let n = |key: &str| common::number(&r, key);
    let s = |key: &str| {
        r[key]
            .as_f64()
            .unwrap_or_else(|| panic!("no {key:?} in the summary: {r}"))
    };
    let total = rate * duration;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["kill signal"], "TERM", "{r}");
    assert!((2.0..3.0).contains(&s("kill sent at")), "{r}");
    // Every connection was on the server stopped.
    assert_eq!(n("users affected"), users, "{r}");
    assert_eq!(n("users logged in again"), users, "{r}");
    assert_eq!(n("users served again"), users, "{r}");
    let (median, max) = (s("served again median"), s("served again max"));
    assert!(0.0 < median && median <= max, "{r}");
    assert!(s("logged in again max") <= max, "{r}");
    // The restart, then the clients' backoff (1 s, then 2 s, 4 s, full jitter).
    assert!(max < 15.0, "{r}");
    assert_eq!(n("sent"), total);
    assert_eq!(
        n("acked"),
        total,
        "every send acked once, across the restart: {r}"
    );
    assert_eq!(n("delivered"), total, "{r}");
    assert_eq!(n("send errors"), 0);
    assert_eq!(n("unanswered at end"), 0);
    assert_eq!(n("lost (acked, never delivered)"), 0);
    assert_eq!(n("stored twice in an inbox"), 0);
    assert_eq!(n("duplicated deliveries"), 0);
    assert_eq!(n("delivered but not acked"), 0);
    assert!(n("client reconnects") >= users, "{r}");
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
}
