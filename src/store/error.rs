//! [`StoreError`]: what can go wrong in the store, and the store's [`Result`].

use missive_protocol::ErrorCode;
use thiserror::Error;

use super::family::SCHEMA_VERSION;

/// What can go wrong in the store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// RocksDB failed: the server cannot go on safely.
    #[error("storage failure: {0}")]
    Db(#[from] rocksdb::Error),
    /// Stored bytes do not decode.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The data directory holds another schema version.
    #[error("data directory has schema version {found}, this missived reads {SCHEMA_VERSION}")]
    Schema { found: u32 },
    /// The request is refused; nothing was written.
    #[error("{message}")]
    /// `reason`: the before-send hook's code for a rejection it made (else empty).
    Refused {
        code: ErrorCode,
        message: String,
        reason: String,
    },
    /// An earlier write failed, or the store is closing: no more changes are taken.
    #[error("storage unavailable: {0}")]
    Failed(String),
    /// The data directory does not belong to the cluster a node joins (it holds another
    /// cluster's data, or a single node's).
    #[error("{0}")]
    NotThisCluster(String),
}

impl StoreError {
    pub(crate) fn refused(code: ErrorCode, message: impl Into<String>) -> StoreError {
        StoreError::Refused {
            code,
            message: message.into(),
            reason: String::new(),
        }
    }
}

impl From<prost::DecodeError> for StoreError {
    fn from(e: prost::DecodeError) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
