//! The kinds of events for the app's backend (`event_webhook_events`), and which are on: below
//! [`Core`](super::core::Core), which holds the set; the queue itself is `events.rs`.

/// The kinds of events, by their names in `event_webhook_events` and the payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    MessageStored,
    MessageRecalled,
    MessageDeleted,
    ConversationRead,
    GroupCreated,
    GroupChanged,
    UserFirstSeen,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::MessageStored,
        EventKind::MessageRecalled,
        EventKind::MessageDeleted,
        EventKind::ConversationRead,
        EventKind::GroupCreated,
        EventKind::GroupChanged,
        EventKind::UserFirstSeen,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::MessageStored => "message.stored",
            EventKind::MessageRecalled => "message.recalled",
            EventKind::MessageDeleted => "message.deleted",
            EventKind::ConversationRead => "conversation.read",
            EventKind::GroupCreated => "group.created",
            EventKind::GroupChanged => "group.changed",
            EventKind::UserFirstSeen => "user.first_seen",
        }
    }

    pub fn from_name(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// Which kinds are queued: a bit per [`EventKind`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventKinds(u8);

impl EventKinds {
    pub fn of(kinds: impl IntoIterator<Item = EventKind>) -> EventKinds {
        EventKinds(kinds.into_iter().fold(0, |b, k| b | k.bit()))
    }

    pub fn contains(self, kind: EventKind) -> bool {
        self.0 & kind.bit() != 0
    }
}
