//! The store's [`Replicator`] on a partition's log: each commit group is appended to the
//! partition's subject, fenced, before the store writes and acknowledges it
//! (docs/CLUSTER.md section 4).

use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use super::log::{LogError, Writer};
use crate::store::Replicator;

/// How long a group waits for the log through a NATS server's loss (a stream leader's
/// election takes a few seconds) before the store gives up and refuses every change.
const PATIENCE: Duration = Duration::from_secs(20);
/// How often an append that waits for the log looks at the lease.
const OWNS_POLL: Duration = Duration::from_millis(100);
/// The largest record appended: NATS's default `max_payload` (1 MiB) less room for headers.
const MAX_RECORD: usize = (1 << 20) - 4096;

/// Appends commit groups through a partition's [`Writer`], from the store's committer thread.
pub struct LogReplicator {
    writer: Mutex<Writer>,
    runtime: tokio::runtime::Handle,
    /// Whether this node still owns the partition: no append once it does not.
    owns: Box<dyn Fn() -> bool + Send + Sync>,
    /// Told each appended record's position.
    appended: Box<dyn Fn(u64) + Send + Sync>,
}

impl LogReplicator {
    /// `runtime`: where the NATS client runs; the committer's thread waits on it. `owns`:
    /// whether the lease is still this node's (checked before every append).
    pub fn new(
        writer: Writer,
        runtime: tokio::runtime::Handle,
        owns: Box<dyn Fn() -> bool + Send + Sync>,
    ) -> LogReplicator {
        LogReplicator {
            writer: Mutex::new(writer),
            runtime,
            owns,
            appended: Box::new(|_| {}),
        }
    }

    /// Calls `f` with each appended record's position (the node's log position).
    pub fn on_append(mut self, f: Box<dyn Fn(u64) + Send + Sync>) -> LogReplicator {
        self.appended = f;
        self
    }
}

impl Replicator for LogReplicator {
    fn append(&self, record: Vec<u8>) -> Result<u64, String> {
        if !(self.owns)() {
            return Err("this node no longer owns the partition".into());
        }
        // NATS takes a message of at most 1 MiB (`max_payload`), headers included; the
        // writer seals replicated groups well below it, so only a single change this large
        // gets here, and waiting would not make it fit.
        if record.len() > MAX_RECORD {
            return Err(format!(
                "a commit group of {} bytes is larger than a log record may be ({MAX_RECORD})",
                record.len()
            ));
        }
        let record = Bytes::from(record);
        let mut writer = self.writer.lock();
        let started = Instant::now();
        let lost = || "this node lost the partition's lease while appending".to_owned();
        self.runtime.block_on(async {
            loop {
                // The same record again after an unanswered append: stored once either way.
                let attempt = writer.append(record.clone());
                tokio::pin!(attempt);
                // Given up as soon as the lease is gone (a node cut off from NATS): the group
                // is then not acknowledged, and if it did reach the log, the new owner replays
                // it and answers its resend as a duplicate.
                let result = loop {
                    tokio::select! {
                        r = &mut attempt => break r,
                        _ = tokio::time::sleep(OWNS_POLL) => {
                            if !(self.owns)() {
                                return Err(lost());
                            }
                        }
                    }
                };
                match result {
                    Ok(seq) => {
                        (self.appended)(seq);
                        return Ok(seq);
                    }
                    Err(LogError::Unavailable(why)) if started.elapsed() < PATIENCE => {
                        tracing::warn!("log append: {why}; trying again");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if !(self.owns)() {
                            return Err(lost());
                        }
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
    }
}
