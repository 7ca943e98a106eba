//! The `media` scenario's options.

use crate::common::Common;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Concurrent uploaders, each a user of its own uploading one file on one kept-alive
    /// connection.
    #[arg(long, default_value_t = 4)]
    pub uploads: usize,
    /// Files each uploader uploads, one after another on its connection (all hashed before
    /// the clock starts).
    #[arg(long, default_value_t = 1)]
    pub files: usize,
    /// Bytes per file (e.g. 16777216; 1073741824 for the 1 GiB streaming check). The server
    /// takes up to `media_max_file_bytes` (2 GiB) a file and `media_max_bytes_per_day` (8 GiB)
    /// a user.
    #[arg(long, default_value_t = 16 << 20)]
    pub size: u64,
    /// Bytes per PATCH (the server takes at most `media_max_chunk_bytes`, 16 MiB; it syncs
    /// each chunk to disk).
    #[arg(long, default_value_t = 8 << 20)]
    pub chunk: u64,
    /// Concurrent ranged downloaders after the uploads, each on one kept-alive connection,
    /// one range after another, of a file chosen at random. 0: uploads only.
    #[arg(long, default_value_t = 4)]
    pub downloads: usize,
    /// Bytes per range (`Range: bytes=a-b` at a random offset; the whole file if larger).
    #[arg(long, default_value_t = 1 << 20)]
    pub range_size: u64,
    /// Seconds of ranged downloads.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds allowed for one request (a chunk, a finish, a range) before the run fails.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// The server's pid, to report its CPU and resident memory (sampled every 20 ms).
    #[arg(long)]
    pub server_pid: Option<String>,
}
