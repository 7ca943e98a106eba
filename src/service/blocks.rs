//! Blocks: a user blocks or unblocks another (BLOCK, `POST /v1/users/{user}/blocks`) and lists
//! whom they blocked (BLOCK_LIST, `GET`). The send's own check is in the store's change
//! (`store::blocks`), so a block and a send cannot race past each other.

use std::sync::Arc;

use missive_protocol::ErrorCode;

use super::ids::check_id;
use super::refusal::Refusal;
use super::run::outcome;
use crate::context::Shared;
use crate::store::{self, BlockPage};

/// BLOCK_LIST page size: the default and the cap (PROTOCOL.md 20).
pub const LIST_DEFAULT: u32 = 200;
pub const LIST_MAX: u32 = 1000;

/// `user` blocks (`blocked`) or unblocks `other`; the answer is the state now. Blocking oneself
/// is INVALID_ARGUMENT; one block past `max_blocks_per_user` is LIMIT_EXCEEDED.
pub async fn block(
    shared: &Arc<Shared>,
    user: &str,
    other: &str,
    blocked: bool,
) -> Result<bool, Refusal> {
    check_id("user_id", other)?;
    if other == user {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            "user_id: a user cannot block themselves",
        ));
    }
    let max = shared.config.max_blocks_per_user;
    outcome(
        shared,
        shared.store.set_blocked(user, other, blocked, max).await,
    )
}

/// The read of one page of the users `user` blocked, after the id `after` ("" = from the
/// first), at most `limit`: one seek and `limit` steps.
pub fn list(
    user: &str,
    after: String,
    limit: usize,
) -> Result<impl FnOnce(&Shared) -> store::Result<BlockPage> + Send + 'static, Refusal> {
    if !after.is_empty() {
        check_id("after", &after)?;
    }
    let user = user.to_owned();
    Ok(move |s: &Shared| s.store.core().blocked_users(&user, &after, limit))
}
