//! The server's resident memory, sampled while the scenario runs, and its CPU time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::common::{cpu_secs, vm_rss_kib};

/// How often VmRSS is read.
const EVERY: Duration = Duration::from_millis(20);

/// The server process watched (`None`: no pid given; every figure is then absent).
pub struct Watch {
    pid: Option<String>,
    /// The latest sample and the highest since the last [`Watch::peak`], in KiB.
    now: Arc<AtomicU64>,
    high: Arc<AtomicU64>,
    sampler: Option<JoinHandle<()>>,
}

impl Watch {
    pub fn start(pid: Option<String>) -> Watch {
        let now = Arc::new(AtomicU64::new(0));
        let high = Arc::new(AtomicU64::new(0));
        let sampler = pid.clone().map(|pid| {
            let (now, high) = (now.clone(), high.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(EVERY);
                loop {
                    tick.tick().await;
                    if let Some(kib) = vm_rss_kib(&pid) {
                        now.store(kib, Relaxed);
                        high.fetch_max(kib, Relaxed);
                    }
                }
            })
        });
        Watch {
            pid,
            now,
            high,
            sampler,
        }
    }

    /// Resident memory now, read afresh (KiB).
    pub fn rss(&self) -> Option<u64> {
        let kib = vm_rss_kib(self.pid.as_deref()?)?;
        self.now.store(kib, Relaxed);
        self.high.fetch_max(kib, Relaxed);
        Some(kib)
    }

    /// The latest sample (KiB), for the progress line.
    pub fn latest(&self) -> Option<u64> {
        self.pid.as_ref()?;
        Some(self.now.load(Relaxed))
    }

    /// The highest sample since the last call (KiB); the next period starts from now.
    pub fn peak(&self) -> Option<u64> {
        let now = self.rss()?;
        Some(self.high.swap(now, Relaxed).max(now))
    }

    /// A clock for the server's CPU from now on.
    pub fn cpu(&self) -> Cpu {
        Cpu {
            at: Instant::now(),
            secs: self.pid.as_deref().and_then(cpu_secs),
        }
    }

    /// The server's CPU since `from`, in % of a core.
    pub fn cpu_since(&self, from: &Cpu) -> Option<f64> {
        let now = cpu_secs(self.pid.as_deref()?)?;
        let wall = from.at.elapsed().as_secs_f64().max(1e-9);
        Some((now - from.secs?) / wall * 100.0)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(s) = &self.sampler {
            s.abort();
        }
    }
}

/// When a CPU measurement began.
pub struct Cpu {
    at: Instant,
    secs: Option<f64>,
}
