//! The syntax of an entry address (`entry_addresses`, and what `GET /v1/entry` derives):
//! `tcp://host:port`, `tls://host:port`, `ws://host:port/path`, `wss://host:port/path`.

use serde::Serialize;

/// The path of the WebSocket transport on the public ports.
pub const WS_PATH: &str = "/ws";

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
    pub fn new(transport: &'static str, host: &str, port: u16) -> Address {
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

/// A host name, IPv4 address or bracketed IPv6 address, as far as it can be told by its
/// characters (so that no header value ends up in a URL unchecked).
pub fn valid_host(h: &str) -> bool {
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
}
