//! `POST /v1/send` on the public ports: a user sends a message with its own login token, over
//! a short HTTP connection instead of its long one (PROTOCOL.md 27). The request arrives where
//! the binary protocol does (`net::web` tells it apart by its first bytes and reads its head);
//! this file answers it: the token is checked as a LOGIN's (same codes, same failed-login
//! budget per address), then the body as the HTTP API's `POST /v1/messages` (same JSON, less
//! `from`), then it is the one send path of sockets and the API (`service::messages`): same
//! validation, same dedup by `client_msg_id`, same answer.

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use missive_protocol::token::{self, TokenError};
use missive_protocol::ErrorCode;
use tokio::time::Instant;

use super::error::{status_of, ApiError};
use super::messages::{answer, SendBody};
use crate::context::Shared;
use crate::net::web::{self, Post};
use crate::service::messages::{submit_send, Sender, Via};
use crate::service::run::small_read;
use crate::service::users::revoked_token;

/// Bytes of JSON a send's body may hold: the content twice over (base64 is 4/3 of it, escaped
/// text up to 6 times, but text content is meant to be text), and room for the ids.
pub fn max_body(max_content_len: usize) -> usize {
    max_content_len * 2 + 8 * 1024
}

/// Answers `post` (a `POST /v1/send` from `ip`) and closes the connection. The body is read
/// only once the token is found valid, within `deadline` (the login timeout).
pub async fn serve(shared: &Arc<Shared>, mut post: Post, ip: IpAddr, deadline: Instant) {
    let reply = match respond(shared, &mut post, ip, deadline).await {
        Ok(reply) => reply,
        Err(Some(reply)) => reply,
        // The client went away.
        Err(None) => return,
    };
    web::answer_and_close(post.io, &reply).await;
}

/// The response bytes, or `Err(None)` when the client went away.
async fn respond(
    shared: &Arc<Shared>,
    post: &mut Post,
    ip: IpAddr,
    deadline: Instant,
) -> Result<Vec<u8>, Option<Vec<u8>>> {
    if !post.secure && !shared.config.allow_plain {
        let msg = "this server accepts TLS only (https://)";
        return Ok(refusal(shared, ApiError::new(ErrorCode::TlsRequired, msg)));
    }
    if shared.drain.is_active() {
        let msg = "server draining: retry (on another server)";
        return Ok(refusal(shared, ApiError::new(ErrorCode::ShuttingDown, msg)));
    }
    let authorization = post.head.header("authorization");
    let (user, device) = match authenticate(shared, authorization, ip, true).await {
        Ok(who) => who,
        Err(e) => return Ok(refusal(shared, e)),
    };
    let limit = max_body(shared.config.max_content_len);
    let bytes = web::read_body(post, limit, deadline).await?;
    let body: SendBody = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => {
            let e = ApiError::new(ErrorCode::BadBody, format!("body: {e}"));
            return Ok(refusal(shared, e));
        }
    };
    let req = match body.into_send() {
        Ok((None, req)) => req,
        Ok((Some(_), _)) => {
            let msg = "from: the sender is the token's user; leave it out";
            return Ok(refusal(shared, ApiError::invalid(msg)));
        }
        Err(e) => return Ok(refusal(shared, e)),
    };
    // No session to exclude: every online device of the sender gets the PUSH of its message.
    let sender = Sender {
        user: &user,
        device: &device,
        session: None,
        via: Via::Http,
    };
    match submit_send(shared, sender, req, None).await {
        Ok(ack) => {
            let (status, json) = answer(&user, &ack);
            Ok(json_response(status, &json.0, None))
        }
        Err(r) => Ok(refusal(shared, r.into())),
    }
}

/// The user and device of the request's `Authorization: Bearer <login token>`, checked as LOGIN checks
/// it: signature and expiry, then (a valid token only) a place in the server-wide login rate,
/// then revocation. Every refusal that is the client's doing is charged to `ip`'s failed-login
/// budget, as a refused LOGIN is; past it, the address's connections are refused at accept.
/// `rated`: whether the check takes a place in the login rate (a kept-alive connection's later
/// requests with the token its first one passed with do not: they are one login).
pub async fn authenticate(
    shared: &Arc<Shared>,
    authorization: Option<&str>,
    ip: IpAddr,
    rated: bool,
) -> Result<(String, String), ApiError> {
    let charge = || shared.login_failures.charge(ip, Instant::now());
    let bearer = authorization
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(bearer) = bearer else {
        charge();
        let msg = "Authorization: Bearer <login token> is required";
        return Err(ApiError::new(ErrorCode::AuthFailed, msg));
    };
    let now_s = (crate::clock::now_ms() / 1000) as u64;
    let claims = token::verify(&shared.secret, bearer, now_s).map_err(|e| {
        charge();
        let code = match e {
            TokenError::Expired(_) => ErrorCode::TokenExpired,
            _ => ErrorCode::AuthFailed,
        };
        ApiError::new(code, e.to_string())
    })?;
    // Each send over HTTP checks a token as a LOGIN does, and takes a LOGIN's place in the
    // server-wide rate (`logins_per_sec`): a flood of them cannot cost more than logins can.
    if rated {
        if let Err(wait) = shared.logins.lock().take(Instant::now()) {
            let mut e = ApiError::new(ErrorCode::ServerBusy, "too many logins; retry later");
            e.retry_after_ms = wait.max(100);
            return Err(e);
        }
    }
    let who = claims.user_id.clone();
    let revoked = small_read(shared, move |s| s.store.core().revoked_through(&who)).await?;
    if let Some(why) = revoked_token(&claims, revoked) {
        charge();
        return Err(ApiError::new(ErrorCode::AuthFailed, why));
    }
    Ok((claims.user_id, claims.device_id))
}

/// A refusal as the HTTP API gives it: its status, `{"error": {...}}`, `Retry-After` when
/// there is a time to retry. Counted among the errors by code.
fn refusal(shared: &Shared, e: ApiError) -> Vec<u8> {
    shared.metrics.error(e.code);
    let retry = (e.retry_after_ms > 0).then(|| e.retry_after_ms.div_ceil(1000).to_string());
    json_response(status_of(e.code), &e.json(), retry.as_deref())
}

fn json_response(
    status: StatusCode,
    body: &serde_json::Value,
    retry_after: Option<&str>,
) -> Vec<u8> {
    let line = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let extra: Vec<(&str, &str)> = retry_after
        .map(|r| ("Retry-After", r))
        .into_iter()
        .collect();
    web::response(
        &line,
        "application/json",
        &extra,
        body.to_string().as_bytes(),
    )
}
