//! Helpers for end-to-end tests that drive raw [`Connection`]s: every wait is bounded, every
//! unexpected frame is a panic that names what arrived instead.
#![allow(dead_code)]

use std::time::Duration;

use missive_client::{pb, ClientError, Connection};
use missive_protocol::pb::inbox_entry::Body;
use missive_protocol::{Command, ErrorCode, Frame, Packet, DEFAULT_MAX_FRAME_LEN};
use tokio::sync::mpsc::UnboundedReceiver;

/// The longest any single expected frame may take to arrive.
pub const WAIT: Duration = Duration::from_secs(5);

/// A DIRECT conversation with `id`.
pub fn dm(id: &str) -> pb::Conversation {
    missive_client::direct(id)
}

/// The next frame and its decoded body; panics on close, transport error or timeout.
pub async fn recv(conn: &mut Connection) -> (Frame, Packet) {
    match tokio::time::timeout(WAIT, conn.recv_frame()).await {
        Ok(Ok(Some(frame))) => {
            let packet = frame
                .packet(DEFAULT_MAX_FRAME_LEN)
                .unwrap_or_else(|e| panic!("undecodable frame from the server: {e}"));
            (frame, packet)
        }
        Ok(Ok(None)) => panic!("server closed the connection, a frame was expected"),
        Ok(Err(e)) => panic!("connection failed while a frame was expected: {e}"),
        Err(_) => panic!("no frame within {WAIT:?}"),
    }
}

/// The next frame, which must be a PUSH (request id 0).
pub async fn recv_push(conn: &mut Connection) -> (Frame, pb::Push) {
    let (frame, packet) = recv(conn).await;
    match packet {
        Packet::Push(p) => {
            assert_eq!(frame.request_id, 0, "PUSH carries request id 0");
            (frame, p)
        }
        other => panic!("expected PUSH, got {other:?}"),
    }
}

/// The next frame, which must be a KICK (request id 0); the server must close right after.
pub async fn expect_kick(conn: &mut Connection) -> pb::Kick {
    let (frame, packet) = recv(conn).await;
    let Packet::Kick(k) = packet else {
        panic!("expected KICK, got {packet:?}");
    };
    assert_eq!(frame.request_id, 0, "KICK carries request id 0");
    expect_closed(conn, WAIT).await;
    k
}

/// The next frame, which must be an ERROR; returns it and its request id.
pub async fn expect_error(conn: &mut Connection) -> (u32, pb::Error) {
    let (frame, packet) = recv(conn).await;
    let Packet::Error(e) = packet else {
        panic!("expected ERROR, got {packet:?}");
    };
    (frame.request_id, e)
}

/// The next frame must be a fatal ERROR `code` with request id `rid`, then the server closes.
pub async fn expect_fatal(conn: &mut Connection, rid: u32, code: ErrorCode) {
    let (got_rid, e) = expect_error(conn).await;
    assert_eq!(
        ErrorCode::from_u32(e.code),
        Some(code),
        "error code (message {:?})",
        e.message
    );
    assert!(e.fatal, "{} must be marked fatal", code.name());
    assert_eq!(got_rid, rid, "request id of the ERROR");
    expect_closed(conn, WAIT).await;
}

/// The server closes the connection within `within` without sending another frame. A reset
/// counts as a close.
pub async fn expect_closed(conn: &mut Connection, within: Duration) {
    match tokio::time::timeout(within, conn.recv_frame()).await {
        Ok(Ok(None)) => {}
        Ok(Err(ClientError::Io(_))) | Ok(Err(ClientError::Protocol(_))) => {}
        Ok(Err(e)) => panic!("unexpected error while waiting for the close: {e}"),
        Ok(Ok(Some(frame))) => panic!(
            "expected the server to close, got a frame: {:?}",
            frame.packet(DEFAULT_MAX_FRAME_LEN)
        ),
        Err(_) => panic!("the server did not close the connection within {within:?}"),
    }
}

