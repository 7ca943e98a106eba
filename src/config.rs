//! Settings. Each has a default; a TOML file overrides defaults, the environment overrides the
//! file, and flags override the environment.

use std::path::{Path, PathBuf};

use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::store::Durability;

mod api;
mod env;

pub use api::parse_host_port;

/// The effective configuration of a server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Addresses to listen on; every one speaks the binary protocol.
    pub listen: Vec<String>,
    /// Where RocksDB and the generated secret live; created on first start.
    pub data_dir: PathBuf,
    /// Shared secret for login tokens. If unset, `<data_dir>/secret` is used, generated on first
    /// start with owner-only permissions.
    pub secret: Option<String>,
    /// `sync`: fsync the write-ahead log (group commit) before acknowledging; `async`: don't.
    pub durability: Durability,
    /// Heartbeat interval told to clients; silent connections close after about twice this.
    pub heartbeat_secs: u32,
    /// A connection must log in within this time.
    pub login_timeout_ms: u64,
    /// First retransmit of an unacknowledged push after this long; then doubling.
    pub ack_timeout_ms: u64,
    /// Retransmits of one push before the connection is closed.
    pub max_retransmits: u32,
    /// Devices one user may have online at once; the oldest is kicked beyond this.
    pub max_devices_per_user: usize,
    /// Largest frame length field accepted.
    pub max_frame_len: usize,
    /// Largest message content accepted.
    pub max_content_len: usize,
    /// Frames queued for one connection before it counts as a slow consumer and is closed.
    pub outbound_queue: usize,
    /// How long after sending a message its sender can recall it.
    pub recall_window_secs: u64,
    /// Reply bodies at least this large are zlib-compressed.
    pub compress_threshold: usize,
    /// Groups with at most this many members use write fan-out (an inbox entry per member);
    /// larger groups use read fan-out (one write per message; members pull the group log).
    pub fanout_threshold: usize,
    /// Largest number of members in one group.
    pub max_group_size: usize,
    /// Most groups one user can belong to; adding a user beyond it is LIMIT_EXCEEDED.
    pub max_groups_per_user: usize,
    /// Open connections in total; beyond it new connections get SERVER_BUSY.
    pub max_connections: usize,
    /// Open connections from one source address (phones behind one carrier NAT share one).
    pub max_connections_per_ip: usize,
    /// Logins per second, server-wide (token bucket with a burst of one second's worth);
    /// beyond it a login gets SERVER_BUSY with a retry delay. Only LOGINs with a valid token
    /// count: the token is checked first.
    pub logins_per_sec: u32,
    /// Failed logins (bad tokens, undecodable LOGINs, frames before LOGIN, framing errors
    /// before login) per second allowed to one source address (an IPv6 address's /64), after
    /// a burst of `login_failures_burst`; while an address is over it, its new connections are
    /// refused at accept with SERVER_BUSY.
    pub login_failures_per_sec: u32,
    /// The burst of `login_failures_per_sec`.
    pub login_failures_burst: u32,
    /// Changes per second per connection (token bucket, burst twice the rate): a SEND,
    /// MARK_READ, RECALL, DELETE or group change costs 1, a GROUP_CREATE or GROUP_JOIN 1 more per
    /// user id it names; beyond it the request gets RATE_LIMITED with a retry delay.
    pub sends_per_sec: u32,
    /// A frame whose first bytes arrived must be complete within this time (slow senders).
    pub frame_timeout_ms: u64,
    /// A logged-in connection with nothing in flight for this long is parked: it keeps its
    /// socket and its place with the router but gives up its task, timer and buffers until a
    /// frame arrives or something is queued for it. 0: never parked.
    pub park_idle_ms: u64,
    /// Threads serving connections (the runtime's workers). 0: one per core less one, at
    /// least one, since the store's writer and committer threads keep a core busy of their own
    /// under load (see [`Config::worker_threads`]).
    pub worker_threads: usize,
    /// TLS certificate chain (PEM). With `tls_key`, every listener also accepts TLS.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Whether the plain (unencrypted) binary protocol is accepted; `false` needs TLS.
    pub allow_plain: bool,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `missive=debug`.
    pub log: String,

    // ---- Server API, metrics and drain (src/http/, src/drain.rs) ----
    /// Address of the HTTP API for the app's backend (`/v1/...`, `/healthz`, `/readyz`,
    /// `/metrics`); empty: no HTTP API.
    pub http_listen: String,
    /// Bearer key of the HTTP API. Unset: every `/v1` call is refused (health, readiness and
    /// metrics still answer).
    pub api_key: Option<String>,
    /// The user id that API sends without a `from` are sent as.
    pub system_user: String,
    /// Connections moved away per second while draining (SIGUSR1 or `POST /v1/drain`).
    pub drain_rate_per_sec: u32,
    /// `host:port` told to drained clients (KICK REDIRECT); empty: reconnect to the same address.
    pub drain_redirect: String,
    /// `reconnect_after_ms` of the drain's KICK REDIRECT.
    pub drain_reconnect_after_ms: u32,
    /// An API connection must deliver a complete request head (request line and headers)
    /// within this time of opening or of its previous answer, else it is closed; so an idle
    /// keep-alive connection is closed after this long too.
    pub http_header_timeout_ms: u64,
    /// A request body must arrive whole within this time of its head, else 408 and close.
    pub http_body_timeout_ms: u64,
    /// Open API connections at once; beyond it a new connection is answered 503 SERVER_BUSY and
    /// closed.
    pub http_max_connections: usize,
    // ---- end of server API settings ----
    // ---- Offline push, WebSocket fallback, entry point (README "Offline push", "Entry point") --
    /// Webhook notified (HTTP POST) of messages for users with no online device; empty: no
    /// offline push, nothing is queued.
    pub push_webhook_url: String,
    /// HMAC-SHA256 key of the webhook's `X-Missive-Signature` header (at least 16 characters;
    /// needed when `push_webhook_url` is set).
    pub push_webhook_secret: String,
    /// What a notification says of the message: `none`, `type` (content type) or `text` (also
    /// the content, cut to `push::PREVIEW_CHARS` characters).
    pub push_preview: crate::push::Preview,
    /// Tries of one notification before it is dropped (and counted).
    pub push_max_attempts: u32,
    /// A notification not delivered this long after its message was stored is dropped.
    pub push_max_age_secs: u64,
    /// Wait before the first retry; then doubling, up to `push_retry_max_ms`.
    pub push_retry_initial_ms: u64,
    pub push_retry_max_ms: u64,
    /// One webhook request (connect, send, answer) may take this long.
    pub push_timeout_ms: u64,
    /// What `GET /v1/entry` tells clients to try, in order: `tls://`, `tcp://`, `wss://` or
    /// `ws://` URLs (`wss://host:443/ws`). Empty: derived from `listen` and the TLS settings,
    /// with the host the client asked for.
    pub entry_addresses: Vec<String>,
    /// Reconnect backoff told to clients by `GET /v1/entry` (PROTOCOL.md section 21).
    pub reconnect_initial_ms: u64,
    pub reconnect_max_ms: u64,
    // ---- end of offline push, WebSocket fallback, entry point --------------------------------
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec!["0.0.0.0:443".into(), "0.0.0.0:80".into()],
            data_dir: PathBuf::from("missive-data"),
            secret: None,
            durability: Durability::Sync,
            heartbeat_secs: 30,
            login_timeout_ms: 10_000,
            ack_timeout_ms: 5_000,
            max_retransmits: 3,
            max_devices_per_user: 5,
            max_frame_len: missive_protocol::DEFAULT_MAX_FRAME_LEN,
            max_content_len: 64 * 1024,
            outbound_queue: 1024,
            recall_window_secs: 120,
            compress_threshold: 1024,
            fanout_threshold: 100,
            max_group_size: 10_000,
            max_groups_per_user: 1_000,
            max_connections: 100_000,
            max_connections_per_ip: 5_000,
            logins_per_sec: 2_000,
            login_failures_per_sec: 10,
            login_failures_burst: 100,
            sends_per_sec: 2_000,
            frame_timeout_ms: 30_000,
            park_idle_ms: 100,
            worker_threads: 0,
            tls_cert: None,
            tls_key: None,
            allow_plain: true,
            log: "info".into(),
            // Server API, metrics and drain.
            http_listen: "127.0.0.1:8080".into(),
            api_key: None,
            system_user: "system".into(),
            drain_rate_per_sec: 500,
            drain_redirect: String::new(),
            drain_reconnect_after_ms: 1000,
            http_header_timeout_ms: 10_000,
            http_body_timeout_ms: 10_000,
            http_max_connections: 1024,
            // Offline push, WebSocket fallback, entry point.
            push_webhook_url: String::new(),
            push_webhook_secret: String::new(),
            push_preview: crate::push::Preview::Type,
            push_max_attempts: 10,
            push_max_age_secs: 86_400,
            push_retry_initial_ms: 1_000,
            push_retry_max_ms: 300_000,
            push_timeout_ms: 10_000,
            entry_addresses: Vec::new(),
            reconnect_initial_ms: 1_000,
            reconnect_max_ms: 60_000,
        }
    }
}

