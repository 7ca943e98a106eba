//! Operations: drain, `/healthz` (the process answers) and `/readyz` (it takes clients).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, OptionalBody};
use super::state::AppState;
use crate::drain::Plan;
use crate::service::drain;

/// `GET /healthz`: 200 while the process runs.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /v1/cluster`: this node's view of the cluster (docs/CLUSTER.md section 7): the nodes,
/// every partition's owner, epoch and lease age, and what this node owns; 404 on a single node.
pub async fn cluster(State(shared): State<AppState>) -> Result<Json<Value>, ApiError> {
    match &shared.cluster {
        Some(cluster) => Ok(Json(cluster.status())),
        None => Err(ApiError::new(
            missive_protocol::ErrorCode::NotFound,
            "this server is a single node (start it with --cluster to make it a cluster node)",
        )),
    }
}

/// `GET /readyz`: 200 when the store is open and the server accepts logins; 503 (with the
/// reason) while draining, shutting down, or after a store failure.
pub async fn readyz(State(shared): State<AppState>) -> (StatusCode, Json<Value>) {
    let reason = if shared.store.core().check_failed().is_err() {
        Some("store failed")
    } else if shared.shutdown.is_cancelled() {
        Some("shutting down")
    } else if shared.drain.is_active() {
        Some("draining")
    } else {
        None
    };
    match reason {
        None => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "reason": reason })),
        ),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainBody {
    /// Sessions moved per second (default `drain_rate_per_sec`).
    rate_per_sec: Option<u32>,
    /// `host:port` for the KICK REDIRECT (default `drain_redirect`; `""`: the same address).
    redirect: Option<String>,
    /// `reconnect_after_ms` of the kick (default `drain_reconnect_after_ms`).
    reconnect_after_ms: Option<u32>,
}

/// `POST /v1/drain`: starts draining (or changes the pace of the drain under way); 202.
pub async fn drain_start(
    State(shared): State<AppState>,
    OptionalBody(body): OptionalBody<DrainBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut plan = Plan::from_config(&shared.config);
    if let Some(rate) = body.rate_per_sec {
        if rate == 0 || rate > 1_000_000 {
            return Err(ApiError::invalid("rate_per_sec: must be 1..=1000000"));
        }
        plan.rate_per_sec = rate;
    }
    if let Some(r) = body.redirect {
        plan.redirect = match r.as_str() {
            "" => None,
            r => Some(crate::config::parse_host_port(r).ok_or_else(|| {
                ApiError::invalid("redirect: must be HOST:PORT (port 1..=65535) or empty")
            })?),
        };
    }
    if let Some(ms) = body.reconnect_after_ms {
        if ms > 3_600_000 {
            return Err(ApiError::invalid(
                "reconnect_after_ms: must be at most 3600000",
            ));
        }
        plan.reconnect_after_ms = ms;
    }
    drain::start(&shared, plan);
    Ok((StatusCode::ACCEPTED, status_json(&shared)))
}

/// `GET /v1/drain`: whether the server drains, at what pace, and how far it got.
pub async fn drain_status(State(shared): State<AppState>) -> Json<Value> {
    status_json(&shared)
}

/// `DELETE /v1/drain`: stops draining; logins are accepted again.
pub async fn drain_stop(State(shared): State<AppState>) -> Json<Value> {
    drain::stop(&shared);
    status_json(&shared)
}

fn status_json(shared: &AppState) -> Json<Value> {
    let s = drain::status(shared);
    let plan = s.plan.map(|p| {
        json!({
            "rate_per_sec": p.rate_per_sec,
            "redirect": p.redirect.map(|(h, port)| format!("{h}:{port}")).unwrap_or_default(),
            "reconnect_after_ms": p.reconnect_after_ms,
        })
    });
    Json(json!({
        "draining": s.draining,
        "plan": plan,
        "kicked": s.kicked,
        "remaining": s.remaining,
    }))
}
