//! [`ClientError`]: everything a request or a connection can fail with.

use missive_protocol::{pb, ErrorCode, ProtocolError};
use thiserror::Error;

/// Why a request, a login or a connection failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The socket failed (connect refused, reset, ...).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are not a valid frame or body.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The server answered with an ERROR frame.
    #[error(
        "server error {name} ({code}){}{}: {message}",
        if *.fatal { ", fatal" } else { "" },
        if .reason.is_empty() { String::new() } else { format!(", reason {}", .reason) }
    )]
    Server {
        /// The numeric code (`Error.code`); see [`ErrorCode`].
        code: u32,
        /// The code's name, e.g. `INVALID_ARGUMENT` (`UNKNOWN_<n>` for a code not in the table).
        name: String,
        /// The server's explanation.
        message: String,
        /// The server closes the connection after a fatal error.
        fatal: bool,
        /// For CONTENT_REJECTED by the app's moderation service: its code for why
        /// (`Error.reason`); empty otherwise.
        reason: String,
    },
    /// The server answered with a frame that is not the reply to the request.
    #[error("unexpected reply: expected {expected}, got {got}")]
    UnexpectedReply {
        expected: &'static str,
        got: &'static str,
    },
    /// No answer within the time allowed.
    #[error("timed out")]
    Timeout,
    /// The connection (or the client) is closed; the request may or may not have taken effect.
    #[error("connection closed")]
    Closed,
}

impl ClientError {
    /// The [`ClientError::Server`] error for an ERROR body.
    pub fn from_server(e: &pb::Error) -> ClientError {
        ClientError::Server {
            code: e.code,
            name: code_name(e.code),
            message: e.message.clone(),
            fatal: e.fatal,
            reason: e.reason.clone(),
        }
    }

    /// The error code, for [`ClientError::Server`] errors whose code is in the table.
    pub fn server_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => ErrorCode::from_u32(*code),
            _ => None,
        }
    }
}

/// The table name of an error code, or `UNKNOWN_<n>`.
pub fn code_name(code: u32) -> String {
    match ErrorCode::from_u32(code) {
        Some(c) => c.name().to_string(),
        None => format!("UNKNOWN_{code}"),
    }
}

/// Results of this crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
