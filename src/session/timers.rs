//! The session's timed decisions, without IO: when its one timer must fire, and what a wake-up
//! calls for. The session (`serve`) feeds it what it knows (a frame half read since when, the
//! next retransmit, whether anything is in flight) and acts on the answer; the tests below run
//! it in tokio's virtual time.
//!
//! - **Frame timeout** (slowloris): a frame begun and not completed within `frame_timeout_ms`
//!   closes the connection with BAD_FRAME.
//! - **Retransmit**: a push unacknowledged for `ack_timeout_ms` is resent (`retransmit`).
//! - **Park**: a session with nothing in flight (no request, no unacknowledged push, no frame
//!   half read or waiting) for `park_idle_ms` gives up its task (`park`). A wake-up that finds
//!   it busy again doubles the wait for the next try, up to 2^[`MAX_PARK_BACKOFF`], so a
//!   chatting session is not woken every `park_idle_ms` only to find it has work.

use std::time::Duration;

use tokio::time::Instant;

/// At most `park_idle_ms` × 2^this of nothing in flight before a busy session is parked.
pub const MAX_PARK_BACKOFF: u8 = 4;

/// What the session knows when it asks: the state of its connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct State {
    /// When the bytes of the frame now half read began to arrive.
    pub partial_since: Option<Instant>,
    /// When the earliest retransmit is due.
    pub retransmit_due: Option<Instant>,
    /// Nothing in flight: no request, no unacknowledged push, no frame half read or waiting.
    pub idle: bool,
}

/// What a wake-up calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// A frame was not completed in time: BAD_FRAME, and close.
    FrameTimeout,
    /// Resend what is due (`Retransmits::due`).
    Retransmit,
    /// Nothing in flight for long enough: park.
    Park,
    /// Nothing yet (woken early, or busy again since).
    Nothing,
}

/// The timed state of one session.
#[derive(Debug, Clone)]
pub struct Timers {
    frame_timeout: Duration,
    park_idle: Duration,
    /// Since when nothing has happened on the connection (reads, queued frames, replies).
    idle_since: Instant,
    /// Wake-ups that found the session busy again before it could park.
    park_backoff: u8,
}

impl Timers {
    /// `park_idle` zero: never park.
    pub fn new(frame_timeout: Duration, park_idle: Duration, now: Instant) -> Timers {
        Timers {
            frame_timeout,
            park_idle,
            idle_since: now,
            park_backoff: 0,
        }
    }

    /// Something happened on the connection at `now`: the idle time starts again.
    pub fn active(&mut self, now: Instant) {
        self.idle_since = now;
    }

    /// When the session is to be parked, if it is idle.
    pub fn park_at(&self, s: &State) -> Option<Instant> {
        let after = self.park_idle * (1u32 << self.park_backoff);
        (!self.park_idle.is_zero() && s.idle).then(|| self.idle_since + after)
    }

    /// When the timer must fire: the earliest of the frame's deadline, the next retransmit and
    /// the time to park. `None`: no timer.
    pub fn next_wake(&self, s: &State) -> Option<Instant> {
        let frame_deadline = s.partial_since.map(|t| t + self.frame_timeout);
        [frame_deadline, s.retransmit_due, self.park_at(s)]
            .into_iter()
            .flatten()
            .min()
    }

