//! Parked sessions: an idle connection without a task.
//!
//! Most connections of an IM server are phones doing nothing but a heartbeat every half minute.
//! A session with nothing in flight for `park_idle_ms` gives up its task, its timer and its
//! session state: what is left is its socket, its place with the router and the few fields
//! needed to serve it again ([`Parked`]), held by a [`Nest`]. The nest is the waker of the
//! router's queue for the session (the session's handle holds it), and it waits for the socket:
//!
//! - A plain TCP socket leaves tokio's reactor (and its per-socket state) for the [`Parker`]'s
//!   epoll set, watched by one thread. When bytes arrive, that thread reads them; if they are
//!   only HEARTBEATs it answers them itself and the session stays parked, so an idle phone's
//!   heartbeat costs a read and a write, not a task.
//! - A TLS or WebSocket stream keeps its tokio registration, with the nest as its waker.
//!
//! Anything else (a request, a push or a kick through the router, the end of the stream) takes
//! the parked session out of the nest and spawns a task that serves it again, exactly as before
//! it was parked, with whatever the parker read or could not write. Later wakes of the same
//! nest find it empty and do nothing.
//!
//! No wake is lost: the nest is registered with the queue and the socket before the session is
//! put in it, a wake that comes in between marks the nest `woken` (under the same lock the
//! session is put in with) and the session is then served on instead. Registering a socket
//! that is already readable reports it at once.
//!
//! While parked, the nest and the session refer to each other (the waker in the queue, or the
//! parker's slot, holds the nest, which holds the session): the session lives exactly as long
//! as something can still wake it. Everything that ends a session wakes it first: the client
//! (data, end of stream or reset), the router (a kick, a close, the heartbeat sweep, the drain,
//! shutdown).

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use bytes::BytesMut;
use missive_protocol::{Frame, FrameCodec, Packet};
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::codec::Decoder;

use super::serve::{heartbeat, Exit, Session};
use crate::context::Shared;
use crate::net::conn::Written;
use crate::net::conn::{Conn, Filled, Stream};
use crate::net::parker::Sleeper;
use crate::router::{SessionHandle, Sleeping};

/// Bytes the parker reads from one socket before handing it to a task (a heartbeat is ~20).
const READ_LIMIT: usize = 4096;

/// Serves a session until it closes or is parked (its task ends then, and a wake-up serves it
/// again on a new one: `park`).
pub(super) async fn serve(mut session: Box<Session>) {
    loop {
        match session.serve().await {
            Exit::Closed => break,
            Exit::Idle => match park(session) {
                Parking::Parked => return,
                Parking::Resume(s) => session = s,
                Parking::Closed(shared, handle) => return closed(&shared, &handle),
            },
        }
    }
    closed(&session.shared, &session.handle);
}

/// A session is over: it leaves the router.
fn closed(shared: &Shared, handle: &Arc<SessionHandle>) {
    shared.router.unregister(handle);
    tracing::debug!(session = %handle.id, "closed");
}

/// What a parked session keeps: everything else is empty when it is idle, or rebuilt from the
/// configuration when it is revived.
struct Parked {
    shared: Arc<Shared>,
    waiting: Waiting,
    handle: Arc<SessionHandle>,
    sends: crate::limits::Bucket,
    permit: crate::limits::Permit,
}

/// Where a parked session's socket waits.
enum Waiting {
    /// In the parker's epoll set, under `token`.
    Plain {
        socket: mio::net::TcpStream,
        token: mio::Token,
    },
    /// Registered with tokio, the nest as its waker.
    Stream(Stream),
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
            revive(p, Carry::default());
        }
    }
}

impl std::fmt::Debug for Nest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nest")
    }
}

impl Sleeping for Nest {
    fn wake(self: Arc<Self>) {
        Wake::wake(self)
    }

