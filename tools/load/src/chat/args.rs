//! The `chat` scenario's options.

use super::disrupt::Disrupt;
use crate::common::Common;
use crate::workload::chat::Load;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub load: Load,
    /// Content bytes per message, UTF-8 text (at least 41: number, scheduled time, recipient in
    /// hex, then words).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// The server's pid, to report its CPU use during the sending window.
    #[arg(long)]
    pub server_pid: Option<String>,
    #[command(flatten)]
    pub disrupt: Disrupt,
}
