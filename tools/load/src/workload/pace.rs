//! Open-loop pacing: item k (a message, a connection) is due at `start + k / rate` whatever
//! happened before, so that a slow server cannot slow the offered load down; latency runs from
//! that scheduled time. And the CPU the harness and the server used while sending.

use std::ops::Range;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::common::cpu_secs;
use crate::stats::Report;

/// The pacing thread's shortest sleep (see [`Schedule::on_thread`]).
const PACE: Duration = Duration::from_micros(200);

/// When each item of an open-loop run is due.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub start: Instant,
    rate: f64,
}

impl Schedule {
    /// Items at `rate` a second from now on.
    pub fn new(rate: f64) -> Schedule {
        Schedule {
            start: Instant::now(),
            rate,
        }
    }

    /// When item `k` is due, after the start.
    pub fn due(&self, k: u64) -> Duration {
        Duration::from_secs_f64(k as f64 / self.rate)
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Waits on the runtime's timer until item `k` is due.
    pub async fn wait(&self, k: u64) {
        tokio::time::sleep_until((self.start + self.due(k)).into()).await;
    }

    /// Hands items `0..total` to `send` as they fall due, on the runtime's timer (one at a
    /// time, `send` must not wait).
    pub async fn on_timer(&self, total: u64, mut send: impl FnMut(u64)) {
        for k in 0..total {
            self.wait(k).await;
            send(k);
        }
    }

    /// Hands items `0..total` to `send` as they fall due, on a thread of its own with the
    /// system's sleep rather than on a runtime timer, whose millisecond ticks would make every
    /// message up to 1-2 ms late before it is even sent (and that lateness counts as latency).
    /// It wakes at most every [`PACE`]: at high rates the items due since are handed over
    /// together, as one range, so the pacing costs one wakeup per PACE rather than one per
    /// message. `state` goes to the thread and comes back when all are handed over.
    pub async fn on_thread<T, F>(self, total: u64, mut state: T, mut send: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&mut T, Range<u64>) + Send + 'static,
    {
        let paced = tokio::task::spawn_blocking(move || {
            let mut k = 0u64;
            while k < total {
                let now = self.elapsed();
                let first = k;
                while k < total && self.due(k) <= now {
                    k += 1;
                }
                if k > first {
                    send(&mut state, first..k);
                }
                if k < total {
                    let wait = self.due(k).saturating_sub(self.elapsed());
                    std::thread::sleep(wait.max(PACE));
                }
            }
            state
        });
        Ok(paced.await?)
    }
}

/// CPU readings of the harness and of the server (`pid`) at the start of a sending window.
pub struct Cpu<'a> {
    pid: Option<&'a str>,
    harness: Option<f64>,
    server: Option<f64>,
}

impl<'a> Cpu<'a> {
    pub fn start(pid: Option<&'a str>) -> Cpu<'a> {
        Cpu {
            pid,
            harness: cpu_secs("self"),
            server: pid.and_then(cpu_secs),
        }
    }

    /// The use since the start, over `window`, in percent of one core: (harness, server).
    pub fn stop(self, window: Duration) -> CpuUse {
        let used = |before: Option<f64>, after: Option<f64>| {
            Some((after? - before?) * 100.0 / window.as_secs_f64().max(1e-9))
        };
        CpuUse {
            harness: used(self.harness, cpu_secs("self")),
            server: used(self.server, self.pid.and_then(cpu_secs)),
        }
    }
}

/// CPU used while sending, in percent of one core (`None` where unreadable).
pub struct CpuUse {
    pub harness: Option<f64>,
    pub server: Option<f64>,
}

impl CpuUse {
    /// The rows `harness CPU while sending` and `server CPU while sending`, where known.
    pub fn add_to(&self, r: &mut Report) {
        if let Some(harness) = self.harness {
            r.add_f("harness CPU while sending", harness, 0, "% of one core");
        }
        if let Some(server) = self.server {
            r.add_f("server CPU while sending", server, 0, "% of one core");
        }
    }
}
