//! User -> online sessions. Queues pushes on each session without ever waiting: a full queue
//! closes that one connection (its client re-syncs by version), it never stalls the sender or
//! other clients and never drops a message silently.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use missive_protocol::pb::inbox_entry::Body;
use missive_protocol::pb::{GroupNotify, Kick, KickReason, Push};
use missive_protocol::{Frame, Packet};
use parking_lot::{Mutex, RwLock};

use crate::ids::SessionId;
use crate::store::{Delivery, GroupNotice, Outbox};
use crate::unacked::{Due, Unacked};

/// Bytes of frames queued for one session past which it counts as a slow consumer, whatever
/// their number (`outbound_queue`): 1024 pushes of large messages would otherwise hold 64 MiB.
pub const MAX_QUEUED_BYTES: usize = 16 << 20;

/// What the router hands a session to write.
#[derive(Debug)]
pub enum Outbound {
    /// A PUSH frame of inbox version `version` (to be acked and possibly retransmitted).
    Push { version: u64, frame: Frame },
    /// A frame that is not acknowledged (GROUP_NOTIFY).
    Frame(Frame),
    /// An ephemeral SIGNAL_NOTIFY: dropped rather than queued when the queue is full or the
    /// session parked ([`SessionHandle::offer_signal`]); a signal never costs a connection.
    Signal(Frame),
}

/// Frames queued for a session, and whether it must close. Holds no allocation while empty.
/// Every idle connection has one: its size counts (BENCHMARKS.md, bytes per idle connection).
#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Outbound>,
    /// Bytes of the queued frames (at most [`MAX_QUEUED_BYTES`] + one frame).
    bytes: u32,
    closing: bool,
    /// Set by every wake, cleared when the session takes the queue: while set, the session's
    /// wait ends at once.
    woken: bool,
    kick: Option<Box<Kick>>,
    /// Who waits for the queue ([`SessionHandle::poll_ready`]): the session's task, or the nest
    /// of a parked session ([`SessionHandle::park`]).
    waiter: Option<Waiter>,
}

/// Who waits for a session's queue.
#[derive(Debug)]
enum Waiter {
    Task(Waker),
    /// A parked session (`session::park`): woken through it, and ephemeral frames are written
    /// through it straight to the socket.
    Parked(Arc<dyn Sleeping>),
}

/// A parked session (`session::park`): what wakes it, and writes to its socket in place, so
/// that an ephemeral frame (SIGNAL_NOTIFY) reaches an idle connection without reviving its task.
pub trait Sleeping: Send + Sync + std::fmt::Debug {
    /// Writes `frame` now if the socket takes it without waiting; `false`: it was not written
    /// (the socket is full, or the session is no longer parked here), and is dropped.
    fn write_now(&self, frame: &Frame) -> bool;
    /// Something was queued for the session, or it must close: serve it again.
    fn wake(self: Arc<Self>);
}

/// What a session takes from its queue.
pub struct Taken {
    pub frames: VecDeque<Outbound>,
    /// Close the connection (after writing `kick`, if any).
    pub close: bool,
    pub kick: Option<Box<Kick>>,
}

/// The router's view of one logged-in connection.
#[derive(Debug)]
pub struct SessionHandle {
    pub id: SessionId,
    /// Shared with the router's table key.
    pub user: Arc<str>,
    pub device: Box<str>,
    /// Last time anything arrived from the client, ms since the epoch (coarse; set per read).
    last_seen: AtomicI64,
    /// What the client set (LOGIN, HEARTBEAT): the heartbeat interval in force in seconds (0:
    /// the server's default) in the low bits, and [`BACKGROUND`]: the app is in the background
    /// (the device gets pushes, and its user offline notifications too). One word, so that a
    /// handle is no larger than before them.
    client: AtomicU32,
    /// The rate of the session's SIGNALs (`crate::limits::take_rate`): kept with the handle, so
    /// that parking and waking again does not start it afresh. 32 bits, beside `client`: the
    /// handle stays 136 bytes (a larger one cost 25 B per idle connection, BENCHMARKS.md).
    signal_rate: AtomicU32,
    queue: Mutex<Queue>,
}

/// The background bit of [`SessionHandle::client`]; the bits below it hold the interval.
const BACKGROUND: u32 = 1 << 31;

