//! A small HTTP client for the server API (hyper-util's client over real TCP).
#![allow(dead_code)]

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// The API key test servers are started with.
pub const API_KEY: &str = "test-api-key-0123456789";

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The protocol error code of an error answer.
    pub fn error_code(&self) -> u64 {
        let v = self.json();
        v["error"]["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("not an error answer: {v}"))
    }
}

/// A client of one server's API, sending `key` as the bearer token (if any).
#[derive(Clone)]
pub struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    pub key: Option<String>,
}

impl Api {
    pub fn new(addr: SocketAddr, key: Option<&str>) -> Api {
        Api {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{addr}"),
            key: key.map(str::to_owned),
        }
    }

    /// Sends `body` (raw bytes; JSON content type when not empty) with `method` to `path`.
    pub async fn raw(&self, method: &str, path: &str, body: Vec<u8>) -> Answer {
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(format!("{}{path}", self.base));
        if let Some(key) = &self.key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        if !body.is_empty() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(Full::new(Bytes::from(body))).unwrap();
        let response = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            self.client.request(req).await
        })
        .await
        .expect("HTTP answer within 20 s")
        .expect("HTTP request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("HTTP body")
            .to_bytes()
            .to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.raw("GET", path, Vec::new()).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.raw("DELETE", path, Vec::new()).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.raw("POST", path, body.to_string().into_bytes()).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Answer {
        self.raw("PUT", path, body.to_string().into_bytes()).await
    }

    /// `/metrics`, parsed: sample (name with labels, as written) -> value.
    pub async fn metrics(&self) -> Metrics {
        let answer = self.get("/metrics").await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let mut samples = std::collections::HashMap::new();
        for line in answer.text().lines() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (name, value) = line.rsplit_once(' ').expect("sample line");
            samples.insert(name.to_owned(), value.parse::<f64>().expect("sample value"));
        }
        Metrics(samples)
    }
}

/// Samples of one scrape.
#[derive(Debug, Clone)]
pub struct Metrics(pub std::collections::HashMap<String, f64>);

impl Metrics {
    /// The sample `name` (e.g. `missive_logins_total{result="ok"}`); 0 if absent.
    pub fn get(&self, name: &str) -> f64 {
        self.0.get(name).copied().unwrap_or(0.0)
    }

    /// Whether the scrape has the sample at all.
    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// The `X-Missive-Signature` of `body` signed with `secret`: `sha256=` and the hex HMAC-SHA256,
/// as a webhook receiver computes it.
pub fn signature(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// Whether the request's `X-Missive-Signature` is `body`'s with `secret`.
pub fn signed(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let got = headers
        .get("x-missive-signature")
        .and_then(|v| v.to_str().ok());
    got == Some(signature(secret, body).as_str())
}
