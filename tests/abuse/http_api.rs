//! The Server API (`http_listen`) under attack over raw TCP: request heads sent half way,
//! bodies shorter than their Content-Length, and more connections than `http_max_connections`.
//! Each attack must be cut off at its deadline or at the limit while the honest pair chats; an
//! honest API call is answered during the timeout attacks, and after the connection-limit one
//! (the limit is the API's, for everyone). The deadlines are shortened to 1 s so that the tests
//! take seconds; the defaults are 10 s.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::http::{Api, API_KEY};
use crate::common::TestServer;
use crate::honest::{ms, HonestPair};

const HEADER_TIMEOUT: Duration = Duration::from_millis(1000);
const BODY_TIMEOUT: Duration = Duration::from_millis(1000);
/// How late past a deadline the server may act on it (a debug build on a loaded 2-core box).
const MARGIN: Duration = Duration::from_millis(1000);
/// The honest pair's delivery and heartbeat bound under attack.
const HONEST_BOUND: Duration = Duration::from_millis(1000);

async fn start(http_max_connections: usize) -> TestServer {
    TestServer::start_api(|c| {
        c.http_header_timeout_ms = HEADER_TIMEOUT.as_millis() as u64;
        c.http_body_timeout_ms = BODY_TIMEOUT.as_millis() as u64;
        c.http_max_connections = http_max_connections;
    })
    .await
}

fn api_addr(server: &TestServer) -> std::net::SocketAddr {
    server.handle().http_addr().expect("the HTTP API is on")
}

/// A client of its own (a fresh connection), so that no pooled connection the server has
/// closed as idle is reused.
fn honest_api(server: &TestServer) -> Api {
    Api::new(api_addr(server), Some(API_KEY))
}

/// What the server sent on a connection until it closed it, and when it closed (`None`: still
/// open at `limit`). A reset counts as closed.
async fn read_until_closed(s: &mut TcpStream, limit: Instant) -> (Vec<u8>, Option<Instant>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(limit.into(), s.read(&mut buf)).await {
            Err(_) => return (got, None),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, Some(Instant::now())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// The status line and the JSON body of a whole `Connection: close` answer.
fn parse_answer(bytes: &[u8]) -> (String, serde_json::Value) {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let status = head.lines().next().unwrap_or("").to_owned();
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    (status, json)
}

/// Opens `n` connections and writes `bytes` on each; returns them with when each was opened
/// (before the connect, so no later than the server's clock for it started).
async fn open_and_send(
    addr: std::net::SocketAddr,
    n: usize,
    bytes: &[u8],
) -> Vec<(TcpStream, Instant)> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let opened = Instant::now();
        let mut s = TcpStream::connect(addr).await.expect("connects to the API");
        s.write_all(bytes).await.expect("writes");
        conns.push((s, opened));
    }
    conns
}

/// Waits for the server to close every connection (at most `deadline + MARGIN` after it was
/// opened); returns what each received and how long it was held.
async fn held(conns: Vec<(TcpStream, Instant)>, deadline: Duration) -> Vec<(Vec<u8>, Duration)> {
    let waits: Vec<_> = conns
        .into_iter()
        .map(|(mut s, opened)| {
            tokio::spawn(async move {
                let (got, closed) = read_until_closed(&mut s, opened + deadline + MARGIN).await;
                let closed = closed.unwrap_or_else(|| {
                    panic!(
                        "still open {:?} after opening ({:?} past the deadline)",
                        deadline + MARGIN,
                        MARGIN
                    )
                });
                (got, closed - opened)
            })
        })
        .collect();
    let mut out = Vec::new();
    for w in waits {
        out.push(w.await.expect("connection watcher"));
    }
    out
}

fn range_ms(v: &[(Vec<u8>, Duration)]) -> (f64, f64) {
    let min = v.iter().map(|(_, d)| *d).min().unwrap_or_default();
    let max = v.iter().map(|(_, d)| *d).max().unwrap_or_default();
    (ms(min), ms(max))
}