/// Command-line flags of `missived`; each also reads an environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "missived",
    version,
    about = "The Missive instant-messaging server"
)]
pub struct Args {
    /// TOML configuration file (settings as in README.md).
    #[arg(long, env = "MISSIVE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (repeat, or comma-separate in the environment).
    #[arg(long, env = "MISSIVE_LISTEN", value_delimiter = ',')]
    pub listen: Vec<String>,
    /// Data directory.
    #[arg(long, env = "MISSIVE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Token secret.
    #[arg(long, env = "MISSIVE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Durability: sync or async.
    #[arg(long, env = "MISSIVE_DURABILITY")]
    pub durability: Option<String>,
    /// Heartbeat interval in seconds.
    #[arg(long, env = "MISSIVE_HEARTBEAT_SECS")]
    pub heartbeat_secs: Option<u32>,
    /// Log filter, e.g. info or missive=debug.
    #[arg(long, env = "MISSIVE_LOG")]
    pub log: Option<String>,
    /// TLS certificate chain (PEM file).
    #[arg(long, env = "MISSIVE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM file).
    #[arg(long, env = "MISSIVE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// HTTP API address (empty: no HTTP API).
    #[arg(long, env = "MISSIVE_HTTP_LISTEN")]
    pub http_listen: Option<String>,
    /// HTTP API key (Authorization: Bearer KEY).
    #[arg(long, env = "MISSIVE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Connections moved away per second while draining.
    #[arg(long, env = "MISSIVE_DRAIN_RATE_PER_SEC")]
    pub drain_rate_per_sec: Option<u32>,
    /// Print the effective configuration as TOML (secrets redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// A configuration that cannot be used; the message names the setting.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Defaults, then the file, then `MISSIVE_<SETTING>` environment variables, then flags.
    pub fn load(args: &Args) -> Result<Config, ConfigError> {
        Config::load_with_env(args, std::env::vars())
    }

