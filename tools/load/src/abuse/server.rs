//! A fresh `missived` per attack: loopback, a temp data directory, a fixed secret, async
//! durability, the HTTP API on with a key; stopped (and its directory removed) when dropped.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::common::{cpu_secs, vm_rss_kib};

/// The token secret every abuse server is started with (the harness mints its tokens with it).
pub const SECRET: &str = "abuse-secret-0123456789";
/// The Server API key.
pub const API_KEY: &str = "abuse-api-key-0123456789";
/// Durability of every abuse server: `async` (the WAL is written, not fsynced), so that the
/// virtual disk's fsync time does not hide what the attacks cost in CPU and memory.
pub const DURABILITY: &str = "async";

/// A token for `user` on `device`, valid for a day, signed with [`SECRET`].
pub fn token(user: &str, device: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    missive_protocol::token::mint(SECRET.as_bytes(), user, device, now + 86_400)
}

pub struct ServerProc {
    child: Option<Child>,
    pub pid: u32,
    /// The binary protocol (and WebSocket) address.
    pub addr: String,
    /// The Server API address.
    pub http_addr: String,
    dir: PathBuf,
    keep: bool,
}

/// Fails clearly when the binary is not there (or not a file).
pub fn check_binary(bin: &Path) -> Result<()> {
    let meta = std::fs::metadata(bin).with_context(|| {
        format!(
            "--server-bin {}: no such file (build it: cargo build --release --bin missived -p missive)",
            bin.display()
        )
    })?;
    if !meta.is_file() {
        bail!("--server-bin {}: not a file", bin.display());
    }
    Ok(())
}

/// A loopback port nobody listens on now (the kernel's choice; freed again before the server
/// binds it, which another process could take in between: the start then fails and says so).
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

impl ServerProc {
    /// Starts `bin` for `attack` under `work` and waits until both of its ports accept.
    pub fn start(bin: &Path, work: &Path, attack: &str, keep: bool) -> Result<ServerProc> {
        check_binary(bin)?;
        let dir = work.join(format!("missive-abuse-{}-{attack}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let port = free_port()?;
        let mut http_port = free_port()?;
        while http_port == port {
            http_port = free_port()?;
        }
        let addr = format!("127.0.0.1:{port}");
        let http_addr = format!("127.0.0.1:{http_port}");
        let log = std::fs::File::create(dir.join("server.log"))?;
        let mut cmd = Command::new(bin);
        cmd.arg("--listen")
            .arg(&addr)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--secret")
            .arg(SECRET)
            .arg("--durability")
            .arg(DURABILITY)
            .arg("--http-listen")
            .arg(&http_addr)
            .arg("--api-key")
            .arg(API_KEY)
            .arg("--log")
            .arg("warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Every other setting at its default, whatever this shell's MISSIVE_* variables say:
        // the attacks are measured against the shipped defaults.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("MISSIVE_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut server = ServerProc {
            pid: child.id(),
            child: Some(child),
            addr,
            http_addr,
            dir,
            keep,
        };
        server.wait_ready(Duration::from_secs(30))?;
        Ok(server)
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                bail!(
                    "missived exited at start ({status}); its log:\n{}",
                    self.log_tail()
                );
            }
            let up = |a: &str| {
                a.parse()
                    .ok()
                    .and_then(|sa| TcpStream::connect_timeout(&sa, Duration::from_millis(200)).ok())
                    .is_some()
            };
            if up(&self.addr) && up(&self.http_addr) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "missived did not listen on {} and {} within {limit:?}; its log:\n{}",
                    self.addr,
                    self.http_addr,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `Some(status)` once the process has ended.
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    pub fn rss_kib(&self) -> Option<u64> {
        vm_rss_kib(&self.pid.to_string())
    }

    /// Peak resident memory since start (VmHWM), KiB.
    pub fn hwm_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// CPU seconds (user + system) since start.
    pub fn cpu_secs(&self) -> Option<f64> {
        cpu_secs(&self.pid.to_string())
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Lines of the server's log with WARN or ERROR, counted (for the report: a server that
    /// complained is worth a look).
    pub fn log_warnings(&self) -> usize {
        let text = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .count()
    }

    /// SIGTERM, then up to 15 s for a clean stop, then SIGKILL. Returns how it ended.
    pub fn stop(&mut self) -> String {
        let Some(mut child) = self.child.take() else {
            return "already stopped".into();
        };
        if let Ok(Some(status)) = child.try_wait() {
            return format!("had exited by itself ({status})");
        }
        // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return format!("stopped ({status})");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        "killed after 15 s without stopping on SIGTERM".into()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        self.stop();
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The server's resident memory once it has stopped changing by itself (two readings 200 ms
/// apart agree; at most `limit`): the allocator and RocksDB settle after a burst of work, and
/// "before" and "after" are read that way.
pub async fn settled_rss_kib(server: &ServerProc, limit: Duration) -> Option<u64> {
    let deadline = Instant::now() + limit;
    let mut last = server.rss_kib()?;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = server.rss_kib()?;
        if now == last {
            break;
        }
        last = now;
    }
    Some(last)
}

/// A gauge or counter of the server's `/metrics` (summed over its label sets), if it answers
/// within 2 s.
pub async fn metric(http_addr: &str, name: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(http_addr).await.ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: missive\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).await.ok()?;
        Some(text)
    };
    let text = tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .ok()??;
    metric_value(&text, name)
}

/// The sum of `name`'s samples in a Prometheus text page.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value: f64 = rest.rsplit(' ').next()?.trim().parse().ok()?;
        found = Some(found.unwrap_or(0.0) + value);
    }
    found
}

/// Samples the server's RSS every 50 ms on a thread of its own (the attack's runtime may be
/// too busy to sample on time); `finish` gives the samples.
pub struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(Instant, u64)>>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        use std::sync::atomic::Ordering::Relaxed;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let pid = pid.to_string();
            let mut out = Vec::new();
            while !s.load(Relaxed) {
                if let Some(kib) = vm_rss_kib(&pid) {
                    out.push((Instant::now(), kib));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            out
        });
        RssSampler { stop, thread }
    }

    pub fn finish(self) -> Vec<(Instant, u64)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_by_name() {
        let page = "# TYPE missive_connections gauge\nmissive_connections 7\n\
                    missive_connections_accepted_total 90\n\
                    missive_logins_total{result=\"ok\"} 3\nmissive_logins_total{result=\"SERVER_BUSY\"} 4\n";
        assert_eq!(metric_value(page, "missive_connections"), Some(7.0));
        assert_eq!(metric_value(page, "missive_logins_total"), Some(7.0));
        assert_eq!(metric_value(page, "missive_sessions"), None);
    }
}