    /// What the timer firing at `now` calls for, in this order: a frame out of time, a
    /// retransmit due, parking. A wake-up to park that finds the session busy backs off.
    pub fn on_wake(&mut self, now: Instant, s: &State) -> Due {
        if s.partial_since
            .is_some_and(|since| since + self.frame_timeout <= now)
        {
            return Due::FrameTimeout;
        }
        if s.retransmit_due.is_some_and(|due| due <= now) {
            return Due::Retransmit;
        }
        if self.park_at(s).is_some_and(|at| at <= now) {
            return Due::Park;
        }
        self.park_backoff = (self.park_backoff + 1).min(MAX_PARK_BACKOFF);
        Due::Nothing
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use missive_protocol::{pb, Frame, Packet};
    use tokio::time::{advance, Instant};

    use super::*;
    use crate::session::retransmit::{Exhausted, Retransmits};

    const FRAME: Duration = Duration::from_secs(10);
    const PARK: Duration = Duration::from_secs(2);

    fn push(version: u64) -> Frame {
        let p = pb::Push {
            version,
            prev_version: version - 1,
            entry: None,
        };
        Frame::new(&Packet::Push(p), 0)
    }

    /// Advances virtual time to `at` and returns what the wake-up calls for.
    async fn wake_at(t: &mut Timers, at: Instant, s: &State) -> Due {
        advance(at - Instant::now()).await;
        t.on_wake(Instant::now(), s)
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_not_completed_in_time_closes_the_connection() {
        let t0 = Instant::now();
        let mut t = Timers::new(FRAME, PARK, t0);
        advance(Duration::from_secs(3)).await;
        let s = State {
            partial_since: Some(Instant::now()),
            ..State::default()
        };
        let deadline = t.next_wake(&s).unwrap();
        assert_eq!(deadline, t0 + Duration::from_secs(3) + FRAME);
        // A second early: nothing yet.
        let early = deadline - Duration::from_secs(1);
        assert_eq!(wake_at(&mut t, early, &s).await, Due::Nothing);
        assert_eq!(wake_at(&mut t, deadline, &s).await, Due::FrameTimeout);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_session_parks_after_park_idle_ms_and_a_busy_one_backs_off() {
        let t0 = Instant::now();
        let mut t = Timers::new(FRAME, PARK, t0);
        let idle = State {
            idle: true,
            ..State::default()
        };
        assert_eq!(t.next_wake(&idle), Some(t0 + PARK));
        // Busy at the first try (a request in flight): no park, and the next wait doubles.
        let busy = State::default();
        assert_eq!(t.next_wake(&busy), None, "nothing to time while busy");
        assert_eq!(wake_at(&mut t, t0 + PARK, &busy).await, Due::Nothing);
        let t1 = Instant::now();
        t.active(t1);
        assert_eq!(t.next_wake(&idle), Some(t1 + 2 * PARK));
        assert_eq!(wake_at(&mut t, t1 + PARK, &idle).await, Due::Nothing);
        // The backoff grows to 2^MAX_PARK_BACKOFF at most.
        for _ in 0..10 {
            t.on_wake(Instant::now(), &busy);
        }
        let t2 = Instant::now();
        t.active(t2);
        let most = PARK * (1 << MAX_PARK_BACKOFF);
        assert_eq!(t.next_wake(&idle), Some(t2 + most));
        assert_eq!(wake_at(&mut t, t2 + most, &idle).await, Due::Park);
    }

    #[tokio::test(start_paused = true)]
    async fn never_parks_with_park_idle_zero() {
        let mut t = Timers::new(FRAME, Duration::ZERO, Instant::now());
        let idle = State {
            idle: true,
            ..State::default()
        };
        assert_eq!(t.next_wake(&idle), None);
        advance(Duration::from_secs(3600)).await;
        assert_eq!(t.on_wake(Instant::now(), &idle), Due::Nothing);
    }

    /// A push unacknowledged is resent after the ack timeout, then after twice as long, and so
    /// on; past `max_retransmits` the session gives up (it kicks the client with ACK_TIMEOUT).
    /// An ack in time stops it.
    #[tokio::test(start_paused = true)]
    async fn unacknowledged_pushes_are_resent_with_doubling_waits_then_given_up() {
        let ack_timeout = Duration::from_secs(5);
        let mut r = Retransmits::new(ack_timeout, 2);
        let t0 = Instant::now();
        let mut t = Timers::new(FRAME, PARK, t0);
        r.sent(1, push(1), t0);
        r.sent(2, push(2), t0);
        let now = |r: &Retransmits| State {
            retransmit_due: r.next_due(),
            ..State::default()
        };
        assert_eq!(t.next_wake(&now(&r)), Some(t0 + ack_timeout));
        assert_eq!(
            wake_at(&mut t, t0 + ack_timeout, &now(&r)).await,
            Due::Retransmit
        );
        let resent = r.due(Instant::now()).ok().expect("first retransmit");
        assert_eq!(resent.len(), 2);
        assert!(resent.iter().all(|f| f.flags.retransmit()));
        // Version 1 is acked; version 2 is resent after 2 × the timeout.
        r.ack(1);
        let t1 = Instant::now();
        assert_eq!(r.next_due(), Some(t1 + 2 * ack_timeout));
        assert_eq!(
            wake_at(
                &mut t,
                t1 + 2 * ack_timeout - Duration::from_millis(1),
                &now(&r)
            )
            .await,
            Due::Nothing
        );
        assert_eq!(
            wake_at(&mut t, t1 + 2 * ack_timeout, &now(&r)).await,
            Due::Retransmit
        );
        assert_eq!(r.due(Instant::now()).ok().map(|f| f.len()), Some(1));
        // Then after 4 × the timeout it has had its two retransmits: given up.
        let t2 = Instant::now();
        assert_eq!(r.next_due(), Some(t2 + 4 * ack_timeout));
        assert_eq!(
            wake_at(&mut t, t2 + 4 * ack_timeout, &now(&r)).await,
            Due::Retransmit
        );
        assert!(matches!(r.due(Instant::now()), Err(Exhausted)));
    }

    /// The frame deadline comes first when several are due at once.
    #[tokio::test(start_paused = true)]
    async fn a_late_frame_wins_over_a_retransmit_and_parking() {
        let t0 = Instant::now();
        let mut t = Timers::new(FRAME, PARK, t0);
        let s = State {
            partial_since: Some(t0),
            retransmit_due: Some(t0 + Duration::from_secs(1)),
            idle: false,
        };
        assert_eq!(t.next_wake(&s), Some(t0 + Duration::from_secs(1)));
        assert_eq!(wake_at(&mut t, t0 + FRAME, &s).await, Due::FrameTimeout);
    }
}
