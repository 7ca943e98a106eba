//! Forwarding a client's connection to the node that serves it (docs/CLUSTER.md section 6).
//!
//! A node that does not serve (a standby of a one-partition cluster) still accepts clients on
//! its ports: it opens a connection to the owner's forwarding address, writes a *preamble*
//! naming the client's address, and copies bytes both ways. The owner reads the preamble and
//! treats the connection as the client's own: the per-address limits, the failed-login budget
//! and the logs see the client's address, not the forwarding node's.
//!
//! The preamble is one line of ASCII, before any byte of the client:
//!
//! ```text
//! MISSIVE-FORWARD 1 <client address> <via> <unix ms> <HMAC-SHA256 hex>\r\n
//! ```
//!
//! The HMAC is over everything before it with a key derived from the token secret (which every
//! node of a cluster shares), so a client cannot claim another address. `via` is the forwarding
//! node's own address on that connection (its socket's local IP): the owner refuses a line that
//! arrives from another address, so a line seen on the wire cannot be replayed from elsewhere;
//! nodes must reach each other without address translation. A line more than [`MAX_SKEW_MS`]
//! away from the owner's clock is refused. Its first byte, `M` (0x4D), cannot start a frame a
//! server accepts (it would be a length over 1 GiB), nor TLS (0x16), nor an HTTP request
//! Missive answers.
//!
//! A forwarded connection ends when either side ends: when the owner closes (a login timeout, a
//! heartbeat timeout, a refusal), the client is closed at once, so the forwarding node holds a
//! connection no longer than the owner does; both sockets have TCP keepalive, so a peer that
//! vanished without a word is found within minutes.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::node::Cluster;
use crate::limits::Connections;

/// What a preamble starts with.
pub const MAGIC: &[u8] = b"MISSIVE-FORWARD 1 ";

/// The longest preamble: an IPv6 address with a port, the time and 64 hex digits fit easily.
pub const MAX_PREAMBLE: usize = 200;

/// How far a preamble's time may be from the owner's clock.
pub const MAX_SKEW_MS: i64 = 30_000;

/// Buffer of each direction of a forwarded connection: small, since most connections are idle
/// phones (two of these per connection on the forwarding node).
pub const COPY_BUFFER: usize = 2048;

/// How long a forwarding node waits for the owner to accept.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

fn key(secret: &[u8]) -> Hmac<Sha256> {
    let mut k = Vec::with_capacity(secret.len() + 24);
    k.extend_from_slice(b"missive forward preamble\0");
    k.extend_from_slice(secret);
    Hmac::<Sha256>::new_from_slice(&k).expect("HMAC takes keys of any length")
}

/// The preamble for a connection from `client`, forwarded from this node's address `via`, at
/// `now_ms`.
pub fn preamble(secret: &[u8], client: SocketAddr, via: IpAddr, now_ms: i64) -> Vec<u8> {
    let head = format!("MISSIVE-FORWARD 1 {client} {via} {now_ms}");
    let mut mac = key(secret);
    mac.update(head.as_bytes());
    let sig: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{head} {sig}\r\n").into_bytes()
}

/// Why a preamble was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreambleError {
    #[error("not a forwarding preamble")]
    Malformed,
    #[error("the preamble's signature is wrong (another cluster's secret?)")]
    Signature,
    #[error("the preamble's time is {0} ms from this node's clock")]
    Skew(i64),
    #[error("the preamble says it was forwarded from {0}, but it came from another address")]
    Via(IpAddr),
}

/// Where a preamble ends (the index after its `\r\n`) in `buf`, if it is complete there.
pub fn preamble_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n").map(|i| i + 2)
}

/// The client's address in `line` (one whole preamble, with its `\r\n`) that arrived from
/// `from`, checked against the secret, `from` and `now_ms`.
pub fn verify(
    secret: &[u8],
    line: &[u8],
    from: IpAddr,
    now_ms: i64,
) -> Result<SocketAddr, PreambleError> {
    let text = std::str::from_utf8(line).map_err(|_| PreambleError::Malformed)?;
    let text = text.strip_suffix("\r\n").ok_or(PreambleError::Malformed)?;
    let (head, sig) = text.rsplit_once(' ').ok_or(PreambleError::Malformed)?;
    let rest = head
        .strip_prefix("MISSIVE-FORWARD 1 ")
        .ok_or(PreambleError::Malformed)?;
    let mut parts = rest.split(' ');
    let (Some(addr), Some(via), Some(ms), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(PreambleError::Malformed);
    };
    let addr: SocketAddr = addr.parse().map_err(|_| PreambleError::Malformed)?;
    let via: IpAddr = via.parse().map_err(|_| PreambleError::Malformed)?;
    let ms: i64 = ms.parse().map_err(|_| PreambleError::Malformed)?;
    let sig = decode_hex(sig).ok_or(PreambleError::Malformed)?;
    let mut mac = key(secret);
    mac.update(head.as_bytes());
    mac.verify_slice(&sig)
        .map_err(|_| PreambleError::Signature)?;
    if canonical(via) != canonical(from) {
        return Err(PreambleError::Via(via));
    }
    let skew = now_ms - ms;
    if skew.abs() > MAX_SKEW_MS {
        return Err(PreambleError::Skew(skew));
    }
    Ok(addr)
}

