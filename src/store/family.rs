//! The column families of the schema, each named after what it maps, and the schema version.
//!
//! A family's [`Family::name`] is its name on disk: it never changes.

/// The schema this code reads and writes. Older data directories are upgraded on open: version
/// 1 loses its `contacts_by_time` family (nothing else changed in 2); version 2 gets the group
/// fan-out modes, stored unread counts of write fan-out groups and the per-user group indexes
/// of 3 (`migrate::to_3`).
pub const SCHEMA_VERSION: u32 = 3;

/// Column families, each named after what it maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// "schema" -> u32 schema version.
    Meta,
    /// message id -> `Message` (conversation as addressed by the sender).
    Content,
    /// user + version -> `InboxEntry` (messages as id-only stubs).
    Inbox,
    /// user + conversation -> `Contact` (last message as an id-only stub). Listed newest first
    /// by sorting a user's entries at query time (see `Core::contacts`).
    Contacts,
    /// user + 0 -> total; user + 1 + conversation -> count; user + 2 + conversation -> read seq;
    /// user + 3 + message id -> () (hidden by delete); the user's settings: user + 6 +
    /// conversation -> () (muted), user + 7 + user -> () (blocked), user + 8 -> u64 (blocks);
    /// `b` + direct conversation -> which side blocked the other (one byte, read by sends).
    Unread,
    /// sender + client message id -> `SendAck`, or 0xFF + `Error`: a refusal remembered as the
    /// id's answer (the before-send hook's; `conversation::dedup_record`).
    Dedup,
    /// conversation -> u64 last seq.
    Convs,
    /// conversation + seq -> u64 message id.
    ConvLog,
    /// group id -> `GroupInfo` (name, owner, member count, history visibility).
    Groups,
    /// group + 0 + user -> `GroupMember` (current); group + 1 + user -> `GroupMember` (former).
    Members,
    /// user + group id -> (): the groups a user belongs to.
    UserGroups,
    /// conversation + seq -> (): recalled messages of groups (for computed unread counts).
    Recalled,
    /// message id + user -> (): offline-push notifications to send (`src/offline_push`). Added to
    /// schema 2 without a version change: it is created empty when a directory without it is
    /// opened, and an older missived opens it as an unknown family and ignores it.
    PushQueue,
    /// user -> u64 R (Unix seconds): the user's login tokens issued at or before R, and all
    /// their v1 tokens, are revoked (`store::revoked`). Added to schema 2 without a version
    /// change, as `push_queue` was: created empty when a directory without it is opened; an
    /// older missived opens it as an unknown family and ignores it (and so lets revoked
    /// tokens in).
    Revoked,
    /// event id -> time + JSON, or 0xFF + user + conversation -> time + JSON (a coalesced
    /// read): events for the app's backend (`store::events`, `src/events`). Added to schema 3
    /// without a version change, as `push_queue` was: created empty when missing; an older
    /// missived ignores it.
    Events,
    /// Uploads, media records, the media each stored file serves, and each user's bytes of the
    /// day (`store::media`). Added to schema 3 without a version change, as `events` was.
    Media,
}

impl Family {
    /// Every family, in the order of [`Family::index`].
    pub const ALL: [Family; 16] = [
        Family::Meta,
        Family::Content,
        Family::Inbox,
        Family::Contacts,
        Family::Unread,
        Family::Dedup,
        Family::Convs,
        Family::ConvLog,
        Family::Groups,
        Family::Members,
        Family::UserGroups,
        Family::Recalled,
        Family::PushQueue,
        Family::Revoked,
        Family::Events,
        Family::Media,
    ];

    /// Schema 1 had a time index of contacts; opening such a data directory drops it.
    pub const DROPPED_IN_2: &'static str = "contacts_by_time";

    /// The family's name in RocksDB.
    pub const fn name(self) -> &'static str {
        match self {
            Family::Meta => "meta",
            Family::Content => "content",
            Family::Inbox => "inbox",
            Family::Contacts => "contacts",
            Family::Unread => "unread",
            Family::Dedup => "dedup",
            Family::Convs => "convs",
            Family::ConvLog => "conv_log",
            Family::Groups => "groups",
            Family::Members => "members",
            Family::UserGroups => "user_groups",
            Family::Recalled => "recalled",
            Family::PushQueue => "push_queue",
            Family::Revoked => "revoked",
            Family::Events => "events",
            Family::Media => "media",
        }
    }

    /// The family's position in [`Family::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are the ones on disk: a data directory written by an older missived opens.
    #[test]
    fn names_are_the_on_disk_names() {
        assert_eq!(
            Family::ALL.map(Family::name),
            [
                "meta",
                "content",
                "inbox",
                "contacts",
                "unread",
                "dedup",
                "convs",
                "conv_log",
                "groups",
                "members",
                "user_groups",
                "recalled",
                "push_queue",
                "revoked",
                "events",
                "media",
            ]
        );
        assert!(!Family::ALL
            .map(Family::name)
            .contains(&Family::DROPPED_IN_2));
    }

    #[test]
    fn all_lists_each_family_at_its_index() {
        for (i, family) in Family::ALL.into_iter().enumerate() {
            assert_eq!(family.index(), i, "{family:?}");
        }
    }
}
