//! Parked sessions: an idle connection without a task.
//!
//! Most connections of an IM server are phones doing nothing but a heartbeat every half minute.
//! A session with nothing in flight for `park_idle_ms` gives up its task, its timer and its
//! session state: what is left is its socket, its place with the router and the few fields
//! needed to serve it again ([`Parked`]), held by a [`Nest`]. The nest is the waker of both
//! things that can end the idleness: the socket's read readiness (tokio's reactor holds it) and
//! the router's queue (the session's handle holds it). The first wake takes the parked session
//! out of the nest and spawns a task that serves it again, exactly as before it was parked;
//! later wakes of the same nest find it empty and do nothing.
//!
//! No wake is lost: the nest is registered with the socket and the queue before the session is
//! put in it, and a wake that comes in between marks the nest `woken` (under the same lock the
//! session is put in with), so the session is not parked but served on.
//!
//! While parked, the nest and the session refer to each other (socket -> nest -> session ->
//! socket): the session lives exactly as long as something can still wake it. Everything that
//! ends a session wakes it first: the client (data, end of stream or reset), the router (a kick,
//! a close, the heartbeat sweep, the drain, shutdown).

use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use parking_lot::Mutex;
use tokio::time::Instant;

use super::conn::{Conn, Filled, Stream};
use super::serve::Session;
use crate::router::SessionHandle;
use crate::server::Shared;

/// What a parked session keeps: everything else is empty when it is idle, or rebuilt from the
/// configuration when it is revived.
struct Parked {
    shared: Arc<Shared>,
    stream: Stream,
    handle: Arc<SessionHandle>,
    sends: crate::limits::Bucket,
    permit: crate::limits::Permit,
}

/// The waker of a parked session, and where it waits.
#[derive(Default)]
struct Nest {
    state: Mutex<NestState>,
}

#[derive(Default)]
struct NestState {
    /// Set by the first wake: a session not yet in the nest is then not parked.
    woken: bool,
    parked: Option<Parked>,
}

impl Wake for Nest {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let parked = {
            let mut state = self.state.lock();
            state.woken = true;
            state.parked.take()
        };
        if let Some(p) = parked {
            revive(p);
        }
    }
}

/// What came of trying to park a session.
pub(super) enum Parking {
    /// Parked: the caller's task ends here.
    Parked,
    /// Something arrived meanwhile: serve on.
    Resume(Box<Session>),
    /// The client closed the connection (or it failed).
    Closed(Box<Session>),
}

/// Parks an idle session (one whose `serve` returned `Exit::Idle`), unless something is
/// already waiting for it.
pub(super) fn park(mut session: Box<Session>) -> Parking {
    let nest = Arc::new(Nest::default());
    let waker = Waker::from(nest.clone());
    let mut cx = Context::from_waker(&waker);
    // Both register the nest as the waker: from here on, frames queued and bytes arriving wake
    // the nest rather than this task.
    if session.handle.poll_ready(&mut cx).is_ready() {
        return Parking::Resume(session);
    }
    match session.conn.poll_fill(&mut cx) {
        Poll::Pending => {}
        Poll::Ready(Ok(Filled::Data)) => {
            session.handle.touch(crate::now_ms());
            session.idle_since = Instant::now();
            return Parking::Resume(session);
        }
        Poll::Ready(Ok(Filled::Eof)) => return Parking::Closed(session),
        Poll::Ready(Err(e)) => {
            tracing::debug!(session = session.handle.id, "read: {e}");
            return Parking::Closed(session);
        }
    }
    let mut state = nest.state.lock();
    if state.woken {
        drop(state);
        return Parking::Resume(session);
    }
    let Session {
        shared,
        conn,
        handle,
        sends,
        permit,
        ..
    } = *session;
    shared.metrics.sessions_parked.inc();
    state.parked = Some(Parked {
        stream: conn.into_stream(),
        shared,
        handle,
        sends,
        permit,
    });
    Parking::Parked
}

/// Serves a parked session again, on a task of its own (from the thread that woke it).
fn revive(p: Parked) {
    let shared = p.shared;
    shared.metrics.sessions_revived.inc();
    let conn = Conn::new(p.stream, shared.config.max_frame_len);
    let session = Session::new(shared.clone(), conn, p.handle, p.sends, p.permit);
    shared
        .tasks
        .spawn_on(super::serve(session), &shared.runtime);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a parked session holds besides its socket and router entry (BENCHMARKS.md counts it
    /// per idle connection): one allocation of the nest, under 160 bytes with its `Arc` counts.
    #[test]
    fn a_parked_session_is_one_small_allocation() {
        let nest = std::mem::size_of::<Nest>() + 2 * std::mem::size_of::<usize>();
        assert!(nest <= 160, "the nest takes {nest} bytes");
        assert!(std::mem::size_of::<Parked>() < std::mem::size_of::<Session>() / 2);
    }
}
