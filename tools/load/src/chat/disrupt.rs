//! `chat --kill-pid P --kill-at T [--kill-signal KILL|TERM]`: disrupt a server during the
//! sending window and measure how long its users go unserved (issue #22's failover and
//! handover times).
//!
//! At `T` seconds after the start of the sending window the harness sends the signal to `P`
//! itself. From then on, every user whose connection is lost (a `Disconnected` event after the
//! signal) is *affected*; it is *logged in again* at its client's next `Connected` event, and
//! *served again* at the first acknowledgement of one of its sends that the harness sees after
//! that login (usually one of the sends that waited across the failure, resent by the client with
//! the same client_msg_id). A user that loses its connection again starts over: what counts is
//! its last loss. Both times run from the signal; the report gives their median and maximum
//! over the affected users. The events and the acks reach the harness on different tasks: an
//! ack is only counted once the login before it has been seen, so a time is never early (it
//! may be late by the time the harness takes to see the login).
//!
//! Nothing else changes: sends that were unanswered when the connection went are resent by the
//! client (same client_msg_id) and must be acknowledged once, every acknowledged message must
//! be delivered once and stored once, as in any `chat` run. One thing is added, the client rule
//! of PROTOCOL.md for a SEND answered SHUTTING_DOWN (a cluster node that stops serving while
//! the SEND is in flight: it may or may not be stored) or SERVER_BUSY: the harness sends it
//! again with the same client_msg_id (the client reconnects meanwhile) and counts it; any
//! other error still fails the run.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};
use missive_client::{direct, pb, Client, ClientError};
use missive_protocol::ErrorCode;
use tokio::task::JoinHandle;

use crate::stats::Report;
use crate::workload::pace::Schedule;

/// The signal to send.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGKILL: the process dies at once (a crash, a power cut).
    #[value(name = "KILL", alias = "SIGKILL", alias = "kill")]
    Kill,
    /// SIGTERM: a graceful stop (a cluster node releases its lease at once).
    #[value(name = "TERM", alias = "SIGTERM", alias = "term")]
    Term,
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Signal::Kill => libc::SIGKILL,
            Signal::Term => libc::SIGTERM,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Signal::Kill => "KILL",
            Signal::Term => "TERM",
        }
    }
}

/// The options.
#[derive(clap::Args, Debug)]
pub struct Disrupt {
    /// Disrupt this process (a server, e.g. a cluster node) during the sending window: the
    /// harness sends it --kill-signal at --kill-at, and reports how long the users whose
    /// connection was lost took to be logged in and served again (below).
    #[arg(long, requires = "kill_at")]
    pub kill_pid: Option<i32>,
    /// Seconds after the start of the sending window at which to send the signal (less than
    /// --duration).
    #[arg(long, requires = "kill_pid")]
    pub kill_at: Option<f64>,
    /// The signal: KILL (a crash) or TERM (a graceful stop: a cluster node hands its lease
    /// over at once).
    #[arg(long, value_enum, ignore_case = true, default_value = "KILL")]
    pub kill_signal: Signal,
}

