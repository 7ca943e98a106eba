//! A user's own reads: the inbox after a version (SYNC), recent contacts, unread counts. Each is
//! checked here and returned as the store work, for the transport to run off its threads (the
//! socket frames and compresses the reply there too).

use missive_protocol::pb;

use crate::context::Shared;
use crate::ids::Version;
use crate::store;

/// The inbox after `since`: at most `limit` entries and about `max_bytes`.
pub fn sync(
    user: &str,
    since: u64,
    limit: usize,
    max_bytes: usize,
) -> impl FnOnce(&Shared) -> store::Result<pb::SyncAck> + Send + 'static {
    let user = user.to_owned();
    move |s: &Shared| {
        let page = s
            .store
            .core()
            .inbox_after(&user, Version(since), limit, max_bytes)?;
        s.metrics.sync_pages.inc();
        let new_version = page.entries.last().map(|e| e.version).unwrap_or(since);
        Ok(pb::SyncAck {
            entries: page.entries,
            new_version,
            has_more: page.has_more,
            current_version: page.current_version,
        })
    }
}

/// Recent contacts after `cursor`, most recent first.
pub fn contacts(
    user: &str,
    cursor: Vec<u8>,
    limit: usize,
    max_bytes: usize,
) -> impl FnOnce(&Shared) -> store::Result<pb::ContactsAck> + Send + 'static {
    let user = user.to_owned();
    move |s: &Shared| {
        let (contacts, next_cursor) = s.store.core().contacts(&user, &cursor, limit, max_bytes)?;
        Ok(pb::ContactsAck {
            contacts,
            next_cursor,
        })
    }
}

/// Unread counts per conversation after `cursor`, with the total.
pub fn unread(
    user: &str,
    cursor: Vec<u8>,
    limit: usize,
) -> impl FnOnce(&Shared) -> store::Result<pb::UnreadAck> + Send + 'static {
    let user = user.to_owned();
    move |s: &Shared| s.store.core().unread_page(&user, &cursor, limit)
}
