//! Human-readable output (and the JSON forms beside them).

use std::time::Duration;

use missive_client::{pb, ClientError, ClientEvent, DisconnectReason};
use missive_protocol::Packet;
use serde_json::{json, Value};

use crate::decoded::{FrameInfo, StreamEnd};

/// The error and its causes, each once (some errors repeat their source in their message).
pub(crate) fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}

/// Prints an error: `error: ...` on stderr, or `{"error": {...}}` on stdout with --json.
pub fn print_error(e: &anyhow::Error, json: bool) {
    let server = e
        .chain()
        .find_map(|c| match c.downcast_ref::<ClientError>() {
            Some(ClientError::Server {
                code,
                name,
                message,
                fatal,
                reason,
            }) => Some((*code, name.clone(), message.clone(), *fatal, reason.clone())),
            _ => None,
        });
    let http = e
        .chain()
        .find_map(|c| c.downcast_ref::<crate::http1::HttpError>());
    if json {
        if let Some(h) = http {
            let mut v = h.to_json();
            v["error"]["message"] = error_text(e).into();
            println!("{v}");
            return;
        }
        let v = match server {
            Some((code, name, message, fatal, reason)) if !reason.is_empty() => {
                json!({"error": {
                    "code": code, "name": name, "message": message, "fatal": fatal,
                    "reason": reason,
                }})
            }
            Some((code, name, message, fatal, _)) => json!({"error": {
                "code": code, "name": name, "message": message, "fatal": fatal,
            }}),
            None => json!({"error": {"message": error_text(e)}}),
        };
        println!("{v}");
    } else {
        eprintln!("error: {}", error_text(e));
    }
}

fn kind_name(kind: i32) -> &'static str {
    match pb::ConversationKind::try_from(kind) {
        Ok(pb::ConversationKind::Direct) => "direct",
        Ok(pb::ConversationKind::Group) => "group",
        _ => "?",
    }
}

/// `direct:bob`, `group:g1`.
pub fn conv_text(c: Option<&pb::Conversation>) -> String {
    match c {
        Some(c) => format!("{}:{}", kind_name(c.kind), c.id),
        None => "-".to_string(),
    }
}

/// The content as text when it is UTF-8, else as hex.
fn content_text(content: &[u8]) -> String {
    match std::str::from_utf8(content) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("0x{}", hex::encode(content)),
    }
}

/// ` [media 5f0c...: 52133 bytes image/jpeg 640x480, thumbnail]`: a media a message carries.
fn media_ref_text(r: &pb::MediaRef) -> String {
    let mut extra = String::new();
    if r.width > 0 && r.height > 0 {
        extra.push_str(&format!(" {}x{}", r.width, r.height));
    }
    if r.duration_ms > 0 {
        extra.push_str(&format!(" {} ms", r.duration_ms));
    }
    if r.thumbnail {
        extra.push_str(", thumbnail");
    }
    if !r.preview.is_empty() {
        extra.push_str(&format!(", preview {} bytes", r.preview.len()));
    }
    format!(
        " [media {}: {} bytes {}{extra}]",
        r.media_id, r.size, r.content_type
    )
}

fn message_text(m: &pb::Message) -> String {
    let body = if m.recalled {
        "(recalled)".to_string()
    } else {
        format!(
            "type {} {}{}",
            m.content_type,
            content_text(&m.content),
            m.media.iter().map(media_ref_text).collect::<String>()
        )
    };
    format!(
        "{} seq {} msg {} from {}: {}",
        conv_text(m.conversation.as_ref()),
        m.seq,
        m.msg_id,
        m.from_user,
        body
    )
}

/// One line per inbox entry: `v12 direct:bob seq 3 msg ... from bob: type 1 "hi"`.
pub fn entry_text(e: &pb::InboxEntry) -> String {
    use pb::inbox_entry::Body;
    let conv = conv_text(e.conversation.as_ref());
    let what = match &e.body {
        Some(Body::Message(m)) => message_text(m),
        Some(Body::ReadSync(r)) => format!(
            "{conv} read up to seq {} ({} unread)",
            r.up_to_seq, r.unread
        ),
        Some(Body::Recall(r)) => format!(
            "{conv} recall msg {} seq {} by {}",
            r.msg_id, r.seq, r.by_user
        ),
        Some(Body::Delete(d)) => format!("{conv} delete msg {}", d.msg_id),
        Some(Body::GroupEvent(g)) => {
            let kind = pb::GroupEventKind::try_from(g.kind)
                .map(|k| k.as_str_name())
                .unwrap_or("?");
            format!("{conv} {kind} {} by {}", g.user_id, g.by_user)
        }
        None => format!("{conv} (empty entry)"),
    };
    format!("v{} {what}", e.version)
}

