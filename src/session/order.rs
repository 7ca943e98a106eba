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

/// `write` refused a reply (a fatal one): the connection closes, the turn ends there.
#[derive(Debug, PartialEq, Eq)]
pub struct Stopped;

/// Takes the session's pushes, then hands `write` the replies at the front of `in_flight`
/// that are complete (`ready` polls one without waiting), in request order, and returns the
/// pushes for the caller to write after them: see the module's rule. Nothing is gathered on
/// the way (this runs every turn of every busy connection).
pub fn collect<R, A>(
    handle: &SessionHandle,
    in_flight: &mut VecDeque<(u32, R)>,
    mut ready: impl FnMut(&mut R) -> Option<A>,
    mut write: impl FnMut(u32, A) -> Result<(), Stopped>,
) -> Result<Taken, Stopped> {
    let taken = handle.take();
    while let Some((_, reply)) = in_flight.front_mut() {
        let Some(answer) = ready(reply) else {
            break;
        };
        if let Some((rid, _)) = in_flight.pop_front() {
            write(rid, answer)?;
        }
    }
    Ok(taken)
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

    /// Writes one turn as the session does: the replies `collect` hands over, then its pushes.
    fn turn<R>(
        seen: &mut Seen,
        handle: &SessionHandle,
        in_flight: &mut VecDeque<(u32, R)>,
        ready: impl FnMut(&mut R) -> Option<u64>,
    ) {
        let taken = collect(handle, in_flight, ready, |_, v| {
            seen.push(Ok(v));
            Ok(())
        })
        .expect("nothing stops");
        pushes(seen, taken);
    }

    fn pushes(seen: &mut Seen, taken: Taken) {
        for out in taken.frames {
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
        handle.enqueue(push(version + 1), 1024);
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
                if wrong_order {
                    // Replies looked at first, pushes taken after.
                    while let Some(v) = in_flight.front_mut().and_then(|(_, r)| ready(r)) {
                        in_flight.pop_front();
                        seen.push(Ok(v));
                    }
                    if commit_at == 1 {
                        commit(&done, &handle, 5);
                    }
                    pushes(&mut seen, handle.take());
                } else {
                    let ready_after_take = |r: &mut Reply| {
                        // The take has happened: a commit now lands between it and the look.
                        if commit_at == 1 && done.load(Ordering::SeqCst) == 0 {
                            commit(&done, &handle, 5);
                        }
                        ready(r)
                    };
                    turn(&mut seen, &handle, &mut in_flight, ready_after_take);
                }
                if commit_at == 2 {
                    commit(&done, &handle, 5);
                }
                // The next turn writes what is left.
                turn(&mut seen, &handle, &mut in_flight, ready);
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
        let mut rids = Vec::new();
        let mut written = |rid, _| {
            rids.push(rid);
            Ok(())
        };
        done.store(2, Ordering::SeqCst);
        collect(&handle, &mut in_flight, ready, &mut written).unwrap();
        done.store(3, Ordering::SeqCst);
        collect(&handle, &mut in_flight, ready, &mut written).unwrap();
        assert_eq!(rids, [1, 2], "request 2 overtook request 1, or was lost");
        assert_eq!(in_flight.len(), 1);
    }

    /// A fatal reply ends the turn: nothing after it is written, and the pushes stay untaken by
    /// the caller (the connection closes).
    #[test]
    fn a_refused_write_stops_the_turn() {
        let router = Router::default();
        let handle = router.register("alice", "phone", 64, 4, 0);
        let done = Arc::new(AtomicU64::new(10));
        let reply = |version| Reply {
            version,
            done: done.clone(),
        };
        let mut in_flight = VecDeque::from([(1, reply(1)), (2, reply(2)), (3, reply(3))]);
        let mut written = Vec::new();
        let r = collect(&handle, &mut in_flight, ready, |rid, _| {
            written.push(rid);
            if rid == 2 {
                Err(Stopped)
            } else {
                Ok(())
            }
        });
        assert_eq!(r.err(), Some(Stopped));
        assert_eq!(written, [1, 2]);
        assert_eq!(in_flight.len(), 1, "request 3 left in flight");
    }
}
