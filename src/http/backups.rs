//! Backups (docs/operations.md, "Backup and restore"): `POST /v1/backups` writes one into
//! `backup_dir`, `GET /v1/backups` lists them, `DELETE /v1/backups/{name}` removes one. No
//! request names a path: a backup is named by the time it started, and only such a name is
//! taken.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::state::AppState;
use crate::service::backup;

/// `POST /v1/backups`: 201 `{"path", "backup": manifest}`; 409 LIMIT_EXCEEDED while another
/// backup runs.
pub async fn create(State(shared): State<AppState>) -> Result<(StatusCode, Json<Value>), ApiError> {
    let made = backup::create(&shared).await?;
    Ok((StatusCode::CREATED, Json(json!(made))))
}

/// `GET /v1/backups`: `{"backup_dir", "backups": [{"path", "backup"}]}`, oldest first.
pub async fn list(State(shared): State<AppState>) -> Result<Json<Value>, ApiError> {
    let (dir, backups) = backup::list(&shared).await?;
    Ok(Json(json!({ "backup_dir": dir, "backups": backups })))
}

/// `DELETE /v1/backups/{name}`: `{"deleted": name}`; 400 for anything but a backup's name, 404
/// when there is no such backup.
pub async fn delete(
    State(shared): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    backup::delete(&shared, &name).await?;
    Ok(Json(json!({ "deleted": name })))
}
