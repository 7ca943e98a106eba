//! Users: online devices, kicking a user or one device, revoking a user's tokens, minting login
//! tokens.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, Body, OptionalBody, Path};
use super::state::AppState;
use crate::service::{ids as users_ids, users};

/// `GET /v1/users/{user}/devices`: the user's logged-in connections (not those being closed).
pub async fn devices(
    State(shared): State<AppState>,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let devices: Vec<Value> = users::devices(&shared, &user)?
        .into_iter()
        .map(|d| {
            json!({
                "device": d.device,
                "session_id": d.session_id,
                "last_seen_ms": d.last_seen_ms,
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

/// `POST /v1/users/{user}/kick`: sends `KICK ADMIN` and closes the connection of each device
/// (or of `device` only). Clients do not reconnect on their own after it. `{"kicked": n}`.
/// With `"revoke": true`, every token of the user issued until now is revoked first (as
/// `/revoke`), and the answer also has `revoked_through`.
pub async fn kick(
    State(shared): State<AppState>,
    Path(user): Path<String>,
    OptionalBody(body): OptionalBody<KickBody>,
) -> Result<Json<Value>, ApiError> {
    users_ids::check_id("user", &user)?;
    if let Some(d) = &body.device {
        users_ids::check_id("device", d)?;
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
        true => Some(users::revoke(&shared, &user).await?),
        false => None,
    };
    let kicked = users::kick(&shared, &user, body.device.as_deref(), &message)?;
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
    let message = body
        .message
        .unwrap_or_else(|| "signed out by the app's backend: tokens revoked".into());
    let through = users::revoke(&shared, &user).await?;
    let kicked = users::kick(&shared, &user, None, &message)?;
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

/// `POST /v1/tokens`: a (v2) login token for `user` on `device` (`service::users::mint_token`).
pub async fn mint_token(
    State(shared): State<AppState>,
    Body(body): Body<TokenBody>,
) -> Result<Json<Value>, ApiError> {
    let minted = users::mint_token(&shared, &body.user, &body.device, body.ttl_secs).await?;
    let (token, issued, expires) = (minted.token, minted.issued, minted.expires);
    Ok(Json(json!({
        "token": token,
        "user": body.user,
        "device": body.device,
        "issued": issued,
        "expires": expires,
    })))
}