fn group_text(g: Option<&pb::GroupInfo>) -> String {
    match g {
        Some(g) => {
            let fanout = if g.fanout == pb::FanoutMode::Read as i32 {
                "read"
            } else {
                "write"
            };
            format!(
                "group {} {:?} owner {} members {} last seq {} ({fanout} fan-out)",
                g.group_id, g.name, g.owner, g.member_count, g.last_seq
            )
        }
        None => "group -".to_string(),
    }
}

/// The text form of a reply.
pub fn reply_text(reply: &Packet) -> String {
    let mut out = Vec::new();
    match reply {
        Packet::SendAck(a) => {
            out.push(format!(
                "sent msg {} seq {} version {} client_msg_id {}{}",
                a.msg_id,
                a.seq,
                a.version,
                a.client_msg_id,
                if a.duplicate {
                    " (duplicate: stored earlier)"
                } else {
                    ""
                }
            ));
            if !a.content.is_empty() {
                out.push(format!("stored as: {}", content_text(&a.content)));
            }
        }
        Packet::SyncAck(a) => {
            out.extend(a.entries.iter().map(entry_text));
            out.push(format!(
                "-- {} entries, new_version {}, current_version {}{}",
                a.entries.len(),
                a.new_version,
                a.current_version,
                if a.has_more { ", more follow" } else { "" }
            ));
        }
        Packet::ContactsAck(a) => {
            for c in &a.contacts {
                let last = c
                    .last_message
                    .as_ref()
                    .map(message_text)
                    .unwrap_or_default();
                out.push(format!(
                    "{} unread {} | {last}",
                    conv_text(c.conversation.as_ref()),
                    c.unread
                ));
            }
            out.push(format!("-- {} conversations", a.contacts.len()));
            if !a.next_cursor.is_empty() {
                out.push(format!(
                    "next page: --cursor {}",
                    hex::encode(&a.next_cursor)
                ));
            }
        }
        Packet::UnreadAck(a) => {
            out.push(format!("total unread {}", a.total));
            for c in &a.conversations {
                out.push(format!(
                    "  {} unread {} last seq {}",
                    conv_text(c.conversation.as_ref()),
                    c.unread,
                    c.last_seq
                ));
            }
        }
        Packet::MarkReadAck(a) => out.push(format!(
            "read: {} unread left here, {} in total, version {}{}",
            a.unread,
            a.total,
            a.version,
            if a.version == 0 {
                " (nothing changed)"
            } else {
                ""
            }
        )),
        Packet::RecallAck(a) => out.push(format!("recalled, version {}", a.version)),
        Packet::DeleteAck(a) => out.push(format!("deleted, version {}", a.version)),
        Packet::MuteAck(a) => out.push(if a.muted { "muted" } else { "not muted" }.to_owned()),
        Packet::BlockAck(a) => {
            out.push(if a.blocked { "blocked" } else { "not blocked" }.to_owned())
        }
        Packet::BlockListAck(a) => {
            out.push(format!("{} blocked in all", a.total));
            out.extend(a.user_ids.iter().cloned());
            if a.has_more {
                let last = a.user_ids.last().map(String::as_str).unwrap_or("");
                out.push(format!("more: --after {last}"));
            }
        }
        Packet::GroupCreateAck(a) | Packet::GroupJoinAck(a) | Packet::GroupLeaveAck(a) => {
            out.push(group_text(a.group.as_ref()))
        }
        Packet::GroupMembersAck(a) => {
            out.push(group_text(a.group.as_ref()));
            for m in &a.members {
                let role = pb::GroupRole::try_from(m.role)
                    .map(|r| r.as_str_name())
                    .unwrap_or("?");
                out.push(format!("  {} {role} joined {}", m.user_id, m.joined_ms));
            }
        }
        Packet::GroupListAck(a) => {
            out.extend(a.groups.iter().map(|g| group_text(Some(g))));
            out.push(format!("-- {} groups", a.groups.len()));
        }
        Packet::GroupHistoryAck(a) => {
            out.extend(a.messages.iter().map(message_text));
            out.push(format!(
                "-- {} messages{}",
                a.messages.len(),
                if a.has_more { ", more follow" } else { "" }
            ));
        }
        Packet::HistoryAck(a) => {
            out.extend(a.messages.iter().map(message_text));
            out.push(format!(
                "-- {} messages, last seq {}, you read up to {}{}",
                a.messages.len(),
                a.last_seq,
                a.read_seq,
                match a.messages.first().and_then(|m| m.conversation.as_ref()) {
                    Some(c) if c.kind == pb::ConversationKind::Direct as i32 =>
                        format!(", {} read up to {}", c.id, a.peer_read_seq),
                    _ => String::new(),
                }
            ));
            if a.has_more {
                let next = match a.messages.first().zip(a.messages.last()) {
                    Some((first, last)) if first.seq > last.seq => "--before",
                    Some(_) => "--after",
                    None => "--before/--after",
                };
                out.push(format!("more: {next} {}", a.next_seq));
            }
        }
        Packet::ReadersAck(a) => {
            out.push(format!("read by: {}", a.read_by.join(", ")));
            if !a.next_cursor.is_empty() {
                out.push(format!("next page: {}", hex::encode(&a.next_cursor)));
            }
        }
        other => out.push(format!(
            "{} {}",
            other.command().name(),
            other.body_to_json()
        )),
    }
    out.join("\n")
}

