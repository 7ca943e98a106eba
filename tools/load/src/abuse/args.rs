//! The `abuse` command's options.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::Common;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The `missived` binary to attack (a fresh server is started for each attack).
    #[arg(long)]
    pub server_bin: PathBuf,
    /// Attacks to run (comma-separated or repeated), or `all`.
    #[arg(long, default_value = "all")]
    pub attack: Vec<String>,
    /// One JSON object per attack on stdout (the lines go to stderr).
    #[arg(long)]
    pub json: bool,
    /// Seconds of honest traffic alone before each attack.
    #[arg(long, default_value_t = 3.0)]
    pub baseline: f64,
    /// Seconds of honest traffic alone after each attack.
    #[arg(long, default_value_t = 2.0)]
    pub after: f64,
    /// Seconds of the sustained attacks (mark-read, login-garbage, zlib-bomb).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Longest wait, in seconds, for the reply to one attacking request (group-create-huge,
    /// unread-many-groups, group-list-many).
    #[arg(long, default_value_t = 180)]
    pub bound: u64,
    /// Members of the huge GROUP_CREATE.
    #[arg(long, default_value_t = 200_000)]
    pub members: usize,
    /// Groups of the user in unread-many-groups and of the victim in group-list-many.
    #[arg(long, default_value_t = 10_000)]
    pub groups: usize,
    /// UNREADs pipelined in unread-many-groups.
    #[arg(long, default_value_t = 150)]
    pub unreads: usize,
    /// Connections (devices of one user) of mark-read.
    #[arg(long, default_value_t = 1)]
    pub mark_read_connections: usize,
    /// Connections of the pipeline attacks (the user's devices: at most 5 stay online).
    #[arg(long, default_value_t = 3)]
    pub pipeline_connections: usize,
    /// Seconds the pipeline attacks hold their connections without reading (past the
    /// server's 10 s write timeout).
    #[arg(long, default_value_t = 15.0)]
    pub hold: f64,
    /// Connections of the pre-login attacks (each is one file descriptor here).
    #[arg(long, default_value_t = 2000)]
    pub prelogin_connections: usize,
    /// Seconds the pre-login connections are held after the last one is up (the server's
    /// login timeout, 10 s from each connect, ends them).
    #[arg(long, default_value_t = 6.0)]
    pub prelogin_hold: f64,
    /// Concurrent connect+LOGIN loops of login-garbage.
    #[arg(long, default_value_t = 32)]
    pub garbage_workers: usize,
    /// Connections of zlib-bomb.
    #[arg(long, default_value_t = 2)]
    pub bomb_connections: usize,
    /// Connections of each kind in http-slow.
    #[arg(long, default_value_t = 100)]
    pub http_connections: usize,
    /// Seconds http-slow watches its connections.
    #[arg(long, default_value_t = 30.0)]
    pub http_hold: f64,
    /// Milliseconds between two messages of the honest pair.
    #[arg(long, default_value_t = 20)]
    pub pace_ms: u64,
    /// Where the servers' temp data directories go.
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    pub work_dir: PathBuf,
    /// A label put into every JSON object (e.g. "before", a commit).
    #[arg(long, default_value = "")]
    pub label: String,
    /// Keep each server's directory (data and log) for a look afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Runtime threads of the attacking side (0: one per core less one, at least one). The
    /// honest side has a thread of its own besides.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

impl Args {
    pub fn threads(&self) -> usize {
        Common {
            addr: String::new(),
            addrs: Vec::new(),
            secret: None,
            data_dir: PathBuf::new(),
            prefix: None,
            json: false,
            threads: self.threads,
        }
        .threads()
    }

    pub(super) fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s.max(0.0))
    }
}
