//! [`Rig`]: one attack's server, honest side and phases, which every attack runs in.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::args::Args;
use super::honest::{Honest, Plan};
use super::server::{self, RssSampler, ServerProc};
use crate::common::Env;

/// One attack's server, honest side and phases.
pub struct Rig<'a> {
    pub args: &'a Args,
    pub server: ServerProc,
    pub env: Env,
    pub(super) honest: Option<Honest>,
    pub(super) baseline_at: Option<Instant>,
    pub(super) attack_at: Option<Instant>,
    pub(super) after_at: Option<Instant>,
    pub(super) rss_start: Option<u64>,
    pub rss_before: Option<u64>,
    pub(super) cpu_before: Option<f64>,
    pub(super) cpu_after: Option<f64>,
    pub(super) sampler: Option<RssSampler>,
    pub samples: Vec<(Instant, u64)>,
    /// /proc/loadavg when the server was started.
    pub(super) loadavg: String,
}

impl<'a> Rig<'a> {
    /// Starts the honest side (with the bulk load if asked) and lets it run alone for the
    /// baseline; then the attack may begin ([`Rig::attack_begins`]).
    pub async fn honest(&mut self, bulk: Option<(usize, usize)>, http: bool) -> Result<()> {
        let plan = Plan {
            env: self.env.clone(),
            pace: Duration::from_millis(self.args.pace_ms.max(1)),
            ping_every: Duration::from_millis(200),
            login_every: Duration::from_millis(200),
            http_addr: http.then(|| self.server.http_addr.clone()),
            bulk,
        };
        self.honest = Some(Honest::start(plan).await?);
        self.baseline_at = Some(Instant::now());
        tokio::time::sleep(Args::secs(self.args.baseline)).await;
        Ok(())
    }

    /// The attack starts now: reads the server's RSS and CPU, starts sampling RSS.
    pub async fn attack_begins(&mut self) {
        self.rss_before = self.server.rss_kib();
        self.cpu_before = self.server.cpu_secs();
        self.sampler = Some(RssSampler::start(self.server.pid));
        self.attack_at = Some(Instant::now());
    }

    /// The attack is over (its connections may still be open; the attack closes them).
    pub fn attack_ends(&mut self) {
        if self.after_at.is_none() {
            self.after_at = Some(Instant::now());
            self.cpu_after = self.server.cpu_secs();
            if let Some(s) = self.sampler.take() {
                self.samples = s.finish();
            }
        }
    }

    /// The highest RSS sampled during the attack, KiB.
    pub fn peak_kib(&self) -> Option<u64> {
        self.samples.iter().map(|s| s.1).max()
    }

    /// The server's CPU seconds during the attack.
    pub fn attack_cpu(&self) -> Option<f64> {
        Some(self.cpu_after? - self.cpu_before?)
    }

    pub fn addr(&self) -> &str {
        &self.server.addr
    }

    pub fn token(&self, user: &str, device: &str) -> String {
        server::token(user, device)
    }
}
