//! The cluster (opt-in, `--cluster`): partitions and their owners on NATS JetStream
//! (docs/CLUSTER.md). Built so far: which partition a user belongs to, the lease table and its
//! rules, this node's membership (config check, registration, renewals, takeovers, releases)
//! with `GET /v1/cluster`, and a one-partition cluster served through the replicated log.
//!
//! Files, bottom-up: `assign` (hashing users and partitions to owners), `lease` (the table and
//! its rules, no IO), `log` (the partitions' replicated log on a JetStream stream, fenced by
//! expected sequence), `stats` (the snapshot counters a node shows), `node` (NATS: the bucket,
//! the watch, the loop), `replicator` (the
//! store's commit groups appended to a partition's log), `primary` (a one-partition cluster:
//! standby until the lease, then the owner), `snapshot` (the owner's checkpoints in the object
//! store, the log trimmed behind them, restores), `forward` (a client's connection forwarded
//! to the node that serves it).

pub mod assign;
pub mod forward;
pub mod lease;
pub mod log;
mod node;
pub mod primary;
pub mod replicator;
pub mod snapshot;
mod stats;

pub use assign::partition_of;
pub use lease::Timing;
pub use node::{connect, Cluster, ClusterError, Settings, BUCKET};