impl SessionHandle {
    pub fn touch(&self, now_ms: i64) {
        self.last_seen.store(now_ms, Ordering::Relaxed);
    }

    pub fn last_seen(&self) -> i64 {
        self.last_seen.load(Ordering::Relaxed)
    }

    /// Sets the heartbeat interval in force (seconds, already within the server's bounds, at
    /// most 3600).
    pub fn set_heartbeat_secs(&self, secs: u32) {
        let secs = secs.min(BACKGROUND - 1);
        let _ = self
            .client
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                Some(c & BACKGROUND | secs)
            });
    }

    /// The heartbeat interval in force; 0: the server's default.
    pub fn heartbeat_secs(&self) -> u32 {
        self.client.load(Ordering::Relaxed) & !BACKGROUND
    }

    pub fn set_background(&self, background: bool) {
        if background {
            self.client.fetch_or(BACKGROUND, Ordering::Relaxed);
        } else {
            self.client.fetch_and(!BACKGROUND, Ordering::Relaxed);
        }
    }

    pub fn is_background(&self) -> bool {
        self.client.load(Ordering::Relaxed) & BACKGROUND != 0
    }

    /// Takes one SIGNAL from the session's rate (`per_sec`, `burst`) at `now_ms`; `false`: over
    /// the rate.
    pub fn take_signal(&self, now_ms: i64, per_sec: u32, burst: u32) -> bool {
        crate::limits::take_rate(&self.signal_rate, now_ms.max(0) as u64, per_sec, burst)
    }

    /// Queues a frame for the session. Never blocks: a queue of `limit` frames (the router's
    /// [`Router::queue_limit`]) closes the session as a slow consumer (its client reconnects
    /// and syncs, so nothing is lost).
    pub fn enqueue(&self, out: Outbound, limit: usize) {
        let len = match &out {
            Outbound::Push { frame, .. } | Outbound::Frame(frame) | Outbound::Signal(frame) => {
                frame.encoded_len()
            }
        };
        let mut q = self.queue.lock();
        if q.closing {
            return;
        }
        if q.frames.len() >= limit || q.bytes as usize + len > MAX_QUEUED_BYTES {
            q.closing = true;
            q.kick = Some(Box::new(kick(
                KickReason::SlowConsumer,
                "outbound queue full; reconnect and sync",
            )));
            wake(q);
            return;
        }
        let was_empty = q.frames.is_empty();
        q.bytes += len as u32;
        q.frames.push_back(out);
        if was_empty {
            wake(q);
        }
    }

    /// Asks the session to close, sending `kick` first if given. The first reason wins.
    pub fn close(&self, kick: Option<Kick>) {
        let mut q = self.queue.lock();
        if !q.closing {
            q.closing = true;
            q.kick = kick.map(Box::new);
        }
        wake(q);
    }

    /// Ready when frames were queued or the session was asked to close (possibly already before
    /// this was polled). A waker in the queue instead of a `Notify`, so the waiting session
    /// holds no waiter of its own: every idle connection waits here.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut q = self.queue.lock();
        if std::mem::take(&mut q.woken) {
            return Poll::Ready(());
        }
        match &q.waiter {
            Some(Waiter::Task(w)) if w.will_wake(cx.waker()) => {}
            _ => q.waiter = Some(Waiter::Task(cx.waker().clone())),
        }
        Poll::Pending
    }

    /// Parks the session (`session::park`): from now on `nest` is woken for what is queued
    /// (and ephemeral frames are written through it in place, [`SessionHandle::offer_signal`]).
    /// `false`: something is waiting for the session already (as [`SessionHandle::poll_ready`]
    /// being ready); it is not parked then.
    pub fn park(&self, nest: Arc<dyn Sleeping>) -> bool {
        let mut q = self.queue.lock();
        if std::mem::take(&mut q.woken) {
            return false;
        }
        q.waiter = Some(Waiter::Parked(nest));
        true
    }

    /// The session is served by a task again (or was not parked after all): its nest no longer
    /// waits for the queue.
    pub fn unpark(&self) {
        let mut q = self.queue.lock();
        if matches!(q.waiter, Some(Waiter::Parked(_))) {
            q.waiter = None;
        }
    }

    /// Whether the session was asked to close (it is unregistered once its task ends).
    pub fn is_closing(&self) -> bool {
        self.queue.lock().closing
    }

    /// Frames queued for the session and not yet taken by it.
    pub fn queued(&self) -> usize {
        self.queue.lock().frames.len()
    }

    /// Takes every queued frame and the close request.
    pub fn take(&self) -> Taken {
        let mut q = self.queue.lock();
        q.woken = false;
        q.bytes = 0;
        Taken {
            frames: std::mem::take(&mut q.frames),
            close: q.closing,
            kick: q.kick.take(),
        }
    }

    pub fn is_parked(&self) -> bool {
        matches!(self.queue.lock().waiter, Some(Waiter::Parked(_)))
    }

    /// Hands an ephemeral SIGNAL_NOTIFY to the session: queued for a session that is being
    /// served, written straight to the socket of a parked one (without waking it). Dropped
    /// (`false`), the session neither woken nor closed, when the session is closing, in the
    /// background, its queue is full or a parked socket does not take it at once: typing is
    /// worth less than the connection that would be lost as a slow consumer, or the task a
    /// parked phone would be revived into. The parked state is read under the queue's lock, the
    /// one [`SessionHandle::park`] sets it under, so no signal can wake a parked session.
    pub fn offer_signal(&self, frame: Frame, limit: usize) -> bool {
        let len = frame.encoded_len();
        let mut q = self.queue.lock();
        if q.closing || self.is_background() {
            return false;
        }
        if let Some(Waiter::Parked(nest)) = &q.waiter {
            // Outside the queue's lock: a write that the socket takes only in part revives the
            // session, which takes that lock.
            let nest = nest.clone();
            drop(q);
            return nest.write_now(&frame);
        }
        if q.frames.len() >= limit || q.bytes as usize + len > MAX_QUEUED_BYTES {
            return false;
        }
        let was_empty = q.frames.is_empty();
        q.bytes += len as u32;
        q.frames.push_back(Outbound::Signal(frame));
        if was_empty {
            wake(q);
        }
        true
    }
}

