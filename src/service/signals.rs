//! Ephemeral signals (SIGNAL: typing, typing stopped, app-defined): checked here and relayed at
//! once to the other members' online devices through the router. Nothing is stored, counted or
//! acknowledged, and a signal that cannot be delivered now (device offline or parked, queue
//! full, or a block between the two users) is dropped: typing is stale within seconds, so neither a retry nor a wake-up is worth
//! its cost (PROTOCOL.md 26).

use std::sync::Arc;

use missive_protocol::pb::{self, Conversation, ConversationKind, SignalKind};
use missive_protocol::{ErrorCode, Frame, Packet};

use super::ids::check_conv;
use super::refusal::Refusal;
use super::run::small_read;
use crate::context::Shared;

/// Largest `Signal.payload` (APP signals only; PROTOCOL.md 20).
pub const MAX_PAYLOAD: usize = 256;
/// Largest group a signal is relayed in: past it a SIGNAL is LIMIT_EXCEEDED. One signal costs
/// a read of the member list and a frame per online device of each member, so the fan-out one
/// sender can cause is bounded by this times its rate.
pub const MAX_GROUP_MEMBERS: usize = 100;
/// The per-connection rate of SIGNALs (a token bucket): past it they are dropped unread.
pub const PER_SEC: u32 = 5;
pub const BURST: u32 = 10;

/// Checks a SIGNAL from `from` and relays it as SIGNAL_NOTIFY to the online devices in the
/// foreground of the conversation's other members (none of `from`'s own; a parked one gets it
/// written in place, `router::SessionHandle::offer_signal`). `Ok` also when nobody got it.
pub async fn relay(shared: &Arc<Shared>, from: &str, req: pb::Signal) -> Result<(), Refusal> {
    let to = check_conv(from, req.to.as_ref())?;
    let kind = check_kind(req.kind, &req.payload)?;
    let notify = |conversation: Conversation| {
        let body = pb::SignalNotify {
            conversation: Some(conversation),
            from_user: from.to_owned(),
            kind: kind as i32,
            payload: req.payload.clone(),
        };
        Frame::new(&Packet::SignalNotify(body), 0)
    };
    let (sent, dropped) = if to.kind == ConversationKind::Direct as i32 {
        // Anyone may tell anyone they are typing, but for users one of whom blocked the other:
        // then it is dropped as if the recipient were offline (the sender learns of the block
        // from its SENDs, not from signals). Two point reads.
        let (f, t) = (from.to_owned(), to.id.clone());
        if small_read(shared, move |s| s.store.core().blocked(&f, &t))
            .await?
            .is_some()
        {
            shared.metrics.signals_dropped.inc();
            return Ok(());
        }
        let seen_as = Conversation {
            kind: ConversationKind::Direct as i32,
            id: from.to_owned(),
        };
        shared
            .router
            .relay_signal([to.id.as_str()], from, &notify(seen_as))
    } else {
        let members = group_members(shared, from, &to.id).await?;
        let frame = notify(to);
        shared
            .router
            .relay_signal(members.iter().map(String::as_str), from, &frame)
    };
    shared.metrics.signals_relayed.add(sent);
    shared.metrics.signals_dropped.add(dropped);
    Ok(())
}

/// The kind, if it is one the server relays and the payload fits it: only APP carries a payload
/// (1 to [`MAX_PAYLOAD`] bytes).
fn check_kind(kind: i32, payload: &[u8]) -> Result<SignalKind, Refusal> {
    let invalid = |m: &str| Err(Refusal::new(ErrorCode::InvalidArgument, m));
    match SignalKind::try_from(kind) {
        Ok(k @ (SignalKind::Typing | SignalKind::TypingStopped)) => {
            if payload.is_empty() {
                Ok(k)
            } else {
                invalid("payload is only for APP signals")
            }
        }
        Ok(SignalKind::App) if payload.len() > MAX_PAYLOAD => Err(Refusal::new(
            ErrorCode::ContentTooLarge,
            format!("signal payload is limited to {MAX_PAYLOAD} bytes"),
        )),
        Ok(SignalKind::App) if payload.is_empty() => invalid("an APP signal needs a payload"),
        Ok(SignalKind::App) => Ok(SignalKind::App),
        _ => invalid("signal kind must be TYPING (1), TYPING_STOPPED (2) or APP (3)"),
    }
}

/// The members of `group_id` if `user` is one of them (NOT_FOUND otherwise, as for any group
/// read) and there are at most [`MAX_GROUP_MEMBERS`] (LIMIT_EXCEEDED otherwise). A few keys:
/// the member record, the group, and one page of at most that many members.
async fn group_members(
    shared: &Arc<Shared>,
    user: &str,
    group_id: &str,
) -> Result<Vec<String>, Refusal> {
    let (user, group) = (user.to_owned(), group_id.to_owned());
    let (info, (members, _)) = small_read(shared, move |s| {
        s.store
            .core()
            .group_members(Some(&user), &group, &[], MAX_GROUP_MEMBERS)
    })
    .await?;
    if info.member_count as usize > MAX_GROUP_MEMBERS {
        return Err(Refusal::new(
            ErrorCode::LimitExceeded,
            format!("signals are relayed only in groups of at most {MAX_GROUP_MEMBERS} members"),
        ));
    }
    Ok(members.into_iter().map(|m| m.user_id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_app_signals_carry_a_payload_and_it_is_bounded() {
        assert_eq!(check_kind(1, b"").unwrap(), SignalKind::Typing);
        assert_eq!(check_kind(2, b"").unwrap(), SignalKind::TypingStopped);
        assert_eq!(check_kind(3, b"x").unwrap(), SignalKind::App);
        assert_eq!(check_kind(3, &[0; MAX_PAYLOAD]).unwrap(), SignalKind::App);
        let code = |k, p: &[u8]| check_kind(k, p).unwrap_err().code;
        assert_eq!(code(1, b"x"), ErrorCode::InvalidArgument);
        assert_eq!(code(3, b""), ErrorCode::InvalidArgument);
        assert_eq!(code(3, &[0; MAX_PAYLOAD + 1]), ErrorCode::ContentTooLarge);
        assert_eq!(code(0, b""), ErrorCode::InvalidArgument);
        assert_eq!(code(9, b""), ErrorCode::InvalidArgument);
    }
}
