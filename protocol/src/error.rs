//! Errors: what can go wrong reading a frame, and the code table of ERROR frames.

use thiserror::Error;

/// A frame or body that cannot be accepted. Every variant maps to an [`ErrorCode`].
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// Bytes 4..6 are not "MS": the peer does not speak this protocol.
    #[error("bad magic {0:02x?}, expected \"MS\" (4d 53)")]
    BadMagic([u8; 2]),
    /// Byte 6 names a protocol version this side does not speak.
    #[error("unsupported protocol version {0}, this side speaks 1")]
    UnsupportedVersion(u8),
    /// The length prefix is larger than the limit; nothing past the prefix was buffered.
    #[error("frame length {len} exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// The length prefix is smaller than the fixed part of a frame (14 bytes).
    #[error("frame length {0} is below the minimum of 14")]
    TooShort(usize),
    /// The stream ended in the middle of a frame.
    #[error("connection closed inside a frame ({have} of {need} bytes)")]
    Truncated { have: usize, need: usize },
    /// The CRC32 trailer does not match the frame.
    #[error("bad CRC32: frame says {expected:08x}, computed {actual:08x}")]
    BadCrc { expected: u32, actual: u32 },
    /// Reserved flag bits are set.
    #[error("reserved flag bits set: {0:#04x}")]
    ReservedFlags(u8),
    /// The command number is not in the command table.
    #[error("unknown command {0:#06x}")]
    UnknownCommand(u16),
    /// The body is not a valid protobuf message of the command's type, or does not inflate.
    #[error("undecodable body for command {command:#06x}: {reason}")]
    BadBody { command: u16, reason: String },
    /// Reading the stream failed (the connection is gone; nothing is sent).
    #[error("i/o error: {0}")]
    Io(String),
}

impl From<std::io::Error> for ProtocolError {
    fn from(e: std::io::Error) -> Self {
        ProtocolError::Io(e.to_string())
    }
}

impl ProtocolError {
    /// The code sent in the ERROR frame for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::BadMagic(_)
            | ProtocolError::TooShort(_)
            | ProtocolError::Truncated { .. }
            | ProtocolError::ReservedFlags(_)
            | ProtocolError::Io(_) => ErrorCode::BadFrame,
            ProtocolError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            ProtocolError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            ProtocolError::BadCrc { .. } => ErrorCode::BadCrc,
            ProtocolError::UnknownCommand(_) => ErrorCode::UnknownCommand,
            ProtocolError::BadBody { .. } => ErrorCode::BadBody,
        }
    }
}

macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident = $num:literal, $wire:literal, fatal = $fatal:literal;)*) => {
        /// The code table of ERROR frames (`Error.code`). Documented in PROTOCOL.md.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum ErrorCode {
            $($(#[$doc])* $name = $num,)*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The code with this number, if any.
            pub fn from_u32(n: u32) -> Option<ErrorCode> {
                match n {
                    $($num => Some(ErrorCode::$name),)*
                    _ => None,
                }
            }

            /// Whether the server closes the connection after sending this error.
            pub fn is_fatal(self) -> bool {
                match self {
                    $(ErrorCode::$name => $fatal,)*
                }
            }

            /// The code's name as written in PROTOCOL.md, e.g. `BAD_CRC`.
            pub fn name(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => $wire,)*
                }
            }
        }
    };
}

error_codes! {
    /// The frame is malformed: bad magic, length below 14, reserved flags, or truncated.
    BadFrame = 1, "BAD_FRAME", fatal = true;
    /// The frame's protocol version is not spoken by the server.
    UnsupportedVersion = 2, "UNSUPPORTED_VERSION", fatal = true;
    /// The frame's length prefix is over the limit.
    FrameTooLarge = 3, "FRAME_TOO_LARGE", fatal = true;
    /// The CRC32 trailer does not match.
    BadCrc = 4, "BAD_CRC", fatal = true;
    /// The command number is unknown. The connection stays open.
    UnknownCommand = 5, "UNKNOWN_COMMAND", fatal = false;
    /// The body does not decode as the command's message. The connection stays open.
    BadBody = 6, "BAD_BODY", fatal = false;
    /// A command other than LOGIN arrived before a successful login.
    NotLoggedIn = 7, "NOT_LOGGED_IN", fatal = true;
    /// LOGIN arrived on a connection that is already logged in.
    AlreadyLoggedIn = 8, "ALREADY_LOGGED_IN", fatal = false;
    /// The token is malformed, badly signed, or for another device.
    AuthFailed = 9, "AUTH_FAILED", fatal = true;
    /// The token has expired: get a new one from the app's backend.
    TokenExpired = 10, "TOKEN_EXPIRED", fatal = true;
    /// A field is missing or invalid (empty recipient, id too long, content type 0, ...).
    InvalidArgument = 11, "INVALID_ARGUMENT", fatal = false;
    /// The message content is larger than the server's content limit.
    ContentTooLarge = 12, "CONTENT_TOO_LARGE", fatal = false;
    /// The message, group or conversation does not exist.
    NotFound = 13, "NOT_FOUND", fatal = false;
    /// The user may not do this (not a member, not the sender, not the owner).
    Forbidden = 14, "FORBIDDEN", fatal = false;
    /// The recall window for this message has passed.
    RecallWindowExpired = 15, "RECALL_WINDOW_EXPIRED", fatal = false;
    /// Too many requests; retry after `retry_after_ms`.
    RateLimited = 16, "RATE_LIMITED", fatal = false;
    /// The group is at its member limit.
    GroupFull = 17, "GROUP_FULL", fatal = false;
    /// The server is overloaded or at its connection limit; retry after `retry_after_ms`.
    ServerBusy = 18, "SERVER_BUSY", fatal = true;
    /// The server is shutting down; reconnect later.
    ShuttingDown = 19, "SHUTTING_DOWN", fatal = true;
    /// The server failed to store or read data; the request had no effect. Retry later.
    Internal = 20, "INTERNAL", fatal = false;
    /// No LOGIN arrived within the login timeout.
    LoginTimeout = 21, "LOGIN_TIMEOUT", fatal = true;
    /// This server accepts only TLS connections; connect with TLS.
    TlsRequired = 22, "TLS_REQUIRED", fatal = true;
    /// A per-user limit would be exceeded (e.g. a user in `max_groups_per_user` groups).
    LimitExceeded = 23, "LIMIT_EXCEEDED", fatal = false;
    /// A direct message (or signal) between two users one of whom blocked the other.
    Blocked = 24, "BLOCKED", fatal = false;
    /// The message was refused by the server's moderation (a word on the server's list).
    ContentRejected = 25, "CONTENT_REJECTED", fatal = false;
    /// The app's moderation service (the before-send hook) did not answer; nothing was stored.
    /// Send again later, with the same client message id.
    ModerationUnavailable = 26, "MODERATION_UNAVAILABLE", fatal = false;
}
