//! A logged-in connection: requests in order, pushes from the router, acks and retransmits.
//!
//! SENDs are pipelined: each is handed to the store's writer at once and its reply is written
//! when its group is committed, so a client with many SENDs in flight shares one commit (one
//! fsync in `sync` durability) among them instead of waiting for each in turn. Replies still
//! leave in request order: any other request first waits for the SENDs before it. Everything
//! due to be written (replies, pushes, retransmits) is gathered and written in one go per turn
//! of the loop.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use missive_protocol::pb::{self, KickReason};
use missive_protocol::{Command, ErrorCode, Frame, Packet};
use tokio::time::Instant;

use super::handlers::{self, Answer};
use super::order;
use super::retransmit::{self, Retransmits};
use super::timers::{self, Due, Timers};
use crate::context::Shared;
use crate::net::conn::{Conn, Filled};
use crate::router::{kick, Outbound, SessionHandle};
use crate::service::refusal::error_frame;
use crate::service::signals;
use crate::service::Refusal;

/// SENDs of one connection in flight at once; past this the session reads no more until the
/// oldest is answered (the client's pipelining is bounded by the server, not by memory).
const MAX_IN_FLIGHT: usize = 64;

type Reply = Pin<Box<dyn Future<Output = Result<Answer, Refusal>> + Send>>;

/// Bytes of replies gathered and not yet written past which the session takes no more
/// requests until they are written: a client that pipelines large reads and never reads the
/// answers makes the server hold at most this plus one reply, until the write times out.
const REPLY_BUDGET: usize = 256 * 1024;

pub(super) enum Flow {
    Continue,
    Close,
}

pub(super) struct Session {
    pub shared: Arc<Shared>,
    pub conn: Conn,
    pub handle: Arc<SessionHandle>,
    pub retransmits: Retransmits,
    pub sends: crate::limits::Bucket,
    /// Requests answered in order: (request id, reply to come).
    pub in_flight: VecDeque<(u32, Reply)>,
    /// The order of this connection's sends through the before-send hook.
    pub send_order: crate::service::messages::SendOrder,
    /// Armed only while a frame is half read or a push awaits its ack.
    pub timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The connection's place within the connection limits, given back when the session ends.
    pub permit: crate::limits::Permit,
    /// The frame timeout, retransmit and park decisions (`super::timers`).
    pub timers: Timers,
    /// Pushes of versions up to this are not sent: the LOGIN_ACK's `current_version` counted
    /// them (the client SYNCs them). The session registers before it reads that version, so
    /// the pushes of a commit the router had not handed out yet can still come in behind it.
    pub pushed_through: u64,
    /// The entries up to `pushed_through`, which the client was told to SYNC, count as
    /// delivered (`router::Router::acked`) once a frame came from it after LOGIN_ACK, or it
    /// stayed up until it was parked: not before the connection showed it works.
    heard: bool,
}

/// Why [`Session::serve`] returned.
pub enum Exit {
    /// The connection is done.
    Closed,
    /// Nothing in flight for `park_idle_ms`: the session may be parked.
    Idle,
}

/// What a timer wake-up calls for.
enum Timed {
    Continue,
    Close,
    Park,
}

impl Session {
    /// A session with nothing in flight yet.
    pub fn new(
        shared: Arc<Shared>,
        conn: Conn,
        handle: Arc<SessionHandle>,
        sends: crate::limits::Bucket,
        permit: crate::limits::Permit,
    ) -> Box<Session> {
        let config = &shared.config;
        let retransmits = Retransmits::new(
            Duration::from_millis(config.ack_timeout_ms),
            config.max_retransmits,
        );
        let timers = Timers::new(
            Duration::from_millis(config.frame_timeout_ms),
            Duration::from_millis(config.park_idle_ms),
            Instant::now(),
        );
        Box::new(Session {
            retransmits,
            shared,
            conn,
            handle,
            sends,
            in_flight: VecDeque::new(),
            send_order: Default::default(),
            timer: None,
            permit,
            timers,
            pushed_through: 0,
            heard: false,
        })
    }