    /// [`Config::load`] with the environment given (`(name, value)` pairs).
    pub fn load_with_env(
        args: &Args,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let config = match &args.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        let mut config = config.with_env(env)?;
        if !args.listen.is_empty() {
            config.listen = args.listen.clone();
        }
        if let Some(d) = &args.data_dir {
            config.data_dir = d.clone();
        }
        if let Some(s) = &args.secret {
            config.secret = Some(s.clone());
        }
        if let Some(d) = &args.durability {
            config.durability = match d.as_str() {
                "sync" => Durability::Sync,
                "async" => Durability::Async,
                other => {
                    return Err(ConfigError(format!(
                        "durability: {other:?} is not \"sync\" or \"async\""
                    )))
                }
            };
        }
        if let Some(h) = args.heartbeat_secs {
            config.heartbeat_secs = h;
        }
        if let Some(l) = &args.log {
            config.log = l.clone();
        }
        if let Some(c) = &args.tls_cert {
            config.tls_cert = Some(c.clone());
        }
        if let Some(k) = &args.tls_key {
            config.tls_key = Some(k.clone());
        }
        if let Some(h) = &args.http_listen {
            config.http_listen = h.clone();
        }
        if let Some(k) = &args.api_key {
            config.api_key = Some(k.clone()).filter(|k| !k.is_empty());
        }
        if let Some(r) = args.drain_rate_per_sec {
            config.drain_rate_per_sec = r;
        }
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
    }

