//! Shared helpers for the end-to-end tests: a real missived on 127.0.0.1 over a real RocksDB in a
//! temp dir, and clients from `missive-client`.
#![allow(dead_code)]

pub mod chat;
pub mod http;
pub mod nats;
pub mod observe;
pub mod primary;

use std::time::Duration;

use missive::config::Config;
use missive::store::Durability;
use missive::{Server, ServerHandle};
use missive_client::{pb, Client, ClientConfig, ClientEvent, Connection};
use tempfile::TempDir;
use tokio::sync::mpsc::UnboundedReceiver;

pub const SECRET: &str = "test-secret-0123456789abcdef";

/// A server under test. The temp dir outlives the store: the server is stopped first.
pub struct TestServer {
    handle: Option<ServerHandle>,
    pub config: Config,
    pub addr: String,
    pub dir: TempDir,
}

/// A config for tests: loopback, an OS-chosen port, a temp data dir, a fixed secret.
pub fn test_config(dir: &TempDir) -> Config {
    Config {
        listen: vec!["127.0.0.1:0".into()],
        data_dir: dir.path().to_path_buf(),
        secret: Some(SECRET.into()),
        durability: Durability::Async,
        // No HTTP API unless a test asks for one (`TestServer::start_http`).
        http_listen: String::new(),
        ..Config::default()
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// Starts with the test config changed by `tweak`.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(&dir);
        tweak(&mut config);
        let handle = Server::start(config.clone()).await.expect("server starts");
        let addr = handle.local_addrs()[0].to_string();
        TestServer {
            handle: Some(handle),
            config,
            addr,
            dir,
        }
    }

    /// Starts with the HTTP API on an OS-chosen loopback port and `http::API_KEY`, the test
    /// config changed by `tweak`.
    pub async fn start_api(tweak: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::start_with(|c| {
            c.http_listen = "127.0.0.1:0".into();
            c.api_key = Some(http::API_KEY.into());
            tweak(c);
        })
        .await
    }

    /// A client of the HTTP API with the test key.
    pub fn api(&self) -> http::Api {
        let addr = self.handle().http_addr().expect("the HTTP API is on");
        http::Api::new(addr, Some(http::API_KEY))
    }

    pub fn handle(&self) -> &ServerHandle {
        self.handle.as_ref().expect("server running")
    }

    /// Stops the server (clean shutdown) and starts it again on the same data dir and port.
    pub async fn restart(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
        let mut config = self.config.clone();
        config.listen = vec![self.addr.clone()];
        let handle = Server::start(config).await.expect("server restarts");
        self.handle = Some(handle);
    }

    pub async fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }

    /// Sessions parked now (`park_idle_ms`), from the server's counters.
    pub fn parked_now(&self) -> u64 {
        let m = self.handle().metrics();
        m.sessions_parked.get() - m.sessions_revived.get()
    }

    /// Waits until exactly `n` sessions are parked (at most 5 s).
    pub async fn wait_parked(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.parked_now() != n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} sessions parked after 5 s, expected {n}",
                self.parked_now()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn token(&self, user: &str, device: &str) -> String {
        let expires = (missive::now_ms() / 1000) as u64 + 3600;
        missive_protocol::token::mint(SECRET.as_bytes(), user, device, expires)
    }

    /// `user`'s current inbox version, as stored.
    pub fn current_version(&self, user: &str) -> u64 {
        let core = self.handle().store().core();
        core.current_version(user).expect("store read")
    }

    /// A raw connection, not logged in.
    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.addr).await.expect("connects")
    }

    /// A raw connection logged in as `user` on `device`.
    pub async fn login(&self, user: &str, device: &str) -> (Connection, pb::LoginAck) {
        let mut conn = self.connect().await;
        let ack = conn
            .login(&self.token(user, device), device, 0)
            .await
            .expect("login succeeds");
        (conn, ack)
    }

    /// A reliable client (no automatic reconnect) and its event stream.
    pub async fn client(
        &self,
        user: &str,
        device: &str,
    ) -> (Client, UnboundedReceiver<ClientEvent>) {
        let mut cfg = ClientConfig::new(&self.addr, self.token(user, device), device);
        cfg.auto_reconnect = false;
        let mut client = Client::connect(cfg).await.expect("client connects");
        let events = client.events().expect("events");
        (client, events)
    }
}

/// Waits for the next inbox entry from a client's events (skipping other events).
pub async fn next_entry(events: &mut UnboundedReceiver<ClientEvent>) -> pb::InboxEntry {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(ClientEvent::Entry(e))) => return e,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("client event stream ended"),
            Err(_) => panic!("no entry within 10 s"),
        }
    }
}

/// The message in an entry, or a panic naming what it was instead.
pub fn message(entry: &pb::InboxEntry) -> &pb::Message {
    match &entry.body {
        Some(pb::inbox_entry::Body::Message(m)) => m,
        other => panic!("expected a message entry, got {other:?}"),
    }
}

/// Every entry of `user`'s inbox after `since`, through raw SYNC pages.
pub async fn sync_all(conn: &mut Connection, since: u64) -> Vec<pb::InboxEntry> {
    let mut out = Vec::new();
    let mut since = since;
    loop {
        let reply = conn
            .request(missive_protocol::Packet::Sync(pb::Sync {
                since_version: since,
                limit: 0,
            }))
            .await
            .expect("sync");
        let missive_protocol::Packet::SyncAck(page) = reply else {
            panic!("expected SYNC_ACK, got {reply:?}");
        };
        since = page.new_version;
        out.extend(page.entries);
        if !page.has_more {
            return out;
        }
    }
}

/// A `missived` child process, killed when dropped (also when the test panics).
pub struct Daemon(pub std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `n` deterministic bytes that do not compress (an xorshift from `seed`).
pub fn noise(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    l.local_addr().expect("its address").port()
}

/// A loopback port for a server that stops and starts again on it: one below the range the
/// kernel picks outgoing connections' ports from (`free_port`'s are in it, and while the server
/// is down, or not started yet, a connection's local port may take such a port), that nothing
/// listens on now and that this process has not handed out before.
pub fn restart_port() -> u16 {
    static HANDED: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let low: u16 = range
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(32768);
    assert!(
        low > 12_000,
        "no room below the ephemeral ports ({range:?})"
    );
    let mut handed = HANDED.lock().unwrap();
    // Spread by the process id and the time, so that test processes running at once rarely
    // try the same ports.
    let mut x = ((u64::from(std::process::id()) << 32) ^ missive::now_ms() as u64) | 1;
    loop {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 10_000 + (x % u64::from(low - 10_000)) as u16;
        if handed.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.push(port);
            return port;
        }
    }
}

/// Connects to a server that may still be starting (up to 30 s) and logs in as `user` on device
/// `d`.
pub async fn connect_when_up(addr: &str, user: &str) -> Connection {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut conn = loop {
        if let Ok(c) = Connection::connect(addr).await {
            break c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "missived did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let expires = (missive::now_ms() / 1000) as u64 + 600;
    let token = missive_protocol::token::mint(SECRET.as_bytes(), user, "d", expires);
    conn.login(&token, "d", 0).await.expect("login succeeds");
    conn
}