    /// The client showed its connection works (see `heard`).
    pub(super) fn heard_from_client(&mut self) {
        if !self.heard {
            self.heard = true;
            if self.pushed_through > 0 {
                self.shared.router.acked(&self.handle, self.pushed_through);
            }
        }
    }

    pub async fn serve(&mut self) -> Exit {
        loop {
            // Boxed: the state of handling requests and writing is not part of every idle
            // connection's task, only that of waiting.
            if let Flow::Close = Box::pin(self.work()).await {
                return Exit::Closed;
            }
            let reading = self.in_flight.len() < MAX_IN_FLIGHT;
            if reading && self.conn.holds_a_frame() {
                // The turn stopped at the reply budget with requests still read; its replies
                // are written now (`work` flushed them): take the next ones without waiting
                // for more bytes, which may never come.
                self.timers.active(Instant::now());
                tokio::task::yield_now().await;
                continue;
            }
            self.conn.release_idle();
            self.set_timer();
            // One small future, polled by hand: it is kept in every connection's task, idle or
            // not. Shutdown arrives as a close through the handle (the router closes every
            // session).
            let woke = std::future::poll_fn(|cx| self.poll_wait(cx, reading)).await;
            if !matches!(woke, Woke::Timer) {
                self.timers.active(Instant::now());
            }
            match woke {
                Woke::Queue => {}
                Woke::Reply(r) => {
                    if let Some((rid, _)) = self.in_flight.pop_front() {
                        if let Flow::Close = self.reply(rid, *r) {
                            let _ = Box::pin(self.conn.flush()).await;
                            return Exit::Closed;
                        }
                    }
                }
                Woke::Read(Ok(Filled::Data)) => self.handle.touch(crate::clock::now_ms()),
                Woke::Read(Ok(Filled::Eof)) => return Exit::Closed,
                Woke::Read(Err(e)) => {
                    tracing::debug!(session = %self.handle.id, "read: {e}");
                    return Exit::Closed;
                }
                Woke::Timer => match self.on_timer() {
                    Timed::Continue => {}
                    Timed::Park => return Exit::Idle,
                    Timed::Close => {
                        let _ = Box::pin(self.conn.flush()).await;
                        return Exit::Closed;
                    }
                },
            }
        }
    }

