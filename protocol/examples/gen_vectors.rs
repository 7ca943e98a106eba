//! Regenerates the test vectors in `protocol/vectors/` with the real codec.
//!
//! ```text
//! cargo run -p missive-protocol --example gen_vectors
//! ```
//!
//! Output is deterministic (fixed timestamps and ids), so rerunning it on an unchanged codec
//! rewrites the same files, except possibly the compressed vector: zlib output may differ
//! between flate2 versions (tests/vectors.rs does not compare compressed bytes).

use std::path::{Path, PathBuf};

use missive_protocol::frame::{Flags, Frame};
use missive_protocol::pb::{self, inbox_entry::Body};
use missive_protocol::{token, ErrorCode, Packet, DEFAULT_MAX_FRAME_LEN, MAGIC, PROTOCOL_VERSION};
use serde::Serialize;
use serde_json::{json, Value};

/// 2025-11-24T16:00:00Z in milliseconds: the base of every timestamp in the vectors.
const T: i64 = 1_764_000_000_000;

/// Group ids as the server makes them: `g` and 128 random bits in hex.
const G_HIKING: &str = "g3f9c2a7e51b04d68a1e0c5f27b9d3e46";
const G_BIG: &str = "g8d41e06b2c7f95a3e10b6d4c2f9a7e58";

fn msg_id(at_ms: i64, counter: u64) -> u64 {
    ((at_ms as u64) << 22) | counter
}

fn direct(id: &str) -> Option<pb::Conversation> {
    Some(pb::Conversation {
        kind: pb::ConversationKind::Direct as i32,
        id: id.into(),
    })
}

fn group(id: &str) -> Option<pb::Conversation> {
    Some(pb::Conversation {
        kind: pb::ConversationKind::Group as i32,
        id: id.into(),
    })
}

/// A text message from `from` in `conv` (as seen by the reader).
fn text(from: &str, conv: Option<pb::Conversation>, seq: u64, at: i64, body: &str) -> pb::Message {
    pb::Message {
        msg_id: msg_id(at, seq % 4096),
        from_user: from.into(),
        conversation: conv,
        seq,
        timestamp_ms: at,
        content_type: 1,
        content: body.as_bytes().to_vec(),
        client_msg_id: format!("{from}-{seq:08}"),
        recalled: false,
        ..Default::default()
    }
}

fn entry(version: u64, conv: Option<pb::Conversation>, at: i64, body: Body) -> pb::InboxEntry {
    pb::InboxEntry {
        version,
        conversation: conv,
        timestamp_ms: at,
        body: Some(body),
    }
}

fn push(e: pb::InboxEntry) -> Packet {
    Packet::Push(pb::Push {
        version: e.version,
        prev_version: e.version - 1,
        entry: Some(e),
    })
}

fn group_info(
    id: &str,
    name: &str,
    members: u32,
    fanout: pb::FanoutMode,
    last_seq: u64,
) -> pb::GroupInfo {
    pb::GroupInfo {
        group_id: id.into(),
        name: name.into(),
        owner: "alice".into(),
        member_count: members,
        history: pb::HistoryVisibility::Full as i32,
        fanout: fanout as i32,
        last_seq,
        join_policy: pb::JoinPolicy::Invite as i32,
    }
}

#[derive(Serialize)]
struct Valid {
    name: String,
    command: &'static str,
    request_id: u32,
    flags: u8,
    note: String,
    body: Value,
    hex: String,
}

#[derive(Serialize)]
struct Invalid {
    name: String,
    expected_error: &'static str,
    fatal: bool,
    /// The server refuses it, but a standard protobuf runtime may parse it (PROTOCOL.md 7).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    receiver_may_accept: bool,
    note: String,
    hex: String,
}

struct Gen {
    valid: Vec<Valid>,
    invalid: Vec<Invalid>,
}

impl Gen {
    fn frame(&mut self, name: &str, packet: Packet, request_id: u32, note: &str) {
        let frame = Frame::new(&packet, request_id);
        self.add(name, &packet, frame, note);
    }

    fn add(&mut self, name: &str, packet: &Packet, frame: Frame, note: &str) {
        assert_eq!(&frame.packet(DEFAULT_MAX_FRAME_LEN).unwrap(), packet);
        self.valid.push(Valid {
            name: name.into(),
            command: packet.command().name(),
            request_id: frame.request_id,
            flags: frame.flags.0,
            note: note.into(),
            body: packet.body_to_json(),
            hex: hex::encode(frame.to_bytes()),
        });
    }

    fn bad(&mut self, name: &str, bytes: &[u8], note: &str) {
        let code = missive_protocol_error(bytes);
        self.invalid.push(Invalid {
            name: name.into(),
            expected_error: code.name(),
            fatal: code.is_fatal(),
            receiver_may_accept: false,
            note: note.into(),
            hex: hex::encode(bytes),
        });
    }

    /// Like [`Gen::bad`], for a body the server refuses but other runtimes may accept.
    fn lenient(&mut self, name: &str, bytes: &[u8], note: &str) {
        self.bad(name, bytes, note);
        if let Some(last) = self.invalid.last_mut() {
            last.receiver_may_accept = true;
        }
    }
}

/// Runs the bytes through the decoder as a receiver does: decode, end of stream, then the body.
fn missive_protocol_error(bytes: &[u8]) -> missive_protocol::ErrorCode {
    use tokio_util::codec::Decoder;
    let mut codec = missive_protocol::FrameCodec::default();
    let mut buf = bytes::BytesMut::from(bytes);
    let frame = match codec.decode(&mut buf) {
        Err(e) => return e.code(),
        Ok(Some(f)) => f,
        Ok(None) => match codec.decode_eof(&mut buf) {
            Err(e) => return e.code(),
            Ok(_) => panic!("invalid vector decoded fine"),
        },
    };
    match frame.packet(codec.max_frame_len()) {
        Err(e) => e.code(),
        Ok(_) => panic!("invalid vector decoded fine"),
    }
}

