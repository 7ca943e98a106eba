//! One upload: create, the chunks in order on one kept-alive connection, finish; the digest the
//! server names must be the one of the bytes sent.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use super::http::Conn;
use super::pattern::Pattern;

/// What is generated and written at once within a chunk.
const PIECE: usize = 256 * 1024;

/// A finished upload.
pub struct Uploaded {
    pub media_id: String,
    pub content_type: String,
    /// From the finish request's start to its answer.
    pub finish: Duration,
}

/// Uploads the file of `pattern` (whose digest is `sha256`) on `conn` in chunks of `chunk`
/// bytes, adding the bytes sent to `sent`. Every request must be answered within `timeout`.
pub async fn upload(
    conn: &mut Conn,
    token: &str,
    pattern: Pattern,
    sha256: &[u8; 32],
    chunk: u64,
    timeout: Duration,
    sent: &AtomicU64,
) -> Result<Uploaded> {
    let create = json!({"size": pattern.size}).to_string();
    let (status, v, _) = within(
        timeout,
        "create",
        conn.json("POST", "/v1/media/uploads", token, create.as_bytes()),
    )
    .await?;
    if status != 201 {
        bail!("create: {status} {v}");
    }
    let id = v["upload_id"]
        .as_str()
        .ok_or_else(|| anyhow!("create: no upload_id in {v}"))?
        .to_string();
    let path = format!("/v1/media/uploads/{id}");
    let mut buf = vec![0u8; PIECE];
    let mut offset = 0;
    while offset < pattern.size {
        let len = chunk.min(pattern.size - offset);
        let what = format!("PATCH {len} bytes at {offset}");
        let step = async {
            let extra = [("Upload-Offset", offset.to_string())];
            conn.send("PATCH", &path, token, &extra, len, &[]).await?;
            let mut at = offset;
            while at < offset + len {
                let n = (offset + len - at).min(PIECE as u64) as usize;
                pattern.fill(at, &mut buf[..n]);
                conn.write(&buf[..n]).await?;
                sent.fetch_add(n as u64, Relaxed);
                at += n as u64;
            }
            let head = conn.head().await?;
            let body = conn.body(&head).await?;
            anyhow::Ok((head.status, body))
        };
        let (status, body) = within(timeout, &what, step).await?;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if status != 200 {
            bail!("{what}: {status} {}", String::from_utf8_lossy(&body));
        }
        if v["offset"].as_u64() != Some(offset + len) {
            bail!(
                "{what}: the upload stands at {} (want {})",
                v["offset"],
                offset + len
            );
        }
        offset += len;
    }
    let t0 = Instant::now();
    let finish_path = format!("{path}/finish");
    let (status, v, _) = within(
        timeout,
        "finish",
        conn.json("POST", &finish_path, token, b""),
    )
    .await?;
    let finish = t0.elapsed();
    if status != 201 {
        bail!("finish: {status} {v}");
    }
    let want: String = sha256.iter().map(|b| format!("{b:02x}")).collect();
    let said = v["sha256"].as_str().unwrap_or("");
    if said != want {
        bail!("upload {id}: sha256 mismatch: sent {want}, the server says {said:?}");
    }
    if v["size"].as_u64() != Some(pattern.size) {
        bail!(
            "upload {id}: size {} sent, the server says {}",
            pattern.size,
            v["size"]
        );
    }
    let media_id = v["media_id"]
        .as_str()
        .ok_or_else(|| anyhow!("finish: no media_id in {v}"))?
        .to_string();
    Ok(Uploaded {
        media_id,
        content_type: v["content_type"].as_str().unwrap_or("").to_string(),
        finish,
    })
}

/// `f` within `timeout`, or an error naming `what`.
pub async fn within<T>(
    timeout: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(timeout, f)
        .await
        .map_err(|_| anyhow!("{what}: no answer within {} s", timeout.as_secs()))?
        .with_context(|| what.to_string())
}
