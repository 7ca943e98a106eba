//! End to end: `GET /v1/entry` over real HTTP (hyper's client) on the binary protocol's port:
//! derived and configured addresses, the reconnect backoff, and an address from the answer that
//! a client can use.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use missive_client::Connection;
use serde_json::Value;

async fn get(url: &str) -> (u16, String, Vec<u8>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = client
        .get(url.parse().unwrap())
        .await
        .expect("an HTTP answer");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, body.to_vec())
}

#[tokio::test]
async fn entry_point_derives_addresses_from_the_listeners() {
    let server = TestServer::start().await;
    let (status, content_type, body) = get(&format!("http://{}/v1/entry", server.addr)).await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    let doc: Value = serde_json::from_slice(&body).unwrap();
    let port = server.addr.rsplit_once(':').unwrap().1;
    let urls: Vec<&str> = doc["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["url"].as_str().unwrap())
        .collect();
    // No certificate: the plain binary protocol, then the WebSocket fallback, host as asked.
    assert_eq!(
        urls,
        [
            format!("tcp://127.0.0.1:{port}"),
            format!("ws://127.0.0.1:{port}/ws")
        ]
    );
    let ws = &doc["addresses"][1];
    assert_eq!(
        (ws["transport"].as_str(), ws["path"].as_str()),
        (Some("ws"), Some("/ws"))
    );
    assert_eq!(ws["port"].as_u64(), port.parse().ok());
    let r = &doc["reconnect"];
    assert_eq!(
        (r["initial_ms"].as_u64(), r["max_ms"].as_u64()),
        (Some(1000), Some(60000))
    );
    assert_eq!(
        (r["jitter"].as_str(), r["reset_after_ms"].as_u64()),
        (Some("full"), Some(60000))
    );
    assert_eq!(doc["protocol_version"], 1);
    assert_eq!(doc["heartbeat_secs"], 30);

    // The WebSocket address from the answer works as it is.
    let mut conn = Connection::connect(urls[1]).await.unwrap();
    conn.login(&server.token("ann", "p"), "p", 0).await.unwrap();

    // Other paths are not HTTP here (read as frames): no HTTP answer comes.
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let other = format!("http://{}/v1/nothing", server.addr)
        .parse()
        .unwrap();
    assert!(client.get(other).await.is_err());
    server.stop().await;
}

#[tokio::test]
async fn entry_point_gives_the_configured_addresses_and_backoff() {
    let server = TestServer::start_with(|c| {
        c.entry_addresses = vec![
            "tls://chat.example:443".into(),
            "wss://chat.example:443/ws".into(),
            "tcp://10.0.0.7:8080".into(),
        ];
        c.reconnect_initial_ms = 2000;
        c.reconnect_max_ms = 120_000;
    })
    .await;
    let (status, _, body) = get(&format!("http://{}/v1/entry?client=ios", server.addr)).await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    let got: Vec<(String, String, u64)> = doc["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["transport"].as_str().unwrap().to_owned(),
                a["host"].as_str().unwrap().to_owned(),
                a["port"].as_u64().unwrap(),
            )
        })
        .collect();
    let want = [
        ("tls", "chat.example", 443),
        ("wss", "chat.example", 443),
        ("tcp", "10.0.0.7", 8080),
    ]
    .map(|(t, h, p)| (t.to_owned(), h.to_owned(), p));
    assert_eq!(got, want);
    assert_eq!(doc["reconnect"]["initial_ms"], 2000);
    assert_eq!(doc["reconnect"]["max_ms"], 120_000);
    server.stop().await;
}

#[tokio::test]
async fn bad_entry_settings_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = test_config(&dir);
    c.entry_addresses = vec!["chat.example:443".into()];
    let err = missive::Server::start(c.clone()).await.err().unwrap();
    assert!(err.to_string().contains("entry_addresses"), "{err}");
    c.entry_addresses.clear();
    c.reconnect_max_ms = 10;
    let err = missive::Server::start(c).await.err().unwrap();
    assert!(err.to_string().contains("reconnect_initial_ms"), "{err}");
}
