//! The reference Missive client.
pub mod connection;
pub mod error;
pub mod versions;

pub use connection::Connection;
pub use error::{ClientError, Result};
