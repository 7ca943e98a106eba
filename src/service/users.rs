//! Users, for the app's backend: online devices, kicking, revoking tokens, minting tokens; a
//! login's `user.first_seen` event.

use std::sync::Arc;

use missive_protocol::pb::KickReason;
use missive_protocol::ErrorCode;

use super::ids::check_id;
use super::refusal::Refusal;
use super::run::{outcome, small_read};
use crate::clock::now_ms;
use crate::context::Shared;

/// Longest token lifetime minted: 30 days. A token is a bearer credential kept on a phone; a
/// leaked one is good until it expires unless the backend revokes its user, so apps renew
/// tokens through their backend rather than hold one for a year.
pub const MAX_TTL_SECS: u64 = 30 * 24 * 3600;
/// The lifetime of a token when none is asked for: a day.
pub const DEFAULT_TTL_SECS: u64 = 24 * 3600;

/// One logged-in connection of a user.
#[derive(Debug, Clone)]
pub struct Device {
    pub device: String,
    pub session_id: u64,
    pub last_seen_ms: i64,
}

/// The user's logged-in connections (not those being closed).
pub fn devices(shared: &Shared, user: &str) -> Result<Vec<Device>, Refusal> {
    check_id("user", user)?;
    Ok(shared
        .router
        .sessions_of(user)
        .iter()
        .filter(|s| !s.is_closing())
        .map(|s| Device {
            device: s.device.to_string(),
            session_id: s.id.0,
            last_seen_ms: s.last_seen(),
        })
        .collect())
}

/// Sends `KICK ADMIN` to each session of `user` (or of its `device` only) and closes it; the
/// devices kicked.
pub fn kick(
    shared: &Shared,
    user: &str,
    device: Option<&str>,
    message: &str,
) -> Result<Vec<String>, Refusal> {
    check_id("user", user)?;
    if let Some(d) = device {
        check_id("device", d)?;
    }
    let mut kicked = Vec::new();
    for s in shared.router.sessions_of(user) {
        if s.is_closing() || device.is_some_and(|d| d != &*s.device) {
            continue;
        }
        s.close(Some(crate::router::kick(KickReason::Admin, message)));
        shared.metrics.admin_kicks.inc();
        kicked.push(s.device.to_string());
    }
    Ok(kicked)
}

/// Stores the revocation of every token of `user` issued until now; returns through when (Unix
/// seconds). Committed before it returns, so a session kicked afterwards cannot log in again
/// with its token.
pub async fn revoke(shared: &Arc<Shared>, user: &str) -> Result<u64, Refusal> {
    check_id("user", user)?;
    let now_s = (now_ms() / 1000) as u64;
    let pending = shared.store.revoke(user, now_s);
    outcome(shared, pending.await)
}

/// A minted login token.
#[derive(Debug, Clone)]
pub struct Minted {
    pub token: String,
    /// Unix seconds.
    pub issued: u64,
    pub expires: u64,
}

/// A (v2) login token for `user` on `device`, signed with the server's secret, issued now, or
/// one second after the user's tokens were revoked through if that is later (so it is not
/// revoked at birth), and valid for `ttl_secs` (default a day) from its issue time.
pub async fn mint_token(
    shared: &Arc<Shared>,
    user: &str,
    device: &str,
    ttl_secs: Option<u64>,
) -> Result<Minted, Refusal> {
    check_id("user", user)?;
    check_id("device", device)?;
    let ttl = ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    if ttl == 0 || ttl > MAX_TTL_SECS {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            format!("ttl_secs: must be 1..={MAX_TTL_SECS}"),
        ));
    }
    let who = user.to_owned();
    let revoked = small_read(shared, move |s| s.store.core().revoked_through(&who)).await?;
    let now_s = (now_ms() / 1000) as u64;
    let issued = revoked.map_or(now_s, |r| now_s.max(r + 1));
    let expires = issued + ttl;
    let token = missive_protocol::token::mint_v2(&shared.secret, user, device, issued, expires);
    Ok(Minted {
        token,
        issued,
        expires,
    })
}

/// Why a token with `claims` is void (for LOGIN and the HTTP send) when the user's tokens are revoked through `revoked` (Unix
/// seconds), if it is: a v2 token issued at or before then, or any v1 token (no issue time).
pub fn revoked_token(
    claims: &missive_protocol::token::Claims,
    revoked: Option<u64>,
) -> Option<String> {
    let through = revoked?;
    match claims.issued {
        Some(issued) if issued > through => None,
        Some(issued) => Some(format!(
            "token revoked: issued at {issued}, and this user's tokens issued through \
             {through} are revoked; get a new token"
        )),
        None => Some(format!(
            "token revoked: a v1 token has no issue time, and this user's tokens issued \
             through {through} are revoked; get a new (v2) token"
        )),
    }
}

/// Queues `user.first_seen` the first time `user` logs in, when that event is on (event
/// webhooks, docs/events.md): a read of the user's marker, and the first time only, a change.
/// The login does not wait for it.
pub fn note_login(shared: &Arc<Shared>, user: &str, device: &str) {
    use crate::store::EventKind;
    if !shared.store.core().events_on(EventKind::UserFirstSeen) {
        return;
    }
    let (s, user, device) = (shared.clone(), user.to_owned(), device.to_owned());
    tokio::spawn(async move {
        let who = user.clone();
        let seen = small_read(&s, move |s| s.store.core().seen(&who)).await;
        if let Ok(false) = seen {
            let queued = s.store.first_seen(&user, &device, now_ms()).await;
            let _ = outcome(&s, queued);
        }
    });
}