/// An IPv4-mapped IPv6 address as its IPv4 address; any other as it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// How long a client that arrives while no owner is known is held, waiting for one.
pub const HOLD: Duration = Duration::from_secs(15);

/// How often the forwarding node looks for the owner's forwarding address.
const LOOK: Duration = Duration::from_millis(100);

/// Connections a forwarding node held for want of an owner, given back when it serves them
/// itself: the clients, their addresses.
pub type Held = Vec<(TcpStream, SocketAddr)>;

/// Accepts clients on `listener` and forwards each to the owner of `partition`, until `stop`;
/// then closes every connection it forwards (the owner they went to is gone or going) and
/// gives the listener back, for this node to serve on, with the clients it was holding.
/// Connections are limited by `connections` (the node's own limits, per client address). A
/// client that arrives while no owner is known (a takeover under way) is held, for up to
/// [`HOLD`], until one is (then forwarded) or until this node serves (then given back): it is
/// served as soon as the partition is, instead of failing and backing off.
pub async fn serve(
    listener: TcpListener,
    cluster: Arc<Cluster>,
    partition: u32,
    secret: Arc<[u8]>,
    connections: Arc<Connections>,
    stop: CancellationToken,
) -> (TcpListener, Held) {
    let tasks = TaskTracker::new();
    // The owner's forwarding address, looked up once per [`LOOK`] for every client held.
    let (target_tx, target_rx) = tokio::sync::watch::channel(cluster.forward_target(partition));
    let looking = {
        let (cluster, stop) = (cluster.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(LOOK) => {}
                }
                let now = cluster.forward_target(partition);
                target_tx.send_if_modified(|t| {
                    let changed = *t != now;
                    *t = now;
                    changed
                });
            }
        })
    };
    let (held_tx, mut held_rx) = tokio::sync::mpsc::unbounded_channel();
    loop {
        let (client, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(permit) = connections.admit(peer.ip()) else {
            continue;
        };
        let (secret, stop) = (secret.clone(), stop.clone());
        let (mut target_rx, held_tx) = (target_rx.clone(), held_tx.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let deadline = tokio::time::Instant::now() + HOLD;
            loop {
                let target = target_rx.borrow_and_update().clone();
                if let Some(target) = target {
                    // Raced with the takeover: an owner that died with its machine takes the
                    // whole connect timeout to fail, and this node may serve before that.
                    let attempt = tokio::select! {
                        _ = stop.cancelled() => {
                            let _ = held_tx.send((client, peer));
                            return;
                        }
                        r = connect(&target, peer, &secret) => r,
                    };
                    match attempt {
                        Ok(owner) => {
                            tokio::select! {
                                _ = stop.cancelled() => {}
                                r = copy(client, owner) => {
                                    if let Err(e) = r {
                                        tracing::debug!(%peer, %target, "forwarding ended: {e}");
                                    }
                                }
                            }
                            return;
                        }
                        Err(e) => tracing::debug!(%peer, %target, "owner not reached: {e}"),
                    }
                }
                // No owner, or one that does not answer (it died; its lease has not run out
                // yet): wait for the next, or for this node to serve the client itself.
                tokio::select! {
                    _ = stop.cancelled() => {
                        let _ = held_tx.send((client, peer));
                        return;
                    }
                    changed = target_rx.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => return,
                }
            }
        });
    }
    tasks.close();
    tasks.wait().await;
    looking.abort();
    drop(held_tx);
    let mut held = Vec::new();
    while let Some(h) = held_rx.recv().await {
        held.push(h);
    }
    (listener, held)
}

/// A connection to the owner at `target`, with the preamble for `peer` written.
async fn connect(target: &str, peer: SocketAddr, secret: &[u8]) -> std::io::Result<TcpStream> {
    let mut owner = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = owner.set_nodelay(true);
    keepalive(&owner);
    let via = owner.local_addr()?.ip();
    owner
        .write_all(&preamble(secret, peer, via, crate::clock::now_ms()))
        .await?;
    Ok(owner)
}

/// Copies both ways until either side is done: the owner's end (its close or an error) closes
/// the client at once; the client's end is passed on to the owner (a half close), which then
/// has [`DRAIN`] to finish.
async fn copy(client: TcpStream, owner: TcpStream) -> std::io::Result<()> {
    let _ = client.set_nodelay(true);
    keepalive(&client);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut owner_read, mut owner_write) = owner.into_split();
    let mut up = tokio::io::BufReader::with_capacity(COPY_BUFFER, &mut client_read);
    let mut down = tokio::io::BufReader::with_capacity(COPY_BUFFER, &mut owner_read);
    // The client's bytes to the owner, then its end passed on (a half close).
    let upstream = async {
        tokio::io::copy_buf(&mut up, &mut owner_write).await?;
        owner_write.shutdown().await
    };
    let downstream = tokio::io::copy_buf(&mut down, &mut client_write);
    tokio::pin!(upstream, downstream);
    tokio::select! {
        // The owner is done (or failed): so is the client, closed when this returns.
        r = &mut downstream => r.map(|_| ()),
        // The client is done sending: the owner has a moment to finish its answer.
        r = &mut upstream => {
            r?;
            match tokio::time::timeout(DRAIN, &mut downstream).await {
                Ok(r) => r.map(|_| ()),
                Err(_) => Ok(()),
            }
        }
    }
}