/// No frame arrives for `quiet`, and the connection stays open.
pub async fn expect_silence(conn: &mut Connection, quiet: Duration) {
    match tokio::time::timeout(quiet, conn.recv_frame()).await {
        Err(_) => {}
        Ok(Ok(Some(frame))) => panic!(
            "expected no frame for {quiet:?}, got {:?} (flags {:?})",
            frame.packet(DEFAULT_MAX_FRAME_LEN),
            frame.flags
        ),
        Ok(Ok(None)) => panic!("expected no frame for {quiet:?}, but the server closed"),
        Ok(Err(e)) => panic!("expected no frame for {quiet:?}, but the connection failed: {e}"),
    }
}

/// A request that must succeed; returns the reply body.
pub async fn request(conn: &mut Connection, packet: Packet) -> Packet {
    let what = packet.command().name();
    match conn.request_timeout(packet, WAIT).await {
        Ok(reply) => reply,
        Err(e) => panic!("{what} failed: {e}"),
    }
}

/// A request that must be refused; returns the error code and whether it was fatal.
pub async fn request_err(conn: &mut Connection, packet: Packet) -> (ErrorCode, bool) {
    let what = packet.command().name();
    match conn.request_timeout(packet, WAIT).await {
        Ok(reply) => panic!("{what} should have been refused, got {reply:?}"),
        Err(ClientError::Server { code, fatal, .. }) => (
            ErrorCode::from_u32(code).unwrap_or_else(|| panic!("unknown error code {code}")),
            fatal,
        ),
        Err(e) => panic!("{what} should have been refused by the server, failed with {e}"),
    }
}

/// The server's refusal code of a reliable-client request result.
pub fn refused<T: std::fmt::Debug>(r: missive_client::Result<T>) -> ErrorCode {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(e) => e
            .server_code()
            .unwrap_or_else(|| panic!("expected a server refusal, got {e}")),
    }
}

/// A SEND body.
pub fn send_body(client_msg_id: &str, to: &str, content: &[u8]) -> pb::Send {
    pb::Send {
        client_msg_id: client_msg_id.to_owned(),
        to: Some(dm(to)),
        content_type: 1,
        content: content.to_vec(),
        ..Default::default()
    }
}

/// Sends a message on a raw connection and returns its SEND_ACK.
pub async fn raw_send(conn: &mut Connection, to: &str, content: &str) -> pb::SendAck {
    let body = send_body(&missive_client::new_client_msg_id(), to, content.as_bytes());
    match request(conn, Packet::Send(body)).await {
        Packet::SendAck(a) => a,
        other => panic!("expected SEND_ACK, got {other:?}"),
    }
}

/// One SYNC page.
pub async fn sync_page(conn: &mut Connection, since: u64, limit: u32) -> pb::SyncAck {
    match request(
        conn,
        Packet::Sync(pb::Sync {
            since_version: since,
            limit,
        }),
    )
    .await
    {
        Packet::SyncAck(p) => p,
        other => panic!("expected SYNC_ACK, got {other:?}"),
    }
}

/// UNREAD on a raw connection.
pub async fn raw_unread(conn: &mut Connection) -> pb::UnreadAck {
    match request(conn, Packet::Unread(pb::Unread::default())).await {
        Packet::UnreadAck(a) => a,
        other => panic!("expected UNREAD_ACK, got {other:?}"),
    }
}

/// Every contact, following `next_cursor` with pages of `limit`.
pub async fn raw_contacts_all(conn: &mut Connection, limit: u32) -> Vec<pb::Contact> {
    let mut out = Vec::new();
    let mut cursor = Vec::new();
    for _ in 0..100 {
        let page = match request(conn, Packet::Contacts(pb::Contacts { cursor, limit })).await {
            Packet::ContactsAck(a) => a,
            other => panic!("expected CONTACTS_ACK, got {other:?}"),
        };
        out.extend(page.contacts);
        if page.next_cursor.is_empty() {
            return out;
        }
        cursor = page.next_cursor;
    }
    panic!("contacts paging did not end after 100 pages");
}