    /// Writes an ephemeral frame to the parked session's socket, if the socket takes it at once
    /// (a few dozen bytes into an idle connection's empty send buffer: it does). The session
    /// stays parked. A socket that takes only part of it revives the session with the rest
    /// (the frame is never cut); one that takes none drops it. A session that is not in the
    /// nest (being parked, woken, or answering heartbeats in the parker) drops it too.
    fn write_now(&self, frame: &Frame) -> bool {
        let mut state = self.state.lock();
        let Some(p) = state.parked.as_mut() else {
            return false;
        };
        let bytes = frame.to_bytes();
        let outcome = match &mut p.waiting {
            Waiting::Plain { socket, .. } => match socket.write(&bytes) {
                Ok(n) => Written::of(&bytes, n, true),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Written::None,
                Err(_) => Written::Failed,
            },
            Waiting::Stream(stream) => stream.write_now(&bytes),
        };
        match outcome {
            Written::All => true,
            Written::None => false,
            // A TLS or WebSocket layer took it all but could not pass it on yet: it goes out
            // with the connection's next write (a heartbeat's answer at the latest). Waking the
            // session would not send it sooner: it has nothing to write.
            Written::Part(rest) if rest.is_empty() => true,
            Written::Part(rest) => {
                let p = state.parked.take().expect("checked above");
                drop(state);
                revive(p, unwritten(rest));
                true
            }
            Written::Failed => {
                // The revived session meets the error on its own and closes.
                let p = state.parked.take().expect("checked above");
                drop(state);
                revive(p, Carry::default());
                false
            }
        }
    }
}

impl Sleeper for Nest {
    fn readable(&self) {
        Nest::readable(self)
    }

    fn evict(self: Arc<Self>) {
        Wake::wake(self)
    }
}

impl Nest {
    /// The parker saw the plain socket readable: answers HEARTBEATs in place, or revives.
    fn readable(&self) {
        let taken = {
            let mut state = self.state.lock();
            let taken = state.parked.take();
            if taken.is_none() {
                // Not in the nest (yet): the socket was registered but the session is still
                // being parked. The event is edge-triggered and will not come again, so the
                // session must not be parked: `park` sees `woken` (under this same lock) and
                // serves on. If it was revived already, the nest is stale and this changes
                // nothing.
                state.woken = true;
            }
            taken
        };
        let Some(mut p) = taken else {
            return;
        };
        // While the parker holds the session, shutdown's wait for the server's tasks does not
        // end: a close that arrives meanwhile is served before the store is flushed.
        let _busy = p.shared.tasks.token();
        let (shared, handle) = (p.shared.clone(), p.handle.clone());
        let answered =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.answer_heartbeats()));
        match answered {
            Ok(Ok(())) => {}
            Ok(Err(carry)) => return revive(p, carry),
            Err(_) => {
                // A bug, not the client's doing: this connection is closed, the others stay.
                tracing::error!(
                    session = %handle.id,
                    "the parker panicked; connection closed"
                );
                drop(p);
                return closed(&shared, &handle);
            }
        }
        let mut state = self.state.lock();
        if state.woken {
            // The router woke the nest while the parker had the session: serve it now.
            drop(state);
            return revive(p, Carry::default());
        }
        state.parked = Some(p);
    }
}

/// What the parker read and did not handle, or could not write: the revived session starts
/// with it.
#[derive(Default)]
struct Carry {
    unread: BytesMut,
    unwritten: BytesMut,
}