/// How long the owner has to finish once the client has closed its sending side.
pub const DRAIN: Duration = Duration::from_secs(5);

/// The idle time after which TCP keepalive probes a forwarded connection's sockets.
const KEEPALIVE: Duration = Duration::from_secs(60);

fn keepalive(stream: &TcpStream) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE)
        .with_interval(Duration::from_secs(10))
        .with_retries(6);
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&ka);
}

/// The address the other nodes forward clients to (`Settings::forward`): the first listener's
/// address when it is a specific one; for a wildcard (`0.0.0.0`), the host of the first `tcp`
/// or `tls` address this node advertises (`cluster_advertise`: this node's own name, not a load
/// balancer's), with the listener's port. Empty (no node forwards to this one) without either:
/// a loopback address would send another machine's forwarded clients back to itself.
pub fn forward_address(bound: &[SocketAddr], advertised: &[String]) -> String {
    let Some(first) = bound.first() else {
        return String::new();
    };
    if !first.ip().is_unspecified() {
        return first.to_string();
    }
    advertised
        .iter()
        .filter_map(|a| crate::config::Address::parse(a).ok())
        .find(|a| a.transport == "tcp" || a.transport == "tls")
        .map_or_else(String::new, |a| format!("{}:{}", a.host, first.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preamble_names_the_client_and_only_the_secret_signs_it() {
        let client: SocketAddr = "203.0.113.7:51000".parse().unwrap();
        let via: IpAddr = "10.0.0.2".parse().unwrap();
        let line = preamble(b"s3cret", client, via, 1_000_000);
        assert!(line.starts_with(MAGIC));
        assert!(line.len() <= MAX_PREAMBLE);
        assert_eq!(preamble_end(&line), Some(line.len()));
        assert_eq!(verify(b"s3cret", &line, via, 1_000_500), Ok(client));
        assert_eq!(
            verify(b"other", &line, via, 1_000_500),
            Err(PreambleError::Signature)
        );
        assert_eq!(
            verify(b"s3cret", &line, via, 1_000_000 + MAX_SKEW_MS + 1),
            Err(PreambleError::Skew(MAX_SKEW_MS + 1))
        );
        // Replayed from another address: refused.
        let elsewhere: IpAddr = "10.0.0.9".parse().unwrap();
        assert_eq!(
            verify(b"s3cret", &line, elsewhere, 1_000_000),
            Err(PreambleError::Via(via))
        );
        // Another client address with the same signature: refused.
        let forged = String::from_utf8(line.clone())
            .unwrap()
            .replace("203.0.113.7", "203.0.113.8");
        assert_eq!(
            verify(b"s3cret", forged.as_bytes(), via, 1_000_000),
            Err(PreambleError::Signature)
        );
        let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let via6: IpAddr = "2001:db8::ffff:1".parse().unwrap();
        let line = preamble(b"s3cret", v6, via6, 5);
        assert!(line.len() <= MAX_PREAMBLE);
        assert_eq!(verify(b"s3cret", &line, via6, 5), Ok(v6));
    }

    #[test]
    fn the_forwarding_address_is_the_listener_or_the_advertised_host() {
        let bound: Vec<SocketAddr> = vec!["10.1.2.3:9443".parse().unwrap()];
        assert_eq!(forward_address(&bound, &[]), "10.1.2.3:9443");
        let wild: Vec<SocketAddr> = vec!["0.0.0.0:443".parse().unwrap()];
        let adv = vec![
            "ws://n1.example:80/ws".to_owned(),
            "tls://n1.example:8443".to_owned(),
        ];
        assert_eq!(forward_address(&wild, &adv), "n1.example:443");
        assert_eq!(forward_address(&wild, &[]), "", "never loopback");
        assert_eq!(forward_address(&[], &adv), "");
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in [
            &b"MISSIVE-FORWARD 1 \r\n"[..],
            b"MISSIVE-FORWARD 1 1.2.3.4:5 6\r\n",
            b"MISSIVE-FORWARD 1 1.2.3.4:5 1.1.1.1 6 zz\r\n",
            b"MISSIVE-FORWARD 1 1.2.3.4:5 6 7 00\r\n",
            b"MISSIVE-FORWARD 2 1.2.3.4:5 1.1.1.1 6 00\r\n",
            b"MISSIVE-FORWARD 1 1.2.3.4:5 1.1.1.1 6 0000",
            b"\xff\xfe\r\n",
        ] {
            assert_eq!(
                verify(b"k", bad, "1.1.1.1".parse().unwrap(), 6),
                Err(PreambleError::Malformed),
                "{bad:?}"
            );
        }
    }
}
