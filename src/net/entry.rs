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
//! address the request arrived at). In a cluster, the addresses the cluster lists for the user
//! come first (the node that serves `user=`, then the other live nodes; docs/CLUSTER.md
//! section 6), and this node's own follow.

use std::net::SocketAddr;

use serde::Serialize;

use crate::config::{Address, Config};

/// How long a connection must stay logged in before the backoff starts again (PROTOCOL.md
/// section 21).
pub const RESET_AFTER_MS: u64 = 60_000;

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
    cluster: Option<&[String]>,
) -> Vec<u8> {
    let own = if config.entry_addresses.is_empty() {
        derived(config, bound, host_header, local)
    } else {
        // Checked by `validate` at start.
        config
            .entry_addresses
            .iter()
            .filter_map(|a| Address::parse(a).ok())
            .collect()
    };
    let mut addresses: Vec<Address> = cluster
        .unwrap_or_default()
        .iter()
        .filter_map(|a| Address::parse(a).ok())
        .collect();
    for a in own {
        if !addresses.contains(&a) {
            addresses.push(a);
        }
    }
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
        .filter(|h| crate::config::address_host_is_valid(h))
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

#[cfg(test)]
mod tests {
    use super::*;

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