/// Prints a reply: text, or its body as JSON.
pub fn print_reply(reply: &Packet, json: bool) {
    if json {
        println!("{}", reply.body_to_json());
    } else {
        println!("{}", reply_text(reply));
    }
}

pub fn reason_text(r: &DisconnectReason) -> String {
    match r {
        DisconnectReason::ServerClosed => "the server closed the connection".into(),
        DisconnectReason::Kicked(k) => format!("kicked ({})", k.as_str_name()),
        DisconnectReason::HeartbeatTimeout => "no answer to a heartbeat".into(),
        DisconnectReason::ServerError {
            code,
            name,
            message,
        } => format!("server error {name} ({code}): {message}"),
        DisconnectReason::Transport(e) => e.clone(),
        DisconnectReason::ClientClosed => "closed".into(),
    }
}

/// One line per event; entries on stdout, the rest on stderr (JSON: all on stdout).
pub fn print_event(event: &ClientEvent, json: bool) {
    if json {
        let v = match event {
            ClientEvent::Connected(a) => json!({"event": "connected", "login": a}),
            ClientEvent::Entry(e) => json!({"event": "entry", "entry": e}),
            ClientEvent::GroupNotify(n) => json!({"event": "group_notify", "notify": n}),
            ClientEvent::Signal(n) => json!({"event": "signal", "signal": n}),
            ClientEvent::Receipt(r) => json!({"event": "receipt", "receipt": r}),
            ClientEvent::Kicked(k) => json!({"event": "kicked", "kick": k}),
            ClientEvent::Disconnected {
                reason,
                reconnecting,
            } => json!({"event": "disconnected", "reason": reason_text(reason),
                        "reconnecting": reconnecting}),
        };
        println!("{v}");
        return;
    }
    match event {
        ClientEvent::Entry(e) => println!("{}", entry_text(e)),
        ClientEvent::Connected(a) => eprintln!(
            "connected as {} (version {}, {} unread, heartbeat {}s)",
            a.user_id, a.current_version, a.unread_total, a.heartbeat_interval_secs
        ),
        ClientEvent::GroupNotify(n) => println!(
            "group {} has messages up to seq {} ({} unread)",
            n.group_id, n.last_seq, n.unread
        ),
        ClientEvent::Signal(n) => eprintln!(
            "{} in {}: {}{}",
            n.from_user,
            conv_text(n.conversation.as_ref()),
            n.kind().as_str_name(),
            if n.payload.is_empty() {
                String::new()
            } else {
                format!(" {:?}", String::from_utf8_lossy(&n.payload))
            }
        ),
        ClientEvent::Receipt(r) => println!("{}", receipt_text(r)),
        ClientEvent::Kicked(k) => eprintln!("kicked: {} {:?}", k.reason().as_str_name(), k.message),
        ClientEvent::Disconnected {
            reason,
            reconnecting,
        } => eprintln!(
            "disconnected: {}{}",
            reason_text(reason),
            if *reconnecting { "; reconnecting" } else { "" }
        ),
    }
}

/// `receipt direct:bob: bob read up to seq 12 (at 1764000000000)`.
pub fn receipt_text(r: &pb::Receipt) -> String {
    format!(
        "receipt {}: {} read up to seq {} (at {})",
        conv_text(r.conversation.as_ref()),
        r.reader,
        r.up_to_seq,
        r.read_ms
    )
}

