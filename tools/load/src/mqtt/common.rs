//! What the MQTT scenarios share: the broker options, the run's name prefix, and the payload
//! every message carries (its number, scheduled time, sender and recipient, then words).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, Result};

use super::conn::Settings;

#[derive(clap::Args, Debug, Clone)]
pub struct Broker {
    /// Broker address, host:port (plain MQTT 3.1.1 over TCP, no authentication).
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub addr: String,
    /// Prefix of this run's client ids and topics (default: `load-` and a random tag, so runs
    /// against the same broker never share sessions or topics).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Print the full result as JSON on stdout (the table then goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Runtime threads of the harness. 0: one per core less one, at least one (as for the
    /// Missive scenarios).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// QoS 1 publishes a connection has unacknowledged at once; more wait in its queue
    /// (`offline` queues with its --window instead).
    #[arg(long, default_value_t = 256)]
    pub inflight: u16,
    /// Keep-alive of every connection, seconds (a PINGREQ when idle that long). 30: the
    /// interval Missive's clients heartbeat at by default.
    #[arg(long, default_value_t = 30)]
    pub keep_alive: u16,
    /// Seconds allowed for connecting, CONNACK and SUBACK.
    #[arg(long, default_value_t = 20)]
    pub connect_timeout: u64,
}

impl Broker {
    /// The harness's runtime threads (see `--threads`).
    pub fn threads(&self) -> usize {
        crate::common::harness_threads(self.threads)
    }
}

/// What a scenario needs to reach the broker and name its clients and topics.
pub struct Env {
    pub settings: Settings,
    pub prefix: String,
}

impl Env {
    /// `queue`: requests a connection may queue (see [`Settings::queue`]).
    pub fn new(b: &Broker, queue: usize) -> Result<Env> {
        let addr: SocketAddr = b
            .addr
            .to_socket_addrs()
            .with_context(|| format!("broker address {}", b.addr))?
            .next()
            .with_context(|| format!("broker address {} resolves to nothing", b.addr))?;
        let prefix = match &b.prefix {
            Some(p) => p.clone(),
            None => format!("load-{:06x}", rand::random::<u32>() & 0xff_ffff),
        };
        Ok(Env {
            settings: Settings {
                addr,
                keep_alive: b.keep_alive,
                inflight: b.inflight,
                queue,
                timeout: b.connect_timeout,
            },
            prefix,
        })
    }

    /// Client id of this run's client number `i` in role `role` (e.g. `load-1a2b3c-u-17`).
    pub fn client_id(&self, role: &str, i: usize) -> String {
        format!("{}-{role}-{i}", self.prefix)
    }

    /// A topic of this run (e.g. `load-1a2b3c/u/17`).
    pub fn topic(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix)
    }
}

/// Bytes of a payload's header: number, scheduled time, sender and recipient in hex, a space.
pub const HEADER: usize = 16 + 16 + 8 + 8 + 1;

/// The words the padding is made of (as in the Missive chat scenario's content).
const PADDING: &[u8] = b"see you at the station at eight, bring the map and some water. ";

/// What a payload says about its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The message's number in the run.
    pub k: u64,
    /// Its scheduled send time, after the start of the run.
    pub due: Duration,
    pub from: u32,
    pub to: u32,
}

/// A payload of `size` bytes (at least [`HEADER`]), all ASCII: the header in lowercase hex,
/// a space, then words.
pub fn payload(h: Header, size: usize) -> Vec<u8> {
    let mut body = format!(
        "{:016x}{:016x}{:08x}{:08x} ",
        h.k,
        h.due.as_micros() as u64,
        h.from,
        h.to
    )
    .into_bytes();
    while body.len() < size {
        let n = (size - body.len()).min(PADDING.len());
        body.extend_from_slice(&PADDING[..n]);
    }
    body
}

/// The header of a payload made by [`payload`], `None` for anything else.
pub fn header(payload: &[u8]) -> Option<Header> {
    let text = std::str::from_utf8(payload.get(..HEADER)?).ok()?;
    if !text.ends_with(' ') {
        return None;
    }
    let hex = |r: std::ops::Range<usize>| u64::from_str_radix(&text[r], 16).ok();
    Some(Header {
        k: hex(0..16)?,
        due: Duration::from_micros(hex(16..32)?),
        from: u32::try_from(hex(32..40)?).ok()?,
        to: u32::try_from(hex(40..48)?).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip() {
        let h = Header {
            k: 123_456_789,
            due: Duration::from_micros(9_876_543),
            from: 17,
            to: 999,
        };
        let p = payload(h, 128);
        assert_eq!(p.len(), 128);
        assert!(p.is_ascii());
        assert_eq!(header(&p), Some(h));
        // A short size still carries the whole header.
        assert_eq!(payload(h, 8).len(), HEADER);
        assert_eq!(header(&payload(h, 8)), Some(h));
    }

    #[test]
    fn foreign_payloads_are_not_read() {
        assert_eq!(header(b"hello"), None);
        assert_eq!(header(&[b'z'; 64]), None);
        let mut p = payload(
            Header {
                k: 1,
                due: Duration::ZERO,
                from: 0,
                to: 1,
            },
            64,
        );
        p[HEADER - 1] = b'x';
        assert_eq!(header(&p), None);
    }
}
