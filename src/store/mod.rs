//! Storage on RocksDB: the column-family catalog, key codecs, a typed transaction, queries.
//!
//! Nothing outside this module names a RocksDB type; nothing in it knows of sockets.
//!
//! Every logical change (a send, a read, a recall, ...) is one [`Change`], run by the single writer
//! thread ([`writer`]) one after another: inbox versions are allocated in order and counters are
//! read-modify-written without locks. The changes that queued up while the group before was being
//! written are committed as one atomic `WriteBatch` (fsynced in `sync` durability: group commit)
//! by a second thread, the committer, which only then answers them and hands their pushes to the
//! [`Outbox`]. Reads that only look run on the
//! caller's thread against the committed data ([`Core`], reached with [`Store::core`]).

// The files, bottom-up: each file imports only files listed before it (`mod.rs` only declares
// them and re-exports the API; no file imports it). `Core`'s and `Store`'s methods are defined
// in the file of their topic; method calls follow the same order, except `Change::members`, which
// reads the member list with `Core::member_ids` (groups.rs).
//
//   family.rs        column families (their on-disk names) and the schema version
//   keys.rs          key codecs, `ConvKey`
//   outbox.rs        what commits hand to the router: `Delivery`, `GroupNotice`, `Outbox`
//   replicate.rs     `Replicator`: commit groups appended to a log before they are written
//   event_kind.rs    the kinds of events for the app's backend (`EventKind`, `EventKinds`)
//   error.rs         `StoreError`, `Result`
//   core.rs          `Core`: RocksDB and what every reader shares; `Durability`
//   read.rs          `Reader`: point reads of the committed data
//   pending.rs       `Pending`: the result of a queued change
//   commit.rs        the writer's pending group (overlay, caches) and the committer thread
//   change.rs        `Change`: one change as the writer runs it, reading through the pending group
//   writer.rs        `Store`, `Store::change` and the writer thread
//   events.rs        the app's event queue (event webhooks): queued in a change's batch
//   membership.rs    group and member records, admission rules, a member's bookkeeping
//   conversation.rs  a send's request and outcome, putting a message in its conversation,
//                    group conversations, message lookup, recent-contact entries
//   unread.rs        unread counts (stored and computed), MARK_READ
//   mute.rs          muted conversations (MUTE)
//   blocks.rs        blocked users (BLOCK, BLOCK_LIST), the check a direct send makes
//   messages.rs      direct sends, their recall, deletes
//   groups.rs        group changes, group messages and recalls, the fan-out switch, group reads
//   history.rs       one walk of any conversation's log (HISTORY, GROUP_HISTORY), read
//                    positions, who in a group read a message (READERS)
//   push_queue.rs    the offline-push queue
//   revoked.rs       token revocation
//   queries.rs       inbox pages, recent contacts, unread counts
//   invariants.rs    reads of the data as stored, for the invariant checks (tests only)
//   migrate.rs       upgrades of older data directories
//   open.rs          opening a data directory: tuning, families, schema check, `Store::open`
//   backup.rs        a checkpoint of the running store; what a checkpoint holds (read-only)
//   ordering_tests.rs  (tests) the committer completes results before it hands out pushes

mod backup;
mod blocks;
mod change;
mod commit;
mod conversation;
mod core;
mod error;
mod event_kind;
mod events;
mod family;
mod groups;
mod history;
#[cfg(any(test, feature = "test-hooks"))]
mod invariants;
mod keys;
mod media;
mod membership;
mod messages;
mod migrate;
mod mute;
mod open;
#[cfg(test)]
mod ordering_tests;
mod outbox;
mod pending;
mod push_queue;
mod queries;
mod read;
mod replicate;
mod revoked;
mod unread;
mod writer;

pub use self::core::{Core, Durability};
pub use backup::{inspect, Inspected};
pub use blocks::{BlockPage, BlockedBy};
pub use change::Change;
pub use conversation::{Moderated, SendOutcome, SendRequest};
pub use error::{Result, StoreError};
pub use events::{conversation_json, EventKey, EventKind, EventKinds, QueuedEvent};
pub use family::{Family, SCHEMA_VERSION};
pub use groups::{GroupChange, Page};
pub use history::{HistoryPage, HistoryQuery, SCAN_PER_MESSAGE};
pub use keys::ConvKey;
pub use media::{valid_id as valid_media_id, MediaRecord, UploadRecord, MAX_MEDIA};
pub use membership::GroupLimits;
pub use open::DEFAULT_FANOUT_THRESHOLD;
pub use outbox::{Delivery, GroupNotice, Outbox};
pub use pending::Pending;
pub use push_queue::{PushItem, PushKey};
pub use read::Reader;
pub use replicate::{Replicator, CLUSTER_KEY, LOG_SEQ_KEY};
pub use unread::MarkedRead;
pub use writer::Store;