pub const AFTER_HELP: &str = "\
Disrupting a server (--kill-pid P --kill-at T [--kill-signal KILL|TERM]): T seconds into the
sending window the harness sends the signal to P. Give every server's address in --addrs: each
client tries its own address first, then the others, so the users of the stopped server
reconnect to another one (with the client's backoff). The report then adds:
  kill signal, kill sent at       the signal, and when it went (s after the start)
  users affected                  users whose connection was lost after the signal
  users logged in again           ... of them, logged in again before the end of the run
  users served again              ... of them, with a send acknowledged after that login
  logged in again median / max    from the signal to each affected user's last login, in s
  resent after SHUTTING_DOWN      sends answered SHUTTING_DOWN or SERVER_BUSY (a node that
                                  stopped serving with them in flight), sent again with the
                                  same client_msg_id, as PROTOCOL.md says
  first connection lost by        why the first affected connection ended
  served again first / median / max
                                  from the signal to the first ack after that login, in s:
                                  the first user's is when the service was back, the max
                                  when every affected user was served again
The usual checks hold across the failure: each send unanswered when its connection went is
resent with the same client_msg_id and must be acknowledged once, every acknowledged message
delivered once and stored once. The run fails if the signal cannot be sent or an affected user
is not logged in again by the end.";

impl Disrupt {
    /// The watch for a run of `users` users and `duration` seconds, if a disruption is asked.
    pub fn watch(&self, users: usize, duration: u64) -> Result<Option<Arc<Failover>>> {
        let (Some(pid), Some(at)) = (self.kill_pid, self.kill_at) else {
            return Ok(None);
        };
        if pid <= 0 {
            bail!("--kill-pid must name one process (got {pid})");
        }
        if !(at >= 0.0 && at < duration as f64) {
            bail!("--kill-at must be within the sending window, 0 to {duration} s (got {at})");
        }
        Ok(Some(Arc::new(Failover {
            pid,
            at: Duration::from_secs_f64(at),
            signal: self.kill_signal,
            sent_us: AtomicU64::new(0),
            error: Mutex::new(None),
            first_loss: Mutex::new(None),
            resent: AtomicU64::new(0),
            users: (0..users).map(|_| Mutex::new(Watch::default())).collect(),
        })))
    }
}

/// One user's connection as seen since the signal.
#[derive(Default)]
struct Watch {
    /// Connections lost since the signal.
    lost: u32,
    /// The last one is lost and no login has been seen since.
    down: bool,
    /// The login after the last loss (time after the start).
    relogin: Option<Duration>,
    /// The first ack seen after that login.
    served: Option<Duration>,
}

/// How many times one SEND is sent again after SHUTTING_DOWN or SERVER_BUSY before its error
/// counts.
const RESENDS: u32 = 10;

/// Sends a message as a disrupted run does: answered SHUTTING_DOWN or SERVER_BUSY, it is sent
/// again with the same client_msg_id (PROTOCOL.md: the message may or may not be stored; the
/// server answers the resend exactly once, as a duplicate if it was).
pub async fn send(
    client: &Client,
    failover: &Failover,
    to_user: String,
    body: Vec<u8>,
    cmid: String,
) -> Result<pb::SendAck, ClientError> {
    let mut tries = 0;
    loop {
        let sent = client
            .send(direct(to_user.clone()), 1, body.clone(), Some(cmid.clone()))
            .await;
        match sent {
            Err(e) if tries < RESENDS && resend_after(&e) => {
                tries += 1;
                failover.resent.fetch_add(1, Relaxed);
            }
            other => return other,
        }
    }
}

/// Errors after which PROTOCOL.md has the client send the same message again once reconnected.
fn resend_after(e: &ClientError) -> bool {
    matches!(
        e.server_code(),
        Some(ErrorCode::ShuttingDown | ErrorCode::ServerBusy)
    )
}

/// The disruption and what the users went through.
pub struct Failover {
    pid: i32,
    at: Duration,
    signal: Signal,
    /// When the signal was sent, in µs after the start, plus one (0: not yet).
    sent_us: AtomicU64,
    error: Mutex<Option<String>>,
    /// Why the first affected connection ended.
    first_loss: Mutex<Option<String>>,
    /// Sends answered SHUTTING_DOWN or SERVER_BUSY and sent again.
    resent: AtomicU64,
    users: Vec<Mutex<Watch>>,
}

impl Failover {
    /// Sends the signal at its time of `schedule`'s window.
    pub fn arm(self: &Arc<Self>, schedule: Schedule) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until((schedule.start + me.at).into()).await;
            // Marked first: the connections it breaks must find it sent.
            let now = schedule.elapsed();
            me.sent_us.store(now.as_micros() as u64 + 1, Relaxed);
            // SAFETY: kill(2) only sends a signal; it reads and writes no memory of ours.
            let rc = unsafe { libc::kill(me.pid, me.signal.number()) };
            if rc != 0 {
                let e = std::io::Error::last_os_error();
                *me.error.lock().expect("error lock") = Some(format!(
                    "cannot send SIG{} to {}: {e}",
                    me.signal.name(),
                    me.pid
                ));
            } else {
                // The wall clock too, to set against the servers' logs.
                let unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                eprintln!(
                    "missive-load: SIG{} sent to {} at {:.3} s (unix time {:.3})",
                    me.signal.name(),
                    me.pid,
                    now.as_secs_f64(),
                    unix.as_secs_f64()
                );
            }
        })
    }

    fn sent(&self) -> Option<Duration> {
        match self.sent_us.load(Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us - 1)),
        }
    }

    fn user(&self, i: usize) -> Option<std::sync::MutexGuard<'_, Watch>> {
        Some(self.users.get(i)?.lock().expect("watch lock"))
    }

    /// User `i`'s connection was lost (`what`: who and why).
    pub fn disconnected(&self, i: usize, what: String) {
        if self.sent().is_none() {
            return; // before the signal: not the disruption's
        }
        self.first_loss
            .lock()
            .expect("loss lock")
            .get_or_insert(what);
        if let Some(mut w) = self.user(i) {
            w.lost += 1;
            w.down = true;
            w.relogin = None;
            w.served = None;
        }
    }

    /// User `i` logged in (again) at `now`.
    pub fn connected(&self, i: usize, now: Duration) {
        if let Some(mut w) = self.user(i) {
            if w.down {
                w.down = false;
                w.relogin = Some(now);
            }
        }
    }

    /// One of user `i`'s sends was acknowledged at `now`.
    pub fn acked(&self, i: usize, now: Duration) {
        if let Some(mut w) = self.user(i) {
            if w.relogin.is_some() && w.served.is_none() {
                w.served = Some(now);
            }
        }
    }

    /// The rows (see [`AFTER_HELP`]) and what fails the run.
    pub fn report(&self, r: &mut Report) {
        r.add("kill signal", self.signal.name(), "");
        let sent = self.sent();
        match sent {
            Some(at) => r.add_f("kill sent at", at.as_secs_f64(), 3, "s"),
            None => r.add("kill sent at", "never", ""),
        }
        let error = self.error.lock().expect("error lock").clone();
        if let Some(e) = &error {
            r.add("kill error", e.clone(), "");
            r.fail(e.clone());
        } else if sent.is_none() {
            r.fail(format!("SIG{} was never sent", self.signal.name()));
        }
        let sent = sent.unwrap_or_default();
        let (mut affected, mut relogins, mut served) = (0u64, Vec::new(), Vec::new());
        for w in &self.users {
            let w = w.lock().expect("watch lock");
            if w.lost == 0 {
                continue;
            }
            affected += 1;
            if let Some(t) = w.relogin {
                relogins.push(t.saturating_sub(sent).as_secs_f64());
            }
            if let Some(t) = w.served {
                served.push(t.saturating_sub(sent).as_secs_f64());
            }
        }
        r.add("users affected", affected, "");
        r.add("resent after SHUTTING_DOWN", self.resent.load(Relaxed), "");
        if let Some(what) = self.first_loss.lock().expect("loss lock").clone() {
            r.add("first connection lost by", what, "");
        }
        let relogins_len = relogins.len() as u64;
        r.add("users logged in again", relogins_len, "");
        r.add("users served again", served.len() as u64, "");
        for (name, mut times) in [("logged in again", relogins), ("served again", served)] {
            times.sort_by(f64::total_cmp);
            if let (Some(median), Some(max)) = (median(&times), times.last()) {
                if name == "served again" {
                    r.add_f("served again first", times[0], 3, "s");
                }
                r.add_f(&format!("{name} median"), median, 3, "s");
                r.add_f(&format!("{name} max"), *max, 3, "s");
            }
        }
        let not_back = affected - relogins_len;
        if not_back > 0 {
            r.fail(format!(
                "{not_back} users whose connection was lost were not logged in again"
            ));
        }
    }
}