impl Parked {
    /// Reads what arrived on a parked plain socket. Only complete HEARTBEATs: answered, the
    /// session stays parked. Anything else (another request, part of a frame, the end of the
    /// stream, an error): `Err` with what was read, for a task to handle as any read.
    fn answer_heartbeats(&mut self) -> Result<(), Carry> {
        let Waiting::Plain { socket, .. } = &mut self.waiting else {
            return Err(Carry::default());
        };
        let mut read = BytesMut::new();
        let mut chunk = [0u8; 512];
        loop {
            match socket.read(&mut chunk) {
                Ok(0) => return Err(unread(&self.handle, read)),
                Ok(n) => {
                    read.extend_from_slice(&chunk[..n]);
                    if read.len() >= READ_LIMIT {
                        return Err(unread(&self.handle, read));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The task's own read finds the error (or the end of the stream) again.
                Err(_) => return Err(unread(&self.handle, read)),
            }
        }
        if read.is_empty() {
            return Ok(());
        }
        self.handle.touch(crate::clock::now_ms());
        let max = self.shared.config.max_frame_len;
        let mut codec = FrameCodec::new(max);
        let mut rest = read.clone();
        let mut acks = BytesMut::new();
        loop {
            match codec.decode(&mut rest) {
                Ok(Some(frame)) => match frame.packet(max) {
                    Ok(Packet::Heartbeat(h)) => {
                        // Its interval and app state apply here; a refused one wakes the
                        // session, which refuses it in order.
                        let Ok(ack) = heartbeat(&self.shared, &self.handle, &h) else {
                            return Err(unread(&self.handle, read));
                        };
                        let threshold = self.shared.config.compress_threshold;
                        Frame::compressed_above(&ack, frame.request_id, threshold)
                            .write_to(&mut acks)
                    }
                    _ => return Err(unread(&self.handle, read)),
                },
                Ok(None) if rest.is_empty() => break,
                _ => return Err(unread(&self.handle, read)),
            }
        }
        match socket.write(&acks) {
            Ok(n) if n == acks.len() => Ok(()),
            Ok(n) => Err(unwritten(acks.split_off(n))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(unwritten(acks)),
            Err(_) => Err(unwritten(acks)),
        }
    }
}

/// What was read, for the revived session; it counts as hearing from the client (the heartbeat
/// sweep's `last_seen`), as any read of a session does.
fn unread(handle: &SessionHandle, bytes: BytesMut) -> Carry {
    if !bytes.is_empty() {
        handle.touch(crate::clock::now_ms());
    }
    Carry {
        unread: bytes,
        ..Carry::default()
    }
}

fn unwritten(bytes: BytesMut) -> Carry {
    Carry {
        unwritten: bytes,
        ..Carry::default()
    }
}

/// What came of trying to park a session.
pub(super) enum Parking {
    /// Parked: the caller's task ends here.
    Parked,
    /// Something arrived meanwhile: serve on.
    Resume(Box<Session>),
    /// The connection is done (the client closed it, or it failed).
    Closed(Arc<Shared>, Arc<SessionHandle>),
}

/// Parks an idle session (one whose `serve` returned `Exit::Idle`), unless something is
/// already waiting for it. The handle is marked parked first, with the nest, before the nest
/// becomes the waker of its queue, so that no ephemeral signal can wake the nest
/// (`router::offer_signal` hands them to [`Nest::write_now`] instead); the mark is taken off if
/// the session is not parked after all.
fn park(mut session: Box<Session>) -> Parking {
    // The revived session will not know what LOGIN_ACK told the client to SYNC.
    session.heard_from_client();
    let handle = session.handle.clone();
    let nest = Arc::new(Nest::default());
    // From here on, frames queued for the session wake the nest rather than this task.
    if !handle.park(nest.clone()) {
        return Parking::Resume(session);
    }
    let parking = try_park(session, nest);
    if !matches!(parking, Parking::Parked) {
        handle.unpark();
    }
    parking
}

fn try_park(mut session: Box<Session>, nest: Arc<Nest>) -> Parking {
    let waker = Waker::from(nest.clone());
    let mut cx = Context::from_waker(&waker);
    // A plain socket goes to the parker's epoll set, unless the parker has stopped.
    let to_parker = session.conn.is_plain() && !session.shared.parker.is_broken();
    if !to_parker {
        // A TLS or WebSocket stream stays with tokio: the nest becomes the waker of its reads.
        match session.conn.poll_fill(&mut cx) {
            Poll::Pending => {}
            Poll::Ready(Ok(Filled::Data)) => {
                session.handle.touch(crate::clock::now_ms());
                session.timers.active(Instant::now());
                return Parking::Resume(session);
            }
            Poll::Ready(r) => {
                if let Err(e) = r {
                    tracing::debug!(session = %session.handle.id, "read: {e}");
                }
                let Session { shared, handle, .. } = *session;
                return Parking::Closed(shared, handle);
            }
        }
    }
    let Session {
        shared,
        conn,
        handle,
        sends,
        permit,
        ..
    } = *session;
    let waiting = match conn.into_stream() {
        Stream::Plain(tcp) if to_parker => {
            // Out of tokio's reactor, into the parker's epoll set.
            let mut socket = match tcp.into_std() {
                Ok(s) => mio::net::TcpStream::from_std(s),
                Err(e) => {
                    tracing::warn!(session = %handle.id, "cannot park: {e}");
                    return Parking::Closed(shared, handle);
                }
            };
            match shared.parker.add(&mut socket, nest.clone()) {
                Ok(token) => Waiting::Plain { socket, token },
                Err(e) => {
                    // The parker stopped meanwhile (or epoll refused the socket): back to
                    // tokio, and the session serves on.
                    tracing::debug!(session = %handle.id, "not parked: {e}");
                    let std: std::net::TcpStream = socket.into();
                    return match tokio::net::TcpStream::from_std(std) {
                        Ok(tcp) => {
                            let conn = Conn::new(Stream::Plain(tcp), shared.config.max_frame_len);
                            Parking::Resume(Session::new(shared, conn, handle, sends, permit))
                        }
                        Err(e) => {
                            tracing::warn!(session = %handle.id, "cannot serve: {e}");
                            Parking::Closed(shared, handle)
                        }
                    };
                }
            }
        }
        stream => Waiting::Stream(stream),
    };
    let mut state = nest.state.lock();
    let parked = Parked {
        shared,
        waiting,
        handle,
        sends,
        permit,
    };
    if state.woken {
        drop(state);
        return match unpark(parked, Carry::default()) {
            Ok(s) => Parking::Resume(s),
            Err((shared, handle)) => Parking::Closed(shared, handle),
        };
    }
    parked.shared.metrics.sessions_parked.inc();
    state.parked = Some(parked);
    Parking::Parked
}

/// The session again, its socket back with tokio (in the runtime's context).
fn unpark(p: Parked, carry: Carry) -> Result<Box<Session>, (Arc<Shared>, Arc<SessionHandle>)> {
    let stream = match p.waiting {
        Waiting::Stream(s) => s,
        Waiting::Plain { mut socket, token } => {
            p.shared.parker.remove(&mut socket, token);
            let std: std::net::TcpStream = socket.into();
            match tokio::net::TcpStream::from_std(std) {
                Ok(s) => Stream::Plain(s),
                Err(e) => {
                    tracing::warn!(session = %p.handle.id, "cannot serve a parked session: {e}");
                    return Err((p.shared, p.handle));
                }
            }
        }
    };
    let mut conn = Conn::new(stream, p.shared.config.max_frame_len);
    conn.unread(carry.unread);
    conn.queue_bytes(&carry.unwritten);
    Ok(Session::new(p.shared, conn, p.handle, p.sends, p.permit))
}

/// Serves a parked session again, on a task of its own (from the thread that woke it).
fn revive(p: Parked, carry: Carry) {
    let shared = p.shared.clone();
    p.handle.unpark();
    shared.metrics.sessions_revived.inc();
    shared.tasks.spawn_on(
        async move {
            match unpark(p, carry) {
                Ok(session) => serve(session).await,
                Err((shared, handle)) => closed(&shared, &handle),
            }
        },
        &shared.runtime,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a parked session holds besides its socket and router entry (BENCHMARKS.md counts it
    /// per idle connection): one allocation of the nest, at most 160 bytes with its `Arc` counts.
    #[test]
    fn a_parked_session_is_one_small_allocation() {
        let nest = std::mem::size_of::<Nest>() + 2 * std::mem::size_of::<usize>();
        assert!(nest <= 160, "the nest takes {nest} bytes");
        assert!(std::mem::size_of::<Parked>() < std::mem::size_of::<Session>() / 2);
    }
}
