//! The inbox side of the driver: pushes, SYNC pages, and entries our own requests created.

use std::sync::atomic::Ordering;
use std::time::Instant;

use missive_protocol::{pb, Frame, Packet};

use super::state::{Driver, Pending, OWN_ENTRY_GRACE};
use crate::connection::Connection;
use crate::error::Result;
use crate::event::ClientEvent;
use crate::versions::Verdict;

impl Driver {
    pub(super) async fn on_push(&mut self, conn: &mut Connection, push: pb::Push) -> Result<()> {
        self.versions.saw(push.version);
        match self.versions.classify_push(push.version, push.prev_version) {
            Verdict::Duplicate => {}
            Verdict::Apply => match push.entry {
                Some(mut entry) => {
                    entry.version = push.version;
                    self.apply(entry);
                }
                None => {
                    tracing::warn!(version = push.version, "PUSH without an entry; syncing");
                    self.start_sync(conn).await?;
                }
            },
            Verdict::Gap => {
                tracing::debug!(held = self.versions.held(), version = push.version, "gap");
                self.start_sync(conn).await?;
            }
        }
        // Cumulative: everything up to held is applied. A push past a gap stays unacked until
        // the SYNC has filled the gap (its retransmit is then dropped as a duplicate).
        // Sent within `ack_delay`, with the next frames the client sends if it can.
        self.ack_later();
        Ok(())
    }

    /// Delivers the next entry, then those of our own SENDs that it makes next in line.
    pub(super) fn apply(&mut self, entry: pb::InboxEntry) {
        let mut next = Some(entry);
        while let Some(entry) = next.take() {
            self.versions.apply(entry.version);
            self.emit(ClientEvent::Entry(entry));
            let held = self.versions.held();
            // Own entries at or below held came another way (a SYNC page): forget them.
            while self.own.first_key_value().is_some_and(|(&v, _)| v <= held) {
                self.own.pop_first();
            }
            next = self.own.remove(&(held + 1));
        }
        self.held_shared
            .store(self.versions.held(), Ordering::SeqCst);
        if matches!(self.expect_own, Some((v, _)) if v <= self.versions.held()) {
            self.expect_own = None;
        }
    }

    pub(super) async fn start_sync(&mut self, conn: &mut Connection) -> Result<()> {
        if self.syncing {
            return Ok(());
        }
        self.syncing = true;
        let id = conn.next_request_id();
        self.pending.insert(id, Pending::Sync);
        let sync = pb::Sync {
            since_version: self.versions.held(),
            limit: 0,
        };
        conn.send_frame(&Frame::new(&Packet::Sync(sync), id)).await
    }

    pub(super) async fn on_sync_ack(
        &mut self,
        conn: &mut Connection,
        ack: pb::SyncAck,
    ) -> Result<()> {
        self.syncing = false;
        self.versions.saw(ack.current_version);
        let before = self.versions.held();
        for entry in ack.entries {
            match self.versions.classify_entry(entry.version) {
                Verdict::Duplicate => continue,
                Verdict::Apply => self.apply(entry),
                Verdict::Gap => break,
            }
        }
        let progressed = self.versions.held() > before;
        if progressed {
            self.ack_later();
        }
        if ack.has_more || self.versions.behind() {
            if progressed {
                // Acknowledge this page before asking for the next.
                self.send_ack(conn).await?;
                self.start_sync(conn).await?;
            } else {
                // No progress: do not spin. The next push, retransmit or reconnect retries.
                tracing::warn!(held = self.versions.held(), "SYNC returned nothing new");
            }
        }
        Ok(())
    }

    /// Our SEND created entry `ack.version` in our own inbox; the server does not push it to
    /// this device. If it is the next one, build it from the request and the ack.
    pub(super) fn on_send_ack(&mut self, request: &Packet, ack: &pb::SendAck) {
        let Packet::Send(send) = request else { return };
        if ack.version == 0 {
            return;
        }
        match self.versions.classify_entry(ack.version) {
            Verdict::Duplicate => {}
            Verdict::Apply => {
                let entry = own_entry(send, ack, &self.user_id);
                self.apply(entry);
            }
            Verdict::Gap => {
                // Applied once the entries below it have come; SYNC if they do not, soon.
                self.own
                    .insert(ack.version, own_entry(send, ack, &self.user_id));
                self.expect_own(ack.version)
            }
        }
    }

    /// Our request created entry `version`; SYNC if no push brings it soon.
    pub(super) fn expect_own(&mut self, version: u64) {
        if version == 0 || version <= self.versions.held() {
            return;
        }
        self.versions.saw(version);
        let due = Instant::now() + OWN_ENTRY_GRACE;
        self.expect_own = Some(match self.expect_own {
            Some((v, at)) => (v.max(version), at),
            None => (version, due),
        });
    }
}

/// The entry our own SEND created in our inbox, rebuilt from the request and its ack (with the
/// content as stored when the server changed it: `SendAck.content`, PROTOCOL.md 15.8, 15.9).
fn own_entry(send: &pb::Send, ack: &pb::SendAck, user_id: &str) -> pb::InboxEntry {
    pb::InboxEntry {
        version: ack.version,
        conversation: send.to.clone(),
        timestamp_ms: ack.timestamp_ms,
        body: Some(pb::inbox_entry::Body::Message(pb::Message {
            msg_id: ack.msg_id,
            from_user: user_id.to_string(),
            conversation: send.to.clone(),
            seq: ack.seq,
            timestamp_ms: ack.timestamp_ms,
            content_type: send.content_type,
            content: if ack.content.is_empty() {
                send.content.clone()
            } else {
                ack.content.clone()
            },
            client_msg_id: send.client_msg_id.clone(),
            recalled: false,
            ..Default::default()
        })),
    }
}
