//! The settings, their defaults and the error that names a bad one.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::store::Durability;

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
    /// Where `POST /v1/backups` writes backups (docs/operations.md, "Backup and restore"), one
    /// directory each. Empty: `<data_dir>-backups`, next to the data directory
    /// ([`Config::backup_path`]). Never inside `data_dir`.
    pub backup_dir: PathBuf,
    /// `sync`: fsync the write-ahead log (group commit) before acknowledging; `async`: don't.
    pub durability: Durability,
    /// Heartbeat interval told to clients that propose none; a connection silent for twice its
    /// interval is closed.
    pub heartbeat_secs: u32,
    /// The bounds of the interval a client may propose (LOGIN, HEARTBEAT): clamped to these,
    /// widened to take in `heartbeat_secs` ([`Config::heartbeat_secs_for`]).
    pub heartbeat_min_secs: u32,
    pub heartbeat_max_secs: u32,
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
    /// Most users one user can block; blocking one more is LIMIT_EXCEEDED.
    pub max_blocks_per_user: usize,
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
    // ---- Offline push, WebSocket fallback, entry point (docs/offline-push.md, docs/operations.md)
    /// Webhook notified (HTTP POST) of messages for users with no online device; empty: no
    /// offline push, nothing is queued.
    pub push_webhook_url: String,
    /// HMAC-SHA256 key of the webhook's `X-Missive-Signature` header (at least 16 characters;
    /// needed when `push_webhook_url` is set).
    pub push_webhook_secret: String,
    /// What a notification says of the message: `none`, `type` (content type) or `text` (also
    /// the content, cut to [`PREVIEW_CHARS`] characters).
    pub push_preview: Preview,
    /// Tries of one notification before it is dropped (and counted).
    pub push_max_attempts: u32,
    /// A notification not delivered this long after its message was stored is dropped.
    pub push_max_age_secs: u64,
    /// Wait before the first retry; then doubling, up to `push_retry_max_ms`.
    pub push_retry_initial_ms: u64,
    pub push_retry_max_ms: u64,
    /// One webhook request (connect, send, answer) may take this long.
    pub push_timeout_ms: u64,
    /// A message pushed to an online user is announced to the webhook all the same when no
    /// foreground device of the user acknowledged it within this time (or when the connection
    /// it was pushed on closes first). `0`: only users offline when the message is stored.
    pub push_unacked_ms: u64,
    /// What `GET /v1/entry` tells clients to try, in order: `tls://`, `tcp://`, `wss://` or
    /// `ws://` URLs (`wss://host:443/ws`). Empty: derived from `listen` and the TLS settings,
    /// with the host the client asked for.
    pub entry_addresses: Vec<String>,
    /// Reconnect backoff told to clients by `GET /v1/entry` (PROTOCOL.md section 21).
    pub reconnect_initial_ms: u64,
    pub reconnect_max_ms: u64,
    // ---- end of offline push, WebSocket fallback, entry point --------------------------------
    // ---- Read receipts (PROTOCOL.md section 25) ----
    /// Read receipts of a direct conversation are coalesced: at most one RECEIPT per reader and
    /// conversation in this many milliseconds, carrying the latest read position. 0: each read
    /// is sent at once.
    pub receipt_coalesce_ms: u64,
    // ---- end of read receipts ----
    // ---- Moderation (PROTOCOL.md section 15.8) ----
    /// The built-in word filter's list file (format in docs/moderation.md); empty: off.
    pub word_filter: String,
    /// Content types whose content the word filter reads as text.
    pub word_filter_types: Vec<u32>,
    /// How often the list file is looked at for a change (reloaded when its modification time
    /// or length changed). 0: only on SIGHUP.
    pub word_filter_poll_ms: u64,
    /// The before-send webhook (PROTOCOL.md 15.9, docs/moderation.md): every send is POSTed to
    /// it, signed, and it answers allow, reject or replace. Empty: off.
    pub send_hook_url: String,
    /// HMAC-SHA256 key of the hook's `X-Missive-Signature` header (at least 16 characters;
    /// needed when `send_hook_url` is set).
    pub send_hook_secret: String,
    /// The hook must answer within this time (waiting for a free request slot included).
    pub send_hook_timeout_ms: u64,
    /// When the hook fails (down, slow, a bad answer): `open` stores the message as if it
    /// allowed it, `closed` refuses it with MODERATION_UNAVAILABLE.
    pub send_hook_fail: HookFail,
    /// Hook requests in flight at once, server-wide; a send waits for a slot (within the
    /// timeout).
    pub send_hook_max_in_flight: usize,
    /// Of those, at most this many for one sender (all its devices): a user whose messages the
    /// hook is slow on waits for its own turns and cannot take every slot from the others.
    pub send_hook_max_in_flight_per_user: usize,
    /// Messages per hook request at most. 1: one message per request, the single form. More:
    /// the batch form (`{"messages": [...]}` answered by `{"results": [...]}`), where the sends
    /// waiting for a free slot go together in the next request.
    pub send_hook_batch_max: usize,
    /// Event webhooks (docs/events.md): the app's backend is POSTed each change of the kinds in
    /// `event_webhook_events`, at least once, from a queue in RocksDB. Empty: off.
    pub event_webhook_url: String,
    /// HMAC-SHA256 key of the `X-Missive-Signature` header (at least 16 characters; needed
    /// when `event_webhook_url` is set).
    pub event_webhook_secret: String,
    /// The kinds of events sent (`message.stored`, `message.recalled`, `message.deleted`,
    /// `conversation.read`, `group.created`, `group.changed`, `user.first_seen`).
    pub event_webhook_events: Vec<String>,
    /// One request (connect, send, answer) may take this long.
    pub event_webhook_timeout_ms: u64,
    /// An event not delivered this long after it happened is dropped (and counted).
    pub event_webhook_max_age_secs: u64,
    // ---- end of moderation ----
    /// Media (docs/media.md): the largest file one upload may be.
    pub media_max_file_bytes: u64,
    /// Bytes of uploads one user may create per day (UTC), counted when an upload is created.
    pub media_max_bytes_per_day: u64,
    /// The largest chunk one `PATCH` of an upload may carry.
    pub media_max_chunk_bytes: u64,
    /// An upload's chunk, or a request head, must keep arriving: no progress for this long
    /// closes the connection (slow senders).
    pub media_read_timeout_ms: u64,
    /// Thumbnails fit within this many pixels a side (JPEG, PNG, WebP and GIF uploads).
    pub media_thumbnail_px: u32,
    /// Images larger than this are stored without a thumbnail (decoding reads them whole).
    pub media_max_image_bytes: u64,
    /// Unfinished uploads, media no message carries, and files no record knows of are removed
    /// once they are older than this.
    pub media_gc_grace_secs: u64,
    /// How often media garbage is collected.
    pub media_gc_interval_ms: u64,
    // ---- the cluster (docs/CLUSTER.md); off unless `cluster` is set ----
    /// NATS servers with JetStream, comma-separated (`nats://10.0.0.1:4222,...`). Empty: a
    /// single node, no NATS.
    pub cluster: String,
    /// This node's name in the cluster: 1 to 32 of `A-Z a-z 0-9 _ -`, unique, stable across
    /// restarts.
    pub node_id: String,
    /// Partitions users are hashed into; fixed when the cluster is created.
    pub cluster_partitions: u32,
    /// Copies JetStream keeps of the cluster's bucket and log: 3 with three NATS servers.
    pub cluster_replicas: u32,
    /// A partition whose lease was not renewed for this long is taken over by another node.
    pub cluster_lease_ttl_ms: u64,
    /// How often an owner renews its leases.
    pub cluster_lease_renew_ms: u64,
    /// An owner stops believing in a lease this long before its TTL runs out (clock drift).
    pub cluster_lease_margin_ms: u64,
    /// The owner of a one-partition cluster snapshots its store into NATS and trims the log
    /// behind it once the log has this many records after the last snapshot; 0: never (the
    /// log then grows for ever).
    pub cluster_snapshot_records: u64,
    /// This node's client addresses (the `entry_addresses` syntax), for `/v1/cluster` and the
    /// entry point of the other nodes. Empty: `entry_addresses`.
    pub cluster_advertise: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec!["0.0.0.0:443".into(), "0.0.0.0:80".into()],
            data_dir: PathBuf::from("missive-data"),
            secret: None,
            backup_dir: PathBuf::new(),
            durability: Durability::Sync,
            heartbeat_secs: 30,
            heartbeat_min_secs: 10,
            heartbeat_max_secs: 900,
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
            max_blocks_per_user: 10_000,
            word_filter: String::new(),
            word_filter_types: vec![1],
            word_filter_poll_ms: 1000,
            send_hook_url: String::new(),
            send_hook_secret: String::new(),
            send_hook_timeout_ms: 1000,
            send_hook_fail: HookFail::Open,
            send_hook_max_in_flight: 256,
            send_hook_max_in_flight_per_user: 16,
            send_hook_batch_max: 1,
            media_max_file_bytes: 2 << 30,
            media_max_bytes_per_day: 8 << 30,
            media_max_chunk_bytes: 16 << 20,
            media_read_timeout_ms: 10_000,
            media_thumbnail_px: 320,
            media_max_image_bytes: 50 << 20,
            media_gc_grace_secs: 86_400,
            media_gc_interval_ms: 3_600_000,
            cluster: String::new(),
            node_id: String::new(),
            cluster_partitions: 64,
            cluster_replicas: 3,
            cluster_lease_ttl_ms: 5_000,
            cluster_lease_renew_ms: 1_000,
            cluster_lease_margin_ms: 500,
            cluster_snapshot_records: 100_000,
            cluster_advertise: Vec::new(),
            event_webhook_url: String::new(),
            event_webhook_secret: String::new(),
            event_webhook_events: crate::store::EventKind::ALL
                .iter()
                .map(|k| k.name().to_owned())
                .collect(),
            event_webhook_timeout_ms: 5000,
            event_webhook_max_age_secs: 86_400,
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
            push_preview: Preview::Type,
            push_max_attempts: 10,
            push_max_age_secs: 86_400,
            push_retry_initial_ms: 1_000,
            push_retry_max_ms: 300_000,
            push_timeout_ms: 10_000,
            push_unacked_ms: 4_000,
            entry_addresses: Vec::new(),
            reconnect_initial_ms: 1_000,
            reconnect_max_ms: 60_000,
            // Read receipts.
            receipt_coalesce_ms: 1_000,
        }
    }
}