    /// The threads to serve connections with: `worker_threads`, or if 0, the cores this process
    /// may use less one (at least one). The store's writer and committer are threads of their
    /// own, busy under load; on a 2-core box two connection threads as well made the four
    /// compete for both cores, and `chat` at capacity did fewer messages (BENCHMARKS.md).
    pub fn worker_threads(&self) -> usize {
        if self.worker_threads > 0 {
            return self.worker_threads;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        cores.saturating_sub(1).max(1)
    }

    /// Checks every setting's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: &str| Err(ConfigError(what.to_owned()));
        if self.listen.is_empty() {
            return bad("listen: at least one address is needed");
        }
        for addr in &self.listen {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError(format!(
                    "listen: {addr:?} is not an address like 0.0.0.0:443"
                )));
            }
        }
        if self.heartbeat_secs == 0 || self.heartbeat_secs > 3600 {
            return bad("heartbeat_secs: must be 1..=3600");
        }
        if self.max_frame_len < 1024 || self.max_frame_len > 64 << 20 {
            return bad("max_frame_len: must be 1024..=67108864");
        }
        // A reply page holds up to half a frame plus one whole message.
        if self.max_content_len == 0 || self.max_content_len > self.max_frame_len / 2 - 1024 {
            return bad("max_content_len: must be 1..=(max_frame_len / 2 - 1024)");
        }
        if self.outbound_queue < 16 {
            return bad("outbound_queue: must be at least 16");
        }
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return bad("max_connections and max_connections_per_ip: must be at least 1");
        }
        if self.logins_per_sec == 0 || self.sends_per_sec == 0 || self.frame_timeout_ms == 0 {
            return bad("logins_per_sec, sends_per_sec and frame_timeout_ms: must be above 0");
        }
        if self.login_failures_per_sec == 0 || self.login_failures_burst == 0 {
            return bad("login_failures_per_sec and login_failures_burst: must be above 0");
        }
        if self.worker_threads > 1024 {
            return bad("worker_threads: must be 0..=1024 (0: one per core less one)");
        }
        if self.park_idle_ms > 3_600_000 {
            return bad("park_idle_ms: must be 0..=3600000 (0: never park)");
        }
        if self.max_group_size < 2 || self.fanout_threshold == 0 {
            return bad("max_group_size: at least 2; fanout_threshold: at least 1");
        }
        if !(1..=100_000).contains(&self.max_groups_per_user) {
            return bad("max_groups_per_user: 1 to 100000");
        }
        if self.max_devices_per_user == 0 {
            return bad("max_devices_per_user: must be at least 1");
        }
        if self.login_timeout_ms == 0 || self.ack_timeout_ms == 0 {
            return bad("login_timeout_ms and ack_timeout_ms: must be above 0");
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) | (None, Some(_)) => {
                return bad("tls_cert and tls_key: set both or neither")
            }
            (None, None) if !self.allow_plain => {
                return bad("allow_plain: false needs tls_cert and tls_key")
            }
            _ => {}
        }
        if let Some(s) = &self.secret {
            if s.len() < 16 {
                return bad("secret: must be at least 16 characters");
            }
        }
        crate::push::validate(self)?;
        crate::web::validate(self)?;
        self.validate_api()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("missived").chain(list.iter().copied()))
            .expect("flags parse")
    }

    #[test]
    fn flag_beats_file_and_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.toml");
        std::fs::write(
            &file,
            "listen = [\"127.0.0.1:7000\"]\nheartbeat_secs = 12\nrecall_window_secs = 5\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let from_file = Config::load(&args(&["--config", path])).unwrap();
        assert_eq!(from_file.listen, vec!["127.0.0.1:7000"]);
        assert_eq!(from_file.heartbeat_secs, 12);
        assert_eq!(from_file.recall_window_secs, 5);
        assert_eq!(from_file.max_devices_per_user, 5, "default kept");
        let flagged = Config::load(&args(&[
            "--config",
            path,
            "--heartbeat-secs",
            "7",
            "--listen",
            "127.0.0.1:7001",
        ]))
        .unwrap();
        assert_eq!(flagged.heartbeat_secs, 7);
        assert_eq!(flagged.listen, vec!["127.0.0.1:7001"]);
        assert_eq!(flagged.recall_window_secs, 5);
    }

    #[test]
    fn worker_threads_leave_a_core_to_the_store_unless_set() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let auto = Config::default();
        assert_eq!(auto.worker_threads(), (cores - 1).max(1));
        let set = Config {
            worker_threads: 3,
            ..Config::default()
        };
        assert_eq!(set.worker_threads(), 3);
        let env = [("MISSIVE_WORKER_THREADS".to_string(), "2".to_string())];
        let from_env = Config::load_with_env(&args(&[]), env).unwrap();
        assert_eq!(from_env.worker_threads(), 2);
    }

    #[test]
    fn redirect_targets_are_host_and_port() {
        assert_eq!(
            parse_host_port("missive-2.example:443"),
            Some(("missive-2.example".into(), 443))
        );
        assert_eq!(parse_host_port("[::1]:7000"), Some(("::1".into(), 7000)));
        for bad in ["", "host", "host:", ":443", "host:0", "host:70000", "a b:1"] {
            assert_eq!(parse_host_port(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bad_settings_name_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.toml");
        std::fs::write(&file, "heartbeat_sec = 3\n").unwrap();
        let err = Config::load(&args(&["--config", file.to_str().unwrap()])).unwrap_err();
        assert!(err.to_string().contains("heartbeat_sec"), "{err}");
        let err = Config::load(&args(&["--durability", "maybe"])).unwrap_err();
        assert!(err.to_string().contains("durability"), "{err}");
        let err = Config::load(&args(&["--heartbeat-secs", "0"])).unwrap_err();
        assert!(err.to_string().contains("heartbeat_secs"), "{err}");
        let err = Config::load(&args(&["--listen", "nowhere"])).unwrap_err();
        assert!(err.to_string().contains("listen"), "{err}");
    }
}