#[tokio::test]
async fn half_sent_request_heads_are_closed_at_the_header_timeout() {
    let _g = crate::honest::exclusive();
    let server = start(1024).await;
    let addr = api_addr(&server);
    let pair = HonestPair::start(&server).await;
    const N: usize = 200;
    let before = honest_api(&server).metrics().await;

    let attack = open_and_send(
        addr,
        N,
        b"GET /healthz HTTP/1.1\r\nHost: missive\r\nX-Slow: ",
    )
    .await;
    // And a keep-alive connection that asks once and then stays silent.
    let idle_at = Instant::now();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: missive\r\n\r\n")
        .await
        .unwrap();

    // While every one of them is held, an honest call is answered.
    let t = Instant::now();
    let answer = honest_api(&server).get("/healthz").await;
    let honest_ms = ms(t.elapsed());
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(
        attack[0].1.elapsed() < HEADER_TIMEOUT,
        "the honest call came after the attack's deadline ({honest_ms:.0} ms): too slow a box \
         to test this"
    );

    let closed = held(attack, HEADER_TIMEOUT).await;
    for (got, after) in &closed {
        assert!(
            got.is_empty(),
            "a half-sent head was answered: {:?}",
            String::from_utf8_lossy(got)
        );
        assert!(
            *after >= HEADER_TIMEOUT,
            "closed after {after:?}, before the header timeout"
        );
    }
    let (got, idle_closed) = read_until_closed(&mut idle, idle_at + HEADER_TIMEOUT + MARGIN).await;
    let idle_closed = idle_closed.expect("an idle keep-alive connection is closed");
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let idle_held = idle_closed - idle_at;
    assert!(
        idle_held >= HEADER_TIMEOUT,
        "idle connection closed after {idle_held:?}"
    );

    let after = honest_api(&server).metrics().await;
    let timeouts =
        after.get("missive_http_timeouts_total") - before.get("missive_http_timeouts_total");
    // The idle keep-alive connection is not counted: it had begun no request.
    assert_eq!(timeouts, N as f64, "missive_http_timeouts_total");

    let report = pair.finish().await;
    let (min, max) = range_ms(&closed);
    println!(
        "half-sent request heads: {N} connections held {min:.0}-{max:.0} ms each (header \
         timeout {} ms), closed unanswered; an idle keep-alive connection closed after {:.0} ms; \
         honest GET /healthz meanwhile {honest_ms:.1} ms; {}",
        HEADER_TIMEOUT.as_millis(),
        ms(idle_held),
        report.summary()
    );
    report.assert_healthy(HONEST_BOUND);
    server.stop().await;
}

