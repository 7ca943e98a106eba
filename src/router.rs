//! User -> online sessions. Delivers pushes with `try_send` only: a full queue closes that one
//! connection (its client re-syncs by version), it never stalls the sender or other clients and
//! never drops a message silently.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use missive_protocol::pb::{GroupNotify, Kick, KickReason, Push};
use missive_protocol::{Frame, Packet};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, Notify};

use crate::store::Delivery;

/// What the router hands a session to write.
#[derive(Debug)]
pub enum Outbound {
    /// A PUSH frame of inbox version `version` (to be acked and possibly retransmitted).
    Push { version: u64, frame: Frame },
    /// A frame that is not acknowledged (GROUP_NOTIFY).
    Frame(Frame),
}

/// The router's view of one logged-in connection.
#[derive(Debug)]
pub struct SessionHandle {
    pub id: u64,
    pub user: String,
    pub device: String,
    tx: mpsc::Sender<Outbound>,
    /// Last time anything arrived from the client, ms since the epoch (coarse; set per read).
    last_seen: AtomicI64,
    close: Notify,
    kick: Mutex<Option<Kick>>,
}

impl SessionHandle {
    pub fn touch(&self, now_ms: i64) {
        self.last_seen.store(now_ms, Ordering::Relaxed);
    }

    pub fn last_seen(&self) -> i64 {
        self.last_seen.load(Ordering::Relaxed)
    }

    /// Asks the session to close, sending `kick` first if given. The first reason wins.
    pub fn close(&self, kick: Option<Kick>) {
        let mut slot = self.kick.lock();
        if slot.is_none() {
            *slot = kick;
        }
        self.close.notify_one();
    }

    /// Resolves when [`SessionHandle::close`] was called. Cancel-safe.
    pub async fn closed(&self) {
        self.close.notified().await
    }

    /// The kick to send on close, if any.
    pub fn take_kick(&self) -> Option<Kick> {
        self.kick.lock().take()
    }
}

/// A kick with a reason and a message.
pub fn kick(reason: KickReason, message: &str) -> Kick {
    Kick {
        reason: reason as i32,
        message: message.to_owned(),
        ..Default::default()
    }
}

/// The table of online sessions.
#[derive(Debug, Default)]
pub struct Router {
    users: RwLock<HashMap<String, Vec<Arc<SessionHandle>>>>,
    next_id: AtomicU64,
}

impl Router {
    /// Registers a logged-in session. The same device's older session is kicked (REPLACED); if
    /// the user then has more than `max_devices` sessions, the oldest are kicked.
    pub fn register(
        &self,
        user: &str,
        device: &str,
        tx: mpsc::Sender<Outbound>,
        max_devices: usize,
        now_ms: i64,
    ) -> Arc<SessionHandle> {
        let handle = Arc::new(SessionHandle {
            id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            user: user.to_owned(),
            device: device.to_owned(),
            tx,
            last_seen: AtomicI64::new(now_ms),
            close: Notify::new(),
            kick: Mutex::new(None),
        });
        let mut users = self.users.write();
        let list = users.entry(user.to_owned()).or_default();
        list.retain(|s| {
            if s.device == device {
                s.close(Some(kick(
                    KickReason::Replaced,
                    "this device logged in on another connection",
                )));
                false
            } else {
                true
            }
        });
        list.push(handle.clone());
        while list.len() > max_devices.max(1) {
            let oldest = list.remove(0);
            oldest.close(Some(kick(
                KickReason::TooManyDevices,
                "too many devices online; this one was the oldest",
            )));
        }
        handle
    }

    /// Removes a session (if it is still registered).
    pub fn unregister(&self, handle: &SessionHandle) {
        let mut users = self.users.write();
        if let Some(list) = users.get_mut(&handle.user) {
            list.retain(|s| s.id != handle.id);
            if list.is_empty() {
                users.remove(&handle.user);
            }
        }
    }

    /// Pushes each delivery to every online session of its user, except session `exclude`.
    pub fn deliver(&self, deliveries: Vec<Delivery>, exclude: Option<u64>) {
        let users = self.users.read();
        for d in deliveries {
            let Some(sessions) = users.get(&d.user) else {
                continue;
            };
            let version = d.entry.version;
            let frame = Frame::new(
                &Packet::Push(Push {
                    version,
                    prev_version: version.saturating_sub(1),
                    entry: Some(d.entry),
                }),
                0,
            );
            for s in sessions.iter().filter(|s| Some(s.id) != exclude) {
                let out = Outbound::Push {
                    version,
                    frame: frame.clone(),
                };
                if let Err(mpsc::error::TrySendError::Full(_)) = s.tx.try_send(out) {
                    s.close(Some(kick(
                        KickReason::SlowConsumer,
                        "outbound queue full; reconnect and sync",
                    )));
                }
            }
        }
    }

    /// Sends GROUP_NOTIFY {group, last_seq} to every online session of `members` except
    /// session `exclude`.
    pub fn notify_group(
        &self,
        group_id: &str,
        last_seq: u64,
        members: &[String],
        exclude: Option<u64>,
    ) {
        let frame = Frame::new(
            &Packet::GroupNotify(GroupNotify {
                group_id: group_id.to_owned(),
                last_seq,
                unread: 0,
            }),
            0,
        );
        let users = self.users.read();
        for m in members {
            let Some(sessions) = users.get(m) else {
                continue;
            };
            for s in sessions.iter().filter(|s| Some(s.id) != exclude) {
                if let Err(mpsc::error::TrySendError::Full(_)) =
                    s.tx.try_send(Outbound::Frame(frame.clone()))
                {
                    s.close(Some(kick(
                        KickReason::SlowConsumer,
                        "outbound queue full; reconnect and sync",
                    )));
                }
            }
        }
    }

    /// Every online session.
    pub fn sessions(&self) -> Vec<Arc<SessionHandle>> {
        self.users.read().values().flatten().cloned().collect()
    }

    /// The online sessions of one user.
    pub fn sessions_of(&self, user: &str) -> Vec<Arc<SessionHandle>> {
        self.users.read().get(user).cloned().unwrap_or_default()
    }

    pub fn online_count(&self) -> usize {
        self.users.read().values().map(Vec::len).sum()
    }
}