    /// Waits for the first of, in this order: frames or a close from the router, the oldest
    /// reply in flight, bytes from the client (when `reading`), the timer. Nothing is lost if
    /// it is not polled again: the queue and the replies stay where they are, and what was read
    /// is in the read buffer.
    fn poll_wait(&mut self, cx: &mut Context<'_>, reading: bool) -> Poll<Woke> {
        if self.handle.poll_ready(cx).is_ready() {
            return Poll::Ready(Woke::Queue);
        }
        if let Some((_, reply)) = self.in_flight.front_mut() {
            if let Poll::Ready(r) = reply.as_mut().poll(cx) {
                return Poll::Ready(Woke::Reply(Box::new(r)));
            }
        }
        if reading {
            if let Poll::Ready(r) = self.conn.poll_fill(cx) {
                return Poll::Ready(Woke::Read(r));
            }
        }
        if let Some(t) = &mut self.timer {
            if t.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Woke::Timer);
            }
        }
        Poll::Pending
    }

    /// Handles what was read and writes what is due. `Close`: the connection is done (what could
    /// be written was).
    async fn work(&mut self) -> Flow {
        if let Flow::Close = self.turn().await {
            let _ = self.conn.flush().await;
            return Flow::Close;
        }
        match self.conn.flush().await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Close,
        }
    }

    /// What the timers need to know of the connection now.
    fn timer_state(&self) -> timers::State {
        timers::State {
            partial_since: self.conn.partial_since(),
            retransmit_due: self.retransmits.next_due(),
            idle: self.in_flight.is_empty()
                && self.retransmits.len() == 0
                && self.conn.partial_since().is_none()
                && !self.conn.holds_a_frame(),
        }
    }

    /// Arms the one timer for the earliest of: the incomplete frame's deadline (slowloris), the
    /// next retransmit and, with nothing in flight, the time to park (`Timers::next_wake`). A
    /// timer already set earlier is left as it is (it wakes the session early, which only looks
    /// again): moving it on every turn would cost a timer-wheel update per message.
    fn set_timer(&mut self) {
        match (self.timers.next_wake(&self.timer_state()), &mut self.timer) {
            (None, _) => self.timer = None,
            (Some(at), Some(t)) => {
                if t.is_elapsed() || t.deadline() > at {
                    t.as_mut().reset(at)
                }
            }
            (Some(at), None) => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    fn on_timer(&mut self) -> Timed {
        let state = self.timer_state();
        match self.timers.on_wake(Instant::now(), &state) {
            Due::FrameTimeout => {
                let msg = "frame not completed within frame_timeout_ms";
                self.shared.metrics.error(ErrorCode::BadFrame);
                self.conn.queue(&error_frame(0, ErrorCode::BadFrame, msg));
                Timed::Close
            }
            Due::Retransmit => match self.retransmit() {
                Flow::Continue => Timed::Continue,
                Flow::Close => Timed::Close,
            },
            Due::Park => Timed::Park,
            Due::Nothing => Timed::Continue,
        }
    }

    /// One turn: handle the frames read, collect finished replies, take queued pushes. Queues
    /// what must be written; the caller flushes.
    async fn turn(&mut self) -> Flow {
        while self.in_flight.len() < MAX_IN_FLIGHT && self.conn.queued_len() < REPLY_BUDGET {
            match self.conn.buffered_frame() {
                Ok(Some(frame)) => {
                    // Boxed, so the request's state is not part of every idle connection's task.
                    if let Flow::Close = Box::pin(self.on_frame(frame)).await {
                        return Flow::Close;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.shared.metrics.error(e.code());
                    self.conn.queue(&error_frame(0, e.code(), &e.to_string()));
                    return Flow::Close;
                }
            }
        }
        // Pushes taken first, then the replies complete by then, written in that order: the
        // ordering rule (`super::order`).
        let (conn, shared) = (&mut self.conn, &self.shared);
        let written = order::collect(
            &self.handle,
            &mut self.in_flight,
            |reply| match reply.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(r) => Some(r),
                Poll::Pending => None,
            },
            |rid, r| match queue_reply(conn, shared, rid, r) {
                Flow::Continue => Ok(()),
                Flow::Close => Err(order::Stopped),
            },
        );
        let Ok(taken) = written else {
            return Flow::Close;
        };
        self.queue_pushes(taken)
    }

    /// Queues the pushes and frames the router left for this session; closes if asked to.
    fn queue_pushes(&mut self, taken: crate::router::Taken) -> Flow {
        let now = Instant::now();
        let (mut pushes, mut frames) = (0, 0);
        for out in taken.frames {
            match out {
                Outbound::Push { version, .. } if version <= self.pushed_through => {}
                Outbound::Push { version, frame } => {
                    self.conn.queue(&frame);
                    self.retransmits.sent(version, frame, now);
                    pushes += 1;
                }
                Outbound::Frame(frame) => {
                    self.conn.queue(&frame);
                    // GROUP_NOTIFY, or a RECEIPT (counted where it is sent: `receipts`).
                    frames += u64::from(frame.command == Command::GroupNotify as u16);
                }
                // Counted when the router queued it (`metrics.signals_relayed`).
                Outbound::Signal(frame) => self.conn.queue(&frame),
            }
        }
        let metrics = &self.shared.metrics;
        metrics.pushes_out.add(pushes);
        metrics.group_notifies_out.add(frames);
        if taken.close {
            if let Some(k) = taken.kick {
                self.conn.queue(&Frame::new(&Packet::Kick(*k), 0));
            } else if self.retransmits.len() > 0 {
                // Closed for silence (the heartbeat sweep) with pushes unacknowledged: the
                // client is told why, as when the retransmits run out (PROTOCOL.md 13).
                let why = "pushes not acknowledged and nothing heard; reconnect and sync";
                return self.kick(KickReason::AckTimeout, why);
            }
            return Flow::Close;
        }
        if self.retransmits.len() > self.shared.config.outbound_queue {
            return self.kick(KickReason::SlowConsumer, "too many unacknowledged pushes");
        }
        Flow::Continue
    }

    fn retransmit(&mut self) -> Flow {
        match self.retransmits.due(Instant::now()) {
            Ok(frames) => {
                for f in &frames {
                    self.conn.queue(f);
                }
                let resent = frames.len() as u64;
                self.shared.metrics.pushes_retransmitted.add(resent);
                Flow::Continue
            }
            Err(retransmit::Exhausted) => self.kick(
                KickReason::AckTimeout,
                "pushes not acknowledged; reconnect and sync",
            ),
        }
    }

    fn kick(&mut self, reason: KickReason, message: &str) -> Flow {
        self.conn
            .queue(&Frame::new(&Packet::Kick(kick(reason, message)), 0));
        Flow::Close
    }

    /// Queues the reply to request `rid`; a fatal refusal closes the connection.
    fn reply(&mut self, rid: u32, reply: Result<Answer, Refusal>) -> Flow {
        queue_reply(&mut self.conn, &self.shared, rid, reply)
    }

    /// Waits for every request in flight and queues their replies, in order.
    async fn settle(&mut self) -> Flow {
        while let Some((rid, reply)) = self.in_flight.pop_front() {
            let r = reply.await;
            if let Flow::Close = self.reply(rid, r) {
                return Flow::Close;
            }
        }
        Flow::Continue
    }

    async fn on_frame(&mut self, frame: Frame) -> Flow {
        let rid = frame.request_id;
        self.heard_from_client();
        // A command only the server sends (a reply, PUSH, KICK, ERROR) is not in the table of
        // requests the server accepts: UNKNOWN_COMMAND, before its body is looked at.
        if let Ok(c) = Command::from_u16(frame.command) {
            if !c.is_from_client() {
                let msg = format!("{} is sent by the server, not the client", c.name());
                let r = Refusal::new(ErrorCode::UnknownCommand, msg);
                return self.answer(rid, Err(r)).await;
            }
        }
        let packet = match frame.packet(self.shared.config.max_frame_len) {
            Ok(p) => p,
            Err(e) => {
                return self
                    .answer(rid, Err(Refusal::new(e.code(), e.to_string())))
                    .await
            }
        };
        match packet {
            Packet::PushAck(a) => {
                self.retransmits.ack(a.version);
                self.shared.router.acked(&self.handle, a.version);
                Flow::Continue
            }
            Packet::Heartbeat(h) => {
                let r = heartbeat(&self.shared, &self.handle, &h).map(Answer::from);
                self.answer(rid, r).await
            }
            Packet::Signal(req) => {
                // Over the rate a signal is dropped unread, without an ERROR: typing is best
                // effort, and a client that types fast should not see failures for it.
                let now = crate::clock::now_ms();
                if !self
                    .handle
                    .take_signal(now, signals::PER_SEC, signals::BURST)
                {
                    self.shared.metrics.signals_rate_limited.inc();
                    return Flow::Continue;
                }
                // Relayed at once, not after the SENDs in flight (no order with messages is
                // promised); only a refusal is answered, in request order.
                match handlers::signal(&self.shared, &self.handle, req).await {
                    Ok(()) => Flow::Continue,
                    Err(r) => self.answer(rid, Err(r)).await,
                }
            }
            Packet::Login(_) => {
                let r = Refusal::new(
                    ErrorCode::AlreadyLoggedIn,
                    "this connection is already logged in",
                );
                self.answer(rid, Err(r)).await
            }
            Packet::Send(req) => {
                if let Err(r) = self.charge(1) {
                    return self.answer(rid, Err(r)).await;
                }
                let reply = handlers::send(&self.shared, &self.handle, req, &mut self.send_order);
                self.in_flight.push_back((rid, Box::pin(reply)));
                Flow::Continue
            }
            p => {
                // In order: after the SENDs before it.
                if let Flow::Close = self.settle().await {
                    return Flow::Close;
                }
                if let Some(cost) = handlers::change_cost(&p) {
                    if let Err(r) = self.charge(cost) {
                        return self.reply(rid, Err(r));
                    }
                }
                let r = handlers::handle(&self.shared, &self.handle, p).await;
                self.reply(rid, r)
            }
        }
    }

    /// Takes `cost` from the connection's rate of changes (`sends_per_sec`): RATE_LIMITED,
    /// with when to retry, once it is spent.
    fn charge(&mut self, cost: u32) -> Result<(), Refusal> {
        self.sends.take_n(Instant::now(), cost).map_err(|wait| {
            let mut r = Refusal::new(ErrorCode::RateLimited, "too many changes; slow down");
            r.retry_after_ms = wait;
            r
        })
    }

    /// Answers at once if nothing is in flight, else after what is.
    async fn answer(&mut self, rid: u32, reply: Result<Answer, Refusal>) -> Flow {
        if self.in_flight.is_empty() {
            self.reply(rid, reply)
        } else {
            self.in_flight
                .push_back((rid, Box::pin(std::future::ready(reply))));
            Flow::Continue
        }
    }
}

/// Queues the reply to request `rid` on `conn`; a fatal refusal closes the connection.
fn queue_reply(conn: &mut Conn, shared: &Shared, rid: u32, reply: Result<Answer, Refusal>) -> Flow {
    match reply {
        Ok(Answer::Packet(p)) => {
            let threshold = shared.config.compress_threshold;
            conn.queue(&Frame::compressed_above(&p, rid, threshold));
            Flow::Continue
        }
        Ok(Answer::Frame(mut f)) => {
            f.request_id = rid;
            conn.queue(&f);
            Flow::Continue
        }
        Err(r) => {
            shared.metrics.error(r.code);
            conn.queue(&r.frame(rid));
            if r.code.is_fatal() {
                Flow::Close
            } else {
                Flow::Continue
            }
        }
    }
}

/// Answers a HEARTBEAT (also for a parked session, `super::park`): applies the interval and
/// the app state it sets (PROTOCOL.md section 11) and tells those in force. An unknown app
/// state is refused (INVALID_ARGUMENT) and nothing is applied.
pub(super) fn heartbeat(
    shared: &Shared,
    handle: &SessionHandle,
    h: &pb::Heartbeat,
) -> Result<Packet, Refusal> {
    let background = match pb::AppState::try_from(h.app_state) {
        Ok(pb::AppState::Unchanged) => None,
        Ok(pb::AppState::Foreground) => Some(false),
        Ok(pb::AppState::Background) => Some(true),
        Err(_) => {
            let msg = format!("app_state: unknown value {}", h.app_state);
            return Err(Refusal::new(ErrorCode::InvalidArgument, msg));
        }
    };
    if h.set_interval_secs > 0 {
        handle.set_heartbeat_secs(shared.config.heartbeat_secs_for(h.set_interval_secs));
    }
    if let Some(b) = background {
        handle.set_background(b);
    }
    let interval = match handle.heartbeat_secs() {
        0 => shared.config.heartbeat_secs,
        n => n,
    };
    Ok(Packet::HeartbeatAck(pb::HeartbeatAck {
        server_time_ms: crate::clock::now_ms(),
        client_time_ms: h.client_time_ms,
        interval_secs: interval,
        timeout_secs: 2 * interval,
        app_state: app_state(handle) as i32,
    }))
}

/// The app state in force for a session.
pub(super) fn app_state(handle: &SessionHandle) -> pb::AppState {
    if handle.is_background() {
        pb::AppState::Background
    } else {
        pb::AppState::Foreground
    }
}

/// What ended a wait of the serving loop. The reply is boxed, so that the room for a `Packet`
/// is not part of every connection's waiting state.
enum Woke {
    Queue,
    Reply(Box<Result<Answer, Refusal>>),
    Read(Result<Filled, missive_protocol::ProtocolError>),
    Timer,
}
