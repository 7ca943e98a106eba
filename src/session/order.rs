//! The ordering rule: **a client never sees the PUSH of inbox version v+1 before the reply
//! (SEND_ACK, ...) that carries version v.** A client that sees a PUSH whose `prev_version` it
//! has not got yet SYNCs the gap (PROTOCOL.md 12); if the PUSH could overtake the reply of its
//! own SEND, the client would SYNC for nothing, and count its own message as a gap.
//!
//! Two halves keep it, and each has its tests:
//!
//! 1. **The store's committer** completes the results of a commit group (the replies' futures)
//!    before it hands the group's pushes to the router (`store`'s commit, "results, then
//!    pushes"). So when a session can take a push of v+1, the reply of v is already complete.
//! 2. **A session**, each turn, takes its pushes first and only then looks at which replies are
//!    complete, and writes those replies before those pushes ([`collect`]). By 1, every push it
//!    took was handed out after the replies of its group were complete, so the look that comes
//!    after the take finds them: they are written first. Looking first and taking after would
//!    let a group commit in between, and its push would go out before its reply.
//!
//! Requests are still answered in their order: a reply waits behind the replies before it.

use std::collections::VecDeque;

use crate::router::{SessionHandle, Taken};

/// One turn's writes, in the order they go out: first the replies that were complete, in
/// request order, then what the router had queued for the session.
pub struct Writes<A> {
    pub replies: Vec<(u32, A)>,
    pub taken: Taken,
}

/// Takes the session's pushes, then the replies at the front of `in_flight` that are complete
/// (`ready` polls one without waiting), in that order: see the module's rule.
pub fn collect<R, A>(
    handle: &SessionHandle,
    in_flight: &mut VecDeque<(u32, R)>,
    mut ready: impl FnMut(&mut R) -> Option<A>,
) -> Writes<A> {
    let taken = handle.take();
    let mut replies = Vec::new();
    while let Some((_, reply)) = in_flight.front_mut() {
        let Some(answer) = ready(reply) else {
            break;
        };
        if let Some((rid, _)) = in_flight.pop_front() {
            replies.push((rid, answer));
        }
    }
    Writes { replies, taken }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use missive_protocol::{pb, Frame, Packet};

    use super::*;
    use crate::router::{Outbound, Router};

    /// A reply to come: the version it carries, once the "committer" has completed it.
    struct Reply {
        version: u64,
        done: Arc<AtomicU64>,
    }

    fn push(version: u64) -> Outbound {
        let p = pb::Push {
            version,
            prev_version: version - 1,
            entry: None,
        };
        Outbound::Push {
            version,
            frame: Frame::new(&Packet::Push(p), 0),
        }
    }

    /// What the client sees, in order: `Ok(v)` a reply of version v, `Err(v)` a push of v.
    type Seen = Vec<Result<u64, u64>>;

    fn write(seen: &mut Seen, writes: Writes<u64>) {
        seen.extend(writes.replies.into_iter().map(|(_, v)| Ok(v)));
        for out in writes.taken.frames {
            if let Outbound::Push { version, .. } = out {
                seen.push(Err(version));
            }
        }
    }

    fn ready(r: &mut Reply) -> Option<u64> {
        (r.done.load(Ordering::SeqCst) >= r.version).then_some(r.version)
    }

    /// The committer's half: results complete first, then the pushes (here, the push of the
    /// version after: another device's message stored in the next group).
    fn commit(done: &AtomicU64, handle: &SessionHandle, version: u64) {
        done.store(version, Ordering::SeqCst);
        handle.enqueue(push(version + 1));
    }

    /// Whether every PUSH of v+1 came after the reply of v.
    fn in_order(seen: &Seen) -> bool {
        seen.iter().enumerate().all(|(i, s)| match s {
            Err(v) => seen
                .iter()
                .position(|r| *r == Ok(v - 1))
                .is_some_and(|r| r < i),
            Ok(_) => true,
        })
    }

    /// The commit may land at any point of a turn: before it, between the take and the look at
    /// the replies, or after both. In every case the reply of v goes out before the PUSH of
    /// v+1. Taking after looking (the wrong order) lets the commit land in between, and the
    /// push overtakes the reply: the check fails for it.
    #[test]
    fn a_push_of_the_next_version_never_overtakes_the_reply() {
        for commit_at in 0..3 {
            for wrong_order in [false, true] {
                let router = Router::default();
                let handle = router.register("alice", "phone", 64, 4, 0);
                let done = Arc::new(AtomicU64::new(0));
                let mut in_flight = VecDeque::from([(
                    7,
                    Reply {
                        version: 5,
                        done: done.clone(),
                    },
                )]);
                let mut seen = Seen::new();
                if commit_at == 0 {
                    commit(&done, &handle, 5);
                }
                let writes = if wrong_order {
                    // Replies looked at first, pushes taken after.
                    let mut replies = Vec::new();
                    while let Some(v) = in_flight.front_mut().and_then(|(_, r)| ready(r)) {
                        in_flight.pop_front();
                        replies.push((7, v));
                    }
                    if commit_at == 1 {
                        commit(&done, &handle, 5);
                    }
                    Writes {
                        replies,
                        taken: handle.take(),
                    }
                } else {
                    let mut ready_after_take = |r: &mut Reply| {
                        // The take has happened: a commit now lands between it and the look.
                        if commit_at == 1 && done.load(Ordering::SeqCst) == 0 {
                            commit(&done, &handle, 5);
                        }
                        ready(r)
                    };
                    collect(&handle, &mut in_flight, &mut ready_after_take)
                };
                write(&mut seen, writes);
                if commit_at == 2 {
                    commit(&done, &handle, 5);
                }
                // The next turn writes what is left.
                write(&mut seen, collect(&handle, &mut in_flight, ready));
                assert_eq!(seen.len(), 2, "{seen:?}");
                if wrong_order && commit_at == 1 {
                    assert!(!in_order(&seen), "the wrong order went unnoticed: {seen:?}");
                } else {
                    assert!(in_order(&seen), "commit at {commit_at}: {seen:?}");
                }
            }
        }
    }

    /// Replies leave in request order: a complete reply waits behind an earlier one that is not.
    #[test]
    fn replies_leave_in_request_order() {
        let router = Router::default();
        let handle = router.register("alice", "phone", 64, 4, 0);
        let done = Arc::new(AtomicU64::new(0));
        let reply = |version| Reply {
            version,
            done: done.clone(),
        };
        let mut in_flight = VecDeque::from([(1, reply(3)), (2, reply(2)), (3, reply(4))]);
        done.store(2, Ordering::SeqCst);
        let w = collect(&handle, &mut in_flight, ready);
        assert!(w.replies.is_empty(), "request 2 overtook request 1");
        done.store(3, Ordering::SeqCst);
        let w = collect(&handle, &mut in_flight, ready);
        let rids: Vec<u32> = w.replies.iter().map(|(rid, _)| *rid).collect();
        assert_eq!(rids, [1, 2]);
        assert_eq!(in_flight.len(), 1);
    }
}
