//! The server API's settings (http_listen, api_key, system_user, drain_*, http_*): checks.

use super::settings::{Config, ConfigError};

impl Config {
    /// The server API's settings.
    pub(super) fn validate_api(&self) -> Result<(), ConfigError> {
        let bad = |what: &str| Err(ConfigError(what.to_owned()));
        if !self.http_listen.is_empty() && self.http_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(ConfigError(format!(
                "http_listen: {:?} is not an address like 127.0.0.1:8080 (empty: no HTTP API)",
                self.http_listen
            )));
        }
        if self.api_key.as_ref().is_some_and(|k| k.len() < 16) {
            return bad("api_key: must be at least 16 characters");
        }
        if let Err(e) = missive_protocol::token::check_id(&self.system_user) {
            return Err(ConfigError(format!("system_user: {e}")));
        }
        if self.drain_rate_per_sec == 0 || self.drain_rate_per_sec > 1_000_000 {
            return bad("drain_rate_per_sec: must be 1..=1000000");
        }
        if !self.drain_redirect.is_empty() && self.redirect_target().is_none() {
            return bad("drain_redirect: must be HOST:PORT (port 1..=65535) or empty");
        }
        if self.drain_reconnect_after_ms > 3_600_000 {
            return bad("drain_reconnect_after_ms: must be at most 3600000");
        }
        // No "0: no timeout": an API without them is what issue #18 found held for minutes.
        if !(1..=600_000).contains(&self.http_header_timeout_ms) {
            return bad("http_header_timeout_ms: must be 1..=600000");
        }
        if !(1..=600_000).contains(&self.http_body_timeout_ms) {
            return bad("http_body_timeout_ms: must be 1..=600000");
        }
        if !(1..=1_000_000).contains(&self.http_max_connections) {
            return bad("http_max_connections: must be 1..=1000000");
        }
        Ok(())
    }

    /// `drain_redirect` as (host, port), if set and well formed.
    pub fn redirect_target(&self) -> Option<(String, u16)> {
        parse_host_port(&self.drain_redirect)
    }
}

/// `host:port` (an IPv6 host in brackets) with a port of 1..=65535.
pub fn parse_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty() && !host.contains(char::is_whitespace)).then(|| (host.to_owned(), port))
}
