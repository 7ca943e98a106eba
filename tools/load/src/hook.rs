//! `missive-load hook`: a before-send hook that allows every message, as fast as it can, for
//! measuring what a hook costs the server (BENCHMARKS.md: `chat-max-hook` against `chat-max`).
//! HTTP/1.1 with keep-alive, read by hand (a request head, then `Content-Length` bytes of
//! body), answered `200 {"action":"allow"}`, or for the batch form (`send_hook_batch_max` above
//! 1, a body `{"messages":[...]}`) one allow per message in `{"results":[...]}`. It runs until
//! SIGTERM or `--for` passes, then prints how many requests and messages it answered
//! (`{"answered": N, "messages": M}`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9501")]
    pub listen: String,
    /// Stop after this many seconds (default: run until killed).
    #[arg(long = "for", value_name = "SECS")]
    pub for_secs: Option<u64>,
}

const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 18\r\n\r\n{\"action\":\"allow\"}";

/// The key every message of a batch has once.
const CMID_KEY: &[u8] = b"\"client_msg_id\":";

/// Largest request head or body it reads; beyond it the connection is closed.
const MAX_REQUEST: usize = 64 << 20;

pub async fn run(args: &Args) -> anyhow::Result<bool> {
    let listener = TcpListener::bind(&args.listen).await?;
    eprintln!("missive-load hook: listening on {}", listener.local_addr()?);
    let answered = Arc::new(AtomicU64::new(0));
    let messages = Arc::new(AtomicU64::new(0));
    let serve = {
        let (answered, messages) = (answered.clone(), messages.clone());
        async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(stream, answered.clone(), messages.clone()));
            }
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let limit = Duration::from_secs(args.for_secs.unwrap_or(u64::MAX / 4));
    tokio::select! {
        _ = serve => {}
        _ = tokio::time::sleep(limit) => {}
        _ = term.recv() => {}
    }
    println!(
        "{}",
        serde_json::json!({"answered": answered.load(Relaxed), "messages": messages.load(Relaxed)})
    );
    Ok(true)
}

/// Answers the requests of one connection, in order, until it closes or sends something that
/// is not a request.
async fn connection(mut stream: TcpStream, answered: Arc<AtomicU64>, messages: Arc<AtomicU64>) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut batch_answer = Vec::new();
    loop {
        // A whole request in `buf`: its head and `Content-Length` bytes after it.
        let (body_at, need) = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break (end + 4, end + 4 + len);
            }
            if buf.len() > MAX_REQUEST || !read_more(&mut stream, &mut buf).await {
                return;
            }
        };
        if need > MAX_REQUEST {
            return;
        }
        while buf.len() < need {
            if !read_more(&mut stream, &mut buf).await {
                return;
            }
        }
        let body = &buf[body_at..need];
        let answer = if body.starts_with(b"{\"messages\":") {
            // Each message object has one "client_msg_id" key; inside a JSON string a quote is
            // always escaped, so the key's spelling (quote, colon) cannot occur in a value.
            let n = body
                .windows(CMID_KEY.len())
                .filter(|w| *w == CMID_KEY)
                .count();
            messages.fetch_add(n as u64, Relaxed);
            let results = vec![r#"{"action":"allow"}"#; n].join(",");
            let json = format!(r#"{{"results":[{results}]}}"#);
            batch_answer.clear();
            batch_answer.extend_from_slice(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    json.len()
                )
                .as_bytes(),
            );
            batch_answer.extend_from_slice(json.as_bytes());
            &batch_answer[..]
        } else {
            messages.fetch_add(1, Relaxed);
            ANSWER
        };
        answered.fetch_add(1, Relaxed);
        if stream.write_all(answer).await.is_err() {
            return;
        }
        buf.drain(..need);
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
