//! `GET /v1/entry`: where a client should connect, in order, and how to back off.
//!
//! ```json
//! {"protocol_version":1,
//!  "addresses":[{"url":"tls://chat.example:443","transport":"tls","host":"chat.example","port":443},
//!               {"url":"ws://chat.example:80/ws","transport":"ws","host":"chat.example","port":80,"path":"/ws"}],
//!  "reconnect":{"initial_ms":1000,"max_ms":60000,"jitter":"full","reset_after_ms":60000},
//!  "heartbeat_secs":30}
//! ```
//!
//! The addresses are `entry_addresses` when set. Otherwise they are derived from the bound
//! listeners: the binary protocol first (`tls` on every port when a certificate is configured,
//! then `tcp` when plain connections are allowed), then the WebSocket fallbacks (`wss`, `ws`),
//! each port in `listen` order, with the host the client put in its `Host` header (else the
//! address the request arrived at).

use std::net::SocketAddr;

use serde::Serialize;

use super::WS_PATH;
use crate::config::Config;

/// How long a connection must stay logged in before the backoff starts again (PROTOCOL.md
/// section 21).
pub const RESET_AFTER_MS: u64 = 60_000;

/// One address a client may try.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Address {
    pub url: String,
    /// `tcp`, `tls`, `ws` or `wss`.
    pub transport: &'static str,
    pub host: String,
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

const TRANSPORTS: [&str; 4] = ["tcp", "tls", "ws", "wss"];

impl Address {
    fn new(transport: &'static str, host: &str, port: u16) -> Address {
        let path = transport.starts_with("ws").then(|| WS_PATH.to_owned());
        let url = format!(
            "{transport}://{host}:{port}{}",
            path.as_deref().unwrap_or("")
        );
        Address {
            url,
            transport,
            host: host.to_owned(),
            port,
            path,
        }
    }

    /// Parses `tcp://host:port`, `tls://host:port`, `ws://host:port/path` or `wss://...` (a
    /// WebSocket address without a path gets `/ws`).
    pub fn parse(s: &str) -> Result<Address, &'static str> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or("must start with tcp://, tls://, ws:// or wss://")?;
        let transport = TRANSPORTS
            .into_iter()
            .find(|t| *t == scheme)
            .ok_or("the scheme must be tcp, tls, ws or wss")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or("a port is needed: host:port")?;
        let port: u16 = port.parse().map_err(|_| "the port must be 1..=65535")?;
        if port == 0 || !valid_host(host) {
            return Err("needs a host name or address and a port 1..=65535");
        }
        let mut a = Address::new(transport, host, port);
        if let Some(p) = path {
            if !transport.starts_with("ws") {
                return Err("only ws:// and wss:// addresses have a path");
            }
            a.path = Some(p.to_owned());
            a.url = s.to_owned();
        }
        Ok(a)
    }
}

#[derive(Serialize)]
struct Reconnect {
    initial_ms: u64,
    max_ms: u64,
    jitter: &'static str,
    reset_after_ms: u64,
}

#[derive(Serialize)]
struct Document {
    protocol_version: u8,
    addresses: Vec<Address>,
    reconnect: Reconnect,
    heartbeat_secs: u32,
}

/// The entry-point JSON for a request with `host_header` that arrived at `local`.
pub fn document(
    config: &Config,
    bound: &[SocketAddr],
    host_header: Option<&str>,
    local: SocketAddr,
) -> Vec<u8> {
    let addresses = if config.entry_addresses.is_empty() {
        derived(config, bound, host_header, local)
    } else {
        // Checked by `validate` at start.
        config
            .entry_addresses
            .iter()
            .filter_map(|a| Address::parse(a).ok())
            .collect()
    };
    let doc = Document {
        protocol_version: missive_protocol::PROTOCOL_VERSION,
        addresses,
        reconnect: Reconnect {
            initial_ms: config.reconnect_initial_ms,
            max_ms: config.reconnect_max_ms,
            jitter: "full",
            reset_after_ms: RESET_AFTER_MS,
        },
        heartbeat_secs: config.heartbeat_secs,
    };
    serde_json::to_vec(&doc).unwrap_or_default()
}

fn derived(
    config: &Config,
    bound: &[SocketAddr],
    host_header: Option<&str>,
    local: SocketAddr,
) -> Vec<Address> {
    let host = host_header
        .map(host_part)
        .filter(|h| valid_host(h))
        .map(str::to_owned)
        .unwrap_or_else(|| match local.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        });
    let tls = config.tls_cert.is_some();
    let plain = config.allow_plain;
    let mut out = Vec::new();
    for (transport, on) in [("tls", tls), ("tcp", plain), ("wss", tls), ("ws", plain)] {
        if on {
            out.extend(
                bound
                    .iter()
                    .map(|b| Address::new(transport, &host, b.port())),
            );
        }
    }
    out
}

/// The host of a `Host` header value (`name`, `name:port`, `[v6]:port`).
fn host_part(value: &str) -> &str {
    if value.starts_with('[') {
        return value.find(']').map_or(value, |i| &value[..=i]);
    }
    value.split(':').next().unwrap_or(value)
}

/// A host name, IPv4 address or bracketed IPv6 address, as far as it can be told by its
/// characters (so that no header value ends up in a URL unchecked).
fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b))
        && (h.starts_with('[') == h.ends_with(']'))
        && (h.starts_with('[') || !h.contains(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_configured_addresses() {
        let a = Address::parse("wss://chat.example:443/ws").unwrap();
        assert_eq!(
            (a.transport, a.host.as_str(), a.port),
            ("wss", "chat.example", 443)
        );
        assert_eq!(a.path.as_deref(), Some("/ws"));
        let t = Address::parse("tls://[2001:db8::1]:443").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path),
            ("[2001:db8::1]", 443, None)
        );
        assert_eq!(Address::parse("ws://h:80").unwrap().url, "ws://h:80/ws");
        for bad in [
            "h:80",
            "http://h:80",
            "tcp://h",
            "tcp://h:0",
            "tcp://h:80/x",
            "tcp://:80",
            "tcp://a b:1",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn derives_addresses_from_listeners_and_host() {
        let config = Config::default();
        let bound: Vec<SocketAddr> = vec![
            "0.0.0.0:443".parse().unwrap(),
            "0.0.0.0:80".parse().unwrap(),
        ];
        let local = "10.1.2.3:443".parse().unwrap();
        let urls = |host| -> Vec<String> {
            derived(&config, &bound, host, local)
                .into_iter()
                .map(|a| a.url)
                .collect()
        };
        assert_eq!(
            urls(Some("chat.example:443")),
            [
                "tcp://chat.example:443",
                "tcp://chat.example:80",
                "ws://chat.example:443/ws",
                "ws://chat.example:80/ws"
            ]
        );
        assert_eq!(urls(None)[0], "tcp://10.1.2.3:443");
        assert_eq!(
            urls(Some("evil\"host"))[0],
            "tcp://10.1.2.3:443",
            "odd Host ignored"
        );
        assert_eq!(urls(Some("[::1]:80"))[0], "tcp://[::1]:443");
    }
}
