//! The partitions' durable log: one replicated JetStream stream, one subject per partition
//! (docs/CLUSTER.md section 4).
//!
//! A record is appended only by the partition's writer, and every append says which record it
//! follows (`Nats-Expected-Last-Subject-Sequence`): the stream refuses an append from a writer
//! that is not at the partition's end, so an old owner that lost its lease (paused, cut off)
//! cannot add a record after a new owner's first one: it is fenced. Each record carries its
//! writer's epoch (a writer never takes a partition whose last record has a higher one) and
//! the sequence it follows (so a reader notices records trimmed away under it). Its message
//! id is unique to (partition, epoch, record number, content), so the same append retried
//! after a lost acknowledgement is answered with the first one's sequence instead of being
//! stored twice, and a different record can never be taken for it.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;

/// The stream of every partition's records.
pub const STREAM: &str = "MISSIVE_LOG";

/// How long one append may wait for the stream's acknowledgement.
const APPEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a read keeps trying through a NATS server's loss (a new stream leader).
const READ_PATIENCE: Duration = Duration::from_secs(30);
/// The header with the epoch of the record's writer.
const EPOCH: &str = "Missive-Epoch";
/// The header with the sequence of the partition's record before this one (0: none).
const PREV: &str = "Missive-Prev";

/// The subject of `partition`'s records.
pub fn subject(partition: u32) -> String {
    format!("missive.log.{partition}")
}

/// Why a log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Another writer appended to the partition since this one last did: it is no longer the
    /// partition's writer and must not acknowledge anything more.
    #[error("partition {partition}: fenced: another writer appended after sequence {expected}")]
    Fenced { partition: u32, expected: u64 },
    /// The partition's last record was written by a newer owner (a higher epoch): this
    /// writer must not take it.
    #[error("partition {partition}: taken by epoch {newer}, newer than {mine}")]
    Superseded {
        partition: u32,
        mine: u64,
        newer: u64,
    },
    /// Records after the sequence asked for were trimmed away (a snapshot holds them): the
    /// reader must load that snapshot first.
    #[error(
        "partition {partition}: records after {after} were trimmed; the first kept follows {prev}"
    )]
    Trimmed {
        partition: u32,
        after: u64,
        prev: u64,
    },
    /// The stream did not answer in time or refused for another reason (no quorum, no
    /// stream): nothing can be acknowledged until it answers again.
    #[error("the log is unavailable: {0}")]
    Unavailable(String),
}

fn unavailable(e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(e.to_string())
}

/// The stream, opened (created by the first node).
#[derive(Clone)]
pub struct Log {
    js: jetstream::Context,
    stream: stream::Stream,
}

