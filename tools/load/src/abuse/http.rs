//! The Server API without timeouts: request heads left unfinished, bodies shorter than their
//! Content-Length.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::figures::{bytes_text, per_connection_bytes, short_ms};
use super::outcome::Outcome;
use super::prelogin::until;
use super::rig::Rig;
use super::server;

/// `--http-connections` request heads left unfinished and as many requests whose body is
/// shorter than their Content-Length, on the Server API, watched for `--http-hold`.
pub async fn http_slow(rig: &mut Rig<'_>) -> Result<Outcome> {
    let n = rig.args.http_connections.max(1);
    let half = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: missive\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\n",
        server::API_KEY
    );
    let lying = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: missive\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"from\": \"mallory\",",
        server::API_KEY
    );
    rig.honest(None, true).await?;
    rig.attack_begins().await;
    let t0 = Instant::now();
    let hold = Duration::from_secs_f64(rig.args.http_hold.max(0.0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for kind in ["half-sent head", "lying Content-Length"] {
        let text = if kind == "lying Content-Length" {
            lying.clone()
        } else {
            half.clone()
        };
        for _ in 0..n {
            let (addr, text, stop) = (rig.server.http_addr.clone(), text.clone(), stop.clone());
            tasks.spawn(async move {
                let r = async {
                    let mut s = TcpStream::connect(&addr).await?;
                    s.write_all(text.as_bytes()).await?;
                    let mut first = Vec::new();
                    let mut buf = [0u8; 1024];
                    loop {
                        let n = s.read(&mut buf).await?;
                        if n == 0 {
                            break;
                        }
                        if first.len() < 64 {
                            first.extend_from_slice(&buf[..n.min(64)]);
                        }
                    }
                    std::io::Result::Ok(first)
                };
                tokio::select! {
                    r = r => {
                        let said = match r {
                            Ok(first) => status_line(&first),
                            Err(e) => format!("error: {}", e.kind()),
                        };
                        (kind, Some((t0.elapsed(), said)))
                    }
                    _ = until(&stop) => (kind, None),
                }
            });
        }
    }
    tokio::time::sleep(hold).await;
    rig.attack_ends();
    stop.store(true, Relaxed);
    // Per kind: still held, when the others were closed, and what the server said.
    type Watched = (u64, Vec<Duration>, BTreeMap<String, u64>);
    let mut by_kind: BTreeMap<&str, Watched> = BTreeMap::new();
    while let Some(r) = tasks.join_next().await {
        let Ok((kind, closed)) = r else { continue };
        let e = by_kind.entry(kind).or_default();
        match closed {
            None => e.0 += 1,
            Some((at, said)) => {
                e.1.push(at);
                *e.2.entry(said).or_insert(0) += 1;
            }
        }
    }
    let mut parts = Vec::new();
    let mut o = Outcome::new("");
    for (kind, (held, mut closed, said)) in by_kind {
        closed.sort_unstable();
        parts.push(format!(
            "{kind}: {held}/{n} still held after {:.0} s{}",
            hold.as_secs_f64(),
            if closed.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} closed by the server (first {}, last {}; {said:?})",
                    closed.len(),
                    short_ms(closed[0]),
                    short_ms(*closed.last().expect("non-empty"))
                )
            }
        ));
        let key = kind.replace([' ', '-'], "_").to_lowercase();
        o.set(&format!("{key}_held_at_end"), held);
        o.set(&format!("{key}_closed"), closed.len() as u64);
        o.set(
            &format!("{key}_closed_at_secs"),
            serde_json::json!(closed.iter().map(|d| d.as_secs_f64()).collect::<Vec<_>>()),
        );
        o.set(&format!("{key}_server_said"), serde_json::to_value(&said)?);
    }
    let before = rig.rss_before.unwrap_or(0);
    let per = per_connection_bytes(before, rig.peak_kib().unwrap_or(0), 2 * n);
    o.set("connections_per_kind", n as u64);
    o.set("hold_secs", hold.as_secs_f64());
    o.set(
        "bytes_per_held_connection",
        serde_json::json!(per.map(f64::round)),
    );
    o.headline = format!(
        "Server API, {} each: {}; {} per connection",
        n,
        parts.join("; "),
        per.map_or("-".into(), bytes_text)
    );
    Ok(o)
}

/// "HTTP/1.1 408 ..." -> "408"; else "closed" (nothing said) or the first bytes.
fn status_line(first: &[u8]) -> String {
    let text = String::from_utf8_lossy(first);
    if first.is_empty() {
        return "closed".into();
    }
    match text.strip_prefix("HTTP/1.1 ") {
        Some(rest) => rest.chars().take(3).collect(),
        None => text.chars().take(20).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_named() {
        assert_eq!(status_line(b"HTTP/1.1 408 Request Timeout\r\n"), "408");
        assert_eq!(status_line(b""), "closed");
    }
}
