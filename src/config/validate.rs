//! Every setting's range, checked once at start (`Config::validate`): the core settings here,
//! the server API's in `api`.

use super::address::Address;
use super::settings::{Config, ConfigError};

impl Config {
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
        let (min, max) = (self.heartbeat_min_secs, self.heartbeat_max_secs);
        if min == 0 || min > max || max > 3600 {
            return bad("heartbeat_min_secs and heartbeat_max_secs: need 1 <= min <= max <= 3600");
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
        if self.word_filter_types.contains(&0) || self.word_filter_types.len() > 64 {
            return bad("word_filter_types: at most 64 content types, none of them 0");
        }
        if !(1..=1_000_000).contains(&self.max_blocks_per_user) {
            return bad("max_blocks_per_user: 1 to 1000000");
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
        validate_backup_dir(self)?;
        if self.receipt_coalesce_ms > 60_000 {
            return bad("receipt_coalesce_ms: must be 0..=60000 (0: every receipt at once)");
        }
        validate_push(self)?;
        validate_hook(self)?;
        validate_media(self)?;
        validate_events(self)?;
        validate_entry(self)?;
        self.validate_cluster()?;
        self.validate_api()
    }
}

/// Checks that backups do not go into the data directory they copy (part of
/// [`Config::validate`]): a backup there would be lost with it, and copied into the next backup.
/// Paths are compared as written: made absolute, `.` and `..` resolved lexically, symbolic links
/// not followed.
fn validate_backup_dir(c: &Config) -> Result<(), ConfigError> {
    let normal = |p: &std::path::Path| -> std::path::PathBuf {
        let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let mut out = std::path::PathBuf::new();
        for part in abs.components() {
            match part {
                std::path::Component::CurDir => {}
                std::path::Component::ParentDir => {
                    out.pop();
                }
                other => out.push(other),
            }
        }
        out
    };
    let (backups, data) = (normal(&c.backup_path()), normal(&c.data_dir));
    if backups.starts_with(&data) {
        return Err(ConfigError(format!(
            "backup_dir: {} is inside data_dir {}; put backups outside the data directory \
             (empty: {}-backups next to it)",
            c.backup_path().display(),
            c.data_dir.display(),
            c.data_dir.display()
        )));
    }
    Ok(())
}

/// Checks the push settings (part of [`Config::validate`]).
fn validate_push(c: &Config) -> Result<(), ConfigError> {
    if c.push_webhook_url.is_empty() {
        return Ok(());
    }
    let bad = |m: &str| Err(ConfigError(m.to_owned()));
    let uri: hyper::Uri = match c.push_webhook_url.parse() {
        Ok(u) => u,
        Err(_) => return bad("push_webhook_url: not a URL like http://10.0.0.5:8080/missive"),
    };
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return bad(
            "push_webhook_url: must be an http:// URL with a host (for HTTPS, put a TLS proxy \
             on the same host in front of the webhook)",
        );
    }
    if c.push_webhook_secret.len() < 16 {
        return bad("push_webhook_secret: at least 16 characters are needed with push_webhook_url");
    }
    if c.push_max_attempts == 0 || c.push_max_age_secs == 0 {
        return bad("push_max_attempts and push_max_age_secs: must be at least 1");
    }
    if c.push_retry_initial_ms == 0 || c.push_retry_max_ms < c.push_retry_initial_ms {
        return bad("push_retry_initial_ms: at least 1, and push_retry_max_ms at least that");
    }
    if c.push_timeout_ms == 0 {
        return bad("push_timeout_ms: must be above 0");
    }
    if c.push_unacked_ms > 600_000 {
        return bad("push_unacked_ms: must be 0..=600000");
    }
    Ok(())
}

