//! Attacks on LOGIN: garbage tokens that use up the server-wide login rate, and zlib bombs in
//! LOGIN bodies (a bad body is not fatal before login).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use missive_client::pb;
use missive_protocol::{Frame, Packet, DEFAULT_MAX_FRAME_LEN};
use tokio::net::{TcpSocket, TcpStream};

use super::figures::{self, bytes_text};
use super::outcome::Outcome;
use super::raw::{self, Raw};
use super::rig::Rig;

/// A loopback source address for connection loop `i` (127.0.0.2 ... 127.0.0.9): tens of
/// thousands of short connections from one address would run through its ephemeral ports.
fn source(i: usize) -> std::net::IpAddr {
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % 8) as u8))
}

async fn connect_from(addr: &str, src: std::net::IpAddr) -> std::io::Result<TcpStream> {
    let target: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let socket = TcpSocket::new_v4()?;
    socket.bind((src, 0).into())?;
    let s = socket.connect(target).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// `--garbage-workers` loops of connect + LOGIN with a token that is not one, for
/// `--duration`; the honest logins (5/s) show whether real users still get in.
pub async fn login_garbage(rig: &mut Rig<'_>) -> Result<Outcome> {
    let workers = rig.args.garbage_workers.max(1);
    rig.honest(None, false).await?;
    rig.attack_begins().await;
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(rig.args.duration.max(0.1));
    let replies = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let addr = rig.addr().to_string();
        let replies = replies.clone();
        tasks.spawn(async move {
            let mut local = BTreeMap::<String, u64>::new();
            let mut k = 0u64;
            while Instant::now() < end {
                k += 1;
                let outcome = garbage_login(&addr, source(w), w, k).await;
                *local.entry(outcome).or_insert(0) += 1;
            }
            let mut r = replies.lock().expect("replies");
            for (key, v) in local {
                *r.entry(key).or_insert(0) += v;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let took = t0.elapsed();
    rig.attack_ends();
    let replies = replies.lock().expect("replies").clone();
    let total: u64 = replies.values().sum();
    let answered: u64 = replies
        .iter()
        .filter(|(k, _)| !k.starts_with("connect") && *k != "no answer")
        .map(|(_, v)| v)
        .sum();
    let mut o = Outcome::new(format!(
        "{total} garbage LOGINs from {workers} loops in {:.1} s ({:.0}/s answered; {replies:?})",
        took.as_secs_f64(),
        figures::rate(answered, took.as_secs_f64())
    ));
    o.set("workers", workers as u64);
    o.set("garbage_logins", total);
    o.set(
        "garbage_answered_per_s",
        figures::rate(answered, took.as_secs_f64()),
    );
    o.set("replies", serde_json::to_value(&replies)?);
    Ok(o)
}

/// One garbage LOGIN on a fresh connection: its answer's name ("AUTH_FAILED", "SERVER_BUSY",
/// ...), "no answer", or "connect: ...".
async fn garbage_login(addr: &str, src: std::net::IpAddr, w: usize, k: u64) -> String {
    let attempt = async {
        let s = match connect_from(addr, src).await {
            Ok(s) => s,
            Err(e) => return format!("connect: {}", e.kind()),
        };
        let mut raw = Raw::over(s);
        let login = Packet::Login(pb::Login {
            token: format!("garbage-{w}-{k}"),
            device_id: "x".into(),
            platform: 0,
            last_version: 0,
            client_version: String::new(),
            ..Default::default()
        });
        match raw.request(&login, Duration::from_secs(5)).await {
            Ok((p, _)) => {
                // Let the server close first, so the TIME_WAIT is its, not this port's.
                let mut buf = [0u8; 256];
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), raw.read_raw(&mut buf)).await;
                raw::reply_name(&p)
            }
            Err(_) => "no answer".into(),
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(s) => s,
        Err(_) => "no answer".into(),
    }
}

/// A LOGIN frame whose zlib body inflates past the protocol's limit (a valid Login message of
/// 1 MiB + 1 KiB, mostly one repeated byte): the server inflates up to its limit, then refuses
/// it. Returns the frame (request id 1).
pub fn bomb() -> Frame {
    let login = Packet::Login(pb::Login {
        token: "A".repeat(DEFAULT_MAX_FRAME_LEN + 1024),
        device_id: "x".into(),
        platform: 0,
        last_version: 0,
        client_version: String::new(),
        ..Default::default()
    });
    Frame::compressed_above(&login, 1, 0)
}

/// Unanswered bombs per connection.
const BOMBS_IN_FLIGHT: usize = 8;

/// `--bomb-connections` connections send bombs for `--duration`, reconnecting when closed.
pub async fn zlib_bomb(rig: &mut Rig<'_>) -> Result<Outcome> {
    let conns = rig.args.bomb_connections.max(1);
    let template = bomb();
    let bomb_bytes = template.encoded_len();
    rig.honest(None, false).await?;
    rig.attack_begins().await;
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(rig.args.duration.max(0.1));
    let totals = Arc::new(Mutex::new((0u64, 0u64, BTreeMap::<String, u64>::new())));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..conns {
        let (addr, totals, template) = (rig.addr().to_string(), totals.clone(), template.clone());
        tasks.spawn(async move {
            let (mut sent, mut connects) = (0u64, 0u64);
            let mut replies = BTreeMap::<String, u64>::new();
            while Instant::now() < end {
                connects += 1;
                // From an address of its own, as the garbage LOGINs: refused bombs count
                // against their sender's address, not the honest users' (127.0.0.1).
                let Ok(mut raw) = connect_from(&addr, source(i)).await.map(Raw::over) else {
                    *replies.entry("connect failed".into()).or_insert(0) += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let mut in_flight = 0usize;
                while Instant::now() < end {
                    let mut out = Vec::new();
                    while in_flight < BOMBS_IN_FLIGHT {
                        let mut f = template.clone();
                        f.request_id = raw.id();
                        out.extend_from_slice(&f.to_bytes());
                        in_flight += 1;
                        sent += 1;
                    }
                    if raw.write(&out).await.is_err() {
                        break;
                    }
                    let left = end.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, raw.read()).await {
                        Ok(Ok(Some(r))) => {
                            in_flight = in_flight.saturating_sub(1);
                            let name = r
                                .frame
                                .packet(DEFAULT_MAX_FRAME_LEN)
                                .map(|p| raw::reply_name(&p))
                                .unwrap_or_else(|_| raw::cmd_name(r.frame.command));
                            *replies.entry(name).or_insert(0) += 1;
                        }
                        // Closed (LOGIN_TIMEOUT, or a server that makes it fatal): reconnect.
                        Ok(_) => break,
                        Err(_) => break,
                    }
                }
            }
            let mut t = totals.lock().expect("totals");
            t.0 += sent;
            t.1 += connects;
            for (k, v) in replies {
                *t.2.entry(k).or_insert(0) += v;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let took = t0.elapsed();
    rig.attack_ends();
    let (sent, connects, replies) = totals.lock().expect("totals").clone();
    let bad_body = replies.get("BAD_BODY").copied().unwrap_or(0);
    // Each BAD_BODY for inflating past the limit means the server inflated limit + 1 bytes.
    let inflated = bad_body as f64 * (DEFAULT_MAX_FRAME_LEN + 1) as f64;
    let cpu = rig.attack_cpu();
    let mut o = Outcome::new(format!(
        "{conns} connections sent {sent} bombs of {} ({} in all) in {:.1} s over {connects} \
         connections; replies {replies:?}: ≥{} inflated; server CPU {} s ({} of a core)",
        bytes_text(bomb_bytes as f64),
        bytes_text(sent as f64 * bomb_bytes as f64),
        took.as_secs_f64(),
        bytes_text(inflated),
        cpu.map_or("-".into(), |c| format!("{c:.2}")),
        cpu.map_or("-".into(), |c| format!(
            "{:.0}%",
            c / took.as_secs_f64() * 100.0
        )),
    ));
    o.set("connections", conns as u64);
    o.set("bomb_frame_bytes", bomb_bytes as u64);
    o.set("bombs_sent", sent);
    o.set("bytes_sent", sent * bomb_bytes as u64);
    o.set("connects", connects);
    o.set("replies", serde_json::to_value(&replies)?);
    o.set("inflated_bytes_at_least", inflated);
    o.set(
        "server_cpu_share",
        serde_json::json!(cpu.map(|c| (c / took.as_secs_f64() * 1000.0).round() / 1000.0)),
    );
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bomb_inflates_past_the_limit_from_little() {
        let f = bomb();
        assert!(f.flags.compressed());
        // The server's check: inflating stops past the limit, with BAD_BODY.
        let err = f.packet(DEFAULT_MAX_FRAME_LEN).unwrap_err();
        assert_eq!(err.code(), missive_protocol::ErrorCode::BadBody, "{err}");
        assert!(f.body.len() < 16 * 1024, "bomb of {} bytes", f.body.len());
    }
}
