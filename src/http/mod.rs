//! The HTTP API for the app's own backend, on its own address (`http_listen`), with axum.
//!
//! `/v1/...` needs `Authorization: Bearer <api_key>` (compared in constant time); with no
//! `api_key` configured every `/v1` call is refused (403 FORBIDDEN). `/healthz`, `/readyz` and
//! `/metrics` need no key: the address is meant for the backend's network (the default is
//! loopback), like the Prometheus scraper that reads it.
//!
//! [`conn`] accepts and serves the connections: at most `http_max_connections` at once, and a
//! request head and body must each arrive within their timeout.
//!
//! Bodies are JSON, in and out. A refusal is the socket protocol's: the same validation (the
//! same functions) and the same error code, as
//! `{"error": {"code": 11, "name": "INVALID_ARGUMENT", "message": "..."}}` with the HTTP status
//! of [`error::status_of`].
//!
//! - [`messages`]: `POST /v1/messages`.
//! - [`groups`]: `POST /v1/groups`, `GET /v1/groups/{id}`, members added and removed.
//! - [`users`]: online devices, kick, token revocation, login tokens.
//! - [`history`]: `GET /v1/users/{user}/history`, a page of one of the user's conversations.
//! - [`blocks`]: `GET /v1/users/{user}/blocks`, `PUT` and `DELETE .../blocks/{other}`.
//! - [`admin`]: drain, `/healthz`, `/readyz`.
//! - [`backups`]: `POST` and `GET /v1/backups`, `DELETE /v1/backups/{name}`.
//! - [`metrics`]: `/metrics` (Prometheus text format).
//! - [`user_send`]: `POST /v1/send` on the *public* ports (a user's own token, not the API
//!   key), called from `session::login` where those ports' HTTP requests arrive.
//!
//! Each handler turns JSON into a `service` call and its answer back into JSON; what a request
//! means is `service`'s.

mod admin;
mod backups;
mod blocks;
mod conn;
mod error;
mod groups;
mod history;
pub mod media;
mod messages;
mod metrics;
mod state;
pub mod user_send;
mod users;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use missive_protocol::ErrorCode;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

pub use error::{status_of, ApiError};

use crate::context::Shared;
use crate::net::listen::BindError;
use state::AppState;

/// Binds `http_listen`; the error names the setting and how to change or disable it.
pub(crate) async fn bind(addr: &str) -> Result<TcpListener, BindError> {
    crate::net::listen::bind(addr)
        .await
        .map_err(|BindError { addr, error, .. }| BindError {
            addr: format!("{addr} (http_listen, the HTTP API)"),
            error,
            hint: "Choose another address with --http-listen (environment MISSIVE_HTTP_LISTEN, \
                   config setting `http_listen`), or set it to \"\" to turn the HTTP API off."
                .into(),
        })
}

/// Serves the API on `listener` until the server shuts down (requests in flight finish), with
/// the connection limit and the deadlines of [`conn`].
pub(crate) fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    tasks: &TaskTracker,
) -> Result<SocketAddr, BindError> {
    let addr = listener.local_addr().map_err(|error| BindError {
        addr: shared.config.http_listen.clone(),
        error,
        hint: String::new(),
    })?;
    let app = router(shared.clone());
    tasks.spawn(conn::accept_loop(shared, listener, app, tasks.clone()));
    Ok(addr)
}

/// Every route of the API.
pub fn router(shared: Arc<Shared>) -> Router {
    // Room for the largest content, base64-encoded, and the rest of the body.
    let body_limit = shared.config.max_content_len * 4 / 3 + 64 * 1024;
    let v1 = Router::new()
        .route("/messages", post(messages::send))
        .route("/groups", post(groups::create))
        .route("/groups/{group}", get(groups::get))
        .route("/groups/{group}/members", post(groups::add_members))
        .route(
            "/groups/{group}/members/{user}",
            axum::routing::delete(groups::remove_member).put(groups::set_role),
        )
        .route("/users/{user}/devices", get(users::devices))
        .route("/users/{user}/kick", post(users::kick))
        .route("/users/{user}/revoke", post(users::revoke))
        .route("/users/{user}/history", get(history::get))
        .route("/users/{user}/blocks", get(blocks::list))
        .route(
            "/users/{user}/blocks/{other}",
            axum::routing::put(blocks::block).delete(blocks::unblock),
        )
        .route("/tokens", post(users::mint_token))
        .route("/backups", post(backups::create).get(backups::list))
        .route("/backups/{name}", axum::routing::delete(backups::delete))
        .route("/cluster", get(admin::cluster))
        .route(
            "/drain",
            post(admin::drain_start)
                .get(admin::drain_status)
                .delete(admin::drain_stop),
        )
        .route_layer(middleware::from_fn_with_state(shared.clone(), require_key));
    Router::new()
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/metrics", get(metrics::scrape))
        .nest("/v1", v1)
        .fallback(not_found)
        // Inside `count`, so that a missed body deadline is counted as the error it answers.
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            conn::body_deadline,
        ))
        .layer(middleware::from_fn_with_state(shared.clone(), count))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(shared)
}

/// Lets a request through only with the configured API key.
async fn require_key(State(shared): State<AppState>, req: Request, next: Next) -> Response {
    let Some(key) = shared.config.api_key.as_deref() else {
        let msg = "no api_key is configured, so the API refuses every call";
        return ApiError::new(ErrorCode::Forbidden, msg).into_response();
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if key_matches(given.trim(), key) => next.run(req).await,
        _ => {
            let msg = "missing or wrong API key (Authorization: Bearer <api_key>)";
            let mut r = ApiError::new(ErrorCode::AuthFailed, msg).into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            r
        }
    }
}

/// Compares in constant time: both sides are hashed first, so neither the key's length nor the
/// position of the first wrong byte shows in the time taken.
fn key_matches(given: &str, key: &str) -> bool {
    let (a, b) = (Sha256::digest(given), Sha256::digest(key));
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Counts requests, and errors by protocol code (the error response carries its code).
async fn count(State(shared): State<AppState>, req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    shared.metrics.http_requests.inc();
    if let Some(code) = response.extensions().get::<ErrorCode>() {
        shared.metrics.error(*code);
    }
    response
}

async fn not_found() -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        "no such endpoint (see docs/server-api.md)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_key_matches() {
        let key = "0123456789abcdef0123";
        assert!(key_matches(key, key));
        assert!(!key_matches("0123456789abcdef012", key));
        assert!(!key_matches("0123456789abcdef01234", key));
        assert!(!key_matches("", key));
    }
}
