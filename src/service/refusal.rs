//! The one error a request gets, whichever transport carried it: a documented code
//! (`missive_protocol::ErrorCode`, PROTOCOL.md's table) and a message. The socket sends it as an
//! ERROR frame ([`Refusal::frame`]); the HTTP API maps the code to a status (`http::error`).

use missive_protocol::pb;
use missive_protocol::{ErrorCode, Frame, Packet};

/// A request refused with a documented code.
#[derive(Debug)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    /// For RATE_LIMITED and SERVER_BUSY: when to retry.
    pub retry_after_ms: u32,
    /// For CONTENT_REJECTED by the before-send hook: the hook's code for why (`Error.reason`).
    pub reason: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
            retry_after_ms: 0,
            reason: String::new(),
        }
    }

    /// The ERROR frame answering request `request_id`.
    pub fn frame(&self, request_id: u32) -> Frame {
        Frame::new(
            &Packet::Error(pb::Error {
                code: self.code as u32,
                message: self.message.clone(),
                fatal: self.code.is_fatal(),
                retry_after_ms: self.retry_after_ms,
                reason: self.reason.clone(),
            }),
            request_id,
        )
    }
}

/// The ERROR frame for `code`.
pub fn error_frame(request_id: u32, code: ErrorCode, message: &str) -> Frame {
    Refusal::new(code, message).frame(request_id)
}
