//! Users: online devices, kicking a user or one device, minting login tokens.

use axum::extract::State;
use axum::Json;
use missive_protocol::pb::KickReason;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, Body, OptionalBody, Path};
use super::AppState;

/// Longest token lifetime the API mints (a year).
const MAX_TTL_SECS: u64 = 365 * 24 * 3600;
const DEFAULT_TTL_SECS: u64 = 24 * 3600;

fn check_user(what: &str, id: &str) -> Result<(), ApiError> {
    missive_protocol::token::check_id(id).map_err(|e| ApiError::invalid(format!("{what}: {e}")))
}

/// `GET /v1/users/{user}/devices`: the user's logged-in connections (not those being closed).
pub async fn devices(
    State(shared): State<AppState>,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_user("user", &user)?;
    let devices: Vec<Value> = shared
        .router
        .sessions_of(&user)
        .iter()
        .filter(|s| !s.is_closing())
        .map(|s| {
            json!({
                "device": &*s.device,
                "session_id": s.id,
                "last_seen_ms": s.last_seen(),
            })
        })
        .collect();
    Ok(Json(json!({
        "user": user,
        "online": !devices.is_empty(),
        "devices": devices,
    })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KickBody {
    /// Only this device; absent: every device of the user.
    device: Option<String>,
    /// Text for the client's logs.
    message: Option<String>,
}

/// `POST /v1/users/{user}/kick`: sends `KICK ADMIN` and closes the connection of each device
/// (or of `device` only). Clients do not reconnect on their own after it. `{"kicked": n}`.
pub async fn kick(
    State(shared): State<AppState>,
    Path(user): Path<String>,
    OptionalBody(body): OptionalBody<KickBody>,
) -> Result<Json<Value>, ApiError> {
    check_user("user", &user)?;
    if let Some(d) = &body.device {
        check_user("device", d)?;
    }
    let message = body
        .message
        .unwrap_or_else(|| "signed out by the app's backend".into());
    let mut kicked = Vec::new();
    for s in shared.router.sessions_of(&user) {
        if s.is_closing() || body.device.as_deref().is_some_and(|d| d != &*s.device) {
            continue;
        }
        s.close(Some(crate::router::kick(KickReason::Admin, &message)));
        shared.metrics.admin_kicks.inc();
        kicked.push(s.device.to_string());
    }
    Ok(Json(json!({ "kicked": kicked.len(), "devices": kicked })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    user: String,
    device: String,
    /// Lifetime in seconds (default a day, at most a year).
    ttl_secs: Option<u64>,
}

/// `POST /v1/tokens`: a login token for `user` on `device`, signed with the server's secret.
pub async fn mint_token(
    State(shared): State<AppState>,
    Body(body): Body<TokenBody>,
) -> Result<Json<Value>, ApiError> {
    check_user("user", &body.user)?;
    check_user("device", &body.device)?;
    let ttl = body.ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    if ttl == 0 || ttl > MAX_TTL_SECS {
        return Err(ApiError::invalid(format!(
            "ttl_secs: must be 1..={MAX_TTL_SECS}"
        )));
    }
    let expires = (crate::now_ms() / 1000) as u64 + ttl;
    let token = missive_protocol::token::mint(&shared.secret, &body.user, &body.device, expires);
    Ok(Json(json!({
        "token": token,
        "user": body.user,
        "device": body.device,
        "expires": expires,
    })))
}
