//! Identifiers that are numbers, as types. A session id, a message id, a seq and an inbox
//! version are all `u64` on the wire, and the store's and the router's functions take several
//! of them side by side (and a time beside them); a type each makes passing one for another a
//! compile error. The wire and the key codecs keep `u64`: the conversion is at those edges
//! (`.0`, `MsgId(...)`).

use std::fmt;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id!(
    /// A logged-in connection, numbered by the router from 1 (`LOGIN_ACK.session_id`).
    SessionId
);
id!(
    /// A stored message's id, assigned by the server.
    MsgId
);
id!(
    /// A message's position in its conversation, from 1.
    Seq
);
id!(
    /// An entry's position in one user's inbox, from 1.
    Version
);
