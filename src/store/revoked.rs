//! Token revocation (`revoked`): for a user, the time R (Unix seconds) through which every
//! token of the user is void: a v2 token issued at or before R, and any v1 token (it carries no
//! issue time). Written through the writer like every change; read at each LOGIN of a user
//! (one point read) and when the API mints a token.

use super::core::Core;
use super::error::Result;
use super::family::Family;
use super::keys;
use super::pending::Pending;
use super::read::Reader;
use super::writer::Store;

impl Core {
    /// Through when `user`'s tokens are revoked (Unix seconds), if they ever were.
    pub fn revoked_through(&self, user: &str) -> Result<Option<u64>> {
        let r = self.get_u64(Family::Revoked, &keys::revoked(user))?;
        Ok((r > 0).then_some(r))
    }
}

impl Store {
    /// Revokes every token of `user` issued until now: stores R = max(`now_s`, R + 1) and
    /// returns it once committed. R grows with every call, so each call also voids the tokens
    /// minted after the previous one in the same second (the API mints them with an issue time
    /// of R + 1).
    pub fn revoke(&self, user: &str, now_s: u64) -> Pending<u64> {
        let user = user.to_owned();
        self.change(false, move |txn| {
            let key = keys::revoked(&user);
            let old = txn.get_u64(Family::Revoked, &key)?;
            let through = now_s.max(old.saturating_add(1));
            txn.put(Family::Revoked, key, through.to_be_bytes().to_vec());
            Ok(through)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::core::Durability;
    use super::super::writer::Store;

    #[test]
    fn revocation_grows_with_each_call_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), Durability::Async).unwrap();
            assert_eq!(store.core().revoked_through("alice").unwrap(), None);
            assert_eq!(store.revoke("alice", 1_000).wait().unwrap(), 1_000);
            // Twice in one second: one later each time.
            assert_eq!(store.revoke("alice", 1_000).wait().unwrap(), 1_001);
            assert_eq!(store.revoke("alice", 999).wait().unwrap(), 1_002);
            assert_eq!(store.revoke("alice", 5_000).wait().unwrap(), 5_000);
            assert_eq!(store.core().revoked_through("alice").unwrap(), Some(5_000));
            assert_eq!(store.core().revoked_through("alicea").unwrap(), None);
            store.core().flush().unwrap();
        }
        let store = Store::open(dir.path(), Durability::Async).unwrap();
        assert_eq!(store.core().revoked_through("alice").unwrap(), Some(5_000));
    }
}
