//! [`VersionTracker`]: the inbox version rules, without any I/O.
//!
//! Every entry of a user's inbox has a version: 1, 2, 3, ... never skipped. A device keeps
//! `held`, the highest version it has applied with nothing missing below it. A PUSH carries
//! `version` and `prev_version` (= version - 1):
//!
//! | PUSH                    | meaning           | action                                       |
//! |-------------------------|-------------------|----------------------------------------------|
//! | `version <= held`       | already have it   | drop it (still ack)                          |
//! | `prev_version == held`  | the next one      | apply it, `held = version`, ack              |
//! | `prev_version > held`   | something missing | SYNC from `held` until `has_more` is false   |
//!
//! SYNC pages are applied with the same rule, entry by entry.

/// What to do with an incoming entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Already applied: drop it.
    Duplicate,
    /// The next entry: apply it.
    Apply,
    /// Entries are missing before it: SYNC from `held`.
    Gap,
}

/// Tracks `held` and the highest version heard of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VersionTracker {
    held: u64,
    highest_seen: u64,
}

impl VersionTracker {
    /// Starts from the version the device already holds (0 for a fresh install).
    pub fn new(held: u64) -> VersionTracker {
        VersionTracker {
            held,
            highest_seen: held,
        }
    }

    /// The highest version applied contiguously.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// The highest version known to exist (from pushes, acks and SYNC_ACK.current_version).
    pub fn highest_seen(&self) -> u64 {
        self.highest_seen
    }

    /// Whether versions between `held` and [`VersionTracker::highest_seen`] are missing.
    pub fn behind(&self) -> bool {
        self.held < self.highest_seen
    }

    /// Records that `version` exists.
    pub fn saw(&mut self, version: u64) {
        self.highest_seen = self.highest_seen.max(version);
    }

    /// Classifies a PUSH.
    pub fn classify_push(&self, version: u64, prev_version: u64) -> Verdict {
        if version <= self.held {
            Verdict::Duplicate
        } else if prev_version == self.held && version == self.held + 1 {
            Verdict::Apply
        } else {
            // prev_version > held; a PUSH whose prev_version is not version - 1 is treated
            // the same way: SYNC is always safe.
            Verdict::Gap
        }
    }

    /// Classifies an entry of a SYNC page (or one the client built itself).
    pub fn classify_entry(&self, version: u64) -> Verdict {
        self.classify_push(version, version.saturating_sub(1))
    }

    /// Marks `version` applied. Call only after [`Verdict::Apply`].
    pub fn apply(&mut self, version: u64) {
        debug_assert_eq!(version, self.held + 1);
        self.held = version;
        self.saw(version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_rules() {
        let mut t = VersionTracker::new(5);
        assert_eq!(t.classify_push(5, 4), Verdict::Duplicate);
        assert_eq!(t.classify_push(3, 2), Verdict::Duplicate);
        assert_eq!(t.classify_push(6, 5), Verdict::Apply);
        assert_eq!(t.classify_push(8, 7), Verdict::Gap);
        t.saw(8);
        assert!(t.behind());
        t.apply(6);
        assert_eq!(t.held(), 6);
        assert_eq!(t.classify_entry(7), Verdict::Apply);
        t.apply(7);
        t.apply(8);
        assert!(!t.behind());
        assert_eq!(t.classify_entry(8), Verdict::Duplicate);
    }

    #[test]
    fn inconsistent_prev_version_is_a_gap() {
        let t = VersionTracker::new(5);
        assert_eq!(t.classify_push(6, 4), Verdict::Gap);
        assert_eq!(t.classify_push(7, 5), Verdict::Gap);
    }
}