/// Leaves word that the session has something to take (its next wait ends at once, also if it
/// is not waiting now) and wakes its task (outside the lock).
fn wake(mut q: parking_lot::MutexGuard<'_, Queue>) {
    q.woken = true;
    match q.waiter.take() {
        Some(Waiter::Task(w)) => {
            drop(q);
            w.wake();
        }
        Some(Waiter::Parked(nest)) => {
            drop(q);
            nest.wake();
        }
        None => {}
    }
}

/// A kick with a reason and a message.
pub fn kick(reason: KickReason, message: &str) -> Kick {
    Kick {
        reason: reason as i32,
        message: message.to_owned(),
        ..Default::default()
    }
}

/// The table of online sessions.
#[derive(Debug, Default)]
pub struct Router {
    users: RwLock<HashMap<Arc<str>, Vec<Arc<SessionHandle>>>>,
    next_id: AtomicU64,
    /// Set at shutdown: every session, also one registering later, is closed with a kick.
    closing: Mutex<Option<fn() -> Kick>>,
    /// Pushes of messages that no foreground device acknowledged yet (`crate::unacked`).
    unacked: Unacked,
    /// Most frames queued for one session before it counts as a slow consumer (the same for
    /// every session: kept here, not in each handle). Set by [`Router::register`].
    queue_limit: AtomicUsize,
}

impl Router {
    /// Most frames queued for one session before it counts as a slow consumer.
    pub fn queue_limit(&self) -> usize {
        self.queue_limit.load(Ordering::Relaxed).max(1)
    }

    /// A router that watches pushes of messages for an ack and announces them after
    /// `push_unacked_ms` without one (0: never; see `crate::unacked`).
    pub fn new(push_unacked_ms: u64) -> Router {
        Router {
            unacked: Unacked::new(push_unacked_ms),
            ..Router::default()
        }
    }

    /// Registers a logged-in session. The same device's older session is kicked (REPLACED); if
    /// the user then has more than `max_devices` sessions, the oldest are kicked.
    /// `queue_limit` frames may wait for the session before it counts as a slow consumer.
    pub fn register(
        &self,
        user: &str,
        device: &str,
        queue_limit: usize,
        max_devices: usize,
        now_ms: i64,
    ) -> Arc<SessionHandle> {
        self.register_as(user, device, queue_limit, max_devices, now_ms, 0, false)
    }

