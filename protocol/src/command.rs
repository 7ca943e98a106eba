//! The command table and [`Packet`], a frame body decoded into the type its command names.
//!
//! Requests from the client use `0x00xx`; the reply to request `0x00xx` is `0x80xx`.
//! Frames the server sends on its own use `0x40xx`. `0xFFFF` is ERROR.

use crate::error::ProtocolError;
use crate::pb;
use prost::Message as _;

macro_rules! commands {
    ($($(#[$doc:meta])* $name:ident = $num:literal, $wire:literal, $ty:ident;)*) => {
        /// A command number (bytes 8..10 of a frame).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum Command {
            $($(#[$doc])* $name = $num,)*
        }

        impl Command {
            /// Every command, in table order.
            pub const ALL: &'static [Command] = &[$(Command::$name,)*];

            /// The command with this number.
            pub fn from_u16(n: u16) -> Result<Command, ProtocolError> {
                match n {
                    $($num => Ok(Command::$name),)*
                    other => Err(ProtocolError::UnknownCommand(other)),
                }
            }

            /// The name used in PROTOCOL.md and the test vectors, e.g. `SEND_ACK`.
            pub fn name(self) -> &'static str {
                match self {
                    $(Command::$name => $wire,)*
                }
            }

            /// The command with this PROTOCOL.md name.
            pub fn from_name(name: &str) -> Option<Command> {
                match name {
                    $($wire => Some(Command::$name),)*
                    _ => None,
                }
            }
        }

        /// A frame body decoded into its type. The variant is the command.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Packet {
            $($(#[$doc])* $name(pb::$ty),)*
        }

        impl Packet {
            /// The command this body belongs to.
            pub fn command(&self) -> Command {
                match self {
                    $(Packet::$name(_) => Command::$name,)*
                }
            }

            /// The protobuf encoding of the body.
            pub fn encode_body(&self) -> Vec<u8> {
                match self {
                    $(Packet::$name(m) => m.encode_to_vec(),)*
                }
            }

            /// Decodes an (uncompressed) body of `command`.
            pub fn decode_body(command: Command, body: &[u8]) -> Result<Packet, ProtocolError> {
                let bad = |e: prost::DecodeError| ProtocolError::BadBody {
                    command: command as u16,
                    reason: e.to_string(),
                };
                Ok(match command {
                    $(Command::$name => Packet::$name(pb::$ty::decode(body).map_err(bad)?),)*
                })
            }

            /// The body as JSON (field names as in the .proto file), for tools and vectors.
            pub fn body_to_json(&self) -> serde_json_value::Value {
                match self {
                    $(Packet::$name(m) => serde_json_value::to_value(m),)*
                }
            }

            /// Builds a packet of `command` from a JSON body, for tools and vectors.
            pub fn body_from_json(
                command: Command,
                body: serde_json_value::Value,
            ) -> Result<Packet, String> {
                Ok(match command {
                    $(Command::$name => Packet::$name(serde_json_value::from_value(body)?),)*
                })
            }
        }
    };
}

commands! {
    /// Client logs in; the first frame of every connection.
    Login = 0x0001, "LOGIN", Login;
    /// Reply to LOGIN.
    LoginAck = 0x8001, "LOGIN_ACK", LoginAck;
    /// Client keep-alive.
    Heartbeat = 0x0002, "HEARTBEAT", Heartbeat;
    /// Reply to HEARTBEAT.
    HeartbeatAck = 0x8002, "HEARTBEAT_ACK", HeartbeatAck;
    /// Client sends a message.
    Send = 0x0003, "SEND", Send;
    /// Reply to SEND, after the message is stored.
    SendAck = 0x8003, "SEND_ACK", SendAck;
    /// Client acknowledges pushes up to a version. No reply.
    PushAck = 0x0004, "PUSH_ACK", PushAck;
    /// Client pulls inbox entries after a version.
    Sync = 0x0005, "SYNC", Sync;
    /// Reply to SYNC.
    SyncAck = 0x8005, "SYNC_ACK", SyncAck;
    /// Client lists recent conversations.
    Contacts = 0x0006, "CONTACTS", Contacts;
    /// Reply to CONTACTS.
    ContactsAck = 0x8006, "CONTACTS_ACK", ContactsAck;
    /// Client asks for its unread counts.
    Unread = 0x0007, "UNREAD", Unread;
    /// Reply to UNREAD.
    UnreadAck = 0x8007, "UNREAD_ACK", UnreadAck;
    /// Client marks a conversation read up to a seq.
    MarkRead = 0x0008, "MARK_READ", MarkRead;
    /// Reply to MARK_READ.
    MarkReadAck = 0x8008, "MARK_READ_ACK", MarkReadAck;
    /// Client recalls one of its messages.
    Recall = 0x0009, "RECALL", RecallMessage;
    /// Reply to RECALL.
    RecallAck = 0x8009, "RECALL_ACK", RecallAck;
    /// Client deletes a message from its own view.
    Delete = 0x000A, "DELETE", DeleteMessage;
    /// Reply to DELETE.
    DeleteAck = 0x800A, "DELETE_ACK", DeleteAck;
    /// Client creates a group.
    GroupCreate = 0x0010, "GROUP_CREATE", GroupCreate;
    /// Reply to GROUP_CREATE.
    GroupCreateAck = 0x8010, "GROUP_CREATE_ACK", GroupAck;
    /// Client joins a group or adds members.
    GroupJoin = 0x0011, "GROUP_JOIN", GroupJoin;
    /// Reply to GROUP_JOIN.
    GroupJoinAck = 0x8011, "GROUP_JOIN_ACK", GroupAck;
    /// Client leaves a group or removes a member.
    GroupLeave = 0x0012, "GROUP_LEAVE", GroupLeave;
    /// Reply to GROUP_LEAVE.
    GroupLeaveAck = 0x8012, "GROUP_LEAVE_ACK", GroupAck;
    /// Client lists a group's members.
    GroupMembers = 0x0013, "GROUP_MEMBERS", GroupMembers;
    /// Reply to GROUP_MEMBERS.
    GroupMembersAck = 0x8013, "GROUP_MEMBERS_ACK", GroupMembersAck;
    /// Client lists its groups.
    GroupList = 0x0014, "GROUP_LIST", GroupList;
    /// Reply to GROUP_LIST.
    GroupListAck = 0x8014, "GROUP_LIST_ACK", GroupListAck;
    /// Client pages through a group's history.
    GroupHistory = 0x0015, "GROUP_HISTORY", GroupHistory;
    /// Reply to GROUP_HISTORY.
    GroupHistoryAck = 0x8015, "GROUP_HISTORY_ACK", GroupHistoryAck;
    /// The owner makes a member an admin, or a member again.
    GroupSetRole = 0x0016, "GROUP_SET_ROLE", GroupSetRole;
    /// Reply to GROUP_SET_ROLE.
    GroupSetRoleAck = 0x8016, "GROUP_SET_ROLE_ACK", GroupAck;
    /// Client pages through any conversation's history (direct or group).
    History = 0x0017, "HISTORY", History;
    /// Reply to HISTORY.
    HistoryAck = 0x8017, "HISTORY_ACK", HistoryAck;
    /// Client asks which group members have read a message.
    Readers = 0x0018, "READERS", Readers;
    /// Reply to READERS.
    ReadersAck = 0x8018, "READERS_ACK", ReadersAck;
    /// Client mutes or unmutes a conversation.
    Mute = 0x001A, "MUTE", Mute;
    /// Reply to MUTE.
    MuteAck = 0x801A, "MUTE_ACK", MuteAck;
    /// Client blocks or unblocks another user.
    Block = 0x001B, "BLOCK", Block;
    /// Reply to BLOCK.
    BlockAck = 0x801B, "BLOCK_ACK", BlockAck;
    /// Client lists the users it blocked.
    BlockList = 0x001C, "BLOCK_LIST", BlockList;
    /// Reply to BLOCK_LIST.
    BlockListAck = 0x801C, "BLOCK_LIST_ACK", BlockListAck;
    /// Server pushes one inbox entry.
    Push = 0x4001, "PUSH", Push;
    /// Server notifies new messages in a read-fan-out group.
    GroupNotify = 0x4002, "GROUP_NOTIFY", GroupNotify;
    /// Server tells the client to go away (and where to).
    Kick = 0x4003, "KICK", Kick;
    /// Server tells a user that the other side of a direct conversation read it up to a seq.
    Receipt = 0x4004, "RECEIPT", Receipt;
    /// Client relays an ephemeral signal (typing). No reply unless refused.
    Signal = 0x0019, "SIGNAL", Signal;
    /// Server relays another user's ephemeral signal. Not acknowledged.
    SignalNotify = 0x4005, "SIGNAL_NOTIFY", SignalNotify;
    /// Server reports an error.
    Error = 0xFFFF, "ERROR", Error;
}

/// `serde_json` under a short name, so the macro above reads cleanly.
mod serde_json_value {
    pub use serde_json::Value;

    pub fn to_value<T: serde::Serialize>(m: &T) -> Value {
        // Serializing a generated message cannot fail: every field is a plain value.
        serde_json::to_value(m).unwrap_or(Value::Null)
    }

    pub fn from_value<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }
}

impl Command {
    /// Whether a client sends this command (as opposed to the server).
    pub fn is_from_client(self) -> bool {
        (self as u16) & 0xC000 == 0
    }
}