/// The median of sorted `v` (the mean of the middle two for an even count).
fn median(v: &[f64]) -> Option<f64> {
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failover(users: usize) -> Failover {
        Failover {
            pid: 1,
            at: Duration::ZERO,
            signal: Signal::Kill,
            sent_us: AtomicU64::new(0),
            error: Mutex::new(None),
            first_loss: Mutex::new(None),
            resent: AtomicU64::new(0),
            users: (0..users).map(|_| Mutex::new(Watch::default())).collect(),
        }
    }

    fn row(r: &Report, key: &str) -> serde_json::Value {
        r.get(key).unwrap_or_else(|| panic!("no row {key}"))
    }

    #[test]
    fn only_losses_after_the_signal_count_and_an_ack_counts_after_the_login() {
        let f = failover(3);
        let s = Duration::from_secs;
        f.disconnected(0, String::new()); // before the signal: ignored
        f.connected(0, s(1));
        f.sent_us.store(s(8).as_micros() as u64 + 1, Relaxed);
        f.disconnected(1, String::new());
        f.acked(1, s(9)); // still down (an ack of the old connection seen late): not served
        f.connected(1, s(12));
        f.acked(1, s(13));
        f.acked(1, s(14)); // only the first counts
        f.disconnected(2, String::new());
        f.connected(2, s(10));
        f.acked(2, s(10));
        f.disconnected(2, String::new()); // lost again: its last loss counts
        f.connected(2, s(15));
        f.acked(2, s(16));
        let mut r = Report::new("chat");
        f.report(&mut r);
        assert_eq!(row(&r, "users affected"), 2);
        assert_eq!(row(&r, "users served again"), 2);
        assert_eq!(row(&r, "served again max"), 8.0);
        assert_eq!(row(&r, "served again median"), 6.5);
        assert_eq!(row(&r, "served again first"), 5.0);
        assert_eq!(row(&r, "logged in again max"), 7.0);
        assert!(r.failures.is_empty(), "{:?}", r.failures);
    }

    #[test]
    fn a_user_not_back_fails_the_run() {
        let f = failover(2);
        f.sent_us.store(1, Relaxed);
        f.disconnected(0, String::new());
        let mut r = Report::new("chat");
        f.report(&mut r);
        assert_eq!(row(&r, "users affected"), 1);
        assert_eq!(row(&r, "users logged in again"), 0);
        assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0]), Some(1.0));
        assert_eq!(median(&[1.0, 2.0, 4.0]), Some(2.0));
        assert_eq!(median(&[1.0, 2.0, 4.0, 8.0]), Some(3.0));
    }
}
