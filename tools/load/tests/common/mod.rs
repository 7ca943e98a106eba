//! What the harness's tests share: waiting for a server process they started.

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
