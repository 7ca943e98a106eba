//! Options every scenario shares, token minting, addresses and process limits.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use clap::Args;
use missive_client::{Client, ClientConfig};
use missive_protocol::token;

/// The device id every load user logs in with.
pub const DEVICE: &str = "load";

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Server address, host:port.
    #[arg(long, default_value = "127.0.0.1:443")]
    pub addr: String,
    /// Several server addresses (comma-separated, e.g. 127.0.0.1:9443,127.0.0.2:9443); the
    /// connections are spread over them round-robin (past one address pair's port range, or
    /// over a cluster's nodes); a client that loses its connection tries its own address
    /// again, then the next ones. Overrides --addr.
    #[arg(long, value_delimiter = ',')]
    pub addrs: Vec<String>,
    /// The server's token secret (else read from <data-dir>/secret).
    #[arg(long, env = "MISSIVE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// The server's data directory, for its `secret` file.
    #[arg(long, env = "MISSIVE_DATA_DIR", default_value = "./missive-data")]
    pub data_dir: PathBuf,
    /// Prefix of the user ids this run creates (default: `load-` and a random tag, so runs
    /// against the same data directory never share users).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Print the full result as JSON on stdout (the table then goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Runtime threads of the harness. 0: one per core less one, at least one. The harness
    /// shares the box with the server it loads: with a thread per core its threads and the
    /// server's wake each other across both cores, which costs both of them CPU
    /// (BENCHMARKS.md).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

impl Common {
    /// The harness's runtime threads (see `--threads`).
    pub fn threads(&self) -> usize {
        harness_threads(self.threads)
    }
}

/// The harness's runtime threads for `--threads asked`: 0 is one per core less one, at least
/// one (see [`Common::threads`]).
pub fn harness_threads(asked: usize) -> usize {
    if asked > 0 {
        return asked;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.saturating_sub(1).max(1)
}

/// What a scenario needs to reach the server and log users in.
#[derive(Clone)]
pub struct Env {
    pub addrs: Vec<String>,
    secret: String,
    pub prefix: String,
    pub json: bool,
}

impl Env {
    pub fn new(c: &Common) -> Result<Env> {
        let secret = match &c.secret {
            Some(s) => s.clone(),
            None => {
                let path = c.data_dir.join("secret");
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "no --secret given and cannot read {} (use --secret or --data-dir)",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        let addrs = if c.addrs.is_empty() {
            vec![c.addr.clone()]
        } else {
            c.addrs.clone()
        };
        let prefix = match &c.prefix {
            Some(p) => p.clone(),
            None => format!("load-{:06x}", rand::random::<u32>() & 0xff_ffff),
        };
        Ok(Env {
            addrs,
            secret,
            prefix,
            json: c.json,
        })
    }

    /// The id of this run's user number `i` in role `role` (e.g. `load-1a2b3c-c-17`).
    pub fn user(&self, role: &str, i: usize) -> String {
        format!("{}-{role}-{i}", self.prefix)
    }

    /// The address connection number `i` uses.
    pub fn addr(&self, i: usize) -> &str {
        &self.addrs[i % self.addrs.len()]
    }

    /// A token for `user` on [`DEVICE`], valid for a day.
    pub fn token(&self, user: &str) -> Result<String> {
        token::check_id(user).map_err(|e| anyhow!("user id {user:?}: {e}"))?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        Ok(token::mint(
            self.secret.as_bytes(),
            user,
            DEVICE,
            now + 86_400,
        ))
    }

    /// A reliable client for `user`, connected to address `i`; when it reconnects it tries
    /// that address first, then the others in turn (the client's own rule). A request gives up
    /// after 60 s.
    pub async fn client(&self, user: &str, i: usize) -> Result<Client> {
        self.client_waiting(user, i, Duration::from_secs(60)).await
    }

    /// [`Env::client`] whose requests wait up to `request_timeout` for their reply, reconnects
    /// included.
    pub async fn client_waiting(
        &self,
        user: &str,
        i: usize,
        request_timeout: Duration,
    ) -> Result<Client> {
        let mut config = ClientConfig::new(self.addr(i), self.token(user)?, DEVICE);
        let n = self.addrs.len();
        config.addrs = (0..n).map(|j| self.addr(i + j).to_string()).collect();
        config.request_timeout = request_timeout;
        Client::connect(config)
            .await
            .with_context(|| format!("{user} cannot log in at {}", self.addr(i)))
    }
}

/// Raises the soft limit on open files to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim = want;
            }
        }
    }
    lim.rlim_cur
}

/// Resident memory of process `pid` in KiB (VmRSS in /proc/PID/status), `None` if unreadable.
pub fn vm_rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time (user + system) process `pid` ("self" for this one) has used, in seconds.
pub fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (u64, u64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((utime + stime) as f64 / ticks)
}