/// MARK_READ on a raw connection.
pub async fn raw_mark_read(conn: &mut Connection, peer: &str, up_to_seq: u64) -> pb::MarkReadAck {
    let body = pb::MarkRead {
        conversation: Some(dm(peer)),
        up_to_seq,
    };
    match request(conn, Packet::MarkRead(body)).await {
        Packet::MarkReadAck(a) => a,
        other => panic!("expected MARK_READ_ACK, got {other:?}"),
    }
}

/// A HEARTBEAT that must be answered with the echo of `client_time_ms`.
pub async fn heartbeat_ok(conn: &mut Connection, client_time_ms: i64) {
    match request(
        conn,
        Packet::Heartbeat(pb::Heartbeat {
            client_time_ms,
            ..Default::default()
        }),
    )
    .await
    {
        Packet::HeartbeatAck(a) => assert_eq!(a.client_time_ms, client_time_ms, "echo"),
        other => panic!("expected HEARTBEAT_ACK, got {other:?}"),
    }
}

/// The body of an entry, or a panic.
pub fn body(entry: &pb::InboxEntry) -> &Body {
    entry.body.as_ref().expect("entry has a body")
}

/// The READ_SYNC of an entry, or a panic naming what it was instead.
pub fn read_sync(entry: &pb::InboxEntry) -> &pb::ReadSync {
    match body(entry) {
        Body::ReadSync(r) => r,
        other => panic!("expected a READ_SYNC entry, got {other:?}"),
    }
}

/// The RECALL of an entry, or a panic.
pub fn recall(entry: &pb::InboxEntry) -> &pb::Recall {
    match body(entry) {
        Body::Recall(r) => r,
        other => panic!("expected a RECALL entry, got {other:?}"),
    }
}

/// The DELETE of an entry, or a panic.
pub fn delete(entry: &pb::InboxEntry) -> &pb::Delete {
    match body(entry) {
        Body::Delete(d) => d,
        other => panic!("expected a DELETE entry, got {other:?}"),
    }
}

/// The entry of a PUSH.
pub fn pushed(push: &pb::Push) -> &pb::InboxEntry {
    push.entry.as_ref().expect("PUSH carries an entry")
}

/// The conversation id of an entry.
pub fn conv_id(entry: &pb::InboxEntry) -> &str {
    &entry.conversation.as_ref().expect("entry conversation").id
}

/// No inbox entry arrives on a reliable client's event stream for `quiet`.
pub async fn expect_no_entry(
    events: &mut UnboundedReceiver<missive_client::ClientEvent>,
    quiet: Duration,
) {
    let deadline = tokio::time::Instant::now() + quiet;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => return,
            Ok(Some(missive_client::ClientEvent::Entry(e))) => {
                panic!("expected no entry for {quiet:?}, got {e:?}")
            }
            Ok(Some(_)) => continue,
            Ok(None) => panic!("client event stream ended"),
        }
    }
}

/// A frame with an arbitrary command number and body.
pub fn frame_of(command: u16, request_id: u32, body: &[u8]) -> Frame {
    Frame {
        flags: Default::default(),
        command,
        request_id,
        body: bytes::Bytes::copy_from_slice(body),
    }
}

/// The command of a frame, by name (for messages).
pub fn command_name(frame: &Frame) -> &'static str {
    Command::from_u16(frame.command)
        .map(|c| c.name())
        .unwrap_or("unknown")
}

/// The contents of the message entries among `entries`, as text, in order.
pub fn message_texts(entries: &[pb::InboxEntry]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|e| match &e.body {
            Some(Body::Message(m)) => Some(String::from_utf8_lossy(&m.content).into_owned()),
            _ => None,
        })
        .collect()
}

/// Creates a group with `members` besides the creator; the group's conversation.
pub async fn create_group(conn: &mut Connection, members: &[&str]) -> pb::Conversation {
    let body = pb::GroupCreate {
        name: "g".into(),
        members: members.iter().map(|m| m.to_string()).collect(),
        ..Default::default()
    };
    match request(conn, Packet::GroupCreate(body)).await {
        Packet::GroupCreateAck(a) => pb::Conversation {
            kind: pb::ConversationKind::Group as i32,
            id: a.group.expect("group").group_id,
        },
        other => panic!("expected GROUP_CREATE_ACK, got {other:?}"),
    }
}
