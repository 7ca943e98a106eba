//! Refusals as HTTP responses, and extractors whose failures are refusals too.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use missive_protocol::ErrorCode;
use serde::de::DeserializeOwned;

use crate::service::Refusal;

/// A refused API call: a protocol error code, a message, and for SERVER_BUSY and RATE_LIMITED
/// when to retry (also sent as `Retry-After`, in whole seconds).
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub retry_after_ms: u32,
    /// For CONTENT_REJECTED by the before-send hook: its code for why.
    pub reason: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            retry_after_ms: 0,
            reason: String::new(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidArgument, message)
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> ApiError {
        ApiError {
            code: r.code,
            message: r.message,
            retry_after_ms: r.retry_after_ms,
            reason: r.reason,
        }
    }
}

/// The HTTP status of a protocol error code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    use ErrorCode::*;
    match code {
        BadFrame | UnsupportedVersion | BadCrc | BadBody | InvalidArgument | TlsRequired => {
            StatusCode::BAD_REQUEST
        }
        NotLoggedIn | AuthFailed | TokenExpired => StatusCode::UNAUTHORIZED,
        Forbidden | Blocked => StatusCode::FORBIDDEN,
        NotFound | UnknownCommand => StatusCode::NOT_FOUND,
        LoginTimeout => StatusCode::REQUEST_TIMEOUT,
        AlreadyLoggedIn | RecallWindowExpired | GroupFull | LimitExceeded => StatusCode::CONFLICT,
        FrameTooLarge | ContentTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ContentRejected => StatusCode::UNPROCESSABLE_ENTITY,
        RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ServerBusy | ShuttingDown | ModerationUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    /// The body: `{"error": {"code", "name", "message"[, "retry_after_ms"][, "reason"]}}`.
    pub fn json(&self) -> serde_json::Value {
        let mut error = serde_json::json!({
            "code": self.code as u32,
            "name": self.code.name(),
            "message": self.message,
        });
        if self.retry_after_ms > 0 {
            error["retry_after_ms"] = self.retry_after_ms.into();
        }
        if !self.reason.is_empty() {
            error["reason"] = self.reason.clone().into();
        }
        serde_json::json!({ "error": error })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (status_of(self.code), Json(self.json())).into_response();
        if self.retry_after_ms > 0 {
            let secs = self.retry_after_ms.div_ceil(1000).to_string();
            if let Ok(v) = HeaderValue::from_str(&secs) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        // For the metrics (errors by code).
        response.extensions_mut().insert(self.code);
        response
    }
}

/// A JSON body; one that does not parse is BAD_BODY (400), one over the size limit
/// CONTENT_TOO_LARGE (413).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => Err(body_error(rejection.status(), rejection.body_text())),
        }
    }
}

/// A JSON body that may be left out (empty): then `T::default()`.
pub struct OptionalBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(rejection) => return Err(body_error(rejection.status(), rejection.body_text())),
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalBody(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(OptionalBody)
            .map_err(|e| ApiError::new(ErrorCode::BadBody, format!("body: {e}")))
    }
}

fn body_error(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(ErrorCode::ContentTooLarge, text)
    } else {
        ApiError::new(ErrorCode::BadBody, text)
    }
}

/// Path parameters; a failure is INVALID_ARGUMENT.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|e| ApiError::invalid(e.body_text()))
    }
}

/// Query parameters; a failure is INVALID_ARGUMENT.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|e| ApiError::invalid(e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_client_or_server_error_status() {
        for code in ErrorCode::ALL {
            let s = status_of(*code);
            assert!(s.is_client_error() || s.is_server_error(), "{code:?}: {s}");
        }
        assert_eq!(
            status_of(ErrorCode::InvalidArgument),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status_of(ErrorCode::ServerBusy),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
