//! Drain: connected clients are moved away with KICK REDIRECT at the configured rate, new
//! logins are refused, readiness turns off; by the API and by SIGUSR1 to the real binary.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::http::{Api, API_KEY};
use common::*;
use missive_client::{pb, Connection};
use missive_protocol::{ErrorCode, Packet};
use serde_json::json;
use tokio::time::Instant;

/// Waits (up to 15 s) for the KICK on `conn`, skipping other frames; when it arrived.
async fn kick_of(mut conn: Connection) -> (Instant, pb::Kick) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.recv_packet_timeout(left).await {
            Ok(Some((_, Packet::Kick(k)))) => return (Instant::now(), k),
            Ok(Some(_)) => continue,
            other => panic!("no KICK: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_drain_moves_every_client_at_its_rate_and_refuses_new_logins() {
    const N: usize = 20;
    const RATE: u32 = 10;
    let server = TestServer::start_api(|c| {
        c.drain_redirect = "127.0.0.1:7443".into();
        c.drain_reconnect_after_ms = 250;
    })
    .await;
    let api = server.api();
    let mut conns = Vec::new();
    for i in 0..N {
        conns.push(server.login(&format!("user{i}"), "phone").await.0);
    }
    let waiting: Vec<_> = conns
        .into_iter()
        .map(|c| tokio::spawn(kick_of(c)))
        .collect();

    let started = api.post("/v1/drain", json!({ "rate_per_sec": RATE })).await;
    assert_eq!(started.status, 202, "{}", started.text());
    assert_eq!(started.json()["draining"], true);
    assert_eq!(started.json()["plan"]["rate_per_sec"], RATE);
    assert_eq!(started.json()["plan"]["redirect"], "127.0.0.1:7443");

    // At once: no new logins, not ready.
    let mut late = server.connect().await;
    let refused = late
        .login(&server.token("late", "d"), "d", 0)
        .await
        .unwrap_err();
    assert_eq!(
        refused.server_code(),
        Some(ErrorCode::ShuttingDown),
        "{refused}"
    );
    let ready = api.get("/readyz").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["reason"], "draining");

    let mut times = Vec::new();
    for w in waiting {
        let (at, kick) = w.await.unwrap();
        assert_eq!(kick.reason, pb::KickReason::Redirect as i32);
        assert_eq!(kick.redirect_host, "127.0.0.1");
        assert_eq!(kick.redirect_port, 7443);
        assert_eq!(kick.reconnect_after_ms, 250);
        times.push(at);
    }
    times.sort();
    // N kicks at RATE per second take (N - 1) / RATE seconds, and no RATE + 1 of them come
    // within much less than a second.
    let spread = (times[N - 1] - times[0]).as_secs_f64();
    let expected = (N - 1) as f64 / f64::from(RATE);
    assert!(
        spread >= expected * 0.8 && spread <= expected * 1.5 + 0.5,
        "{N} kicks took {spread:.2} s at {RATE}/s (expected about {expected:.2} s)"
    );
    for window in times.windows(RATE as usize + 1) {
        let span = (window[RATE as usize] - window[0]).as_secs_f64();
        assert!(span >= 0.8, "{} kicks within {span:.2} s", RATE + 1);
    }

    let status = api.get("/v1/drain").await.json();
    assert_eq!(status["kicked"], N);
    assert_eq!(status["remaining"], 0);
    let m = api.metrics().await;
    assert_eq!(m.get("missive_drain_kicks_total"), N as f64);
    assert_eq!(m.get("missive_draining"), 1.0);
    assert_eq!(m.get("missive_logins_total{result=\"SHUTTING_DOWN\"}"), 1.0);

    // Stopped: logins are accepted again.
    let stopped = api.delete("/v1/drain").await;
    assert_eq!(stopped.json()["draining"], false, "{}", stopped.text());
    assert_eq!(api.get("/readyz").await.status, 200);
    server.login("back", "phone").await;
    server.stop().await;
}

#[tokio::test]
async fn without_a_redirect_clients_reconnect_to_the_same_address_and_bad_plans_are_refused() {
    let server = TestServer::start_api(|_| {}).await;
    let api = server.api();
    let (first, _) = server.login("early", "phone").await;
    let early = tokio::spawn(kick_of(first));
    assert_eq!(
        api.post("/v1/drain", json!({"rate_per_sec": 1000, "redirect": ""}))
            .await
            .status,
        202
    );
    let (_, kick) = early.await.unwrap();
    assert_eq!(kick.redirect_host, "", "no redirect: the same address");
    assert_eq!(kick.redirect_port, 0);
    // Bad plans are refused with the protocol's code.
    let bad = api.post("/v1/drain", json!({"rate_per_sec": 0})).await;
    assert_eq!((bad.status, bad.error_code()), (400, 11));
    let bad = api.post("/v1/drain", json!({"redirect": "no-port"})).await;
    assert_eq!((bad.status, bad.error_code()), (400, 11));
    server.stop().await;
}

/// A port that was free a moment ago.

#[tokio::test]
async fn sigusr1_drains_the_real_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (port, http_port) = (free_port(), free_port());
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_missived"))
        .args(["--listen", &addr])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--secret", SECRET, "--durability", "async", "--log", "warn"])
        .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
        .env_remove("MISSIVE_CONFIG")
        .env("MISSIVE_API_KEY", API_KEY)
        .env("MISSIVE_DRAIN_RATE_PER_SEC", "50")
        .env("MISSIVE_DRAIN_REDIRECT", "missive-2.example:443")
        .stdin(Stdio::null())
        .spawn()
        .expect("missived starts");
    let daemon = Daemon(child);
    let api = Api::new(format!("127.0.0.1:{http_port}").parse().unwrap(), None);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let probe = tokio::net::TcpStream::connect(("127.0.0.1", http_port));
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), probe).await {
            break;
        }
        assert!(Instant::now() < deadline, "missived did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(api.get("/readyz").await.status, 200);
    let token = |user: &str| {
        let expires = (missive::now_ms() / 1000) as u64 + 600;
        missive_protocol::token::mint(SECRET.as_bytes(), user, "d", expires)
    };
    let mut waiting = Vec::new();
    for user in ["ann", "ben", "cat"] {
        let mut conn = Connection::connect(&addr).await.unwrap();
        conn.login(&token(user), "d", 0).await.unwrap();
        waiting.push(tokio::spawn(kick_of(conn)));
    }
    let pid = daemon.0.id().to_string();
    let status = Command::new("kill").args(["-USR1", &pid]).status().unwrap();
    assert!(status.success());
    for w in waiting {
        let (_, kick) = w.await.unwrap();
        assert_eq!(kick.reason, pb::KickReason::Redirect as i32);
        assert_eq!(kick.redirect_host, "missive-2.example");
        assert_eq!(kick.redirect_port, 443);
    }
    let mut late = Connection::connect(&addr).await.unwrap();
    let refused = late.login(&token("dan"), "d", 0).await.unwrap_err();
    assert_eq!(refused.server_code(), Some(ErrorCode::ShuttingDown));
    assert_eq!(api.get("/readyz").await.status, 503);
    let keyed = Api::new(api_addr(http_port), Some(API_KEY));
    let status = keyed.get("/v1/drain").await.json();
    assert_eq!(status["draining"], true);
    assert_eq!(status["plan"]["rate_per_sec"], 50);
    assert_eq!(status["kicked"], 3);
    drop(daemon);
}

fn api_addr(port: u16) -> std::net::SocketAddr {
    format!("127.0.0.1:{port}").parse().unwrap()
}
