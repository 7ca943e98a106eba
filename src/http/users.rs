//! Users: online devices, kicking a user or one device, revoking a user's tokens, minting login
//! tokens.

use axum::extract::State;
use axum::Json;
use missive_protocol::pb::KickReason;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, Body, OptionalBody, Path};
use super::AppState;

/// Longest token lifetime the API mints: 30 days. A token is a bearer credential kept on a
/// phone; a leaked one is good until it expires unless the backend revokes its user, so apps
/// renew tokens through their backend rather than hold one for a year.
const MAX_TTL_SECS: u64 = 30 * 24 * 3600;
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
    /// Also revoke every token of the user issued until now (as `/revoke`; not with `device`).
    revoke: Option<bool>,
}

/// Sends `KICK ADMIN` to each session of `user` (or of its `device` only) and closes it; the
/// devices kicked.
fn kick_sessions(
    shared: &AppState,
    user: &str,
    device: Option<&str>,
    message: &str,
) -> Vec<String> {
    let mut kicked = Vec::new();
    for s in shared.router.sessions_of(user) {
        if s.is_closing() || device.is_some_and(|d| d != &*s.device) {
            continue;
        }
        s.close(Some(crate::router::kick(KickReason::Admin, message)));
        shared.metrics.admin_kicks.inc();
        kicked.push(s.device.to_string());
    }
    kicked
}

/// Stores the revocation of every token of `user` issued until now; returns R, through when
/// (Unix seconds). Committed before it returns, so a session kicked afterwards cannot log in
/// again with its token.
async fn revoke_tokens(shared: &AppState, user: &str) -> Result<u64, ApiError> {
    let now_s = (crate::now_ms() / 1000) as u64;
    let pending = shared.store.revoke(user, now_s);
    Ok(crate::session::refusal(shared, pending.await)?)
}

/// `POST /v1/users/{user}/kick`: sends `KICK ADMIN` and closes the connection of each device
/// (or of `device` only). Clients do not reconnect on their own after it. `{"kicked": n}`.
/// With `"revoke": true`, every token of the user issued until now is revoked first (as
/// `/revoke`), and the answer also has `revoked_through`.
pub async fn kick(
    State(shared): State<AppState>,
    Path(user): Path<String>,
    OptionalBody(body): OptionalBody<KickBody>,
) -> Result<Json<Value>, ApiError> {
    check_user("user", &user)?;
    if let Some(d) = &body.device {
        check_user("device", d)?;
    }
    let revoke = body.revoke.unwrap_or(false);
    if revoke && body.device.is_some() {
        return Err(ApiError::invalid(
            "revoke: revokes every token of the user, so it kicks every device: leave out device",
        ));
    }
    let message = body
        .message
        .unwrap_or_else(|| "signed out by the app's backend".into());
    let revoked = match revoke {
        true => Some(revoke_tokens(&shared, &user).await?),
        false => None,
    };
    let kicked = kick_sessions(&shared, &user, body.device.as_deref(), &message);
    let mut answer = json!({ "kicked": kicked.len(), "devices": kicked });
    if let Some(r) = revoked {
        answer["user"] = json!(user);
        answer["revoked_through"] = json!(r);
    }
    Ok(Json(answer))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    /// Text for the client's logs (in the KICK).
    message: Option<String>,
}

/// `POST /v1/users/{user}/revoke`: revokes every token of the user issued until now (v2 tokens
/// issued at or before R, and every v1 token, are refused at LOGIN with AUTH_FAILED), then
/// kicks every session of the user (`KICK ADMIN`). Tokens the API mints afterwards are issued
/// after R. `{"user", "revoked_through": R, "kicked": n, "devices": [...]}`.
pub async fn revoke(
    State(shared): State<AppState>,
    Path(user): Path<String>,
    OptionalBody(body): OptionalBody<RevokeBody>,
) -> Result<Json<Value>, ApiError> {
    check_user("user", &user)?;
    let message = body
        .message
        .unwrap_or_else(|| "signed out by the app's backend: tokens revoked".into());
    let through = revoke_tokens(&shared, &user).await?;
    let kicked = kick_sessions(&shared, &user, None, &message);
    Ok(Json(json!({
        "user": user,
        "revoked_through": through,
        "kicked": kicked.len(),
        "devices": kicked,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    user: String,
    device: String,
    /// Lifetime in seconds (default a day, at most 30 days).
    ttl_secs: Option<u64>,
}

/// `POST /v1/tokens`: a (v2) login token for `user` on `device`, signed with the server's
/// secret, issued now, or one second after the user's tokens were revoked through if that is
/// later (so it is not revoked at birth), and valid for `ttl_secs` from its issue time.
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
    let user = body.user.clone();
    let revoked =
        crate::session::small_read(&shared, move |s| s.store.revoked_through(&user)).await?;
    let now_s = (crate::now_ms() / 1000) as u64;
    let issued = revoked.map_or(now_s, |r| now_s.max(r + 1));
    let expires = issued + ttl;
    let token =
        missive_protocol::token::mint_v2(&shared.secret, &body.user, &body.device, issued, expires);
    Ok(Json(json!({
        "token": token,
        "user": body.user,
        "device": body.device,
        "issued": issued,
        "expires": expires,
    })))
}
