//! The one check of every id a client or the app's backend names (`missive_protocol::ids`), and
//! of the lists and conversations made of them. Sockets and the HTTP API refuse the same ids
//! with the same INVALID_ARGUMENT message.

use missive_protocol::pb::{Conversation, ConversationKind};
use missive_protocol::ErrorCode;

use super::refusal::Refusal;

/// Most user ids one GROUP_CREATE or GROUP_JOIN (or the API's create and add) may name
/// (PROTOCOL.md 20).
pub const MAX_IDS_PER_REQUEST: usize = 1000;

/// Checks an id: INVALID_ARGUMENT naming the field (`what`) and the reason.
pub fn check_id(what: &str, id: &str) -> Result<(), Refusal> {
    missive_protocol::ids::check(id)
        .map_err(|e| Refusal::new(ErrorCode::InvalidArgument, format!("{what}: {e}")))
}

/// Checks a list of user ids: its length first (at most [`MAX_IDS_PER_REQUEST`], and fewer
/// than `max_group_size`), before any id is looked at, then each id.
pub fn check_users(what: &str, users: &[String], max_group_size: usize) -> Result<(), Refusal> {
    if users.len() > MAX_IDS_PER_REQUEST {
        return Err(Refusal::new(
            ErrorCode::InvalidArgument,
            format!("at most {MAX_IDS_PER_REQUEST} user ids per request"),
        ));
    }
    if users.len() >= max_group_size {
        return Err(Refusal::new(
            ErrorCode::GroupFull,
            "more user ids than max_group_size",
        ));
    }
    for u in users {
        check_id(what, u)?;
    }
    Ok(())
}

/// Checks a conversation named by `user` (whether a group exists is the store's to say).
pub fn check_conv(user: &str, conv: Option<&Conversation>) -> Result<Conversation, Refusal> {
    let conv =
        conv.ok_or_else(|| Refusal::new(ErrorCode::InvalidArgument, "conversation missing"))?;
    check_id("conversation id", &conv.id)?;
    match ConversationKind::try_from(conv.kind) {
        Ok(ConversationKind::Direct) if conv.id == user => Err(Refusal::new(
            ErrorCode::InvalidArgument,
            "a direct conversation needs another user",
        )),
        Ok(ConversationKind::Direct) => Ok(conv.clone()),
        Ok(ConversationKind::Group) => Ok(conv.clone()),
        _ => Err(Refusal::new(
            ErrorCode::InvalidArgument,
            "conversation kind must be DIRECT or GROUP",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_field_and_the_reason() {
        let r = check_id("group_id", "").unwrap_err();
        assert_eq!(r.code, ErrorCode::InvalidArgument);
        assert_eq!(r.message, "group_id: id is empty");
        let long = "x".repeat(65);
        assert_eq!(
            check_id("user", &long).unwrap_err().message,
            "user: id is longer than 64 bytes"
        );
        assert!(check_id("user", "alice").is_ok());
    }

    #[test]
    fn a_list_is_refused_by_its_length_before_its_ids() {
        let many = vec![String::new(); MAX_IDS_PER_REQUEST + 1];
        let r = check_users("member id", &many, 100_000).unwrap_err();
        assert_eq!(r.code, ErrorCode::InvalidArgument);
        assert!(r.message.starts_with("at most 1000"), "{}", r.message);
        let r = check_users("member id", &["a".into(), "b".into()], 2).unwrap_err();
        assert_eq!(r.code, ErrorCode::GroupFull);
        let r = check_users("member id", &["a".into(), "".into()], 10).unwrap_err();
        assert_eq!(r.message, "member id: id is empty");
    }

    #[test]
    fn a_direct_conversation_needs_another_user() {
        let conv = |kind: ConversationKind, id: &str| Conversation {
            kind: kind as i32,
            id: id.into(),
        };
        assert!(check_conv("a", Some(&conv(ConversationKind::Direct, "b"))).is_ok());
        assert!(check_conv("a", Some(&conv(ConversationKind::Direct, "a"))).is_err());
        assert!(check_conv("a", None).is_err());
        let bad_kind = Conversation {
            kind: 9,
            id: "b".into(),
        };
        assert!(check_conv("a", Some(&bad_kind)).is_err());
    }
}
