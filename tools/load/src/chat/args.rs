//! The `chat` scenario's options.

use crate::common::Common;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Online users (one connection each); every message goes from one to another at random.
    #[arg(short = 'u', long, default_value_t = 200)]
    pub users: usize,
    /// Aggregate messages per second (open loop).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Seconds to wait after the last scheduled send for acks and deliveries in flight.
    #[arg(long, default_value_t = 15)]
    pub grace: u64,
    /// Content bytes per message, UTF-8 text (at least 41: number, scheduled time, recipient in
    /// hex, then words).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// The server's pid, to report its CPU use during the sending window.
    #[arg(long)]
    pub server_pid: Option<String>,
}
