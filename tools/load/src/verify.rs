//! The end-of-run check of `chat`: read every recipient's whole inbox with SYNC and count, per
//! message number, how many times it is stored there. This tells a message that is stored but
//! was not delivered before the grace period ended (late: the server was behind) from one that
//! is not stored at all (lost), and catches a message stored twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::{stream, StreamExt};
use missive_client::{pb, Client};

/// How long one SYNC page may take before the read-back gives up.
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Per message number: how many times it is in its recipient's inbox (`to` is checked by
/// `parse`, which returns the message number for user `me`, or `None` if not one of ours).
pub async fn stored_counts<F>(
    clients: &[Arc<Client>],
    names: &[String],
    total: usize,
    parse: F,
) -> Result<(Vec<u8>, Duration)>
where
    F: Fn(usize, &pb::Message) -> Option<usize> + Sync,
{
    let started = Instant::now();
    let parse = &parse;
    let pages: Vec<Result<Vec<usize>>> = stream::iter(clients.iter().enumerate())
        .map(|(i, client)| async move {
            let mut found = Vec::new();
            let mut since = 0;
            loop {
                // A server that died answers nothing: the check gives up rather than wait
                // for ever (the run then reports the inboxes as unread).
                let page = tokio::time::timeout(PAGE_TIMEOUT, client.sync_page(since, 5000))
                    .await
                    .map_err(|_| anyhow::anyhow!("no answer within {PAGE_TIMEOUT:?}"))
                    .and_then(|r| r.map_err(anyhow::Error::from))
                    .with_context(|| format!("SYNC of {} from {since}", names[i]))?;
                for entry in &page.entries {
                    if let Some(pb::inbox_entry::Body::Message(m)) = &entry.body {
                        if m.from_user != names[i] {
                            found.extend(parse(i, m));
                        }
                    }
                }
                if !page.has_more {
                    break;
                }
                if page.new_version <= since {
                    bail!("SYNC of {} made no progress at {since}", names[i]);
                }
                since = page.new_version;
            }
            Ok(found)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut counts = vec![0u8; total];
    for found in pages {
        for k in found? {
            if let Some(c) = counts.get_mut(k) {
                *c = c.saturating_add(1);
            }
        }
    }
    Ok((counts, started.elapsed()))
}
