//! The HTTP API's handler state.

use std::sync::Arc;

use crate::context::Shared;

/// What every handler gets: the server's shared context.
pub type AppState = Arc<Shared>;
