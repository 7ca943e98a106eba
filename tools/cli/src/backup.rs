//! `missive backup`: asks a server's API (`http_listen`, with its API key) for an online
//! backup, or lists or deletes its backups (docs/operations.md, "Backup and restore"), over the
//! small HTTP/1.1 client of `http1`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::args::Global;
use crate::http1::{Body, Conn, HttpError};

/// What `missive backup` does.
pub enum Action {
    Create,
    List,
    Delete(String),
}

/// `http://host:port` (or `host:port`) as `host:port`; anything else (https, a path) is refused.
fn authority(api: &str) -> Result<String> {
    let rest = match api.split_once("://") {
        Some(("http", rest)) => rest,
        Some(_) => bail!(
            "--api {api}: only http:// (the API listens on plain HTTP, on your private network)"
        ),
        None => api,
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        bail!("--api {api}: expected http://HOST:PORT, e.g. http://127.0.0.1:8080");
    }
    Ok(host.to_owned())
}

/// One request to the API, its JSON answer (an error answer is an [`HttpError`]).
async fn call(
    api: &str,
    key: Option<&str>,
    method: &str,
    path: &str,
    wait: Duration,
) -> Result<Value> {
    let host = authority(api)?;
    let mut conn = Conn::connect(&host, wait).await?;
    let auth = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let head = conn.request(method, path, &headers, Body::Empty).await?;
    let body = conn.body_bytes(16 << 20).await?;
    conn.close().await;
    if !(200..300).contains(&head.status) {
        return Err(HttpError::of(&head, &body).into());
    }
    serde_json::from_slice(&body)
        .with_context(|| format!("{method} {path}: the answer is not JSON"))
}

/// Bytes for people: `512 B`, `3.4 MiB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// One backup as a line: name, files, size, path.
fn line(b: &Value) -> String {
    let m = &b["backup"];
    format!(
        "{}  {} files  {}  {}",
        m["name"].as_str().unwrap_or("?"),
        m["files"].as_u64().unwrap_or(0),
        size(m["bytes"].as_u64().unwrap_or(0)),
        b["path"].as_str().unwrap_or("?"),
    )
}

/// Runs `missive backup`.
pub async fn run(
    g: &Global,
    api: &str,
    key: Option<&str>,
    action: Action,
    wait: u64,
) -> Result<ExitCode> {
    let short = Duration::from_secs(g.timeout);
    match action {
        Action::Create => {
            // The answer comes when the backup is written: wait for it as long as asked.
            let v = call(api, key, "POST", "/v1/backups", Duration::from_secs(wait)).await?;
            if g.json {
                println!("{v}");
            } else {
                let m = &v["backup"];
                println!(
                    "backup {} written to {}: {} files, {} ({} ms)",
                    m["name"].as_str().unwrap_or("?"),
                    v["path"].as_str().unwrap_or("?"),
                    m["files"].as_u64().unwrap_or(0),
                    size(m["bytes"].as_u64().unwrap_or(0)),
                    m["took_ms"].as_u64().unwrap_or(0),
                );
            }
        }
        Action::List => {
            let v = call(api, key, "GET", "/v1/backups", short).await?;
            if g.json {
                println!("{v}");
            } else {
                let list = v["backups"].as_array().cloned().unwrap_or_default();
                println!(
                    "{} backups in {}",
                    list.len(),
                    v["backup_dir"].as_str().unwrap_or("?")
                );
                for b in &list {
                    println!("{}", line(b));
                }
            }
        }
        Action::Delete(name) => {
            // Encoded whole, so the server judges the name as given (it takes only a backup's).
            let encoded: String = name
                .bytes()
                .map(|b| match b {
                    b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' => (b as char).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect();
            let path = format!("/v1/backups/{encoded}");
            let v = call(api, key, "DELETE", &path, short).await?;
            if g.json {
                println!("{v}");
            } else {
                println!("deleted backup {name}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_addresses_are_plain_http_host_and_port() {
        assert_eq!(
            authority("http://127.0.0.1:8080").unwrap(),
            "127.0.0.1:8080"
        );
        assert_eq!(
            authority("http://127.0.0.1:8080/").unwrap(),
            "127.0.0.1:8080"
        );
        assert_eq!(authority("10.0.0.5:9000").unwrap(), "10.0.0.5:9000");
        for bad in ["https://x:443", "http://x:1/v1", "http://", ""] {
            assert!(authority(bad).is_err(), "{bad}");
        }
        assert_eq!(size(512), "512 B");
        assert_eq!(size(3 << 20), "3.0 MiB");
    }
}
