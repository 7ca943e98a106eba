//! [`Reader`]: point reads shared by the committed store ([`Core`]) and a running change
//! ([`Change`](super::change::Change), which also sees the pending group; its impl is in `change.rs`).
//! Scans are on [`Core`] only.

use super::core::Core;
use super::error::{Result, StoreError};
use super::family::Family;
use super::keys;

/// Point reads of stored values.
pub trait Reader {
    /// Calls `f` with the value of a key (`None` if absent).
    fn value<T>(&self, family: Family, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> T)
        -> Result<T>;

    /// A u64 value (0 if absent).
    fn get_u64(&self, family: Family, key: &[u8]) -> Result<u64> {
        match self.value(family, key, |v| v.map(keys::u64_value))? {
            None => Ok(0),
            Some(Some(n)) => Ok(n),
            Some(None) => Err(StoreError::Corrupt(format!(
                "u64 value in {}",
                family.name()
            ))),
        }
    }

    /// A protobuf value.
    fn get_msg<M: prost::Message + Default>(
        &self,
        family: Family,
        key: &[u8],
    ) -> Result<Option<M>> {
        match self.value(family, key, |v| v.map(M::decode))? {
            None => Ok(None),
            Some(r) => Ok(Some(r?)),
        }
    }

    fn exists(&self, family: Family, key: &[u8]) -> Result<bool> {
        self.value(family, key, |v| v.is_some())
    }
}

impl Reader for Core {
    fn value<T>(
        &self,
        family: Family,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> T,
    ) -> Result<T> {
        let v = self
            .db()
            .get_pinned_cf_opt(self.cf(family), key, &self.read_opts())?;
        Ok(f(v.as_deref()))
    }
}