/// A frame with every header field chosen freely and a correct CRC (unless `length` is forced).
fn raw(
    length: Option<u32>,
    magic: [u8; 2],
    version: u8,
    flags: u8,
    command: u16,
    rid: u32,
    body: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    let len = length.unwrap_or((10 + body.len() + 4) as u32);
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(&magic);
    v.push(version);
    v.push(flags);
    v.extend_from_slice(&command.to_be_bytes());
    v.extend_from_slice(&rid.to_be_bytes());
    v.extend_from_slice(body);
    let crc = crc32fast::hash(&v);
    v.extend_from_slice(&crc.to_be_bytes());
    v
}

fn zlib(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn valid_vectors(g: &mut Gen) {
    let tok = token::mint(b"secret", "alice", "phone", 1_900_000_000);

    // Session.
    g.frame(
        "login",
        Packet::Login(pb::Login {
            token: tok,
            device_id: "phone".into(),
            platform: pb::Platform::Ios as i32,
            last_version: 41,
            client_version: "MyApp/3.2 iOS/17".into(),
            ..Default::default()
        }),
        1,
        "First frame of a connection; token minted with secret \"secret\" for alice/phone, expires 1900000000",
    );
    g.frame(
        "login_ack",
        Packet::LoginAck(pb::LoginAck {
            user_id: "alice".into(),
            server_time_ms: T,
            heartbeat_interval_secs: 30,
            current_version: 42,
            unread_total: 3,
            session_id: 7,
            heartbeat_timeout_secs: 60,
        }),
        1,
        "current_version 42 > last_version 41: the client SYNCs from 41",
    );
    g.frame(
        "login_background_long_heartbeat",
        Packet::Login(pb::Login {
            token: token::mint(b"secret", "alice", "phone", 1_900_000_000),
            device_id: "phone".into(),
            platform: pb::Platform::Android as i32,
            last_version: 41,
            client_version: "MyApp/3.2 Android/15".into(),
            heartbeat_secs: 240,
            background: true,
        }),
        1,
        "Proposes a 240 s heartbeat and starts in the background (section 11)",
    );
    g.frame(
        "login_ack_long_heartbeat",
        Packet::LoginAck(pb::LoginAck {
            user_id: "alice".into(),
            server_time_ms: T,
            heartbeat_interval_secs: 240,
            current_version: 42,
            unread_total: 3,
            session_id: 8,
            heartbeat_timeout_secs: 480,
        }),
        1,
        "The proposal was within the server's bounds: 240 s in force, closed after 480 s of silence",
    );
    g.frame(
        "heartbeat",
        Packet::Heartbeat(pb::Heartbeat {
            client_time_ms: T + 30_000,
            ..Default::default()
        }),
        2,
        "Annotated byte by byte in PROTOCOL.md",
    );
    g.frame(
        "heartbeat_ack",
        Packet::HeartbeatAck(pb::HeartbeatAck {
            server_time_ms: T + 30_012,
            client_time_ms: T + 30_000,
            interval_secs: 30,
            timeout_secs: 60,
            app_state: pb::AppState::Foreground as i32,
        }),
        2,
        "Echoes client_time_ms; the interval, timeout and app state in force",
    );
    g.frame(
        "heartbeat_to_background",
        Packet::Heartbeat(pb::Heartbeat {
            client_time_ms: T + 60_000,
            set_interval_secs: 600,
            app_state: pb::AppState::Background as i32,
        }),
        4,
        "The app went to the background: asks for 600 s in the same frame",
    );
    g.frame(
        "heartbeat_ack_background",
        Packet::HeartbeatAck(pb::HeartbeatAck {
            server_time_ms: T + 60_009,
            client_time_ms: T + 60_000,
            interval_secs: 600,
            timeout_secs: 1200,
            app_state: pb::AppState::Background as i32,
        }),
        4,
        "600 s in force (within heartbeat_max_secs), background",
    );
    g.frame(
        "heartbeat_zero",
        Packet::Heartbeat(pb::Heartbeat {
            client_time_ms: 0,
            ..Default::default()
        }),
        3,
        "All fields at their defaults: the body is empty (length field 14)",
    );

    // Send.
    let cmid = "6f1c2a9e-0b3d-4c55-9a7e-1d2f3a4b5c6d";
    let sent_at = T + 31_000;
    g.frame(
        "send_direct",
        Packet::Send(pb::Send {
            client_msg_id: cmid.into(),
            to: direct("bob"),
            content_type: 1,
            content: b"hello bob".to_vec(),
            ..Default::default()
        }),
        4,
        "alice -> bob, content_type 1 (application-defined), content is raw bytes",
    );
    let ack = pb::SendAck {
        client_msg_id: cmid.into(),
        msg_id: msg_id(sent_at, 0),
        seq: 17,
        timestamp_ms: sent_at,
        version: 43,
        duplicate: false,
        content: Vec::new(),
    };
    g.frame(
        "send_ack",
        Packet::SendAck(ack.clone()),
        4,
        "Stored: msg_id = (31000 ms after T) << 22 | 0, seq 17 in alice<->bob, version 43 in alice's inbox",
    );
    g.frame(
        "send_ack_duplicate",
        Packet::SendAck(pb::SendAck {
            duplicate: true,
            ..ack.clone()
        }),
        9,
        "The same client_msg_id sent again (request 9): the original ack with duplicate = true",
    );
    g.frame(
        "send_ack_masked",
        Packet::SendAck(pb::SendAck {
            msg_id: ack.msg_id + 1,
            seq: ack.seq + 1,
            version: ack.version + 1,
            content: b"oh ****, see you".to_vec(),
            ..ack.clone()
        }),
        10,
        "Stored with a word masked by the server's word filter: content is the message as stored (section 15.8)",
    );
    g.frame(
        "send_group",
        Packet::Send(pb::Send {
            client_msg_id: "a7d3c1f0-5e2b-4d8a-9c6f-0b1e2d3c4f5a".into(),
            to: group(G_HIKING),
            content_type: 2,
            content: vec![0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a],
            ..Default::default()
        }),
        10,
        "To a group; content is arbitrary bytes (here the first bytes of a PNG)",
    );

    // Push.
    let bob_at = T + 40_000;
    let bob_msg = text("bob", direct("bob"), 18, bob_at, "hi alice");
    let e44 = entry(44, direct("bob"), bob_at, Body::Message(bob_msg.clone()));
    g.frame(
        "push_message",
        push(e44.clone()),
        0,
        "Server-initiated: request id 0. conversation.id is the other user (bob) as seen by alice",
    );
    let p = push(e44);
    let f = Frame::new(&p, 0).retransmitted();
    g.add(
        "push_message_retransmit",
        &p,
        f,
        "The same PUSH resent after ack_timeout with the RETRANSMIT flag (0x02)",
    );
    g.frame(
        "push_read_sync",
        push(entry(
            45,
            direct("bob"),
            T + 41_000,
            Body::ReadSync(pb::ReadSync {
                up_to_seq: 18,
                unread: 0,
            }),
        )),
        0,
        "Another device of alice read alice<->bob up to seq 18; clear the badge",
    );
    g.frame(
        "push_recall",
        push(entry(
            46,
            direct("bob"),
            T + 42_000,
            Body::Recall(pb::Recall {
                msg_id: bob_msg.msg_id,
                seq: 18,
                by_user: "bob".into(),
            }),
        )),
        0,
        "bob recalled seq 18: show it as recalled, drop its content",
    );
    g.frame(
        "push_delete",
        push(entry(
            47,
            direct("bob"),
            T + 43_000,
            Body::Delete(pb::Delete {
                msg_id: msg_id(sent_at, 0),
            }),
        )),
        0,
        "alice deleted her message from her own view (on another device)",
    );
    g.frame(
        "push_group_event",
        push(entry(
            48,
            group(G_HIKING),
            T + 44_000,
            Body::GroupEvent(pb::GroupEvent {
                kind: pb::GroupEventKind::Joined as i32,
                user_id: "carol".into(),
                by_user: "alice".into(),
                role: pb::GroupRole::Member as i32,
            }),
        )),
        0,
        "carol was added to the Hiking group by alice",
    );
    g.frame(
        "push_ack",
        Packet::PushAck(pb::PushAck { version: 44 }),
        5,
        "Cumulative: acknowledges every push with version <= 44. No reply",
    );

    // Sync.
    g.frame(
        "sync",
        Packet::Sync(pb::Sync {
            since_version: 41,
            limit: 0,
        }),
        6,
        "Entries after 41; limit 0 = server default (200)",
    );
    let e42 = entry(
        42,
        direct("bob"),
        T - 5_000,
        Body::Message(text("bob", direct("bob"), 16, T - 5_000, "are you there?")),
    );
    g.frame(
        "sync_ack",
        Packet::SyncAck(pb::SyncAck {
            entries: vec![e42],
            new_version: 42,
            has_more: false,
            current_version: 42,
        }),
        6,
        "One entry; has_more false: the client is up to date at 42",
    );
    g.frame(
        "sync_ack_empty",
        Packet::SyncAck(pb::SyncAck {
            entries: vec![],
            new_version: 42,
            has_more: false,
            current_version: 42,
        }),
        11,
        "Nothing after since_version 42: new_version = since_version",
    );
    let mut entries = Vec::new();
    for i in 0..64u64 {
        let at = T - 3_600_000 + i as i64 * 1_000;
        let peer = if i % 3 == 0 { "carol" } else { "bob" };
        let from = if i % 2 == 0 { peer } else { "alice" };
        entries.push(entry(
            100 + i,
            direct(peer),
            at,
            Body::Message(text(
                from,
                direct(peer),
                1 + i,
                at,
                &format!("message number {i} in a long page of history"),
            )),
        ));
    }
    let big = Packet::SyncAck(pb::SyncAck {
        entries,
        new_version: 163,
        has_more: true,
        current_version: 400,
    });
    let f = Frame::compressed_above(&big, 12, 1024);
    assert!(f.flags.compressed());
    g.add(
        "sync_ack_compressed",
        &big,
        f,
        "A 64-entry page: the body is >= 1024 bytes, so the server zlib-compresses it (flag 0x01). \
         The compressed bytes may differ between zlib implementations; compare the decoded body",
    );

    // Contacts, unread, read, recall, delete.
    g.frame(
        "contacts_first_page",
        Packet::Contacts(pb::Contacts {
            cursor: vec![],
            limit: 2,
        }),
        13,
        "First page (empty cursor), 2 per page",
    );
    g.frame(
        "contacts_ack",
        Packet::ContactsAck(pb::ContactsAck {
            contacts: vec![
                pb::Contact {
                    conversation: direct("bob"),
                    last_message: Some(bob_msg.clone()),
                    unread: 1,
                    updated_ms: bob_at,
                    read_seq: 17,
                    peer_read_seq: 18,
                    muted: false,
                },
                pb::Contact {
                    conversation: group(G_HIKING),
                    last_message: Some(text("carol", group(G_HIKING), 5, T - 60_000, "lunch?")),
                    unread: 2,
                    updated_ms: T - 60_000,
                    read_seq: 3,
                    peer_read_seq: 0,
                    muted: false,
                },
            ],
            next_cursor: vec![0x01, 0x9a, 0xb4, 0x4c, 0x72, 0x60, 0x00, 0x03],
        }),
        13,
        "Newest activity first; next_cursor is opaque bytes, send it back as Contacts.cursor. \
         alice has read bob's chat up to seq 17 (read_seq), bob has read it up to 18 \
         (peer_read_seq: his own message 18); groups have no peer_read_seq (READERS)",
    );
    g.frame(
        "contacts_next_page",
        Packet::Contacts(pb::Contacts {
            cursor: vec![0x01, 0x9a, 0xb4, 0x4c, 0x72, 0x60, 0x00, 0x03],
            limit: 2,
        }),
        14,
        "Second page",
    );
    g.frame(
        "contacts_ack_last_page",
        Packet::ContactsAck(pb::ContactsAck {
            contacts: vec![],
            next_cursor: vec![],
        }),
        14,
        "Empty next_cursor: no more pages (empty body)",
    );
    g.frame(
        "unread",
        Packet::Unread(pb::Unread::default()),
        15,
        "First page (empty cursor, limit 0 = 200): empty body",
    );
    g.frame(
        "unread_ack",
        Packet::UnreadAck(pb::UnreadAck {
            total: 3,
            conversations: vec![
                pb::ConversationUnread {
                    conversation: direct("bob"),
                    unread: 1,
                    last_seq: 18,
                    read_seq: 17,
                },
                pb::ConversationUnread {
                    conversation: group(G_HIKING),
                    unread: 2,
                    last_seq: 5,
                    read_seq: 3,
                },
            ],
            next_cursor: vec![],
        }),
        15,
        "total equals the sum of the conversations' unread counts",
    );
    g.frame(
        "mark_read",
        Packet::MarkRead(pb::MarkRead {
            conversation: direct("bob"),
            up_to_seq: 18,
        }),
        16,
        "Read everything up to and including seq 18",
    );
    g.frame(
        "mark_read_ack",
        Packet::MarkReadAck(pb::MarkReadAck {
            unread: 0,
            total: 2,
            version: 49,
        }),
        16,
        "A READ_SYNC entry was written at version 49",
    );
    g.frame(
        "mark_read_ack_nothing_changed",
        Packet::MarkReadAck(pb::MarkReadAck {
            unread: 0,
            total: 2,
            version: 0,
        }),
        17,
        "Already read that far: version 0, nothing written",
    );
    g.frame(
        "recall",
        Packet::Recall(pb::RecallMessage {
            conversation: direct("bob"),
            msg_id: msg_id(sent_at, 0),
        }),
        18,
        "alice recalls her own message (within the recall window)",
    );
    g.frame(
        "recall_ack",
        Packet::RecallAck(pb::RecallAck { version: 50 }),
        18,
        "The RECALL entry's version in alice's inbox",
    );
    g.frame(
        "delete",
        Packet::Delete(pb::DeleteMessage {
            conversation: direct("bob"),
            msg_id: bob_msg.msg_id,
        }),
        19,
        "Delete bob's message from alice's own view",
    );
    g.frame(
        "delete_ack",
        Packet::DeleteAck(pb::DeleteAck { version: 51 }),
        19,
        "The DELETE entry's version in alice's inbox",
    );
    g.frame(
        "mute",
        Packet::Mute(pb::Mute {
            conversation: group(G_HIKING),
            muted: true,
        }),
        20,
        "No offline notifications for this group but @mentions (section 15.6)",
    );
    g.frame(
        "mute_ack",
        Packet::MuteAck(pb::MuteAck { muted: true }),
        20,
        "The state now",
    );
    g.frame(
        "block",
        Packet::Block(pb::Block {
            user_id: "mallory".into(),
            blocked: true,
        }),
        21,
        "alice blocks mallory: direct messages between them are refused with BLOCKED (section 15.7)",
    );
    g.frame(
        "block_ack",
        Packet::BlockAck(pb::BlockAck { blocked: true }),
        21,
        "The state now",
    );
    g.frame(
        "block_list",
        Packet::BlockList(pb::BlockList {
            after: String::new(),
            limit: 0,
        }),
        22,
        "The first page of the users alice blocked, default size",
    );
    g.frame(
        "block_list_ack",
        Packet::BlockListAck(pb::BlockListAck {
            user_ids: vec!["mallory".into()],
            has_more: false,
            total: 1,
        }),
        22,
        "One user blocked in all",
    );
    g.frame(
        "send_with_mentions",
        Packet::Send(pb::Send {
            client_msg_id: "0c9d3a7e-2f41-4b8a-9e6d-5a1b2c3d4e5f".into(),
            to: group(G_HIKING),
            content_type: 1,
            content: b"@bob @carol lunch?".to_vec(),
            mentions: vec!["bob".into(), "carol".into()],
            media: Vec::new(),
        }),
        21,
        "A group message that @mentions bob and carol: they are notified even if they muted the group",
    );
    g.frame(
        "send_with_media",
        Packet::Send(pb::Send {
            client_msg_id: "5b2e8f10-7c3d-4e9a-b1f6-0a9c8d7e6f50".into(),
            to: direct("bob"),
            content_type: 2,
            content: b"the view from the top".to_vec(),
            media: vec![pb::MediaRef {
                media_id: "9f86d081884c7d659a2feaa0c55ad015".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        23,
        "A message carrying an uploaded photo (section 28): only media_id is sent; the caption is the app's content",
    );
    let photo_at = T + 95_000;
    let photo = pb::Message {
        content_type: 2,
        content: b"the view from the top".to_vec(),
        media: vec![pb::MediaRef {
            media_id: "9f86d081884c7d659a2feaa0c55ad015".into(),
            content_type: "image/jpeg".into(),
            size: 2_483_117,
            width: 4032,
            height: 3024,
            duration_ms: 0,
            preview: vec![0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10],
            thumbnail: true,
            sha256: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae".into(),
        }],
        ..text("alice", direct("alice"), 31, photo_at, "")
    };
    g.frame(
        "push_message_with_media",
        push(entry(58, direct("alice"), photo_at, Body::Message(photo))),
        0,
        "Bob's PUSH of it: the server filled in the MediaRef (type, size, dimensions, a preview, shortened here, the thumbnail flag, the sha-256)",
    );

    // Groups.
    g.frame(
        "group_create",
        Packet::GroupCreate(pb::GroupCreate {
            name: "Hiking".into(),
            members: vec!["bob".into(), "carol".into()],
            history: pb::HistoryVisibility::FromJoin as i32,
            join_policy: pb::JoinPolicy::Invite as i32,
        }),
        20,
        "alice becomes the owner; bob and carol are added. Invite-only (join_policy 0, absent)",
    );
    g.frame(
        "group_create_open",
        Packet::GroupCreate(pb::GroupCreate {
            name: "Town square".into(),
            members: vec![],
            history: pb::HistoryVisibility::Full as i32,
            join_policy: pb::JoinPolicy::Open as i32,
        }),
        26,
        "An OPEN group: anyone who knows its id may join it with an empty GROUP_JOIN",
    );
    let hiking = pb::GroupInfo {
        history: pb::HistoryVisibility::FromJoin as i32,
        ..group_info(G_HIKING, "Hiking", 3, pb::FanoutMode::Write, 0)
    };
    g.frame(
        "group_create_ack",
        Packet::GroupCreateAck(pb::GroupAck {
            group: Some(hiking.clone()),
        }),
        20,
        "Write fan-out (3 members <= fanout_threshold)",
    );
    g.frame(
        "group_join",
        Packet::GroupJoin(pb::GroupJoin {
            group_id: G_HIKING.into(),
            user_ids: vec!["dave".into()],
        }),
        21,
        "Owner/admin adds dave; an empty user_ids list joins an OPEN group oneself",
    );
    g.frame(
        "group_join_ack",
        Packet::GroupJoinAck(pb::GroupAck {
            group: Some(pb::GroupInfo {
                member_count: 4,
                ..hiking.clone()
            }),
        }),
        21,
        "",
    );
    g.frame(
        "group_leave",
        Packet::GroupLeave(pb::GroupLeave {
            group_id: G_HIKING.into(),
            user_id: String::new(),
        }),
        22,
        "Empty user_id: leave oneself",
    );
    g.frame(
        "group_leave_ack",
        Packet::GroupLeaveAck(pb::GroupAck {
            group: Some(pb::GroupInfo {
                member_count: 3,
                ..hiking.clone()
            }),
        }),
        22,
        "",
    );
    g.frame(
        "group_members",
        Packet::GroupMembers(pb::GroupMembers {
            group_id: G_HIKING.into(),
            cursor: vec![],
            limit: 0,
        }),
        23,
        "First page (limit 0 = 500)",
    );
    g.frame(
        "group_members_ack",
        Packet::GroupMembersAck(pb::GroupMembersAck {
            group: Some(hiking.clone()),
            members: vec![
                pb::GroupMember {
                    user_id: "alice".into(),
                    role: pb::GroupRole::Owner as i32,
                    joined_ms: T,
                    joined_seq: 0,
                },
                pb::GroupMember {
                    user_id: "bob".into(),
                    role: pb::GroupRole::Admin as i32,
                    joined_ms: T,
                    joined_seq: 0,
                },
                pb::GroupMember {
                    user_id: "carol".into(),
                    role: pb::GroupRole::Member as i32,
                    joined_ms: T + 44_000,
                    joined_seq: 17,
                },
            ],
            next_cursor: vec![],
        }),
        23,
        "role MEMBER is 0, so carol's role field is absent from the encoding",
    );
    g.frame(
        "group_list",
        Packet::GroupList(pb::GroupList::default()),
        24,
        "First page (empty cursor, limit 0 = 100): empty body",
    );
    g.frame(
        "group_list_ack",
        Packet::GroupListAck(pb::GroupListAck {
            groups: vec![
                hiking.clone(),
                group_info(G_BIG, "Announcements", 5000, pb::FanoutMode::Read, 1234),
            ],
            next_cursor: vec![],
        }),
        24,
        "Announcements is over fanout_threshold: read fan-out (GROUP_NOTIFY + GROUP_HISTORY)",
    );
    g.frame(
        "group_history",
        Packet::GroupHistory(pb::GroupHistory {
            group_id: G_BIG.into(),
            before_seq: 0,
            after_seq: 1230,
            limit: 50,
            order: pb::HistoryOrder::OldestFirst as i32,
        }),
        25,
        "Catch up: messages with seq > 1230, oldest first",
    );
    g.frame(
        "group_history_from_the_start",
        Packet::GroupHistory(pb::GroupHistory {
            group_id: G_BIG.into(),
            before_seq: 0,
            after_seq: 0,
            limit: 50,
            order: pb::HistoryOrder::OldestFirst as i32,
        }),
        27,
        "Catch up holding nothing: after_seq 0 is absent from the encoding, so the order \
         OLDEST_FIRST (field 5 = 2) is what says 'from seq 1 on'",
    );
    g.frame(
        "group_history_newest",
        Packet::GroupHistory(pb::GroupHistory {
            group_id: G_BIG.into(),
            before_seq: 0,
            after_seq: 0,
            limit: 20,
            order: pb::HistoryOrder::NewestFirst as i32,
        }),
        28,
        "Scroll back: the newest 20 messages, newest first",
    );
    g.frame(
        "group_history_ack",
        Packet::GroupHistoryAck(pb::GroupHistoryAck {
            messages: (1231..=1234)
                .map(|s| {
                    text(
                        "bob",
                        group(G_BIG),
                        s,
                        T + s as i64,
                        &format!("announcement {s}"),
                    )
                })
                .collect(),
            has_more: false,
        }),
        25,
        "",
    );
    g.frame(
        "group_notify",
        Packet::GroupNotify(pb::GroupNotify {
            group_id: G_BIG.into(),
            last_seq: 1234,
            unread: 0,
            message: None,
            event: None,
        }),
        0,
        "Read fan-out group has new messages up to seq 1234; not acknowledged",
    );
    g.frame(
        "group_notify_member_joined",
        Packet::GroupNotify(pb::GroupNotify {
            group_id: G_BIG.into(),
            last_seq: 1234,
            unread: 0,
            message: None,
            event: Some(pb::GroupEvent {
                kind: pb::GroupEventKind::Joined as i32,
                user_id: "erin".into(),
                by_user: "alice".into(),
                role: pb::GroupRole::Member as i32,
            }),
        }),
        0,
        "A membership change in a read fan-out group: erin was added by alice",
    );
    g.frame(
        "group_set_role",
        Packet::GroupSetRole(pb::GroupSetRole {
            group_id: G_HIKING.into(),
            user_id: "bob".into(),
            role: pb::GroupRole::Admin as i32,
        }),
        29,
        "The owner makes bob an admin (role 0 = MEMBER takes it back)",
    );
    g.frame(
        "group_set_role_ack",
        Packet::GroupSetRoleAck(pb::GroupAck {
            group: Some(hiking.clone()),
        }),
        29,
        "",
    );
    g.frame(
        "group_notify_with_message",
        Packet::GroupNotify(pb::GroupNotify {
            group_id: G_BIG.into(),
            last_seq: 1235,
            unread: 0,
            event: None,
            message: Some(pb::Message {
                msg_id: msg_id(T + 60_000, 3),
                from_user: "alice".into(),
                conversation: Some(pb::Conversation {
                    kind: pb::ConversationKind::Group as i32,
                    id: G_BIG.into(),
                }),
                seq: 1235,
                timestamp_ms: T + 60_000,
                content_type: 1,
                content: b"hi all".to_vec(),
                client_msg_id: "c-77".into(),
                recalled: false,
                ..Default::default()
            }),
        }),
        0,
        "Read fan-out message 1235 carried in the notification: a member holding seq 1234 applies \
         it without a GROUP_HISTORY pull",
    );

    // Kick.
    g.frame(
        "kick_replaced",
        Packet::Kick(pb::Kick {
            reason: pb::KickReason::Replaced as i32,
            message: "logged in on another connection".into(),
            redirect_host: String::new(),
            redirect_port: 0,
            reconnect_after_ms: 0,
        }),
        0,
        "The same device logged in elsewhere; do NOT reconnect automatically",
    );
    g.frame(
        "kick_shutdown",
        Packet::Kick(pb::Kick {
            reason: pb::KickReason::Shutdown as i32,
            message: "server shutting down".into(),
            redirect_host: String::new(),
            redirect_port: 0,
            reconnect_after_ms: 2_137,
        }),
        0,
        "Reconnect to the same address after at least 2137 ms",
    );
    g.frame(
        "kick_redirect",
        Packet::Kick(pb::Kick {
            reason: pb::KickReason::Redirect as i32,
            message: "draining".into(),
            redirect_host: "im2.example.com".into(),
            redirect_port: 443,
            reconnect_after_ms: 500,
        }),
        0,
        "Reconnect to im2.example.com:443 after 500 ms",
    );
    g.frame(
        "kick_ack_timeout",
        Packet::Kick(pb::Kick {
            reason: pb::KickReason::AckTimeout as i32,
            message: "pushes not acknowledged".into(),
            redirect_host: String::new(),
            redirect_port: 0,
            reconnect_after_ms: 0,
        }),
        0,
        "Reconnect with normal backoff, then SYNC",
    );

    // Error.
    g.frame(
        "error_bad_crc",
        Packet::Error(pb::Error {
            code: ErrorCode::BadCrc as u32,
            message: "bad CRC32".into(),
            fatal: true,
            retry_after_ms: 0,
            reason: String::new(),
        }),
        0,
        "Fatal framing error: request id 0, the server closes the connection",
    );
    g.frame(
        "error_unknown_command",
        Packet::Error(pb::Error {
            code: ErrorCode::UnknownCommand as u32,
            message: "unknown command 0x0099".into(),
            fatal: false,
            retry_after_ms: 0,
            reason: String::new(),
        }),
        26,
        "Answers request 26; the connection stays open",
    );
    g.frame(
        "error_rate_limited",
        Packet::Error(pb::Error {
            code: ErrorCode::RateLimited as u32,
            message: "slow down".into(),
            fatal: false,
            retry_after_ms: 1_500,
            reason: String::new(),
        }),
        27,
        "Retry request 27 after 1500 ms",
    );
    g.frame(
        "error_token_expired",
        Packet::Error(pb::Error {
            code: ErrorCode::TokenExpired as u32,
            message: "token expired".into(),
            fatal: true,
            retry_after_ms: 0,
            reason: String::new(),
        }),
        1,
        "Answer to LOGIN (request 1); get a new token before reconnecting",
    );
    g.frame(
        "error_content_rejected",
        Packet::Error(pb::Error {
            code: ErrorCode::ContentRejected as u32,
            message: "the message has a word this server does not accept".into(),
            fatal: false,
            retry_after_ms: 0,
            reason: String::new(),
        }),
        29,
        "Answer to a SEND (request 29) the word filter refused: nothing was stored (section 15.8)",
    );
    g.frame(
        "error_content_rejected_by_hook",
        Packet::Error(pb::Error {
            code: ErrorCode::ContentRejected as u32,
            message: "links to that site are not allowed".into(),
            fatal: false,
            retry_after_ms: 0,
            reason: "link_not_allowed".into(),
        }),
        30,
        "Answer to a SEND (request 30) the app's moderation service rejected, with its code for why in reason (section 15.9)",
    );
    g.frame(
        "error_moderation_unavailable",
        Packet::Error(pb::Error {
            code: ErrorCode::ModerationUnavailable as u32,
            message: "moderation is unavailable: send it again later".into(),
            fatal: false,
            retry_after_ms: 0,
            reason: String::new(),
        }),
        30,
        "Answer to a SEND (request 30) while the app's moderation service is down: send it again later, same client_msg_id (section 15.9)",
    );
    g.frame(
        "error_blocked",
        Packet::Error(pb::Error {
            code: ErrorCode::Blocked as u32,
            message: "alice does not accept your messages".into(),
            fatal: false,
            retry_after_ms: 0,
            reason: String::new(),
        }),
        28,
        "Answer to a SEND (request 28) to a user who blocked the sender: nothing was stored",
    );

    // Ephemeral signals (section 26).
    g.frame(
        "signal_typing",
        Packet::Signal(pb::Signal {
            to: direct("bob"),
            kind: pb::SignalKind::Typing as i32,
            payload: Vec::new(),
        }),
        31,
        "alice is typing to bob; no reply unless refused (an ERROR with request id 31)",
    );
    g.frame(
        "signal_app",
        Packet::Signal(pb::Signal {
            to: group(G_HIKING),
            kind: pb::SignalKind::App as i32,
            payload: b"recording-audio".to_vec(),
        }),
        32,
        "An app-defined signal to a group: the payload (at most 256 bytes) is the app's",
    );
    g.frame(
        "signal_notify_typing",
        Packet::SignalNotify(pb::SignalNotify {
            conversation: direct("alice"),
            from_user: "alice".into(),
            kind: pb::SignalKind::Typing as i32,
            payload: Vec::new(),
        }),
        0,
        "What bob receives: the direct conversation as bob sees it (id = alice); not acknowledged",
    );
    g.frame(
        "signal_notify_typing_stopped_group",
        Packet::SignalNotify(pb::SignalNotify {
            conversation: group(G_HIKING),
            from_user: "alice".into(),
            kind: pb::SignalKind::TypingStopped as i32,
            payload: Vec::new(),
        }),
        0,
        "alice stopped typing in a group, as every other member online sees it",
    );

    // Conversation history, read positions and receipts (PROTOCOL.md 24, 25).
    g.frame(
        "history_direct_newest",
        Packet::History(pb::History {
            conversation: direct("bob"),
            before_seq: 0,
            after_seq: 0,
            limit: 3,
            order: pb::HistoryOrder::NewestFirst as i32,
        }),
        30,
        "A fresh device opens the chat with bob: the newest messages (3 here; 0 = 50), newest \
         first, in one round trip (no SYNC from version 0)",
    );
    let page: Vec<pb::Message> = (99_998..=100_000u64)
        .rev()
        .map(|s| {
            let from = if s.is_multiple_of(2) { "bob" } else { "alice" };
            let at = T + 200_000 + (s as i64 - 99_998) * 1_000;
            text(from, direct("bob"), s, at, &format!("message {s}"))
        })
        .collect();
    g.frame(
        "history_ack",
        Packet::HistoryAck(pb::HistoryAck {
            messages: page,
            has_more: true,
            last_seq: 100_000,
            read_seq: 99_990,
            peer_read_seq: 100_000,
            next_seq: 99_998,
        }),
        30,
        "Seqs 100000 down to 99998; has_more: ask again with before_seq = next_seq (99998). \
         alice has read up to 99990, bob up to 100000",
    );
    g.frame(
        "history_ack_empty",
        Packet::HistoryAck(pb::HistoryAck::default()),
        31,
        "A direct conversation without messages: an empty page, not an error (empty body)",
    );
    g.frame(
        "history_group_catch_up",
        Packet::History(pb::History {
            conversation: group(G_BIG),
            before_seq: 0,
            after_seq: 1230,
            limit: 0,
            order: pb::HistoryOrder::OldestFirst as i32,
        }),
        32,
        "A group through HISTORY (as GROUP_HISTORY, for members only): seqs after 1230, oldest \
         first; limit 0 = 50",
    );
    g.frame(
        "readers",
        Packet::Readers(pb::Readers {
            group_id: G_HIKING.into(),
            seq: 5,
            cursor: vec![],
            limit: 0,
        }),
        33,
        "Who has read message 5 of Hiking? First page of members (limit 0 = 500)",
    );
    g.frame(
        "readers_ack",
        Packet::ReadersAck(pb::ReadersAck {
            read_by: vec!["alice".into(), "dave".into()],
            next_cursor: vec![],
        }),
        33,
        "Members whose read position is at or past seq 5, the sender (carol) left out; empty \
         next_cursor: the last page",
    );
    g.frame(
        "receipt",
        Packet::Receipt(pb::Receipt {
            conversation: direct("bob"),
            reader: "bob".into(),
            up_to_seq: 100_000,
            read_ms: T + 300_000,
        }),
        0,
        "Server-initiated, not acknowledged: bob (seen by alice as the conversation direct:bob) \
         has read up to seq 100000. Coalesced: at most one per receipt_coalesce_ms",
    );
}

fn invalid_vectors(g: &mut Gen) {
    let hb = Frame::new(
        &Packet::Heartbeat(pb::Heartbeat {
            client_time_ms: T + 30_000,
            ..Default::default()
        }),
        2,
    )
    .to_bytes()
    .to_vec();

    g.bad(
        "truncated_mid_frame",
        &hb[..hb.len() - 3],
        "The 'heartbeat' vector without its last 3 bytes, then end of stream",
    );
    g.bad(
        "truncated_in_length_prefix",
        &hb[..2],
        "The stream ends after 2 bytes of the length prefix",
    );
    g.bad(
        "truncated_header_only",
        &hb[..14],
        "The header arrived, the body and CRC never did",
    );
    let mut crc = hb.clone();
    let last = crc.len() - 1;
    crc[last] ^= 0x01;
    g.bad(
        "bad_crc_trailer",
        &crc,
        "The 'heartbeat' vector with the last CRC bit flipped",
    );
    let mut body = hb.clone();
    body[15] ^= 0x40;
    g.bad(
        "bad_crc_body_corrupted",
        &body,
        "The 'heartbeat' vector with one body bit flipped; the CRC no longer matches",
    );
    // Length 21 -> 149: the CRC is checked once 4 + 149 bytes are in, and fails.
    let mut len = hb.clone();
    len[3] ^= 0x80;
    let need = 4 + u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    len.resize(need, 0);
    g.bad(
        "bad_crc_length_corrupted",
        &len,
        "Length prefix corrupted (21 -> 149) and 128 more bytes arrive: the CRC covers the prefix",
    );
    g.bad(
        "bad_magic",
        &raw(None, *b"MX", PROTOCOL_VERSION, 0, 0x0002, 2, &[]),
        "Bytes 4..6 are \"MX\"; the CRC is correct",
    );
    g.bad(
        "http_request",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "An HTTP request: length prefix 0x47455420 is over the 1 MiB limit, which is checked first",
    );
    g.bad(
        "bad_magic_prefix_only",
        &[0x00, 0x00, 0x00, 0x0e, b'm', b's'],
        "Lowercase \"ms\": refused as soon as bytes 4..6 are in",
    );
    g.bad(
        "too_large",
        &[
            0x00,
            0x10,
            0x00,
            0x01,
            MAGIC[0],
            MAGIC[1],
            PROTOCOL_VERSION,
            0x00,
        ],
        "Length 1048577 > 1 MiB: refused from the prefix alone, nothing more is read",
    );
    g.bad(
        "too_large_max",
        &[0xff, 0xff, 0xff, 0xff],
        "Length 0xffffffff: refused from the prefix alone",
    );
    g.bad(
        "unsupported_version_2",
        &raw(None, MAGIC, 2, 0, 0x0002, 2, &[]),
        "Version byte 2; everything else valid",
    );
    g.bad(
        "unsupported_version_0",
        &raw(None, MAGIC, 0, 0, 0x0002, 2, &[]),
        "Version byte 0",
    );
    g.bad(
        "length_below_minimum",
        &raw(Some(13), MAGIC, PROTOCOL_VERSION, 0, 0x0002, 2, &[]),
        "Length field 13 < 14 (the 18-byte frame is otherwise well formed)",
    );
    g.bad(
        "length_zero",
        &[
            0x00,
            0x00,
            0x00,
            0x00,
            MAGIC[0],
            MAGIC[1],
            PROTOCOL_VERSION,
            0x00,
        ],
        "Length field 0",
    );
    g.bad(
        "reserved_flag_bit2",
        &raw(None, MAGIC, PROTOCOL_VERSION, 0x04, 0x0002, 2, &[]),
        "Flags 0x04: bit 2 is reserved; the CRC is correct",
    );
    g.bad(
        "reserved_flag_bit7",
        &raw(None, MAGIC, PROTOCOL_VERSION, 0x81, 0x0002, 2, &[]),
        "Flags 0x81: COMPRESSED plus reserved bit 7",
    );
    g.bad(
        "unknown_command",
        &raw(None, MAGIC, PROTOCOL_VERSION, 0, 0x0099, 26, &[]),
        "Command 0x0099 (request 26): a well-formed frame, not in the table. Not fatal: \
         the server answers ERROR UNKNOWN_COMMAND with request id 26",
    );
    g.bad(
        "unknown_command_server_range",
        &raw(None, MAGIC, PROTOCOL_VERSION, 0, 0x40FF, 0, &[0x08, 0x01]),
        "Command 0x40FF: not in the table (a newer server's frame); a client ignores it",
    );
    g.bad(
        "bad_body_truncated_field",
        &raw(
            None,
            MAGIC,
            PROTOCOL_VERSION,
            0,
            0x0003,
            7,
            &[0x0a, 0x05, b'a'],
        ),
        "SEND whose field 1 claims 5 bytes but has 1. Not fatal: ERROR BAD_BODY with request id 7",
    );
    g.lenient(
        "bad_body_wrong_wire_type",
        &raw(
            None,
            MAGIC,
            PROTOCOL_VERSION,
            0,
            0x0002,
            8,
            &[0x0a, 0x01, 0x00],
        ),
        "HEARTBEAT whose field 1 (int64) arrives length-delimited. The server (prost) refuses it; \
         protobuf-java, C++ and upb keep the field as unknown and parse the body, which is also \
         fine for a client (receiver_may_accept; PROTOCOL.md 7)",
    );
    g.bad(
        "bad_body_invalid_utf8",
        &raw(
            None,
            MAGIC,
            PROTOCOL_VERSION,
            0,
            0x0013,
            9,
            &[0x0a, 0x02, 0xff, 0xfe],
        ),
        "GROUP_MEMBERS whose group_id (string) is not UTF-8",
    );
    g.bad(
        "bad_body_bad_zlib",
        &raw(
            None,
            MAGIC,
            PROTOCOL_VERSION,
            Flags::COMPRESSED,
            0x0002,
            10,
            &[0x08, 0x01],
        ),
        "HEARTBEAT with the COMPRESSED flag but a body that is not zlib",
    );
    let bomb = zlib(&vec![0u8; DEFAULT_MAX_FRAME_LEN + 1024]);
    g.bad(
        "bad_body_inflates_past_limit",
        &raw(None, MAGIC, PROTOCOL_VERSION, Flags::COMPRESSED, 0x0003, 11, &bomb),
        "SEND whose zlib body inflates to 1 MiB + 1024 bytes, over the 1 MiB limit on inflated bodies",
    );
}

fn write(path: &Path, value: &Value) {
    let mut text = serde_json::to_string_pretty(value).unwrap();
    text.push('\n');
    std::fs::write(path, text).unwrap();
    eprintln!("wrote {}", path.display());
}

fn main() {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("vectors");
    std::fs::create_dir_all(&dir).unwrap();
    let mut g = Gen {
        valid: Vec::new(),
        invalid: Vec::new(),
    };
    valid_vectors(&mut g);
    invalid_vectors(&mut g);

    write(
        &dir.join("frames.json"),
        &json!({
            "description": "Valid Missive v1 frames. See PROTOCOL.md, section 'Test vectors'. \
                Generated by `cargo run -p missive-protocol --example gen_vectors`.",
            "max_frame_len": DEFAULT_MAX_FRAME_LEN,
            "frames": g.valid,
        }),
    );
    write(
        &dir.join("invalid.json"),
        &json!({
            "description": "Byte streams a receiver must refuse, with the ERROR code name. See \
                PROTOCOL.md, section 'Test vectors'. Generated by \
                `cargo run -p missive-protocol --example gen_vectors`.",
            "max_frame_len": DEFAULT_MAX_FRAME_LEN,
            "invalid": g.invalid,
        }),
    );

    write(
        &dir.join("tokens.json"),
        &json!({
            "description": "Login tokens, v1 and v2 (with `issued`). See PROTOCOL.md, section \
                'Tokens'. hmac_input is the exact HMAC-SHA256 message (UTF-8); signature_hex is \
                the raw 32-byte MAC.",
            "tokens": [
                token_vector("alice_phone", None),
                token_vector("alice_phone_v2", Some(1_800_000_000)),
            ],
            "crc32": [{
                "name": "check_value",
                "input_ascii": "123456789",
                "crc32": "cbf43926",
            }],
        }),
    );
}

/// The token of secret "secret", alice, phone, expiring at 1900000000: v1, or v2 issued at
/// `issued`.
fn token_vector(name: &str, issued: Option<u64>) -> serde_json::Value {
    let secret = "secret";
    let (user, device, expires) = ("alice", "phone", 1_900_000_000u64);
    let (input, tok) = match issued {
        None => (
            format!("missive-token-v1\n{user}\n{device}\n{expires}"),
            token::mint(secret.as_bytes(), user, device, expires),
        ),
        Some(issued) => (
            format!("missive-token-v2\n{user}\n{device}\n{issued}\n{expires}"),
            token::mint_v2(secret.as_bytes(), user, device, issued, expires),
        ),
    };
    let sig = tok.rsplit('.').next().unwrap().to_string();
    use base64::Engine;
    let sig_hex = hex::encode(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&sig)
            .unwrap(),
    );
    let mut v = json!({
        "name": name,
        "secret": secret,
        "user_id": user,
        "device_id": device,
        "expires": expires,
        "hmac_input": input,
        "signature_hex": sig_hex,
        "token": tok,
    });
    if let Some(issued) = issued {
        v["issued"] = json!(issued);
    }
    v
}