    /// [`Router::register`], with the heartbeat interval in force (0: the default) and the
    /// app's state as LOGIN set them: in place from the moment the session is registered (a
    /// send racing the login sees a background device as one).
    #[allow(clippy::too_many_arguments)]
    pub fn register_as(
        &self,
        user: &str,
        device: &str,
        queue_limit: usize,
        max_devices: usize,
        now_ms: i64,
        heartbeat_secs: u32,
        background: bool,
    ) -> Arc<SessionHandle> {
        let mut client = heartbeat_secs.min(BACKGROUND - 1);
        if background {
            client |= BACKGROUND;
        }
        self.queue_limit
            .store(queue_limit.max(1), Ordering::Relaxed);
        let mut users = self.users.write();
        let key: Arc<str> = match users.get_key_value(user) {
            Some((k, _)) => k.clone(),
            None => Arc::from(user),
        };
        let handle = Arc::new(SessionHandle {
            id: SessionId(self.next_id.fetch_add(1, Ordering::Relaxed) + 1),
            user: key.clone(),
            device: device.into(),
            last_seen: AtomicI64::new(now_ms),
            client: AtomicU32::new(client),
            signal_rate: AtomicU32::new(0),
            queue: Mutex::new(Queue::default()),
        });
        // Most users have one device online: room for one, not the four of a first push.
        let list = users.entry(key).or_insert_with(|| Vec::with_capacity(1));
        list.retain(|s| {
            if &*s.device == device {
                s.close(Some(kick(
                    KickReason::Replaced,
                    "this device logged in on another connection",
                )));
                false
            } else {
                true
            }
        });
        list.push(handle.clone());
        if let Some(kick) = *self.closing.lock() {
            handle.close(Some(kick()));
        }
        while list.len() > max_devices.max(1) {
            let oldest = list.remove(0);
            oldest.close(Some(kick(
                KickReason::TooManyDevices,
                "too many devices online; this one was the oldest",
            )));
        }
        handle
    }

    /// Removes a session (if it is still registered). If it was the user's last foreground
    /// one, the messages no foreground device acknowledged are due to be announced now.
    pub fn unregister(&self, handle: &SessionHandle) {
        let mut users = self.users.write();
        let mut last_foreground = !handle.is_background();
        if let Some(list) = users.get_mut(&handle.user) {
            list.retain(|s| s.id != handle.id);
            last_foreground &= list.iter().all(|s| s.is_background());
            if list.is_empty() {
                users.remove(&handle.user);
            }
        }
        if last_foreground {
            self.unacked.hurry(&handle.user, crate::clock::now_ms());
        }
    }

    /// Session `handle` acknowledged (or was told to sync) every inbox version up to
    /// `version`: if it is in the foreground, those messages count as delivered.
    pub fn acked(&self, handle: &SessionHandle, version: u64) {
        if !handle.is_background() {
            self.unacked.acked(&handle.user, version);
        }
    }

    /// The messages to announce now: pushed to a user found online, and not acknowledged by a
    /// foreground device in time (`crate::unacked`). Each is returned once.
    pub fn unacked_due(&self, now_ms: i64) -> Vec<Due> {
        self.unacked.take_due(now_ms)
    }

    /// Messages watched for an ack now.
    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// Messages not watched since the start because the table was full (`crate::unacked`).
    pub fn unacked_refused(&self) -> u64 {
        self.unacked.refused()
    }

    /// Pushes each delivery to every online session of its user, except session `exclude`, and
    /// watches those marked `watch` for an ack (also when the user has gone offline since).
    pub fn deliver(&self, deliveries: Vec<Delivery>, exclude: Option<SessionId>) {
        let users = self.users.read();
        for d in deliveries {
            if d.watch {
                if let Some(Body::Message(m)) = &d.entry.body {
                    let user = match users.get_key_value(d.user.as_str()) {
                        Some((k, _)) => k.clone(),
                        None => Arc::from(d.user.as_str()),
                    };
                    let now = crate::clock::now_ms();
                    self.unacked.watch(&user, d.entry.version, m.msg_id, now);
                }
            }
            let Some(sessions) = users.get(d.user.as_str()) else {
                continue;
            };
            if !sessions.iter().any(|s| Some(s.id) != exclude) {
                continue;
            }
            let version = d.entry.version;
            let frame = Frame::new(
                &Packet::Push(Push {
                    version,
                    prev_version: version.saturating_sub(1),
                    entry: Some(d.entry),
                }),
                0,
            );
            for s in sessions.iter().filter(|s| Some(s.id) != exclude) {
                s.enqueue(
                    Outbound::Push {
                        version,
                        frame: frame.clone(),
                    },
                    self.queue_limit(),
                );
            }
        }
    }