/// `missive receipts --to U`: both sides' read positions in a direct conversation.
pub fn print_positions(conv: &pb::Conversation, a: &pb::HistoryAck, json: bool) {
    if json {
        println!(
            "{}",
            json!({"conversation": conv, "last_seq": a.last_seq, "read_seq": a.read_seq,
                   "peer_read_seq": a.peer_read_seq})
        );
        return;
    }
    let conv_name = conv_text(Some(conv));
    if conv.kind == pb::ConversationKind::Direct as i32 {
        println!(
            "{conv_name}: last seq {}, you read up to {}, {} read up to {}",
            a.last_seq, a.read_seq, conv.id, a.peer_read_seq
        );
    } else {
        println!(
            "{conv_name}: last seq {}, you read up to {} (for a group: --seq N lists who read message N)",
            a.last_seq, a.read_seq
        );
    }
}

/// `missive receipts --group G --seq N`: who has read the message.
pub fn print_readers(group_id: &str, seq: u64, read_by: &[String], json: bool) {
    if json {
        println!(
            "{}",
            json!({"group_id": group_id, "seq": seq, "read_by": read_by})
        );
    } else {
        println!(
            "group {group_id} seq {seq}: read by {} member(s){}{}",
            read_by.len(),
            if read_by.is_empty() { "" } else { ": " },
            read_by.join(", ")
        );
    }
}

pub fn print_ping(addr: &str, rtts: &[Duration], json: bool) {
    let ms: Vec<f64> = rtts.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    if json {
        println!("{}", json!({"addr": addr, "rtt_ms": ms}));
    } else {
        for m in ms {
            println!("HEARTBEAT_ACK from {addr}: {m:.2} ms");
        }
    }
}

fn flag_names(flags: u8) -> String {
    let mut names = Vec::new();
    if flags & 1 != 0 {
        names.push("COMPRESSED".to_string());
    }
    if flags & 2 != 0 {
        names.push("RETRANSMIT".to_string());
    }
    if flags & !3 != 0 {
        names.push(format!("RESERVED({:#04x})", flags & !3));
    }
    names.join("|")
}

/// The JSON form of a decoded frame.
pub fn frame_json(f: &FrameInfo) -> Value {
    json!({
        "offset": f.offset, "length": f.length, "magic": f.magic, "version": f.version,
        "flags": f.flags, "flag_names": flag_names(f.flags), "command": f.command,
        "command_name": f.command_name, "request_id": f.request_id,
        "crc": if f.crc_ok { "ok" } else { "bad" }, "crc_frame": format!("{:08x}", f.crc_frame),
        "crc_computed": format!("{:08x}", f.crc_computed), "body": f.body,
        "body_error": f.body_error,
    })
}

/// The annotated text form of a decoded frame.
pub fn frame_text(index: usize, f: &FrameInfo) -> String {
    let crc = if f.crc_ok {
        format!("{:08x} ok", f.crc_frame)
    } else {
        format!("{:08x} BAD (computed {:08x})", f.crc_frame, f.crc_computed)
    };
    let mut body = match (&f.body, &f.body_error) {
        (_, Some(err)) => format!("error: {err}"),
        (Some(b), None) => b.to_string(),
        (None, None) => "-".into(),
    };
    // Name the error code of an ERROR frame, as in PROTOCOL.md's table.
    if f.command == 0xFFFF {
        if let Some(code) = f.body.as_ref().and_then(|b| b["code"].as_u64()) {
            let name = missive_protocol::ErrorCode::from_u32(code as u32)
                .map(|c| c.name())
                .unwrap_or("unknown code");
            body = format!("{body}\n  error       {name} ({code})");
        }
    }
    format!(
        "frame {index} at byte {}: {} bytes\n  length      {}\n  magic       {}\n  version     {}\n  flags       {:#04x}{}\n  command     {:#06x} {}\n  request id  {}\n  body        {body}\n  crc32       {crc}",
        f.offset,
        f.length + 4,
        f.length,
        f.magic,
        f.version,
        f.flags,
        match flag_names(f.flags) {
            n if n.is_empty() => n,
            n => format!(" {n}"),
        },
        f.command,
        f.command_name,
        f.request_id,
    )
}

/// How a decoded stream ended, as text.
pub fn end_text(end: &StreamEnd) -> Option<String> {
    match end {
        StreamEnd::Clean => None,
        StreamEnd::Error { offset, message } => Some(format!("error at byte {offset}: {message}")),
    }
}
