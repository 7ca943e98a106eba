//! A connection: one task opens it and waits for LOGIN (`login`), then a task of its own serves
//! the session (`serve`: requests in order, pushes from the router, acks and retransmits) and
//! parks it when it is idle (`park`). Every wait is cancel-safe. What a request means is
//! `service`'s: this layer turns frames into service calls and answers into frames.
//!
//! Files, bottom-up: `order` (the ordering rule's session half), `retransmit`, `timers` (the
//! timed decisions, without IO), `handlers` (Packet <-> service), `serve` (the session), `park`
//! (idle sessions without a task), `login` (opening a connection), then this file.

mod handlers;
mod login;
mod order;
mod park;
mod retransmit;
mod serve;
mod timers;

use std::net::SocketAddr;
use std::sync::Arc;

use missive_protocol::ErrorCode;
use tokio::net::TcpStream;

use crate::context::Shared;
use crate::net::conn::{Conn, Stream};
use crate::service::Refusal;

/// Answers a connection over the connection limits with SERVER_BUSY and closes it.
pub async fn refuse_busy(stream: TcpStream) {
    let mut conn = Conn::new(
        Stream::Plain(stream),
        missive_protocol::DEFAULT_MAX_FRAME_LEN,
    );
    let mut r = Refusal::new(ErrorCode::ServerBusy, "too many connections; retry later");
    r.retry_after_ms = 1000 + rand::random_range(0..2000);
    let _ = conn.write_frames(&[r.frame(0)]).await;
}

/// Answers a connection with SERVER_BUSY (fatal, request id 0, `retry_after_ms`) and closes it
/// at once, without a task: one non-blocking write (a fresh socket's send buffer takes the small
/// ERROR frame), a non-blocking read of what the client already sent, and the close. For floods
/// (an address over its failed-login budget): each costs an accept and two system calls.
pub fn refuse_at_once(stream: TcpStream, retry_after_ms: u32) {
    use std::io::{Read, Write};
    // The standard socket, still non-blocking: written and read without the reactor.
    let Ok(socket) = stream.into_std() else {
        return;
    };
    let mut r = Refusal::new(
        ErrorCode::ServerBusy,
        "too many failed logins from this address; retry later",
    );
    r.retry_after_ms = retry_after_ms;
    let _ = (&socket).write(&r.frame(0).to_bytes());
    // Closing with unread input resets the connection, and a reset may overtake the ERROR: the
    // client's LOGIN, usually there already, is read (and dropped) first.
    let mut sink = [0u8; 4096];
    let _ = (&socket).read(&mut sink);
}

/// Serves one connection until it closes: this task opens it and waits for LOGIN, then hands
/// the session to a task of its own.
pub async fn run(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    permit: crate::limits::Permit,
) {
    let Some(session) = login::start(shared, stream, peer, permit).await else {
        return;
    };
    // A new task, so that what opening and login needed is not kept for the life of the
    // connection: the serving task holds the boxed session (with the permit) and the (small)
    // waiting state of the serving loop.
    let tasks = session.shared.tasks.clone();
    tasks.spawn(park::serve(session));
}