    /// Sends GROUP_NOTIFY {group, last_seq, message or event} to every online session of the
    /// notice's members except session `exclude`. The frame is encoded once and shared.
    pub fn notify_group(&self, n: GroupNotice<'_>) {
        let frame = Frame::new(
            &Packet::GroupNotify(GroupNotify {
                group_id: n.group_id.to_owned(),
                last_seq: n.last_seq,
                unread: 0,
                message: n.message,
                event: n.event,
            }),
            0,
        );
        let users = self.users.read();
        for m in n.members {
            let Some(sessions) = users.get(m.as_str()) else {
                continue;
            };
            for s in sessions.iter().filter(|s| Some(s.id) != n.exclude) {
                s.enqueue(Outbound::Frame(frame.clone()), self.queue_limit());
            }
        }
    }

    /// Offers SIGNAL_NOTIFY `frame` to every online session of `users`, except those of the
    /// sender `from` ([`SessionHandle::offer_signal`]: parked and full sessions are skipped).
    /// Returns how many sessions got it and how many did not. The frame is encoded once.
    pub fn relay_signal<'a>(
        &self,
        users: impl IntoIterator<Item = &'a str>,
        from: &str,
        frame: &Frame,
    ) -> (u64, u64) {
        // The sessions first, then the offers outside the table's lock: an offer to a parked
        // session is a write to its socket, and the store's threads read the table.
        let sessions: Vec<Arc<SessionHandle>> = {
            let online = self.users.read();
            users
                .into_iter()
                .filter(|u| *u != from)
                .flat_map(|u| online.get(u).into_iter().flatten().cloned())
                .collect()
        };
        let (mut sent, mut dropped) = (0, 0);
        for s in sessions {
            if s.offer_signal(frame.clone(), self.queue_limit()) {
                sent += 1;
            } else {
                dropped += 1;
            }
        }
        (sent, dropped)
    }

    /// Closes every session, now and from now on, each with its own `kick()`.
    pub fn close_all(&self, kick: fn() -> Kick) {
        *self.closing.lock() = Some(kick);
        for s in self.sessions() {
            s.close(Some(kick()));
        }
    }

    /// Every online session.
    pub fn sessions(&self) -> Vec<Arc<SessionHandle>> {
        self.users.read().values().flatten().cloned().collect()
    }

    /// The online sessions silent at `now_ms` for more than twice their heartbeat interval
    /// (`default_secs` for a session that set none). Read under the lock without cloning the
    /// others: the heartbeat sweep looks at every session, and cloning every handle into a
    /// vector (two atomic operations and a cache miss each) cost most of an idle server's CPU
    /// (BENCHMARKS.md, "Decisions").
    pub fn silent(&self, now_ms: i64, default_secs: u32) -> Vec<Arc<SessionHandle>> {
        self.users
            .read()
            .values()
            .flatten()
            .filter(|s| {
                let secs = match s.heartbeat_secs() {
                    0 => default_secs,
                    n => n,
                };
                now_ms - s.last_seen() > 2_000 * i64::from(secs)
            })
            .cloned()
            .collect()
    }

    /// The online sessions of one user.
    pub fn sessions_of(&self, user: &str) -> Vec<Arc<SessionHandle>> {
        self.users.read().get(user).cloned().unwrap_or_default()
    }

    pub fn online_count(&self) -> usize {
        self.users.read().values().map(Vec::len).sum()
    }
}

impl Outbox for Router {
    fn deliver(&self, deliveries: Vec<Delivery>, exclude: Option<SessionId>) {
        Router::deliver(self, deliveries, exclude)
    }

