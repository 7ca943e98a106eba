//! What the harness's tests share: a port and a directory for a test, waiting for the
//! processes it starts (a server to listen, a process to exit), and reading the harness's JSON
//! summary.

use std::net::TcpStream;
use std::process::Child;
use std::time::{Duration, Instant};

/// Waits until something listens on `127.0.0.1:port`, at most `limit`; panics, with `log()`, if
/// `child` (the `what` process) exits first or nothing listens in time.
pub fn wait_listening(
    child: &mut Child,
    port: u16,
    limit: Duration,
    what: &str,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}): {}", log());
        }
        assert!(
            Instant::now() < deadline,
            "{what} not listening on {port} after {limit:?}: {}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A fresh directory for test `name` on `port` under the system's temporary directory.
pub fn test_dir(name: &str, port: u16) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test directory");
    dir
}

/// Waits for `child` (the `what` process) to exit, at most `limit`; its status. Past the limit
/// it is killed, and the test fails with `log()`.
pub fn wait_exit(
    child: &mut Child,
    limit: Duration,
    what: &str,
    log: impl FnOnce() -> String,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("the child's status") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after {limit:?}: {}", log());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The JSON summary `missive-load --json` printed on `stdout` (`stderr` for the failure).
pub fn summary(stdout: &str, stderr: &str) -> serde_json::Value {
    serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("summary is not JSON ({e}): {stdout}\n{stderr}"))
}

/// The whole number `key` of summary `r`.
pub fn number(r: &serde_json::Value, key: &str) -> u64 {
    r[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key:?} in the summary: {r}"))
}