/// Checks the media settings (part of [`Config::validate`]).
fn validate_media(c: &Config) -> Result<(), ConfigError> {
    let bad = |m: &str| Err(ConfigError(m.to_owned()));
    if c.media_max_file_bytes == 0 {
        return bad("media_max_file_bytes: at least 1");
    }
    if c.media_max_bytes_per_day < c.media_max_file_bytes {
        return bad("media_max_bytes_per_day: at least media_max_file_bytes");
    }
    if !(1024..=(256 << 20)).contains(&c.media_max_chunk_bytes) {
        return bad("media_max_chunk_bytes: 1024 to 268435456");
    }
    if !(100..=600_000).contains(&c.media_read_timeout_ms) {
        return bad("media_read_timeout_ms: 100 to 600000");
    }
    if !(16..=2048).contains(&c.media_thumbnail_px) {
        return bad("media_thumbnail_px: 16 to 2048");
    }
    if c.media_gc_grace_secs == 0 {
        return bad("media_gc_grace_secs: at least 1");
    }
    if !(100..=86_400_000).contains(&c.media_gc_interval_ms) {
        return bad("media_gc_interval_ms: 100 to 86400000");
    }
    Ok(())
}

/// Checks the before-send hook's settings (part of [`Config::validate`]).
fn validate_hook(c: &Config) -> Result<(), ConfigError> {
    if c.send_hook_url.is_empty() {
        return Ok(());
    }
    let bad = |m: &str| Err(ConfigError(m.to_owned()));
    let uri: Option<hyper::Uri> = c.send_hook_url.parse().ok();
    if uri
        .as_ref()
        .is_none_or(|u| u.scheme_str() != Some("http") || u.host().is_none())
    {
        return bad(
            "send_hook_url: must be an http:// URL with a host, like http://127.0.0.1:8080/check              (for HTTPS, put a TLS proxy on the same host in front of the hook)",
        );
    }
    if c.send_hook_secret.len() < 16 {
        return bad("send_hook_secret: at least 16 characters are needed with send_hook_url");
    }
    if !(10..=60_000).contains(&c.send_hook_timeout_ms) {
        return bad("send_hook_timeout_ms: 10 to 60000");
    }
    if !(1..=10_000).contains(&c.send_hook_max_in_flight) {
        return bad("send_hook_max_in_flight: 1 to 10000");
    }
    if !(1..=10_000).contains(&c.send_hook_max_in_flight_per_user) {
        return bad("send_hook_max_in_flight_per_user: 1 to 10000");
    }
    if !(1..=1000).contains(&c.send_hook_batch_max) {
        return bad("send_hook_batch_max: 1 to 1000");
    }
    Ok(())
}

/// Checks the event webhook's settings (part of [`Config::validate`]).
fn validate_events(c: &Config) -> Result<(), ConfigError> {
    let bad = |m: String| Err(ConfigError(m));
    for name in &c.event_webhook_events {
        if crate::store::EventKind::from_name(name).is_none() {
            let all: Vec<&str> = crate::store::EventKind::ALL
                .iter()
                .map(|k| k.name())
                .collect();
            return bad(format!(
                "event_webhook_events: {name:?} is not one of {}",
                all.join(", ")
            ));
        }
    }
    if c.event_webhook_url.is_empty() {
        return Ok(());
    }
    let uri: Option<hyper::Uri> = c.event_webhook_url.parse().ok();
    if uri
        .as_ref()
        .is_none_or(|u| u.scheme_str() != Some("http") || u.host().is_none())
    {
        return bad(
            "event_webhook_url: must be an http:// URL with a host (for HTTPS, put a TLS proxy on \
             the same host in front of it)"
                .into(),
        );
    }
    if c.event_webhook_secret.len() < 16 {
        return bad(
            "event_webhook_secret: at least 16 characters are needed with event_webhook_url".into(),
        );
    }
    if !(10..=60_000).contains(&c.event_webhook_timeout_ms) {
        return bad("event_webhook_timeout_ms: 10 to 60000".into());
    }
    if !(1..=30 * 86_400).contains(&c.event_webhook_max_age_secs) {
        return bad("event_webhook_max_age_secs: 1 to 2592000 (30 days)".into());
    }
    Ok(())
}

/// Checks the entry-point settings (part of [`Config::validate`]).
fn validate_entry(c: &Config) -> Result<(), ConfigError> {
    for a in &c.entry_addresses {
        Address::parse(a).map_err(|why| ConfigError(format!("entry_addresses: {a:?}: {why}")))?;
    }
    if c.reconnect_initial_ms == 0 || c.reconnect_max_ms < c.reconnect_initial_ms {
        return Err(ConfigError(
            "reconnect_initial_ms: at least 1, and reconnect_max_ms at least that".into(),
        ));
    }
    Ok(())
}