    /// Users with no registered session in the foreground. A session is registered from its
    /// LOGIN until its connection closes (a dead connection counts as online until the
    /// heartbeat sweep or a failed write closes it: `crate::unacked` covers that time).
    fn offline<'a>(&self, users: &[&'a str]) -> Vec<&'a str> {
        let online = self.users.read();
        users
            .iter()
            .copied()
            .filter(|u| {
                online
                    .get(*u)
                    .is_none_or(|list| list.iter().all(|s| s.is_background()))
            })
            .collect()
    }

    fn notify_group(&self, notice: GroupNotice<'_>) {
        Router::notify_group(self, notice)
    }
}

#[cfg(test)]
mod signal_tests {
    use missive_protocol::pb::SignalNotify;

    use super::*;

    fn signal() -> Frame {
        Frame::new(&Packet::SignalNotify(SignalNotify::default()), 0)
    }

    /// A full queue drops a signal and keeps the session; a push in its place would close it.
    #[test]
    fn a_signal_to_a_full_queue_is_dropped_not_a_slow_consumer() {
        let router = Router::default();
        let bob = router.register("bob", "phone", 2, 4, 0);
        assert!(bob.offer_signal(signal(), 2));
        assert!(bob.offer_signal(signal(), 2));
        assert!(!bob.offer_signal(signal(), 2), "queued past the limit");
        assert!(!bob.is_closing(), "a signal closed the session");
        assert_eq!(bob.queued(), 2);
        bob.enqueue(Outbound::Frame(signal()), 2);
        assert!(
            bob.is_closing(),
            "a full queue no longer closes for other frames"
        );
    }

    /// A parked socket that takes what is written, or not.
    #[derive(Debug, Default)]
    struct Socket {
        full: std::sync::atomic::AtomicBool,
        written: AtomicU64,
    }

    impl Sleeping for Socket {
        fn write_now(&self, _frame: &Frame) -> bool {
            if self.full.load(Ordering::Relaxed) {
                return false;
            }
            self.written.fetch_add(1, Ordering::Relaxed);
            true
        }

        fn wake(self: Arc<Self>) {}
    }

    /// The sender's own sessions and background ones get nothing; a parked session gets the
    /// signal written in place (nothing queued, nothing woken), or loses it if its socket is
    /// full; the others get it queued.
    #[test]
    fn relays_skip_the_sender_and_write_parked_sessions_in_place() {
        let router = Router::default();
        let alice_phone = router.register("alice", "phone", 8, 4, 0);
        let alice_tablet = router.register("alice", "tablet", 8, 4, 0);
        let bob_phone = router.register("bob", "phone", 8, 4, 0);
        let bob_tablet = router.register("bob", "tablet", 8, 4, 0);
        let carol = router.register("carol", "phone", 8, 4, 0);
        carol.set_background(true);
        let socket = Arc::new(Socket::default());
        assert!(bob_tablet.park(socket.clone()));
        let got = router.relay_signal(["alice", "bob", "carol"], "alice", &signal());
        assert_eq!(got, (2, 1));
        assert_eq!(bob_phone.queued(), 1);
        assert_eq!(
            bob_tablet.queued(),
            0,
            "a parked session's queue stays empty"
        );
        assert_eq!(socket.written.load(Ordering::Relaxed), 1);
        assert_eq!(carol.queued(), 0, "background");
        assert_eq!(alice_phone.queued() + alice_tablet.queued(), 0);
        socket.full.store(true, Ordering::Relaxed);
        assert_eq!(router.relay_signal(["bob"], "alice", &signal()), (1, 1));
        bob_tablet.unpark();
        assert_eq!(router.relay_signal(["bob"], "alice", &signal()), (2, 0));
        assert_eq!(bob_tablet.queued(), 1);
    }
}

#[cfg(test)]
mod size_tests {
    /// Every connection, idle or not, has a handle (BENCHMARKS.md counts the bytes per idle
    /// connection): 136 bytes, as before issue #23. The client's heartbeat and background state
    /// share one word, the signal rate another beside it, the waker and the parked nest one
    /// field, and the queue limit lives in the router. At 144 bytes an idle connection cost
    /// about 25 B more (measured).
    #[test]
    fn a_session_handle_stays_136_bytes() {
        let size = std::mem::size_of::<super::SessionHandle>();
        assert!(size <= 136, "{size} bytes");
    }
}
