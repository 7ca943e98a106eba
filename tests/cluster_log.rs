//! The partitions' replicated log (docs/CLUSTER.md section 4) on three real `nats-server`s
//! with JetStream, replicas = 3: a writer that lost its partition is fenced, a retried append
//! is stored once, the loss of the stream's leader (one NATS server of three) under appends
//! loses nothing, and
//! without a quorum nothing is acknowledged.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::nats::{nats_cluster, open_log};
use missive::cluster::log::{Log, LogError, Writer};

/// Takes `partition` for `epoch` after replaying nothing but knowing its end.
async fn take(log: &Log, partition: u32, epoch: u64) -> Result<Writer, LogError> {
    let end = log.last(partition).await?;
    Writer::take(log.clone(), partition, epoch, end).await
}

fn texts(records: &[(u64, Bytes)]) -> Vec<String> {
    records
        .iter()
        .map(|(_, r)| String::from_utf8(r.to_vec()).unwrap())
        .collect()
}

#[tokio::test]
async fn a_writer_that_lost_its_partition_is_fenced_and_the_log_reads_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let nats = nats_cluster(dir.path());
    let log = open_log(&nats.urls).await;

    let mut old = take(&log, 3, 1).await.unwrap();
    for i in 0..50 {
        old.append(Bytes::from(format!("a{i}"))).await.unwrap();
    }
    // A new owner takes partition 3 (epoch 2): its epoch record fences the old writer, whose
    // next append is refused (it must not acknowledge that change).
    let mut new = take(&log, 3, 2).await.unwrap();
    let refused = old.append(Bytes::from_static(b"late")).await;
    assert!(
        matches!(refused, Err(LogError::Fenced { partition: 3, .. })),
        "{refused:?}"
    );
    // The old owner cannot take the partition back with its older epoch, even at the end.
    let stale = take(&log, 3, 1).await;
    assert!(
        matches!(
            stale,
            Err(LogError::Superseded {
                mine: 1,
                newer: 2,
                ..
            })
        ),
        "{:?}",
        stale.err()
    );
    // A taker that has not replayed to the end is refused: what it missed must be replayed.
    let behind = Writer::take(log.clone(), 3, 3, new.last() - 1).await;
    assert!(
        matches!(behind, Err(LogError::Fenced { .. })),
        "{:?}",
        behind.err()
    );
    for i in 0..50 {
        new.append(Bytes::from(format!("b{i}"))).await.unwrap();
    }
    let mut expected = vec!["epoch 1".to_string()];
    expected.extend((0..50).map(|i| format!("a{i}")));
    expected.push("epoch 2".into());
    expected.extend((0..50).map(|i| format!("b{i}")));
    let all = log.read(3, 0).await.unwrap();
    assert_eq!(texts(&all), expected);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "in sequence order");
    assert_eq!(all.last().unwrap().0, new.last());
    // Other partitions are untouched; reading from the middle starts after the given record.
    assert!(log.read(4, 0).await.unwrap().is_empty());
    let tail = log.read(3, all[100].0).await.unwrap();
    assert_eq!(texts(&tail), expected[101..]);

    // Trimming behind a snapshot (here: everything before epoch 2's record) keeps that record
    // and what follows; the writer goes on appending after it.
    let epoch2 = all[51].0;
    let purged = log.trim(3, epoch2).await.unwrap();
    assert_eq!(purged, 51);
    new.append(Bytes::from_static(b"after trim")).await.unwrap();
    // A reader from before the trim is told, not handed the rest as if nothing were missing.
    let gone = log.read(3, all[10].0).await;
    assert!(matches!(gone, Err(LogError::Trimmed { .. })), "{gone:?}");
    let kept = log.read(3, all[50].0).await.unwrap();
    assert_eq!(kept.len(), 52);
    assert_eq!(texts(&kept)[0], "epoch 2");
    assert_eq!(texts(&kept)[51], "after trim");
    // Trimming past the end would lose the partition's place: refused.
    assert!(log.trim(3, new.last() + 1).await.is_err());
}

#[tokio::test]
async fn a_retried_append_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let nats = nats_cluster(dir.path());
    let log = open_log(&nats.urls).await;
    let first = log
        .append(7, 1, 0, "7-1-0", Bytes::from_static(b"one"))
        .await
        .unwrap();
    // The same append again, as after a lost acknowledgement: the same sequence, no copy.
    let again = log
        .append(7, 1, 0, "7-1-0", Bytes::from_static(b"one"))
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(texts(&log.read(7, 0).await.unwrap()), ["one"]);
}

#[tokio::test]
async fn one_nats_server_of_three_killed_under_appends_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let nats = nats_cluster(dir.path());
    let log = open_log(&nats.urls).await;
    let mut writer = take(&log, 0, 1).await.unwrap();
    let total = 3_000;
    let mut acked = Vec::new();
    let mut longest = Duration::ZERO;
    // The stream's leader: the server whose loss makes the survivors elect another.
    let leader = log
        .leader()
        .await
        .unwrap()
        .expect("a replicated stream has a leader");
    let index: usize = leader.trim_start_matches("nats").parse().unwrap();
    for i in 0..total {
        if i == 1_000 {
            nats.servers[index].signal("-KILL");
        }
        let record = Bytes::from(format!("r{i}"));
        let started = Instant::now();
        // An append that was not acknowledged is retried as is (same id): it is stored once
        // whether or not the first try reached the stream.
        let seq = loop {
            match writer.append(record.clone()).await {
                Ok(seq) => break seq,
                Err(LogError::Unavailable(_)) => {
                    assert!(
                        started.elapsed() < Duration::from_secs(60),
                        "record {i} not stored within 60 s"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("record {i}: {e}"),
            }
        };
        longest = longest.max(started.elapsed());
        acked.push(seq);
    }
    eprintln!("3000 appends with the stream's leader ({leader}) killed at the 1000th: longest wait {longest:?}");
    let read = log.read(0, 0).await.unwrap();
    let mut expected = vec!["epoch 1".to_string()];
    expected.extend((0..total).map(|i| format!("r{i}")));
    assert_eq!(texts(&read), expected, "every acked record once, in order");
    let sequences: Vec<u64> = read[1..].iter().map(|(s, _)| *s).collect();
    assert_eq!(sequences, acked);
}

#[tokio::test]
async fn without_a_quorum_nothing_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let nats = nats_cluster(dir.path());
    let log = open_log(&nats.urls).await;
    let mut writer = take(&log, 1, 1).await.unwrap();
    writer.append(Bytes::from_static(b"before")).await.unwrap();
    nats.servers[1].signal("-KILL");
    nats.servers[2].signal("-KILL");
    let started = Instant::now();
    let refused = writer.append(Bytes::from_static(b"alone")).await;
    assert!(
        matches!(refused, Err(LogError::Unavailable(_))),
        "{refused:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}