impl Log {
    /// Opens the stream, creating it with `replicas` copies if it does not exist.
    pub async fn open(js: jetstream::Context, replicas: usize) -> Result<Log, LogError> {
        let stream = js
            .get_or_create_stream(stream::Config {
                name: STREAM.into(),
                description: Some("Missive: every partition's commit groups, in order".into()),
                subjects: vec!["missive.log.*".into()],
                num_replicas: replicas,
                storage: stream::StorageType::File,
                // Nothing is dropped for space: records are removed only by `trim`, after a
                // snapshot holds them.
                discard: stream::DiscardPolicy::New,
                duplicate_window: Duration::from_secs(120),
                allow_direct: true,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        Ok(Log { js, stream })
    }

    /// The sequence of `partition`'s last record (0: none).
    pub async fn last(&self, partition: u32) -> Result<u64, LogError> {
        Ok(self.last_record(partition).await?.map_or(0, |(seq, _)| seq))
    }

    /// The epoch of the writer of `partition`'s last record (0: no record): a writer that
    /// finds a newer epoch there has been fenced.
    pub async fn last_epoch(&self, partition: u32) -> Result<u64, LogError> {
        Ok(self
            .last_record(partition)
            .await?
            .map_or(0, |(_, epoch)| epoch))
    }

    /// The sequence of `partition`'s first record still held (0: none): everything before it
    /// was trimmed behind a snapshot.
    pub async fn first(&self, partition: u32) -> Result<u64, LogError> {
        match self
            .stream
            .get_first_raw_message_by_subject(subject(partition), 1)
            .await
        {
            Ok(m) => Ok(m.sequence),
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(0),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// `partition`'s last record's sequence and its writer's epoch.
    async fn last_record(&self, partition: u32) -> Result<Option<(u64, u64)>, LogError> {
        match self
            .stream
            .get_last_raw_message_by_subject(&subject(partition))
            .await
        {
            Ok(m) => Ok(Some((m.sequence, header_u64(&m.headers, EPOCH)))),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Appends `record`, written at `epoch`, to `partition` if its last record is `expected`
    /// (0: it has none); `id` makes a retry of the same append idempotent (it must differ for
    /// a different record). Returns the record's sequence.
    pub async fn append(
        &self,
        partition: u32,
        epoch: u64,
        expected: u64,
        id: &str,
        record: Bytes,
    ) -> Result<u64, LogError> {
        let mut headers = HeaderMap::new();
        headers.insert(EPOCH, epoch.to_string().as_str());
        headers.insert(PREV, expected.to_string().as_str());
        let publish = jetstream::context::Publish::build()
            .payload(record)
            .headers(headers)
            .message_id(id)
            .expected_last_subject_sequence(expected);
        let sent = self
            .js
            .send_publish(subject(partition), publish)
            .await
            .map_err(unavailable)?;
        match tokio::time::timeout(APPEND_TIMEOUT, sent).await {
            Err(_) => Err(LogError::Unavailable("no acknowledgement in time".into())),
            Ok(Ok(ack)) => Ok(ack.sequence),
            Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                Err(LogError::Fenced {
                    partition,
                    expected,
                })
            }
            Ok(Err(e)) => Err(unavailable(e)),
        }
    }

    /// `partition`'s records after sequence `after`, up to its last one when the read started,
    /// in order: `(sequence, record)`. Keeps trying through a NATS server's loss (up to 30 s);
    /// `Trimmed` if records after `after` are gone.
    pub async fn read(&self, partition: u32, after: u64) -> Result<Vec<(u64, Bytes)>, LogError> {
        let started = Instant::now();
        loop {
            match self.read_once(partition, after).await {
                Err(LogError::Unavailable(why)) if started.elapsed() < READ_PATIENCE => {
                    tracing::debug!(partition, "log read: {why}; trying again");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                done => return done,
            }
        }
    }

    async fn read_once(&self, partition: u32, after: u64) -> Result<Vec<(u64, Bytes)>, LogError> {
        let end = self.last(partition).await?;
        if end <= after {
            return Ok(Vec::new());
        }
        let consumer = self
            .stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: subject(partition),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let mut messages = consumer.messages().await.map_err(unavailable)?;
        let mut out = Vec::new();
        let mut prev_seq = after;
        while let Some(m) = tokio::time::timeout(APPEND_TIMEOUT, messages.next())
            .await
            .map_err(|_| LogError::Unavailable("replay stalled".into()))?
        {
            let m = m.map_err(unavailable)?;
            let seq = m.info().map_err(unavailable)?.stream_sequence;
            // Every record names the one before it: a record that does not follow the last
            // one read means records were trimmed in between.
            let prev = m
                .message
                .headers
                .as_ref()
                .map_or(0, |h| header_u64(h, PREV));
            if prev != prev_seq {
                return Err(LogError::Trimmed {
                    partition,
                    after,
                    prev,
                });
            }
            out.push((seq, m.message.payload.clone()));
            prev_seq = seq;
            if seq >= end {
                break;
            }
        }
        Ok(out)
    }

    /// The NATS server that leads the stream's replication now (for `/v1/cluster` and tests).
    pub async fn leader(&self) -> Result<Option<String>, LogError> {
        let info = self.stream.get_info().await.map_err(unavailable)?;
        Ok(info.cluster.and_then(|c| c.leader))
    }

    /// Removes `partition`'s records before sequence `keep_from` (a snapshot holds them). The
    /// record at `keep_from` stays, so the partition's last sequence never goes back; a
    /// `keep_from` past the last record is refused.
    pub async fn trim(&self, partition: u32, keep_from: u64) -> Result<u64, LogError> {
        let last = self.last(partition).await?;
        if keep_from == 0 || keep_from > last {
            return Err(LogError::Unavailable(format!(
                "partition {partition}: cannot trim before {keep_from}: its last record is {last}"
            )));
        }
        let purged = self
            .stream
            .purge()
            .filter(subject(partition))
            .sequence(keep_from)
            .await
            .map_err(unavailable)?;
        Ok(purged.purged)
    }
}

/// One partition's writer end of the log: it knows the last record and appends after it.
pub struct Writer {
    log: Log,
    partition: u32,
    epoch: u64,
    last: u64,
    count: u64,
}

impl Writer {
    /// Becomes the partition's writer for `epoch` (the lease's), having replayed its records
    /// up to `replayed`: appends an epoch record right after that one, which fences every
    /// earlier writer. `Fenced` if records were appended after `replayed` meanwhile (replay
    /// them, then try again); `Superseded` if the last record is a newer epoch's.
    pub async fn take(
        log: Log,
        partition: u32,
        epoch: u64,
        replayed: u64,
    ) -> Result<Writer, LogError> {
        if let Some((_, newer)) = log.last_record(partition).await? {
            if newer > epoch {
                return Err(LogError::Superseded {
                    partition,
                    mine: epoch,
                    newer,
                });
            }
        }
        let mut w = Writer {
            log,
            partition,
            epoch,
            last: replayed,
            count: 0,
        };
        w.append(Bytes::from(format!("epoch {epoch}"))).await?;
        Ok(w)
    }

    /// Appends `record` after this writer's last one; on `Fenced` the writer is done. After
    /// `Unavailable` the same record may be appended again (it is stored once).
    pub async fn append(&mut self, record: Bytes) -> Result<u64, LogError> {
        let id = format!(
            "{}-{}-{}-{:016x}",
            self.partition,
            self.epoch,
            self.count,
            super::assign::fnv1a64(&record)
        );
        let seq = self
            .log
            .append(self.partition, self.epoch, self.last, &id, record)
            .await?;
        self.last = seq;
        self.count += 1;
        Ok(seq)
    }

    /// The sequence of this writer's last record.
    pub fn last(&self) -> u64 {
        self.last
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> u64 {
    headers
        .get(name)
        .and_then(|v| v.as_str().parse().ok())
        .unwrap_or(0)
}
