//! What an honest user checks: everything a user's account shows, seen from a second device
//! (LOGIN_ACK, SYNC from 0, UNREAD, CONTACTS), and the store's own invariants.
#![allow(dead_code)]

use missive_client::{pb, Connection};
use missive_protocol::Packet;

use super::{sync_all, TestServer};

/// A user's whole account, as a freshly logged-in device sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub current_version: u64,
    pub unread_total: u64,
    pub entries: Vec<pb::InboxEntry>,
    pub unread: pb::UnreadAck,
    pub contacts: Vec<pb::Contact>,
    pub groups: Vec<pb::GroupInfo>,
}

/// Logs in as `user` on the device `observer` (replacing any earlier observer) and reads the
/// account. Reading changes nothing; pushes that arrive meanwhile are ignored.
pub async fn account(server: &TestServer, user: &str) -> Account {
    let (mut conn, login) = server.login(user, "observer").await;
    let entries = sync_all(&mut conn, 0).await;
    let unread = match request(&mut conn, Packet::Unread(pb::Unread::default())).await {
        Packet::UnreadAck(a) => a,
        other => panic!("expected UNREAD_ACK, got {other:?}"),
    };
    let mut contacts = Vec::new();
    let mut cursor = Vec::new();
    loop {
        let body = pb::Contacts { cursor, limit: 200 };
        let page = match request(&mut conn, Packet::Contacts(body)).await {
            Packet::ContactsAck(a) => a,
            other => panic!("expected CONTACTS_ACK, got {other:?}"),
        };
        contacts.extend(page.contacts);
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    let groups = match request(&mut conn, Packet::GroupList(pb::GroupList::default())).await {
        Packet::GroupListAck(a) => a.groups,
        other => panic!("expected GROUP_LIST_ACK, got {other:?}"),
    };
    Account {
        current_version: login.current_version,
        unread_total: login.unread_total,
        entries,
        unread,
        contacts,
        groups,
    }
}

async fn request(conn: &mut Connection, packet: Packet) -> Packet {
    let what = packet.command().name();
    conn.request_timeout(packet, std::time::Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("observer {what} failed: {e}"))
}

/// The store's invariants for each user: inbox versions 1..=n without gaps, unread counts equal
/// to a recount from the conversation logs and summing to the total.
pub fn check_store(server: &TestServer, users: &[&str]) {
    let store = server.handle().store();
    for u in users {
        store
            .core()
            .check_user(u)
            .unwrap_or_else(|e| panic!("store invariants of {u}: {e}"));
    }
}