/// Characters of message text a `text` preview carries at most.
pub const PREVIEW_CHARS: usize = 100;

/// What a notification tells of the message (`push_preview`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preview {
    /// Nothing but who wrote where.
    None,
    /// Also the content type.
    Type,
    /// Also the content as text, cut to [`PREVIEW_CHARS`] characters.
    Text,
}

/// What a send does when the before-send hook fails (`send_hook_fail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookFail {
    /// Stored as if the hook allowed it.
    Open,
    /// Refused with MODERATION_UNAVAILABLE; the client retries later.
    Closed,
}

/// A configuration that cannot be used; the message names the setting.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// The heartbeat interval in force for a client that proposes `proposed` seconds (0: none):
    /// `heartbeat_secs` for none, else the proposal clamped to `heartbeat_min_secs..=
    /// heartbeat_max_secs`, bounds widened to take in `heartbeat_secs` (so that lowering the
    /// default, as tests do, needs no other setting).
    pub fn heartbeat_secs_for(&self, proposed: u32) -> u32 {
        if proposed == 0 {
            return self.heartbeat_secs;
        }
        let min = self.heartbeat_min_secs.min(self.heartbeat_secs);
        let max = self.heartbeat_max_secs.max(self.heartbeat_secs);
        proposed.clamp(min, max)
    }

    /// Where backups go: `backup_dir`, or when it is empty `data_dir` with `-backups` added to
    /// its last component (`missive-data` -> `missive-data-backups`, `/var/lib/missive/` ->
    /// `/var/lib/missive-backups`).
    pub fn backup_path(&self) -> PathBuf {
        if !self.backup_dir.as_os_str().is_empty() {
            return self.backup_dir.clone();
        }
        let data = self.data_dir.as_os_str().to_string_lossy();
        let trimmed = data.trim_end_matches('/');
        let base = if trimmed.is_empty() { "/" } else { trimmed };
        PathBuf::from(format!("{}-backups", base.trim_end_matches('/')))
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
}