#[tokio::test]
async fn bodies_shorter_than_their_content_length_get_408_at_the_body_timeout() {
    let _g = crate::honest::exclusive();
    let server = start(1024).await;
    let addr = api_addr(&server);
    let pair = HonestPair::start(&server).await;
    const N: usize = 100;
    let before = honest_api(&server).metrics().await;

    // Content-Length 1000000, and the first 10 bytes of the body only.
    let request = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: missive\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{{\"from\":\""
    );
    let attack = open_and_send(addr, N, request.as_bytes()).await;

    // While they are held, an honest send is stored and answered.
    let t = Instant::now();
    let answer = honest_api(&server)
        .post(
            "/v1/messages",
            serde_json::json!({"to": {"user": "bystander"}, "client_msg_id": "during-attack",
                               "content": "the API still answers"}),
        )
        .await;
    let honest_ms = ms(t.elapsed());
    assert_eq!(answer.status, 201, "{}", answer.text());
    assert!(
        attack[0].1.elapsed() < BODY_TIMEOUT,
        "the honest call came after the attack's deadline ({honest_ms:.0} ms): too slow a box \
         to test this"
    );

    let closed = held(attack, BODY_TIMEOUT).await;
    for (got, after) in &closed {
        let (status, json) = parse_answer(got);
        assert!(status.starts_with("HTTP/1.1 408"), "{status}");
        assert_eq!(json["error"]["code"], 6, "{json}");
        assert_eq!(json["error"]["name"], "BAD_BODY", "{json}");
        assert!(
            *after >= BODY_TIMEOUT,
            "answered after {after:?}, before the body timeout"
        );
    }

    let after = honest_api(&server).metrics().await;
    let delta = |name: &str| after.get(name) - before.get(name);
    assert_eq!(delta("missive_http_timeouts_total"), N as f64);
    assert!(delta("missive_errors_total{code=\"6\",name=\"BAD_BODY\"}") >= N as f64);

    let report = pair.finish().await;
    let (min, max) = range_ms(&closed);
    println!(
        "bodies short of their Content-Length: {N} connections held {min:.0}-{max:.0} ms each \
         (body timeout {} ms), answered 408 BAD_BODY and closed; honest POST /v1/messages \
         meanwhile {honest_ms:.1} ms; {}",
        BODY_TIMEOUT.as_millis(),
        report.summary()
    );
    report.assert_healthy(HONEST_BOUND);
    server.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused_at_once_and_the_api_recovers() {
    let _g = crate::honest::exclusive();
    const LIMIT: usize = 16;
    const EXTRA: usize = 8;
    // Heads slower than the test: the held connections stay until the test lets them go.
    let server = TestServer::start_api(|c| {
        c.http_header_timeout_ms = 30_000;
        c.http_max_connections = LIMIT;
    })
    .await;
    let addr = api_addr(&server);
    let pair = HonestPair::start(&server).await;

    let mut holders =
        open_and_send(addr, LIMIT, b"GET /healthz HTTP/1.1\r\nHost: missive\r\n").await;
    let held_at = Instant::now();
    // The extra connections send nothing: the answer is written before any request is read.
    // One every 125 ms, so that the limit is held for a second while the pair chats.
    let mut refused = Vec::new();
    for i in 0..EXTRA {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(125)).await;
        }
        let t = Instant::now();
        let mut s = TcpStream::connect(addr).await.unwrap();
        let (got, closed) = read_until_closed(&mut s, t + MARGIN).await;
        let closed = closed.expect("a connection beyond the limit is closed at once");
        let (status, json) = parse_answer(&got);
        assert!(status.starts_with("HTTP/1.1 503"), "{status}");
        assert_eq!(json["error"]["code"], 18, "{json}");
        assert_eq!(json["error"]["name"], "SERVER_BUSY", "{json}");
        assert_eq!(json["error"]["retry_after_ms"], 1000, "{json}");
        refused.push(closed - t);
    }

    // The first ones were held, not dropped: each finishes its request and is answered.
    for (s, _) in &mut holders {
        s.write_all(b"\r\n").await.unwrap();
        let mut buf = [0u8; 12];
        tokio::time::timeout(MARGIN, s.read_exact(&mut buf))
            .await
            .expect("a held connection is answered")
            .unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
    }

    // Let them go: the API answers again once the server has seen them close.
    let released = Instant::now();
    let held_for = released - held_at;
    drop(holders);
    let mut refused_while_recovering = 0;
    let recovered = loop {
        let mut s = TcpStream::connect(addr).await.unwrap();
        // Refused, the request may meet a reset instead of the 503: that is a refusal too.
        let _ = s
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: missive\r\nConnection: close\r\n\r\n")
            .await;
        let (got, _) = read_until_closed(&mut s, Instant::now() + MARGIN).await;
        if got.starts_with(b"HTTP/1.1 200") {
            break released.elapsed();
        }
        assert!(
            got.is_empty() || got.starts_with(b"HTTP/1.1 503"),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
        refused_while_recovering += 1;
        assert!(
            released.elapsed() < MARGIN,
            "the API still refuses {MARGIN:?} after the held connections closed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let answer = honest_api(&server).get("/healthz").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let metrics = honest_api(&server).metrics().await;
    assert_eq!(
        metrics.get("missive_http_connections_refused_total"),
        (EXTRA + refused_while_recovering) as f64
    );

    let report = pair.finish().await;
    let worst = refused.iter().max().copied().unwrap_or_default();
    println!(
        "connection limit: {LIMIT} connections held {:.0} ms (http_max_connections {LIMIT}); \
         {EXTRA} more meanwhile each answered 503 SERVER_BUSY and closed within {:.1} ms; the \
         API answered again {:.1} ms after the held ones closed ({refused_while_recovering} \
         refused meanwhile); {}",
        ms(held_for),
        ms(worst),
        ms(recovered),
        report.summary()
    );
    report.assert_healthy(HONEST_BOUND);
    server.stop().await;
}
