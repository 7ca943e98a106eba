//! Sending one message over HTTP with the device's login token (`POST /v1/send`, PROTOCOL.md
//! 27): for an app that has something to send while it holds no connection (a share extension,
//! a reply from a notification, a background task about to be suspended), so that sending does
//! not cost a LOGIN, a SYNC and a push channel. The answer is the SEND_ACK's; the same
//! `client_msg_id` later over the connection (or again here) is answered as a duplicate.
//!
//! Plain HTTP/1.1 over TCP (`http://host:port` or `host:port`), like the rest of this client:
//! one request per connection, closed by the server after its answer.

use std::io;
use std::time::Duration;

use missive_protocol::pb::{self, ConversationKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{ClientError, Result};

/// Most bytes of an answer read (an answer is a few hundred bytes).
const MAX_ANSWER: u64 = 64 * 1024;

/// Sends `req` as the user of `token` to the server at `addr` over HTTP and returns its ack
/// (`duplicate` set when `req.client_msg_id` was stored before). A refusal is
/// [`ClientError::Server`] with the protocol's code, as over the connection.
pub async fn send_over_http(
    addr: &str,
    token: &str,
    req: &pb::Send,
    timeout: Duration,
) -> Result<pb::SendAck> {
    let authority = addr
        .strip_prefix("http://")
        .unwrap_or(addr)
        .trim_end_matches('/');
    tokio::time::timeout(timeout, exchange(authority, token, req))
        .await
        .map_err(|_| ClientError::Timeout)?
}

async fn exchange(authority: &str, token: &str, req: &pb::Send) -> Result<pb::SendAck> {
    let body = body_json(req)?.to_string();
    let head = format!(
        "POST /v1/send HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut tcp = TcpStream::connect(authority).await?;
    tcp.set_nodelay(true)?;
    tcp.write_all(&[head.as_bytes(), body.as_bytes()].concat())
        .await?;
    let mut answer = Vec::new();
    tcp.take(MAX_ANSWER).read_to_end(&mut answer).await?;
    let (status, json) = parse_answer(&answer)?;
    if status == 200 || status == 201 {
        return ack_of(&json).ok_or_else(|| invalid(format!("not a send answer: {json}")));
    }
    let e = &json["error"];
    match e["code"].as_u64() {
        Some(code) => Err(ClientError::Server {
            code: code as u32,
            name: e["name"].as_str().unwrap_or("").to_owned(),
            message: e["message"].as_str().unwrap_or("").to_owned(),
            fatal: false,
            reason: e["reason"].as_str().unwrap_or("").to_owned(),
        }),
        None => Err(invalid(format!("HTTP {status}: {json}"))),
    }
}

/// The JSON body: the HTTP API's send, without `from` (the token names the sender).
fn body_json(req: &pb::Send) -> Result<serde_json::Value> {
    let to = req
        .to
        .as_ref()
        .ok_or_else(|| invalid("a send needs a recipient".into()))?;
    let target = match ConversationKind::try_from(to.kind) {
        Ok(ConversationKind::Group) => serde_json::json!({ "group": to.id }),
        _ => serde_json::json!({ "user": to.id }),
    };
    let mut body = serde_json::json!({
        "client_msg_id": req.client_msg_id,
        "to": target,
        "content_type": req.content_type,
        "content_base64": missive_protocol::base64::encode(&req.content),
    });
    if !req.mentions.is_empty() {
        body["mentions"] = serde_json::json!(req.mentions);
    }
    Ok(body)
}

/// The status and the JSON body of an HTTP/1.1 answer.
fn parse_answer(bytes: &[u8]) -> Result<(u16, serde_json::Value)> {
    let text = std::str::from_utf8(bytes).map_err(|_| invalid("answer is not UTF-8".into()))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| invalid("incomplete HTTP answer".into()))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line: {head}")))?;
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.to_owned()));
    Ok((status, json))
}

fn ack_of(j: &serde_json::Value) -> Option<pb::SendAck> {
    Some(pb::SendAck {
        client_msg_id: j["client_msg_id"].as_str()?.to_owned(),
        msg_id: j["msg_id"].as_str()?.parse().ok()?,
        seq: j["seq"].as_u64()?,
        timestamp_ms: j["timestamp_ms"].as_i64()?,
        version: j["version"].as_u64()?,
        duplicate: j["duplicate"].as_bool()?,
        content: match j["content_base64"].as_str() {
            Some(b) => missive_protocol::base64::decode(b)?,
            None => Vec::new(),
        },
    })
}

fn invalid(msg: String) -> ClientError {
    ClientError::Io(io::Error::new(io::ErrorKind::InvalidData, msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_answer_and_its_error() {
        let ok = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{\"client_msg_id\":\"c\",\"msg_id\":\"5\",\"seq\":1,\"timestamp_ms\":2,\"version\":3,\"duplicate\":false}";
        let (status, json) = parse_answer(ok).unwrap();
        assert_eq!(status, 201);
        let ack = ack_of(&json).unwrap();
        assert_eq!((ack.msg_id, ack.seq, ack.version), (5, 1, 3));
        let (status, _) = parse_answer(b"HTTP/1.1 401 Unauthorized\r\n\r\n{}").unwrap();
        assert_eq!(status, 401);
    }
}
