//! Sessions against an in-process server: each input is a list of actions by four users on up to
//! three devices each (plus a "ghost" user who never logs in and a "raw" user who sends
//! arbitrary bytes and frames), run over real loopback TCP against one `missived` per process
//! (real RocksDB in a temp dir). Every input gets fresh user names, so inputs do not see each
//! other's state.
//!
//! Checked while the input runs, against a model of what the server must do:
//! - logins: a valid token logs in (LOGIN_ACK with the user's current version and unread
//!   total), an expired one gets TOKEN_EXPIRED, a bad one AUTH_FAILED, and the connection
//!   closes; a third device kicks the oldest (TOO_MANY_DEVICES), the same device the older
//!   connection (REPLACED); an honest connection is never closed otherwise, and never gets a
//!   fatal error;
//! - every request gets its reply (within 5 s), in request order also when SENDs are
//!   pipelined, and the reply (or error code) the model predicts: sends acked (duplicates with
//!   the first ack), a reply moving the sender's read position, group authorization
//!   (NOT_FOUND to non-members, owner and admins, roles), recall (sender, owner or admin,
//!   within the window), delete, mark read, group create/join/leave/set role/members/list/
//!   history (members, paging, seqs visible from the join for FROM_JOIN groups), unread counts
//!   per conversation and total; blocks (BLOCK the state now, idempotent, no inbox entry;
//!   oneself or an invalid id INVALID_ARGUMENT, past the limit LIMIT_EXCEEDED; BLOCK_LIST pages
//!   in id order) and direct SENDs between users one of whom blocked the other (BLOCKED, nothing
//!   stored nor deduplicated; a resend of a message stored before the block still its first ack);
//! - pushes on one connection come in increasing version order;
//! - garbage bytes (before or after login) and arbitrary frames never take the server down:
//!   the connection closes (or answers a HEARTBEAT), and the server closes it at EOF.
//!
//! Checked after each input (`missive::check`, shared with tests/crash.rs): the server still
//! answers an honest client (login, HEARTBEAT, SYNC from 0 equal to the store); every user's
//! inbox versions are 1..=N with no gap or repeat; unread counts equal a recount from the
//! conversation logs and from the inbox; every acked send is stored exactly once (in the
//! sender's inbox at its acked version, the peer's inbox, the group log at its seq; group
//! messages in exactly the members' inboxes in write fan-out and only the sender's in read
//! fan-out); groups' member counts, member indexes and logs agree; every push is the stored
//! entry at its version.
//!
//! The input format (one byte per field, so `gen_corpus.py` can write seeds) is in
//! fuzz/README.md.

#![no_main]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use arbitrary::Unstructured;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use missive::check::{self, Acked, InboxRules, Ledger};
use missive::config::Config;
use missive::store::Durability;
use missive::{Server, ServerHandle};
use missive_client::{pb, ClientError, Connection};
use missive_protocol::pb::inbox_entry::Body;
use missive_protocol::{token, Command, ErrorCode, Flags, Frame, Packet};

const SECRET: &str = "fuzz-secret-0123456789abcdef";
/// Users that act (and are modelled); index USERS is the ghost.
const USERS: usize = 4;
const DEVICES: usize = 3;
const MAX_ACTIONS: usize = 48;
/// Every reply (and every close) is due within this.
const WAIT: Duration = Duration::from_secs(5);
const MAX_DEVICES: usize = 2;
const FANOUT_THRESHOLD: usize = 2;
const MAX_GROUP_SIZE: usize = 4;
const MAX_CONTENT: usize = 1024;
const MAX_FRAME: usize = 16 * 1024;
const BOGUS_MSG_ID: u64 = 12345;
/// `max_blocks_per_user`: small, so LIMIT_EXCEEDED is reachable (4 others to block).
const MAX_BLOCKS: usize = 2;

// ---------------------------------------------------------------------------------------------
// One server per process

/// LeakSanitizer suppressions. `rocksdb_list_column_families` (RocksDB's C API, called by the
/// rocksdb crate's `DB::list_cf` when the store opens) leaks the 1-byte array of an empty
/// column-family list; once per process, not the server's.
#[no_mangle]
pub extern "C" fn __lsan_default_suppressions() -> *const std::ffi::c_char {
    c"leak:rocksdb_list_column_families\n".as_ptr()
}

struct Harness {
    rt: tokio::runtime::Runtime,
    server: ServerHandle,
    addr: String,
    inputs: AtomicU64,
}

static HARNESS: OnceLock<Harness> = OnceLock::new();
/// What the current input did so far, printed if it panics.
static TRACE: Mutex<String> = Mutex::new(String::new());

fn config(data_dir: PathBuf) -> Config {
    Config {
        listen: vec!["127.0.0.1:0".into()],
        data_dir,
        secret: Some(SECRET.into()),
        durability: Durability::Async,
        // No HTTP API (its default address would be shared by every fuzzing process).
        http_listen: String::new(),
        max_devices_per_user: MAX_DEVICES,
        max_frame_len: MAX_FRAME,
        max_content_len: MAX_CONTENT,
        compress_threshold: 64,
        fanout_threshold: FANOUT_THRESHOLD,
        max_group_size: MAX_GROUP_SIZE,
        max_blocks_per_user: MAX_BLOCKS,
        logins_per_sec: 1_000_000,
        // Every user connects from 127.0.0.1, the raw user's garbage included: the per-address
        // budget of failed logins must not refuse the honest ones.
        login_failures_per_sec: 1_000_000,
        login_failures_burst: 1_000_000,
        sends_per_sec: 1_000_000,
        login_timeout_ms: 3_000,
        frame_timeout_ms: 3_000,
        ..Config::default()
    }
}

/// The data directory: `<tmp>/missive-fuzz-session/<pid>`. Directories of processes that are
/// gone (a crash, an earlier run) are removed first.
fn data_dir() -> PathBuf {
    let root = std::env::temp_dir().join("missive-fuzz-session");
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            let pid = e.file_name().to_string_lossy().into_owned();
            if !std::path::Path::new("/proc").join(&pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = root.join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("fuzz data dir");
    dir
}

fn harness() -> &'static Harness {
    HARNESS.get_or_init(|| {
        // libFuzzer's hook aborts; print what the input did first.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Ok(t) = TRACE.try_lock() {
                eprintln!("---- session input so far ----\n{t}------------------------------");
            }
            previous(info)
        }));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let server = rt
            .block_on(Server::start(config(data_dir())))
            .expect("server starts");
        let addr = server.local_addrs()[0].to_string();
        Harness {
            rt,
            server,
            addr,
            inputs: AtomicU64::new(0),
        }
    })
}

fn trace(line: impl AsRef<str>) {
    let mut t = TRACE.lock().unwrap();
    t.push_str(line.as_ref());
    t.push('\n');
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let n = h.inputs.fetch_add(1, Ordering::Relaxed);
    TRACE.lock().unwrap().clear();
    let actions = decode(data);
    h.rt.block_on(async {
        let run = async {
            let mut world = World::new(h, n);
            for (i, a) in actions.iter().enumerate() {
                trace(format!("{i}: {a:?}"));
                world.act(a).await;
            }
            trace("checks");
            world.finish().await;
        };
        if tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .is_err()
        {
            panic!("the input did not finish within 60 s");
        }
    });
});

// ---------------------------------------------------------------------------------------------
// The input

#[derive(Debug, Clone, Copy)]
enum ConvSel {
    /// A direct conversation with user `i % (USERS + 1)` (the ghost included; may be oneself).
    Direct(u8),
    /// Group `i % (groups + 1)` (the last: a group that does not exist).
    Group(u8),
    /// The referenced message's own conversation, as the actor sees it.
    OfMessage,
}

#[derive(Debug, Clone)]
enum TokenKind {
    Expired,
    BadSignature,
    OtherDevice,
    OtherUser,
    Garbage(Vec<u8>),
}

#[derive(Debug, Clone)]
enum Action {
    Login {
        who: u8,
    },
    /// A second connection for the same device; the first is kicked (REPLACED).
    Relogin {
        who: u8,
    },
    BadLogin {
        who: u8,
        token: TokenKind,
    },
    Send {
        who: u8,
        to: u8,
        cmid: u8,
        too_big: bool,
    },
    /// `n` SENDs pipelined, then optionally a SYNC (1) or HEARTBEAT (2) right behind them.
    Burst {
        who: u8,
        to: u8,
        cmid: u8,
        n: u8,
        tail: u8,
    },
    SendGroup {
        who: u8,
        group: u8,
        cmid: u8,
    },
    BurstGroup {
        who: u8,
        group: u8,
        cmid: u8,
        n: u8,
    },
    Sync {
        who: u8,
        since: u8,
        limit: u8,
    },
    Drain {
        who: u8,
    },
    PushAck {
        who: u8,
        version: u16,
    },
    MarkRead {
        who: u8,
        conv: ConvSel,
        up_to: u8,
    },
    Recall {
        who: u8,
        msg: u8,
        conv: ConvSel,
    },
    Delete {
        who: u8,
        msg: u8,
        conv: ConvSel,
    },
    GroupCreate {
        who: u8,
        members: u8,
        history: u8,
    },
    GroupJoin {
        who: u8,
        group: u8,
        users: u8,
    },
    GroupLeave {
        who: u8,
        group: u8,
        target: u8,
    },
    GroupMembers {
        who: u8,
        group: u8,
    },
    GroupList {
        who: u8,
    },
    GroupHistory {
        who: u8,
        group: u8,
        before: u8,
        after: u8,
        limit: u8,
    },
    /// The owner (or anyone, refused) sets `target`'s role (`% 4`: MEMBER, ADMIN, OWNER, 7).
    GroupSetRole {
        who: u8,
        group: u8,
        target: u8,
        role: u8,
    },
    Unread {
        who: u8,
    },
    Contacts {
        who: u8,
        limit: u8,
    },
    /// Blocks (`blocked % 2` = 1) or unblocks user `target % 6` (4: the ghost, 5: an invalid id).
    Block {
        who: u8,
        target: u8,
        blocked: u8,
    },
    /// BLOCK_LIST walked page by page (page size `limit % 3`, 0 = default), from the first
    /// (`after % 6` = 0) or after user `after % 6 - 1`'s id.
    BlockList {
        who: u8,
        after: u8,
        limit: u8,
    },
    Heartbeat {
        who: u8,
    },
    Disconnect {
        who: u8,
    },
    /// Bytes as they are on a new connection of the raw user (logged in first or not).
    RawBytes {
        login: bool,
        bytes: Vec<u8>,
    },
    /// A well-formed frame (length, CRC) with any flags, command, request id and body, on the
    /// raw user's connection, followed by a HEARTBEAT.
    RawFrame {
        flags: u8,
        command: u16,
        request_id: u8,
        body: Vec<u8>,
    },
}

/// Opcode bytes below FIRST_EXTRA are taken `% OPS`; those from FIRST_EXTRA on (22 values, none
/// of them in the corpus written before) pick one of the EXTRA_OPS later actions, so adding
/// those did not change what earlier inputs mean.
const OPS: u8 = 26;
const FIRST_EXTRA: u8 = OPS * 9;
const EXTRA_OPS: u8 = 2;

fn conv_sel(u: &mut Unstructured<'_>) -> ConvSel {
    let kind = byte(u);
    let idx = byte(u);
    match kind % 3 {
        0 => ConvSel::OfMessage,
        1 => ConvSel::Direct(idx),
        _ => ConvSel::Group(idx),
    }
}

fn byte(u: &mut Unstructured<'_>) -> u8 {
    u.arbitrary::<u8>().unwrap_or(0)
}

/// A length byte, then that many bytes (fewer if the input ends).
fn blob(u: &mut Unstructured<'_>, unit: usize) -> Vec<u8> {
    let len = byte(u) as usize * unit;
    let len = len.min(u.len());
    u.bytes(len).map(|b| b.to_vec()).unwrap_or_default()
}

/// One byte of opcode per action, then one byte per field (see fuzz/README.md).
fn decode(data: &[u8]) -> Vec<Action> {
    let mut u = Unstructured::new(data);
    let mut out = Vec::new();
    while !u.is_empty() && out.len() < MAX_ACTIONS {
        let op = match byte(&mut u) {
            b if b < FIRST_EXTRA => b % OPS,
            b => OPS + (b - FIRST_EXTRA) % EXTRA_OPS,
        };
        let who = byte(&mut u);
        let a = match op {
            0 => Action::Login { who },
            1 => Action::Relogin { who },
            2 => {
                let token = match byte(&mut u) % 5 {
                    0 => TokenKind::Expired,
                    1 => TokenKind::BadSignature,
                    2 => TokenKind::OtherDevice,
                    3 => TokenKind::OtherUser,
                    _ => TokenKind::Garbage(blob(&mut u, 1)),
                };
                Action::BadLogin { who, token }
            }
            3 => Action::Send {
                who,
                to: byte(&mut u),
                cmid: byte(&mut u),
                too_big: byte(&mut u) == 0xff,
            },
            4 => Action::Burst {
                who,
                to: byte(&mut u),
                cmid: byte(&mut u),
                n: byte(&mut u),
                tail: byte(&mut u),
            },
            5 => Action::SendGroup {
                who,
                group: byte(&mut u),
                cmid: byte(&mut u),
            },
            6 => Action::BurstGroup {
                who,
                group: byte(&mut u),
                cmid: byte(&mut u),
                n: byte(&mut u),
            },
            7 => Action::Sync {
                who,
                since: byte(&mut u),
                limit: byte(&mut u),
            },
            8 => Action::Drain { who },
            9 => Action::PushAck {
                who,
                version: u16::from(byte(&mut u)) << 8 | u16::from(byte(&mut u)),
            },
            10 => Action::MarkRead {
                who,
                conv: conv_sel(&mut u),
                up_to: byte(&mut u),
            },
            11 => Action::Recall {
                who,
                msg: byte(&mut u),
                conv: conv_sel(&mut u),
            },
            12 => Action::Delete {
                who,
                msg: byte(&mut u),
                conv: conv_sel(&mut u),
            },
            13 => Action::GroupCreate {
                who,
                members: byte(&mut u),
                history: byte(&mut u),
            },
            14 => Action::GroupJoin {
                who,
                group: byte(&mut u),
                users: byte(&mut u),
            },
            15 => Action::GroupLeave {
                who,
                group: byte(&mut u),
                target: byte(&mut u),
            },
            16 => Action::GroupMembers {
                who,
                group: byte(&mut u),
            },
            17 => Action::GroupList { who },
            18 => Action::GroupHistory {
                who,
                group: byte(&mut u),
                before: byte(&mut u),
                after: byte(&mut u),
                limit: byte(&mut u),
            },
            19 => Action::Unread { who },
            20 => Action::Contacts {
                who,
                limit: byte(&mut u),
            },
            21 => Action::Heartbeat { who },
            22 => Action::Disconnect { who },
            23 => Action::RawBytes {
                login: who & 1 == 1,
                bytes: blob(&mut u, 4),
            },
            24 => Action::RawFrame {
                flags: who,
                command: u16::from(byte(&mut u)) << 8 | u16::from(byte(&mut u)),
                request_id: byte(&mut u),
                body: blob(&mut u, 1),
            },
            25 => Action::GroupSetRole {
                who,
                group: byte(&mut u),
                target: byte(&mut u),
                role: byte(&mut u),
            },
            26 => Action::Block {
                who,
                target: byte(&mut u),
                blocked: byte(&mut u),
            },
            27 => Action::BlockList {
                who,
                after: byte(&mut u),
                limit: byte(&mut u),
            },
            _ => unreachable!("op % OPS, or OPS + extra op"),
        };
        out.push(a);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The model

/// A conversation as the model names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Conv {
    /// The two users, lower index first.
    Direct(usize, usize),
    /// A group by index in `World::groups`, or `None` for one that does not exist.
    Group(Option<usize>),
}

fn direct(a: usize, b: usize) -> Conv {
    Conv::Direct(a.min(b), a.max(b))
}

#[derive(Debug, Clone)]
struct Msg {
    msg_id: u64,
    from: usize,
    conv: Conv,
    seq: u64,
    recalled: bool,
}

#[derive(Debug, Clone)]
struct Group {
    id: String,
    owner: usize,
    members: BTreeSet<usize>,
    /// Members made ADMIN (GROUP_SET_ROLE); a member who leaves loses the role.
    admins: BTreeSet<usize>,
    /// JOIN_POLICY_OPEN: a non-member may join by itself.
    open: bool,
    from_join: bool,
    last_seq: u64,
    /// Seq of each user's first join (kept across leaving and rejoining).
    joined_seq: HashMap<usize, u64>,
    /// Seq -> message id.
    log: BTreeMap<u64, u64>,
    recalled: BTreeSet<u64>,
}

struct Device {
    conn: Connection,
    /// The highest version pushed on this connection (retransmits aside).
    last_push: u64,
}

/// The raw user's connection state.
struct Raw {
    conn: Option<Connection>,
}

struct World {
    h: &'static Harness,
    /// The users' names; index USERS is the ghost.
    names: Vec<String>,
    raw_user: String,
    devices: Vec<Option<Device>>,
    /// Per user: devices online, oldest first (as the router keeps them).
    online: Vec<Vec<usize>>,
    raw: Raw,
    acked: Vec<Acked>,
    /// (sender, client_msg_id) -> first ack.
    first_ack: HashMap<(usize, String), pb::SendAck>,
    msgs: Vec<Msg>,
    groups: Vec<Group>,
    /// Read positions: (user, conversation) -> seq.
    read: HashMap<(usize, Conv), u64>,
    /// (user, msg_id) deleted by that user.
    deleted: HashSet<(usize, u64)>,
    /// Last seq of each direct conversation.
    direct_seq: HashMap<Conv, u64>,
    /// Group messages: msg_id -> the users whose inbox must hold it.
    group_inboxes: Vec<(u64, BTreeSet<usize>)>,
    /// Pushes received: (user, entry).
    pushes: Vec<(usize, pb::InboxEntry)>,
    /// (blocker, blocked): the blocks standing (the ghost can be blocked, never blocks).
    blocks: BTreeSet<(usize, usize)>,
}

/// A reply: the packet, or a non-fatal error code.
type Reply = Result<Packet, ErrorCode>;

fn code_of(r: &Reply) -> Option<ErrorCode> {
    r.as_ref().err().copied()
}

fn content_of(from: &str, cmid: &str) -> Vec<u8> {
    // Length 0..=199 from the id, so a resend of one client_msg_id carries the same content.
    let len = cmid
        .bytes()
        .fold(7usize, |h, b| h.wrapping_mul(31) + b as usize)
        % 200;
    let mut c = format!("{from}:{cmid}:").into_bytes();
    c.resize(len.max(c.len()), b'x');
    c
}

impl World {
    fn new(h: &'static Harness, n: u64) -> World {
        let mut names: Vec<String> = (0..USERS).map(|i| format!("f{n}u{i}")).collect();
        names.push(format!("f{n}ghost"));
        World {
            h,
            names,
            raw_user: format!("f{n}raw"),
            devices: (0..USERS * DEVICES).map(|_| None).collect(),
            online: vec![Vec::new(); USERS],
            raw: Raw { conn: None },
            acked: Vec::new(),
            first_ack: HashMap::new(),
            msgs: Vec::new(),
            groups: Vec::new(),
            read: HashMap::new(),
            deleted: HashSet::new(),
            direct_seq: HashMap::new(),
            group_inboxes: Vec::new(),
            pushes: Vec::new(),
            blocks: BTreeSet::new(),
        }
    }

    fn who(&self, who: u8) -> (usize, usize) {
        (who as usize % USERS, (who as usize / USERS) % DEVICES)
    }

    fn token(&self, user: &str, device: &str) -> String {
        let expires = (missive::now_ms() / 1000) as u64 + 3600;
        token::mint(SECRET.as_bytes(), user, device, expires)
    }

    fn store(&self) -> &missive::store::Core {
        self.h.server.store().core()
    }

    /// Group index of a selector byte; `None`: a group that does not exist.
    fn group_sel(&self, g: u8) -> Option<usize> {
        let i = g as usize % (self.groups.len() + 1);
        (i < self.groups.len()).then_some(i)
    }

    fn group_id(&self, g: Option<usize>) -> String {
        match g {
            Some(i) => self.groups[i].id.clone(),
            None => "gnosuchgroup".into(),
        }
    }

    fn is_member(&self, g: usize, u: usize) -> bool {
        self.groups[g].members.contains(&u)
    }

    /// The owner or an admin: adds and removes members, recalls others' messages.
    fn is_manager(&self, g: usize, u: usize) -> bool {
        let grp = &self.groups[g];
        grp.owner == u || grp.admins.contains(&u)
    }

    fn role(&self, g: usize, u: usize) -> pb::GroupRole {
        let grp = &self.groups[g];
        if grp.owner == u {
            pb::GroupRole::Owner
        } else if grp.admins.contains(&u) {
            pb::GroupRole::Admin
        } else {
            pb::GroupRole::Member
        }
    }

    fn conversation(&self, u: usize, conv: Conv) -> pb::Conversation {
        match conv {
            Conv::Direct(a, b) => {
                missive_client::direct(self.names[if a == u { b } else { a }].clone())
            }
            Conv::Group(g) => missive_client::group(self.group_id(g)),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Connections

    /// Records a frame that arrived on an honest connection: pushes are checked for order and
    /// kept; a KICK is returned.
    fn on_frame(&mut self, user: usize, last_push: &mut u64, frame: Frame) -> Option<pb::Kick> {
        match frame.packet(MAX_FRAME) {
            Ok(Packet::Push(p)) => {
                let entry = p.entry.unwrap_or_default();
                assert_eq!(p.version, entry.version, "PUSH version vs its entry");
                if !frame.flags.retransmit() {
                    assert!(
                        p.version > *last_push,
                        "{}: push of version {} after {}",
                        self.names[user],
                        p.version,
                        last_push
                    );
                    *last_push = p.version;
                }
                self.pushes.push((user, entry));
                None
            }
            Ok(Packet::GroupNotify(_)) => None,
            // A direct conversation's read receipt (not stored, coalesced): nothing to check.
            Ok(Packet::Receipt(_)) => None,
            Ok(Packet::Kick(k)) => Some(k),
            Ok(Packet::Error(e)) => panic!("{}: unsolicited ERROR {e:?}", self.names[user]),
            Ok(other) => panic!("{}: unexpected frame {other:?}", self.names[user]),
            Err(e) => panic!(
                "{}: undecodable frame from the server: {e}",
                self.names[user]
            ),
        }
    }

    /// Takes the frames already received on device `(u, d)`, without waiting.
    fn take_buffered(&mut self, u: usize, d: usize) {
        let Some(mut dev) = self.devices[u * DEVICES + d].take() else {
            return;
        };
        while let Ok(Some(frame)) = dev.conn.buffered_frame() {
            if let Some(k) = self.on_frame(u, &mut dev.last_push, frame) {
                panic!("{}/d{d}: unexpected KICK {k:?}", self.names[u]);
            }
        }
        self.devices[u * DEVICES + d] = Some(dev);
    }

    /// Reads device `(u, d)`'s connection to its end; returns the KICK seen, if any.
    async fn read_to_end(&mut self, u: usize, mut dev: Device, what: &str) -> Option<pb::Kick> {
        let mut kick = None;
        loop {
            match dev.conn.recv_frame_timeout(WAIT).await {
                Ok(Some(frame)) => {
                    if let Some(k) = self.on_frame(u, &mut dev.last_push, frame) {
                        kick = Some(k);
                    }
                }
                Ok(None) => return kick,
                Err(ClientError::Timeout) => {
                    panic!(
                        "{}: the server did not close the connection ({what})",
                        self.names[u]
                    )
                }
                Err(ClientError::Io(_)) => return kick,
                Err(e) => panic!("{}: reading to the end ({what}): {e}", self.names[u]),
            }
        }
    }

    /// Closes device `(u, d)`'s connection (our side first) and waits until the server has
    /// closed it too, so the router no longer has it.
    async fn close(&mut self, u: usize, d: usize) {
        let Some(mut dev) = self.devices[u * DEVICES + d].take() else {
            return;
        };
        self.online[u].retain(|x| *x != d);
        let _ = dev.conn.shutdown().await;
        if let Some(k) = self.read_to_end(u, dev, "after EOF").await {
            panic!("{}/d{d}: KICK {k:?} while closing", self.names[u]);
        }
    }

    /// Waits for the KICK (with `reason`) and close of device `(u, d)`.
    async fn expect_kick(&mut self, u: usize, d: usize, reason: pb::KickReason) {
        let dev = self.devices[u * DEVICES + d]
            .take()
            .expect("a connection to kick");
        let kick = self.read_to_end(u, dev, "after a kick").await;
        let got = kick.map(|k| k.reason);
        assert_eq!(
            got,
            Some(reason as i32),
            "{}/d{d}: expected KICK {reason:?}",
            self.names[u]
        );
    }

    async fn connect(&self) -> Connection {
        tokio::time::timeout(WAIT, Connection::connect(&self.h.addr))
            .await
            .expect("connect within 5 s")
            .expect("connects")
    }

    /// Logs device `(u, d)` in on a new connection. `replace`: without closing its old
    /// connection first (which the server must then kick as REPLACED).
    async fn login(&mut self, u: usize, d: usize, replace: bool) {
        let had = self.devices[u * DEVICES + d].is_some();
        if !replace {
            self.close(u, d).await;
        }
        let device = format!("d{d}");
        let mut conn = self.connect().await;
        let token = self.token(&self.names[u], &device);
        let ack = tokio::time::timeout(WAIT, conn.login(&token, &device, 0))
            .await
            .unwrap_or_else(|_| panic!("{}/{device}: no LOGIN_ACK within 5 s", self.names[u]))
            .unwrap_or_else(|e| panic!("{}/{device}: login refused: {e}", self.names[u]));
        assert_eq!(ack.user_id, self.names[u]);
        let current = self.store().current_version(&self.names[u]).unwrap();
        assert_eq!(ack.current_version, current, "LOGIN_ACK current_version");
        let total: u64 = self.model_unread(u).values().sum();
        assert_eq!(ack.unread_total, total, "LOGIN_ACK unread_total");
        if replace && had {
            self.expect_kick(u, d, pb::KickReason::Replaced).await;
        }
        self.online[u].retain(|x| *x != d);
        self.online[u].push(d);
        self.devices[u * DEVICES + d] = Some(Device { conn, last_push: 0 });
        if self.online[u].len() > MAX_DEVICES {
            let oldest = self.online[u].remove(0);
            self.expect_kick(u, oldest, pb::KickReason::TooManyDevices)
                .await;
        }
    }

    async fn ensure(&mut self, u: usize, d: usize) {
        if self.devices[u * DEVICES + d].is_none() {
            self.login(u, d, false).await;
        }
    }

    /// Sends `packet` from device `(u, d)` (logging it in if needed) and returns its reply.
    async fn request(&mut self, u: usize, d: usize, packet: Packet) -> Reply {
        self.ensure(u, d).await;
        let what = packet.command().name();
        let dev = self.devices[u * DEVICES + d].as_mut().unwrap();
        let r = tokio::time::timeout(WAIT, dev.conn.request(packet))
            .await
            .unwrap_or_else(|_| panic!("{}/d{d}: no reply to {what} within 5 s", self.names[u]));
        let reply = match r {
            Ok(p) => Ok(p),
            Err(e @ ClientError::Server { .. }) => {
                let code = e.server_code().expect("a known error code");
                assert!(
                    !code.is_fatal(),
                    "{}/d{d}: {what} got a fatal error: {e}",
                    self.names[u]
                );
                Err(code)
            }
            Err(e) => panic!("{}/d{d}: {what} failed: {e}", self.names[u]),
        };
        self.take_buffered(u, d);
        reply
    }

    /// Sends several packets at once from device `(u, d)`, then reads every reply: they must
    /// come in request order.
    async fn pipeline(&mut self, u: usize, d: usize, packets: Vec<Packet>) -> Vec<Reply> {
        self.ensure(u, d).await;
        let mut dev = self.devices[u * DEVICES + d].take().unwrap();
        let mut ids = Vec::new();
        for p in &packets {
            let id = dev.conn.next_request_id();
            dev.conn.feed_frame(&Frame::new(p, id)).await.expect("feed");
            ids.push(id);
        }
        dev.conn.flush().await.expect("flush");
        let mut replies = Vec::new();
        while replies.len() < ids.len() {
            let frame = match dev.conn.recv_frame_timeout(WAIT).await {
                Ok(Some(f)) => f,
                Ok(None) => panic!("{}/d{d}: closed during a pipeline", self.names[u]),
                Err(e) => panic!(
                    "{}/d{d}: pipeline reply {}: {e}",
                    self.names[u],
                    replies.len()
                ),
            };
            if frame.request_id == 0 {
                if let Some(k) = self.on_frame(u, &mut dev.last_push, frame) {
                    panic!("{}/d{d}: KICK {k:?} during a pipeline", self.names[u]);
                }
                continue;
            }
            let want = ids[replies.len()];
            assert_eq!(
                frame.request_id, want,
                "{}/d{d}: pipelined replies out of order",
                self.names[u]
            );
            match frame.packet(MAX_FRAME).expect("reply decodes") {
                Packet::Error(e) => {
                    let code = ErrorCode::from_u32(e.code).expect("known code");
                    assert!(
                        !code.is_fatal() && !e.fatal,
                        "fatal error in a pipeline: {e:?}"
                    );
                    replies.push(Err(code));
                }
                p => replies.push(Ok(p)),
            }
        }
        self.devices[u * DEVICES + d] = Some(dev);
        replies
    }

    // -----------------------------------------------------------------------------------------
    // Sends

    fn send_packet(&self, to: pb::Conversation, cmid: &str, content: Vec<u8>) -> Packet {
        Packet::Send(pb::Send {
            client_msg_id: cmid.to_owned(),
            to: Some(to),
            content_type: 1,
            content,
            ..Default::default()
        })
    }

    /// The outcome the model predicts for a send by `u` to `conv` (NotFound/Forbidden/...), or
    /// `Ok(Some(first ack))` for a duplicate, `Ok(None)` for a new message.
    fn predict_send(
        &self,
        u: usize,
        conv: Conv,
        cmid: &str,
        too_big: bool,
    ) -> Result<Option<pb::SendAck>, ErrorCode> {
        if let Conv::Direct(a, b) = conv {
            if a == b {
                return Err(ErrorCode::InvalidArgument);
            }
        }
        if too_big {
            return Err(ErrorCode::ContentTooLarge);
        }
        let g = match conv {
            Conv::Group(None) => return Err(ErrorCode::NotFound),
            Conv::Group(Some(g)) => Some(g),
            Conv::Direct(..) => None,
        };
        if let Some(ack) = self.first_ack.get(&(u, cmid.to_owned())) {
            return Ok(Some(ack.clone()));
        }
        // After the dedup: a message stored before a block keeps its ack. A refused send
        // leaves no dedup record, so after an unblock the same client_msg_id is stored.
        if let Conv::Direct(a, b) = conv {
            if self.blocks.contains(&(a, b)) || self.blocks.contains(&(b, a)) {
                return Err(ErrorCode::Blocked);
            }
        }
        // A non-member is told the group does not exist.
        match g {
            Some(g) if !self.is_member(g, u) => Err(ErrorCode::NotFound),
            _ => Ok(None),
        }
    }

    /// Checks a send's reply against the prediction and updates the model.
    fn on_send_reply(
        &mut self,
        u: usize,
        conv: Conv,
        cmid: &str,
        content: &[u8],
        predicted: Result<Option<pb::SendAck>, ErrorCode>,
        reply: Reply,
    ) {
        let ctx = format!("{} SEND {cmid} to {conv:?}", self.names[u]);
        let ack = match (predicted, reply) {
            (Err(want), got) => {
                assert_eq!(code_of(&got), Some(want), "{ctx}: {got:?}");
                return;
            }
            (Ok(first), Ok(Packet::SendAck(ack))) => {
                match first {
                    Some(first) => {
                        assert!(ack.duplicate, "{ctx}: a resend stored again: {ack:?}");
                        assert_eq!(
                            (ack.msg_id, ack.seq, ack.version),
                            (first.msg_id, first.seq, first.version),
                            "{ctx}: a resend got another ack"
                        );
                    }
                    None => assert!(!ack.duplicate, "{ctx}: a first send answered duplicate"),
                }
                ack
            }
            (Ok(_), got) => panic!("{ctx}: expected SEND_ACK, got {got:?}"),
        };
        assert_eq!(ack.client_msg_id, cmid, "{ctx}: ack for another send");
        let (to, group) = match conv {
            Conv::Direct(a, b) => (self.names[if a == u { b } else { a }].clone(), false),
            Conv::Group(g) => (self.group_id(g), true),
        };
        self.acked.push(if group {
            Acked::to_group(&self.names[u], &to, content, &ack)
        } else {
            Acked::direct(&self.names[u], &to, content, &ack)
        });
        if ack.duplicate {
            return;
        }
        let current = self.store().current_version(&self.names[u]).unwrap();
        assert!(
            ack.version <= current,
            "{ctx}: acked version beyond the inbox"
        );
        self.first_ack.insert((u, cmid.to_owned()), ack.clone());
        match conv {
            Conv::Direct(..) => {
                let seq = self.direct_seq.entry(conv).or_default();
                *seq += 1;
                assert_eq!(ack.seq, *seq, "{ctx}: seq");
                // Replying reads the conversation up to here, as in groups.
                self.read.insert((u, conv), ack.seq);
            }
            Conv::Group(Some(g)) => {
                let grp = &mut self.groups[g];
                grp.last_seq += 1;
                assert_eq!(ack.seq, grp.last_seq, "{ctx}: group seq");
                grp.log.insert(ack.seq, ack.msg_id);
                let write = grp.members.len() <= FANOUT_THRESHOLD;
                let inboxes = if write {
                    grp.members.clone()
                } else {
                    BTreeSet::from([u])
                };
                self.group_inboxes.push((ack.msg_id, inboxes));
                // Sending reads the group up to here.
                self.read.insert((u, conv), ack.seq);
            }
            Conv::Group(None) => unreachable!(),
        }
        self.msgs.push(Msg {
            msg_id: ack.msg_id,
            from: u,
            conv,
            seq: ack.seq,
            recalled: false,
        });
    }

    fn direct_target(&self, u: usize, to: u8) -> Conv {
        direct(u, to as usize % (USERS + 1))
    }

    async fn sends(&mut self, who: u8, conv: Conv, cmid: u8, n: usize, too_big: bool, tail: u8) {
        let (u, d) = self.who(who);
        let tag = match conv {
            Conv::Direct(a, b) => format!("d{}", if a == u { b } else { a }),
            Conv::Group(g) => format!("g{}", g.map_or("x".into(), |g| g.to_string())),
        };
        let to = self.conversation(u, conv);
        let mut packets = Vec::new();
        let mut planned = Vec::new();
        for i in 0..n {
            let cmid = format!("{tag}.{}", (cmid as usize + i) % 16);
            let mut content = content_of(&self.names[u], &cmid);
            if too_big {
                content.resize(MAX_CONTENT + 1, b'!');
            }
            packets.push(self.send_packet(to.clone(), &cmid, content.clone()));
            planned.push((cmid, content));
        }
        let since = self.store().current_version(&self.names[u]).unwrap();
        match tail % 3 {
            1 => packets.push(Packet::Sync(pb::Sync {
                since_version: since,
                limit: 0,
            })),
            2 => packets.push(Packet::Heartbeat(pb::Heartbeat {
                client_time_ms: 7,
                ..Default::default()
            })),
            _ => {}
        }
        let replies = if packets.len() == 1 {
            vec![self.request(u, d, packets.pop().unwrap()).await]
        } else {
            self.pipeline(u, d, packets).await
        };
        let mut replies = replies.into_iter();
        for (cmid, content) in planned {
            // Predicted one at a time: an earlier send of the burst may make a later a duplicate.
            let predicted = self.predict_send(u, conv, &cmid, too_big);
            let reply = replies.next().unwrap();
            self.on_send_reply(u, conv, &cmid, &content, predicted, reply);
        }
        match (tail % 3, replies.next()) {
            (_, None) => {}
            (1, Some(Ok(Packet::SyncAck(page)))) => {
                // The SYNC ran after every SEND before it was stored.
                let current = self.store().current_version(&self.names[u]).unwrap();
                let last = page.entries.last().map_or(since, |e| e.version);
                assert!(
                    page.has_more || last == current,
                    "SYNC behind pipelined SENDs ends at {last}, the inbox at {current}"
                );
            }
            (2, Some(Ok(Packet::HeartbeatAck(h)))) => assert_eq!(h.client_time_ms, 7),
            (_, Some(other)) => panic!("pipeline tail answered {other:?}"),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Unread

    /// The unread counts the model expects for `u`: conversation -> count (non-zero only).
    fn model_unread(&self, u: usize) -> BTreeMap<Conv, u64> {
        let mut out = BTreeMap::new();
        for m in &self.msgs {
            let Conv::Direct(a, b) = m.conv else { continue };
            if (a != u && b != u)
                || m.from == u
                || m.recalled
                || self.deleted.contains(&(u, m.msg_id))
            {
                continue;
            }
            if m.seq > self.read.get(&(u, m.conv)).copied().unwrap_or(0) {
                *out.entry(m.conv).or_insert(0) += 1;
            }
        }
        for (i, g) in self.groups.iter().enumerate() {
            if !g.members.contains(&u) {
                continue;
            }
            let conv = Conv::Group(Some(i));
            let pos = self.read.get(&(u, conv)).copied().unwrap_or(0);
            let recalled = g.recalled.range(pos + 1..).count() as u64;
            let n = g.last_seq.saturating_sub(pos).saturating_sub(recalled);
            if n > 0 {
                out.insert(conv, n);
            }
        }
        out
    }

    fn conv_of_view(&self, u: usize, c: &pb::Conversation) -> Conv {
        if c.kind == pb::ConversationKind::Group as i32 {
            Conv::Group(self.groups.iter().position(|g| g.id == c.id))
        } else {
            let peer = self
                .names
                .iter()
                .position(|n| *n == c.id)
                .unwrap_or_else(|| panic!("unread names an unknown user {c:?}"));
            direct(u, peer)
        }
    }

    fn check_unread(&self, u: usize, ack: &pb::UnreadAck, what: &str) {
        let got: BTreeMap<Conv, u64> = ack
            .conversations
            .iter()
            .map(|c| {
                (
                    self.conv_of_view(u, c.conversation.as_ref().unwrap()),
                    c.unread,
                )
            })
            .collect();
        assert_eq!(
            got.len(),
            ack.conversations.len(),
            "{what}: a conversation twice"
        );
        let want = self.model_unread(u);
        assert_eq!(got, want, "{what}: {}'s unread counts", self.names[u]);
        assert_eq!(
            ack.total,
            want.values().sum::<u64>(),
            "{what}: unread total"
        );
    }

    // -----------------------------------------------------------------------------------------
    // Actions

    /// The conversation and message a recall or delete names.
    fn target(&self, u: usize, msg: u8, sel: ConvSel) -> (Option<usize>, Conv) {
        let i = msg as usize % (self.msgs.len() + 1);
        let m = (i < self.msgs.len()).then_some(i);
        let conv = match sel {
            ConvSel::Direct(p) => direct(u, p as usize % (USERS + 1)),
            ConvSel::Group(g) => Conv::Group(self.group_sel(g)),
            ConvSel::OfMessage => match m.map(|i| &self.msgs[i]) {
                Some(Msg {
                    conv: Conv::Direct(a, b),
                    ..
                }) => {
                    let (a, b) = (*a, *b);
                    if a == u || b == u {
                        direct(a, b)
                    } else {
                        direct(u, b)
                    }
                }
                Some(m) => m.conv,
                None => direct(u, (u + 1) % USERS),
            },
        };
        (m, conv)
    }

    async fn recall(&mut self, who: u8, msg: u8, sel: ConvSel) {
        let (u, d) = self.who(who);
        let (m, conv) = self.target(u, msg, sel);
        let msg_id = m.map_or(BOGUS_MSG_ID, |i| self.msgs[i].msg_id);
        let predicted: Result<bool, ErrorCode> = (|| {
            match conv {
                Conv::Direct(a, b) if a == b => return Err(ErrorCode::InvalidArgument),
                Conv::Group(None) => return Err(ErrorCode::NotFound),
                // Membership before the message: a non-member learns nothing of the group or
                // its messages, not even whether either exists (as for DELETE).
                Conv::Group(Some(g)) if !self.is_member(g, u) => return Err(ErrorCode::NotFound),
                _ => {}
            }
            let Some(i) = m else {
                return Err(ErrorCode::NotFound);
            };
            let msg = &self.msgs[i];
            if msg.conv != conv {
                return Err(ErrorCode::NotFound);
            }
            match conv {
                Conv::Group(Some(g)) => {
                    if msg.from != u && !self.is_manager(g, u) {
                        return Err(ErrorCode::Forbidden);
                    }
                }
                _ => {
                    if msg.from != u {
                        return Err(ErrorCode::Forbidden);
                    }
                }
            }
            Ok(!msg.recalled)
        })();
        let packet = Packet::Recall(pb::RecallMessage {
            conversation: Some(self.conversation(u, conv)),
            msg_id,
        });
        let reply = self.request(u, d, packet).await;
        let ctx = format!("{} RECALL {msg_id} in {conv:?}", self.names[u]);
        match predicted {
            Err(want) => assert_eq!(code_of(&reply), Some(want), "{ctx}: {reply:?}"),
            Ok(fresh) => {
                let Ok(Packet::RecallAck(ack)) = reply else {
                    panic!("{ctx}: expected RECALL_ACK, got {reply:?}")
                };
                assert_eq!(ack.version > 0, fresh, "{ctx}: version {}", ack.version);
                let i = m.unwrap();
                self.msgs[i].recalled = true;
                if let Conv::Group(Some(g)) = conv {
                    let seq = self.msgs[i].seq;
                    self.groups[g].recalled.insert(seq);
                }
            }
        }
    }

    async fn delete(&mut self, who: u8, msg: u8, sel: ConvSel) {
        let (u, d) = self.who(who);
        let (m, conv) = self.target(u, msg, sel);
        let msg_id = m.map_or(BOGUS_MSG_ID, |i| self.msgs[i].msg_id);
        let predicted: Result<bool, ErrorCode> = (|| {
            match conv {
                Conv::Direct(a, b) if a == b => return Err(ErrorCode::InvalidArgument),
                Conv::Group(None) => return Err(ErrorCode::NotFound),
                Conv::Group(Some(g)) if !self.is_member(g, u) => return Err(ErrorCode::NotFound),
                _ => {}
            }
            match m {
                Some(i) if self.msgs[i].conv == conv => {
                    Ok(!self.deleted.contains(&(u, self.msgs[i].msg_id)))
                }
                _ => Err(ErrorCode::NotFound),
            }
        })();
        let packet = Packet::Delete(pb::DeleteMessage {
            conversation: Some(self.conversation(u, conv)),
            msg_id,
        });
        let reply = self.request(u, d, packet).await;
        let ctx = format!("{} DELETE {msg_id} in {conv:?}", self.names[u]);
        match predicted {
            Err(want) => assert_eq!(code_of(&reply), Some(want), "{ctx}: {reply:?}"),
            Ok(fresh) => {
                let Ok(Packet::DeleteAck(ack)) = reply else {
                    panic!("{ctx}: expected DELETE_ACK, got {reply:?}")
                };
                assert_eq!(ack.version > 0, fresh, "{ctx}: version {}", ack.version);
                self.deleted.insert((u, msg_id));
            }
        }
    }

    async fn mark_read(&mut self, who: u8, sel: ConvSel, up_to: u8) {
        let (u, d) = self.who(who);
        let conv = match sel {
            ConvSel::Direct(p) => direct(u, p as usize % (USERS + 1)),
            ConvSel::Group(g) => Conv::Group(self.group_sel(g)),
            ConvSel::OfMessage => direct(u, (u + 1) % USERS),
        };
        let up_to = if up_to == 0xff {
            u64::MAX
        } else {
            up_to as u64
        };
        let last = match conv {
            Conv::Direct(..) => self.direct_seq.get(&conv).copied().unwrap_or(0),
            Conv::Group(Some(g)) => self.groups[g].last_seq,
            Conv::Group(None) => 0,
        };
        let predicted = match conv {
            Conv::Direct(a, b) if a == b => Err(ErrorCode::InvalidArgument),
            Conv::Direct(..) if last == 0 => Err(ErrorCode::NotFound),
            Conv::Group(None) => Err(ErrorCode::NotFound),
            Conv::Group(Some(g)) if !self.is_member(g, u) => Err(ErrorCode::NotFound),
            _ => Ok(()),
        };
        let packet = Packet::MarkRead(pb::MarkRead {
            conversation: Some(self.conversation(u, conv)),
            up_to_seq: up_to,
        });
        let reply = self.request(u, d, packet).await;
        let ctx = format!("{} MARK_READ {conv:?} up to {up_to}", self.names[u]);
        if let Err(want) = predicted {
            assert_eq!(code_of(&reply), Some(want), "{ctx}: {reply:?}");
            return;
        }
        let Ok(Packet::MarkReadAck(ack)) = reply else {
            panic!("{ctx}: expected MARK_READ_ACK, got {reply:?}")
        };
        let pos = self.read.get(&(u, conv)).copied().unwrap_or(0);
        let up = up_to.min(last);
        if up > pos {
            assert!(
                ack.version > 0,
                "{ctx}: moved the read position without an entry"
            );
            self.read.insert((u, conv), up);
        } else {
            assert_eq!(ack.version, 0, "{ctx}: no move, but an entry");
        }
        let unread = self.model_unread(u);
        assert_eq!(
            ack.unread,
            unread.get(&conv).copied().unwrap_or(0),
            "{ctx}: unread"
        );
        assert_eq!(ack.total, unread.values().sum::<u64>(), "{ctx}: total");
    }

    fn check_group_info(&self, g: usize, info: &pb::GroupInfo, ctx: &str) {
        let grp = &self.groups[g];
        assert_eq!(info.group_id, grp.id, "{ctx}: group id");
        assert_eq!(info.owner, self.names[grp.owner], "{ctx}: owner");
        assert_eq!(
            info.member_count as usize,
            grp.members.len(),
            "{ctx}: member_count"
        );
        let mode = if grp.members.len() > FANOUT_THRESHOLD {
            pb::FanoutMode::Read
        } else {
            pb::FanoutMode::Write
        };
        assert_eq!(info.fanout, mode as i32, "{ctx}: fan-out mode");
        assert_eq!(info.last_seq, grp.last_seq, "{ctx}: last_seq");
        let policy = if grp.open {
            pb::JoinPolicy::Open
        } else {
            pb::JoinPolicy::Invite
        };
        assert_eq!(info.join_policy, policy as i32, "{ctx}: join policy");
    }

    fn add_member(&mut self, g: usize, user: usize) {
        let grp = &mut self.groups[g];
        grp.members.insert(user);
        let last = grp.last_seq;
        grp.joined_seq.entry(user).or_insert(last);
        self.read.insert((user, Conv::Group(Some(g))), last);
    }

    /// Sends a group change from device `(u, d)` and checks its reply against `predicted`: the
    /// error code, or a GroupAck in a `want` frame. Returns the predicted value and the group
    /// as the ack has it.
    async fn group_change<T>(
        &mut self,
        (u, d): (usize, usize),
        packet: Packet,
        want: Command,
        predicted: Result<T, ErrorCode>,
        ctx: &str,
    ) -> Option<(T, pb::GroupInfo)> {
        let reply = self.request(u, d, packet).await;
        let value = match predicted {
            Err(code) => {
                assert_eq!(code_of(&reply), Some(code), "{ctx}: {reply:?}");
                return None;
            }
            Ok(v) => v,
        };
        let info = match &reply {
            Ok(
                p @ (Packet::GroupCreateAck(a)
                | Packet::GroupJoinAck(a)
                | Packet::GroupLeaveAck(a)
                | Packet::GroupSetRoleAck(a)),
            ) if p.command() == want => a.group.clone(),
            _ => None,
        };
        let info = info.unwrap_or_else(|| panic!("{ctx}: expected {}, got {reply:?}", want.name()));
        Some((value, info))
    }

    async fn group_create(&mut self, who: u8, mask: u8, history: u8) {
        let (u, d) = self.who(who);
        let members: Vec<usize> = (0..=USERS).filter(|i| mask & (1 << i) != 0).collect();
        let all: BTreeSet<usize> = members.iter().copied().chain([u]).collect();
        let history_value = match history % 3 {
            0 => pb::HistoryVisibility::Full as i32,
            1 => pb::HistoryVisibility::FromJoin as i32,
            _ => 7,
        };
        // Mostly invite-only (the default), sometimes open, sometimes a value that is neither.
        let policy = (history / 3) % 4;
        let policy_value = match policy {
            0 | 1 => pb::JoinPolicy::Invite as i32,
            2 => pb::JoinPolicy::Open as i32,
            _ => 9,
        };
        let packet = Packet::GroupCreate(pb::GroupCreate {
            name: format!("group {}", self.groups.len()),
            members: members.iter().map(|&i| self.names[i].clone()).collect(),
            history: history_value,
            join_policy: policy_value,
        });
        let ctx = format!("{} GROUP_CREATE {all:?} policy {policy}", self.names[u]);
        // The list's length is checked before anything in it: as many ids as the group may
        // have members leaves no room for the creator.
        let predicted = if members.len() >= MAX_GROUP_SIZE {
            Err(ErrorCode::GroupFull)
        } else if history % 3 == 2 || policy == 3 {
            Err(ErrorCode::InvalidArgument)
        } else if all.len() > MAX_GROUP_SIZE {
            Err(ErrorCode::GroupFull)
        } else {
            Ok(())
        };
        let Some(((), info)) = self
            .group_change((u, d), packet, Command::GroupCreateAck, predicted, &ctx)
            .await
        else {
            return;
        };
        assert!(
            !self.groups.iter().any(|g| g.id == info.group_id),
            "{ctx}: a group id twice"
        );
        // 'g' and 128 random bits in hex (PROTOCOL.md): nothing to guess from.
        assert!(
            info.group_id.len() == 33
                && info.group_id.starts_with('g')
                && info.group_id[1..].bytes().all(|b| b.is_ascii_hexdigit()),
            "{ctx}: group id {:?}",
            info.group_id
        );
        self.groups.push(Group {
            id: info.group_id.clone(),
            owner: u,
            members: BTreeSet::new(),
            admins: BTreeSet::new(),
            open: policy == 2,
            from_join: history % 3 == 1,
            last_seq: 0,
            joined_seq: HashMap::new(),
            log: BTreeMap::new(),
            recalled: BTreeSet::new(),
        });
        let g = self.groups.len() - 1;
        for m in all {
            self.add_member(g, m);
        }
        self.check_group_info(g, &info, &ctx);
    }

    async fn group_join(&mut self, who: u8, group: u8, mask: u8) {
        let (u, d) = self.who(who);
        let g = self.group_sel(group);
        let users: Vec<usize> = (0..=USERS).filter(|i| mask & (1 << i) != 0).collect();
        let predicted: Result<BTreeSet<usize>, ErrorCode> = (|| {
            if users.len() >= MAX_GROUP_SIZE {
                // The list's length, before the group is looked at.
                return Err(ErrorCode::GroupFull);
            }
            // A non-member is told the group does not exist (unless it is open and it joins
            // by itself).
            let Some(g) = g else {
                return Err(ErrorCode::NotFound);
            };
            let grp = &self.groups[g];
            let joining: BTreeSet<usize> = if users.is_empty() {
                if !grp.members.contains(&u) && !grp.open {
                    return Err(ErrorCode::NotFound);
                }
                BTreeSet::from([u])
            } else {
                if !grp.members.contains(&u) {
                    return Err(ErrorCode::NotFound);
                }
                if !self.is_manager(g, u) {
                    return Err(ErrorCode::Forbidden);
                }
                users.iter().copied().collect()
            };
            let new: BTreeSet<usize> = joining.difference(&grp.members).copied().collect();
            if !new.is_empty() && grp.members.len() + new.len() > MAX_GROUP_SIZE {
                return Err(ErrorCode::GroupFull);
            }
            Ok(new)
        })();
        let packet = Packet::GroupJoin(pb::GroupJoin {
            group_id: self.group_id(g),
            user_ids: users.iter().map(|&i| self.names[i].clone()).collect(),
        });
        let ctx = format!("{} GROUP_JOIN {g:?} {users:?}", self.names[u]);
        let done = self
            .group_change((u, d), packet, Command::GroupJoinAck, predicted, &ctx)
            .await;
        if let (Some((new, info)), Some(g)) = (done, g) {
            for m in new {
                self.add_member(g, m);
            }
            self.check_group_info(g, &info, &ctx);
        }
    }

    async fn group_leave(&mut self, who: u8, group: u8, target: u8) {
        let (u, d) = self.who(who);
        let g = self.group_sel(group);
        let t = if target == 0 {
            None
        } else {
            Some((target as usize - 1) % (USERS + 1))
        };
        let victim = t.unwrap_or(u);
        let predicted: Result<(), ErrorCode> = (|| {
            let Some(g) = g else {
                return Err(ErrorCode::NotFound);
            };
            let grp = &self.groups[g];
            if !grp.members.contains(&u) {
                return Err(ErrorCode::NotFound);
            }
            if victim != u {
                if !self.is_manager(g, u) {
                    return Err(ErrorCode::Forbidden);
                }
                if !grp.members.contains(&victim) {
                    return Err(ErrorCode::NotFound);
                }
            }
            if victim == grp.owner {
                return Err(ErrorCode::Forbidden);
            }
            // An admin removes members, not other admins.
            if victim != u && grp.owner != u && grp.admins.contains(&victim) {
                return Err(ErrorCode::Forbidden);
            }
            Ok(())
        })();
        let packet = Packet::GroupLeave(pb::GroupLeave {
            group_id: self.group_id(g),
            user_id: t.map(|i| self.names[i].clone()).unwrap_or_default(),
        });
        let ctx = format!("{} GROUP_LEAVE {g:?} {t:?}", self.names[u]);
        let done = self
            .group_change((u, d), packet, Command::GroupLeaveAck, predicted, &ctx)
            .await;
        if let (Some(((), info)), Some(g)) = (done, g) {
            self.groups[g].members.remove(&victim);
            self.groups[g].admins.remove(&victim);
            self.check_group_info(g, &info, &ctx);
        }
    }

    async fn group_set_role(&mut self, who: u8, group: u8, target: u8, role: u8) {
        let (u, d) = self.who(who);
        let g = self.group_sel(group);
        let t = target as usize % (USERS + 1);
        let role_value = match role % 4 {
            0 => pb::GroupRole::Member as i32,
            1 => pb::GroupRole::Admin as i32,
            2 => pb::GroupRole::Owner as i32,
            _ => 7,
        };
        let predicted: Result<(), ErrorCode> = (|| {
            // Only ADMIN and MEMBER can be set: checked before the group is looked at.
            if role % 4 >= 2 {
                return Err(ErrorCode::InvalidArgument);
            }
            let g = g.ok_or(ErrorCode::NotFound)?;
            let grp = &self.groups[g];
            if !grp.members.contains(&u) {
                return Err(ErrorCode::NotFound);
            }
            if grp.owner != u {
                return Err(ErrorCode::Forbidden);
            }
            if !grp.members.contains(&t) {
                return Err(ErrorCode::NotFound);
            }
            if t == grp.owner {
                return Err(ErrorCode::Forbidden);
            }
            Ok(())
        })();
        let packet = Packet::GroupSetRole(pb::GroupSetRole {
            group_id: self.group_id(g),
            user_id: self.names[t].clone(),
            role: role_value,
        });
        let ctx = format!("{} GROUP_SET_ROLE {g:?} {t} to {role_value}", self.names[u]);
        let done = self
            .group_change((u, d), packet, Command::GroupSetRoleAck, predicted, &ctx)
            .await;
        if let (Some(((), info)), Some(g)) = (done, g) {
            if role_value == pb::GroupRole::Admin as i32 {
                self.groups[g].admins.insert(t);
            } else {
                self.groups[g].admins.remove(&t);
            }
            self.check_group_info(g, &info, &ctx);
        }
    }

    /// NOT_FOUND for a group `u` is not in (whether or not it exists), or the group.
    fn member_read(&self, u: usize, g: Option<usize>) -> Result<usize, ErrorCode> {
        let g = g.ok_or(ErrorCode::NotFound)?;
        if self.is_member(g, u) {
            Ok(g)
        } else {
            Err(ErrorCode::NotFound)
        }
    }

    /// The group `u` may read, or `None` once `reply` is checked to be the refusal.
    fn readable(&self, u: usize, g: Option<usize>, reply: &Reply, ctx: &str) -> Option<usize> {
        match self.member_read(u, g) {
            Ok(g) => Some(g),
            Err(want) => {
                assert_eq!(code_of(reply), Some(want), "{ctx}: {reply:?}");
                None
            }
        }
    }

    /// Page size from a selector: the default, 1 or 2 (so cursors get walked).
    fn page_limit(sel: u8) -> u32 {
        (sel % 3) as u32
    }

    /// Walks a paged request from device `(u, d)`: `request(cursor)` is one page's request;
    /// `page(world, reply)` checks its reply and gives the next cursor (empty after the last
    /// page), or `None` to stop (a refusal it checked). At most `max` pages.
    async fn walk(
        &mut self,
        (u, d): (usize, usize),
        max: usize,
        ctx: &str,
        request: impl Fn(Vec<u8>) -> Packet,
        mut page: impl FnMut(&mut World, Reply) -> Option<Vec<u8>>,
    ) -> bool {
        let mut cursor = Vec::new();
        for _ in 0..=max {
            let reply = self.request(u, d, request(cursor)).await;
            match page(self, reply) {
                None => return false,
                Some(next) if next.is_empty() => return true,
                Some(next) => cursor = next,
            }
        }
        panic!("{ctx}: more than {max} pages");
    }

    async fn group_members(&mut self, who: u8, group: u8) {
        let (u, d) = self.who(who);
        let g = self.group_sel(group);
        let limit = Self::page_limit(group / 16);
        let ctx = format!("{} GROUP_MEMBERS {g:?} limit {limit}", self.names[u]);
        let group_id = self.group_id(g);
        let mut got: Vec<String> = Vec::new();
        let request = |cursor| {
            Packet::GroupMembers(pb::GroupMembers {
                group_id: group_id.clone(),
                cursor,
                limit,
            })
        };
        let listed = self
            .walk((u, d), MAX_GROUP_SIZE, &ctx, request, |w, reply| {
                let g = w.readable(u, g, &reply, &ctx)?;
                let Ok(Packet::GroupMembersAck(ack)) = reply else {
                    panic!("{ctx}: expected GROUP_MEMBERS_ACK, got {reply:?}")
                };
                w.check_group_info(g, ack.group.as_ref().unwrap(), &ctx);
                assert!(
                    limit == 0 || ack.members.len() <= limit as usize,
                    "{ctx}: page too long"
                );
                for m in &ack.members {
                    let i = w.names.iter().position(|n| *n == m.user_id).unwrap();
                    assert_eq!(m.role, w.role(g, i) as i32, "{ctx}: role of {}", m.user_id);
                    assert_eq!(
                        m.joined_seq, w.groups[g].joined_seq[&i],
                        "{ctx}: joined_seq"
                    );
                    got.push(m.user_id.clone());
                }
                Some(ack.next_cursor)
            })
            .await;
        if let (true, Some(g)) = (listed, g) {
            let want: Vec<String> = self.groups[g]
                .members
                .iter()
                .map(|&i| self.names[i].clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            // Every member once, in user id order, across the pages.
            assert_eq!(got, want, "{ctx}: members");
        }
    }

    async fn group_list(&mut self, who: u8) {
        let (u, d) = self.who(who);
        let limit = Self::page_limit(who / 12);
        let ctx = format!("{}: GROUP_LIST limit {limit}", self.names[u]);
        let mut got: Vec<String> = Vec::new();
        let request = |cursor| Packet::GroupList(pb::GroupList { cursor, limit });
        let max = self.groups.len();
        self.walk((u, d), max, &ctx, request, |w, reply| {
            let Ok(Packet::GroupListAck(ack)) = reply else {
                panic!("{ctx}: expected GROUP_LIST_ACK, got {reply:?}")
            };
            assert!(
                limit == 0 || ack.groups.len() <= limit as usize,
                "{ctx}: page too long"
            );
            for info in &ack.groups {
                let g = w
                    .groups
                    .iter()
                    .position(|g| g.id == info.group_id)
                    .unwrap_or_else(|| panic!("{ctx}: unknown group {}", info.group_id));
                w.check_group_info(g, info, &ctx);
                got.push(info.group_id.clone());
            }
            Some(ack.next_cursor)
        })
        .await;
        let want: Vec<String> = self
            .groups
            .iter()
            .filter(|g| g.members.contains(&u))
            .map(|g| g.id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // Every group of the user once, in group id order, across the pages.
        assert_eq!(got, want, "{ctx}");
    }

    async fn group_history(&mut self, who: u8, group: u8, before: u8, after: u8, limit: u8) {
        let (u, d) = self.who(who);
        let g = self.group_sel(group);
        let order = (limit / 6) % 4;
        let order_value = match order {
            0 => pb::HistoryOrder::Unspecified as i32,
            1 => pb::HistoryOrder::NewestFirst as i32,
            2 => pb::HistoryOrder::OldestFirst as i32,
            _ => 9,
        };
        let limit = (limit % 6) as u32;
        // 0xff: the largest seq a peer can name (it must not wrap a range).
        let bound = |b: u8| if b == 0xff { u64::MAX } else { b as u64 % 12 };
        let (before, after) = (bound(before), bound(after));
        let packet = Packet::GroupHistory(pb::GroupHistory {
            group_id: self.group_id(g),
            before_seq: before,
            after_seq: after,
            limit,
            order: order_value,
        });
        let reply = self.request(u, d, packet).await;
        let ctx = format!(
            "{} GROUP_HISTORY {g:?} before {before} after {after} limit {limit} order {order}",
            self.names[u]
        );
        if order == 3 {
            assert_eq!(
                code_of(&reply),
                Some(ErrorCode::InvalidArgument),
                "{ctx}: {reply:?}"
            );
            return;
        }
        let Some(g) = self.readable(u, g, &reply, &ctx) else {
            return;
        };
        let Ok(Packet::GroupHistoryAck(ack)) = reply else {
            panic!("{ctx}: expected GROUP_HISTORY_ACK, got {reply:?}")
        };
        let grp = &self.groups[g];
        let floor = if grp.from_join { grp.joined_seq[&u] } else { 0 };
        let last = grp.last_seq;
        let limit = if limit == 0 { 50 } else { limit as usize };
        let oldest_first = match order {
            1 => false,
            2 => true,
            _ => after > 0,
        };
        let seqs: Vec<u64> = if oldest_first {
            let from = after.max(floor);
            if from >= last {
                Vec::new()
            } else {
                (from + 1..=last).take(limit + 1).collect()
            }
        } else {
            let top = if before == 0 { last } else { before - 1 }.min(last);
            (floor + 1..=top).rev().take(limit + 1).collect()
        };
        let want: Vec<u64> = seqs.iter().copied().take(limit).collect();
        let got: Vec<u64> = ack.messages.iter().map(|m| m.seq).collect();
        // All of `want`, or (the byte budget) a non-empty part of it and has_more.
        assert!(
            want.starts_with(&got)
                && (got.len() == want.len() || (!got.is_empty() && ack.has_more)),
            "{ctx}: seqs {got:?}, expected {want:?}"
        );
        if got.len() == want.len() {
            assert_eq!(ack.has_more, seqs.len() > limit, "{ctx}: has_more");
        }
        for m in &ack.messages {
            assert_eq!(
                Some(&m.msg_id),
                grp.log.get(&m.seq),
                "{ctx}: msg at seq {}",
                m.seq
            );
            assert_eq!(
                m.recalled,
                grp.recalled.contains(&m.seq),
                "{ctx}: recalled flag"
            );
            if m.recalled {
                assert!(
                    m.content.is_empty(),
                    "{ctx}: a recalled message keeps content"
                );
            }
        }
    }

    /// UNREAD, page by page (the default size, 1 or 2 conversations a page).
    async fn unread(&mut self, who: u8) {
        let (u, d) = self.who(who);
        let limit = Self::page_limit(who / 12);
        let ctx = format!("{}: UNREAD limit {limit}", self.names[u]);
        let mut all = pb::UnreadAck::default();
        let request = |cursor| Packet::Unread(pb::Unread { cursor, limit });
        let max = 8 + self.groups.len();
        self.walk((u, d), max, &ctx, request, |_, reply| {
            let Ok(Packet::UnreadAck(ack)) = reply else {
                panic!("{ctx}: UNREAD answered {reply:?}")
            };
            assert!(
                limit == 0 || ack.conversations.len() <= limit as usize,
                "{ctx}: page too long"
            );
            // Every page carries the total over all conversations.
            all.total = ack.total;
            all.conversations.extend(ack.conversations);
            Some(ack.next_cursor)
        })
        .await;
        self.check_unread(u, &all, &ctx);
    }

    /// The users `u` blocked, in bytewise id order (as BLOCK_LIST pages them).
    fn blocked_names(&self, u: usize) -> Vec<String> {
        self.blocks
            .iter()
            .filter(|(a, _)| *a == u)
            .map(|&(_, b)| self.names[b].clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    async fn block(&mut self, who: u8, target: u8, blocked: u8) {
        let (u, d) = self.who(who);
        let t = target as usize % (USERS + 2);
        let blocked = blocked % 2 == 1;
        // USERS + 1: another user's id with a zero-width space in it, which no id may hold.
        let user_id = match self.names.get(t) {
            Some(name) => name.clone(),
            None => format!("{}\u{200b}", self.names[(u + 1) % USERS]),
        };
        let count = self.blocks.iter().filter(|(a, _)| *a == u).count();
        let predicted = if t > USERS || t == u {
            Err(ErrorCode::InvalidArgument)
        } else if blocked && !self.blocks.contains(&(u, t)) && count >= MAX_BLOCKS {
            // Only a new block counts; blocking again and unblocking are always allowed.
            Err(ErrorCode::LimitExceeded)
        } else {
            Ok(blocked)
        };
        self.ensure(u, d).await;
        let versions = |w: &World| {
            [u, t.min(USERS)].map(|i| w.store().current_version(&w.names[i]).unwrap())
        };
        let before = versions(self);
        let packet = Packet::Block(pb::Block { user_id, blocked });
        let reply = self.request(u, d, packet).await;
        let ctx = format!("{} BLOCK {t} {blocked}", self.names[u]);
        // Nothing in either inbox, whatever the answer.
        assert_eq!(versions(self), before, "{ctx}: an inbox changed");
        match predicted {
            Err(want) => assert_eq!(code_of(&reply), Some(want), "{ctx}: {reply:?}"),
            Ok(want) => {
                let Ok(Packet::BlockAck(ack)) = reply else {
                    panic!("{ctx}: expected BLOCK_ACK, got {reply:?}")
                };
                // The state now, whether it changed or not.
                assert_eq!(ack.blocked, want, "{ctx}: state");
                if want {
                    self.blocks.insert((u, t));
                } else {
                    self.blocks.remove(&(u, t));
                }
            }
        }
    }

    /// BLOCK_LIST, page by page, from the first or after a user's id (blocked or not).
    async fn block_list(&mut self, who: u8, after: u8, limit: u8) {
        let (u, d) = self.who(who);
        let start = match after as usize % (USERS + 2) {
            0 => String::new(),
            i => self.names[i - 1].clone(),
        };
        let limit = Self::page_limit(limit);
        let ctx = format!("{} BLOCK_LIST after {start:?} limit {limit}", self.names[u]);
        let all = self.blocked_names(u);
        let want: Vec<String> = all.iter().filter(|n| **n > start).cloned().collect();
        let size = if limit == 0 { 200 } else { limit as usize };
        let mut got: Vec<String> = Vec::new();
        // The cursor is the last id of the page before ("": the first page, after `start`).
        let request = |cursor: Vec<u8>| {
            Packet::BlockList(pb::BlockList {
                after: if cursor.is_empty() {
                    start.clone()
                } else {
                    String::from_utf8(cursor).unwrap()
                },
                limit,
            })
        };
        let walked = self
            .walk((u, d), MAX_BLOCKS, &ctx, request, |_, reply| {
                let Ok(Packet::BlockListAck(ack)) = reply else {
                    panic!("{ctx}: expected BLOCK_LIST_ACK, got {reply:?}")
                };
                // Every page: the next ids in order, has_more exactly when more follow, and
                // the total over all pages.
                let from = got.len().min(want.len());
                let page = &want[from..(from + size).min(want.len())];
                assert_eq!(ack.user_ids, page, "{ctx}: page after {got:?}");
                assert_eq!(ack.has_more, from + size < want.len(), "{ctx}: has_more");
                assert_eq!(ack.total as usize, all.len(), "{ctx}: total");
                got.extend(ack.user_ids.iter().cloned());
                Some(match (ack.has_more, ack.user_ids.last()) {
                    (true, Some(last)) => last.clone().into_bytes(),
                    _ => Vec::new(),
                })
            })
            .await;
        assert!(walked);
        assert_eq!(got, want, "{ctx}: every blocked user once");
    }

    async fn sync(&mut self, who: u8, since: u8, limit: u8) {
        let (u, d) = self.who(who);
        let current = self.store().current_version(&self.names[u]).unwrap();
        let since = match since % 4 {
            0 => 0,
            1 => current.saturating_sub((since / 4) as u64),
            2 => (since / 4) as u64,
            _ => u64::MAX,
        };
        let limit = (limit % 5) as u32;
        let reply = self
            .request(
                u,
                d,
                Packet::Sync(pb::Sync {
                    since_version: since,
                    limit,
                }),
            )
            .await;
        let ctx = format!("{} SYNC since {since} limit {limit}", self.names[u]);
        let Ok(Packet::SyncAck(page)) = reply else {
            panic!("{ctx}: expected SYNC_ACK, got {reply:?}")
        };
        for (i, e) in page.entries.iter().enumerate() {
            assert_eq!(e.version, since + 1 + i as u64, "{ctx}: entry versions");
        }
        let last = page.entries.last().map_or(since, |e| e.version);
        assert_eq!(page.new_version, last, "{ctx}: new_version");
        assert_eq!(page.current_version, current, "{ctx}: current_version");
        // At most `limit` (default 200) entries, fewer only where the byte budget ends a page.
        let want_len = (current.saturating_sub(since) as usize).min(if limit == 0 {
            200
        } else {
            limit as usize
        });
        assert!(
            page.entries.len() <= want_len,
            "{ctx}: {} entries",
            page.entries.len()
        );
        assert!(
            want_len == 0 || !page.entries.is_empty(),
            "{ctx}: an empty page"
        );
        assert_eq!(page.has_more, last < current, "{ctx}: has_more");
    }

    async fn drain(&mut self, who: u8) {
        let (u, d) = self.who(who);
        self.ensure(u, d).await;
        let mut dev = self.devices[u * DEVICES + d].take().unwrap();
        // Lets the server write what it has queued.
        loop {
            match dev.conn.recv_frame_timeout(Duration::from_millis(2)).await {
                Ok(Some(frame)) => {
                    if let Some(k) = self.on_frame(u, &mut dev.last_push, frame) {
                        panic!("{}/d{d}: unexpected KICK {k:?}", self.names[u]);
                    }
                }
                Err(ClientError::Timeout) => break,
                other => panic!("{}/d{d}: closed while draining: {other:?}", self.names[u]),
            }
        }
        if dev.last_push > 0 {
            dev.conn.push_ack(dev.last_push).await.expect("PUSH_ACK");
        }
        self.devices[u * DEVICES + d] = Some(dev);
    }

    async fn bad_login(&mut self, who: u8, kind: &TokenKind) {
        let (u, d) = self.who(who);
        let device = format!("d{d}");
        let name = self.names[u].clone();
        let now = (missive::now_ms() / 1000) as u64;
        let (token, want) = match kind {
            TokenKind::Expired => (
                token::mint(SECRET.as_bytes(), &name, &device, now.saturating_sub(5)),
                ErrorCode::TokenExpired,
            ),
            TokenKind::BadSignature => (
                token::mint(b"another secret", &name, &device, now + 3600),
                ErrorCode::AuthFailed,
            ),
            TokenKind::OtherDevice => (self.token(&name, "elsewhere"), ErrorCode::AuthFailed),
            TokenKind::OtherUser => {
                // A token of another user's device, presented with its device id, logs in as
                // that user; here the token is for the ghost but the device differs.
                (
                    self.token(&self.names[USERS], "ghostphone"),
                    ErrorCode::AuthFailed,
                )
            }
            TokenKind::Garbage(b) => (
                String::from_utf8_lossy(b).into_owned(),
                ErrorCode::AuthFailed,
            ),
        };
        let mut conn = self.connect().await;
        let r = tokio::time::timeout(WAIT, conn.login(&token, &device, 0))
            .await
            .expect("an answer to a bad LOGIN within 5 s");
        let code = match &r {
            Err(e @ ClientError::Server { fatal: true, .. }) => e.server_code(),
            _ => None,
        };
        assert_eq!(
            code,
            Some(want),
            "{name}/{device}: LOGIN with {kind:?}: {r:?}"
        );
        match tokio::time::timeout(WAIT, conn.recv_frame()).await {
            Ok(Ok(None)) | Ok(Err(ClientError::Io(_))) => {}
            other => panic!("after a refused LOGIN: {other:?}"),
        }
    }

    async fn raw_bytes(&mut self, login: bool, bytes: &[u8]) {
        let mut conn = self.connect().await;
        if login {
            let token = self.token(&self.raw_user, "rawb");
            tokio::time::timeout(WAIT, conn.login(&token, "rawb", 0))
                .await
                .expect("raw login within 5 s")
                .expect("raw login");
        }
        let _ = conn.write_raw(bytes).await;
        let _ = conn.shutdown().await;
        // Whatever the server answers, it must close the connection.
        loop {
            match tokio::time::timeout(WAIT, conn.recv_frame()).await {
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) | Ok(Err(_)) => break,
                Err(_) => panic!("the server kept a connection open after garbage and EOF"),
            }
        }
    }

    async fn raw_frame(&mut self, flags: u8, command: u16, request_id: u8, body: &[u8]) {
        if self.raw.conn.is_none() {
            let mut conn = self.connect().await;
            let token = self.token(&self.raw_user, "rawf");
            tokio::time::timeout(WAIT, conn.login(&token, "rawf", 0))
                .await
                .expect("raw login within 5 s")
                .expect("raw login");
            self.raw.conn = Some(conn);
        }
        let conn = self.raw.conn.as_mut().unwrap();
        let frame = Frame {
            flags: Flags(flags),
            command,
            request_id: u32::from(request_id) << 24 | 0x00ff_ff00,
            body: Bytes::copy_from_slice(body),
        };
        let mut alive = conn.send_frame(&frame).await.is_ok();
        if alive {
            let hb = Packet::Heartbeat(pb::Heartbeat {
                client_time_ms: 1,
                ..Default::default()
            });
            match tokio::time::timeout(WAIT, conn.request(hb)).await {
                Ok(Ok(Packet::HeartbeatAck(_))) => {}
                Ok(Ok(other)) => panic!("HEARTBEAT answered with {other:?}"),
                Ok(Err(ClientError::Server { fatal: false, .. })) => {}
                Ok(Err(_)) => alive = false,
                Err(_) => panic!("no HEARTBEAT_ACK within 5 s after a raw frame"),
            }
        }
        // Drop whatever else arrived (pushes of the raw user's own sends and the like).
        while let Ok(Some(_)) = conn.buffered_frame() {}
        if !alive {
            let mut conn = self.raw.conn.take().unwrap();
            let _ = conn.shutdown().await;
            loop {
                match tokio::time::timeout(WAIT, conn.recv_frame()).await {
                    Ok(Ok(Some(_))) => {}
                    Ok(Ok(None)) | Ok(Err(_)) => break,
                    Err(_) => panic!("the server kept a failed connection open"),
                }
            }
        }
    }

    async fn act(&mut self, a: &Action) {
        match a {
            Action::Login { who } => {
                let (u, d) = self.who(*who);
                self.login(u, d, false).await
            }
            Action::Relogin { who } => {
                let (u, d) = self.who(*who);
                self.login(u, d, true).await
            }
            Action::BadLogin { who, token } => self.bad_login(*who, token).await,
            Action::Send {
                who,
                to,
                cmid,
                too_big,
            } => {
                let conv = self.direct_target(self.who(*who).0, *to);
                self.sends(*who, conv, *cmid, 1, *too_big, 0).await
            }
            Action::Burst {
                who,
                to,
                cmid,
                n,
                tail,
            } => {
                let conv = self.direct_target(self.who(*who).0, *to);
                self.sends(*who, conv, *cmid, *n as usize % 8 + 1, false, *tail)
                    .await
            }
            Action::SendGroup { who, group, cmid } => {
                let conv = Conv::Group(self.group_sel(*group));
                self.sends(*who, conv, *cmid, 1, false, 0).await
            }
            Action::BurstGroup {
                who,
                group,
                cmid,
                n,
            } => {
                let conv = Conv::Group(self.group_sel(*group));
                self.sends(*who, conv, *cmid, *n as usize % 6 + 2, false, 0)
                    .await
            }
            Action::Sync { who, since, limit } => self.sync(*who, *since, *limit).await,
            Action::Drain { who } => self.drain(*who).await,
            Action::PushAck { who, version } => {
                let (u, d) = self.who(*who);
                self.ensure(u, d).await;
                let dev = self.devices[u * DEVICES + d].as_mut().unwrap();
                dev.conn.push_ack(*version as u64).await.expect("PUSH_ACK");
            }
            Action::MarkRead { who, conv, up_to } => self.mark_read(*who, *conv, *up_to).await,
            Action::Recall { who, msg, conv } => self.recall(*who, *msg, *conv).await,
            Action::Delete { who, msg, conv } => self.delete(*who, *msg, *conv).await,
            Action::GroupCreate {
                who,
                members,
                history,
            } => self.group_create(*who, *members, *history).await,
            Action::GroupJoin { who, group, users } => self.group_join(*who, *group, *users).await,
            Action::GroupLeave { who, group, target } => {
                self.group_leave(*who, *group, *target).await
            }
            Action::GroupMembers { who, group } => self.group_members(*who, *group).await,
            Action::GroupList { who } => self.group_list(*who).await,
            Action::GroupHistory {
                who,
                group,
                before,
                after,
                limit,
            } => {
                self.group_history(*who, *group, *before, *after, *limit)
                    .await
            }
            Action::Unread { who } => self.unread(*who).await,
            Action::GroupSetRole {
                who,
                group,
                target,
                role,
            } => self.group_set_role(*who, *group, *target, *role).await,
            Action::Contacts { who, limit } => {
                let (u, d) = self.who(*who);
                let packet = Packet::Contacts(pb::Contacts {
                    cursor: Vec::new(),
                    limit: (*limit % 4) as u32,
                });
                let reply = self.request(u, d, packet).await;
                assert!(
                    matches!(reply, Ok(Packet::ContactsAck(_))),
                    "CONTACTS answered {reply:?}"
                );
            }
            Action::Heartbeat { who } => {
                let (u, d) = self.who(*who);
                let hb = Packet::Heartbeat(pb::Heartbeat {
                    client_time_ms: 42,
                    ..Default::default()
                });
                let reply = self.request(u, d, hb).await;
                let Ok(Packet::HeartbeatAck(ack)) = reply else {
                    panic!("HEARTBEAT answered {reply:?}")
                };
                assert_eq!(ack.client_time_ms, 42);
            }
            Action::Disconnect { who } => {
                let (u, d) = self.who(*who);
                self.close(u, d).await
            }
            Action::Block {
                who,
                target,
                blocked,
            } => self.block(*who, *target, *blocked).await,
            Action::BlockList { who, after, limit } => self.block_list(*who, *after, *limit).await,
            Action::RawBytes { login, bytes } => self.raw_bytes(*login, bytes).await,
            Action::RawFrame {
                flags,
                command,
                request_id,
                body,
            } => self.raw_frame(*flags, *command, *request_id, body).await,
        }
    }

    // -----------------------------------------------------------------------------------------
    // After the input

    async fn finish(&mut self) {
        for u in 0..USERS {
            for d in 0..DEVICES {
                self.close(u, d).await;
            }
        }
        if let Some(mut conn) = self.raw.conn.take() {
            let _ = conn.shutdown().await;
            while let Ok(Ok(Some(_))) = tokio::time::timeout(WAIT, conn.recv_frame()).await {}
        }
        let held = self.h.server.store().clone();
        let store = held.core();

        // An honest client is still served: login, heartbeat, SYNC from 0 as stored.
        let mut conn = self.connect().await;
        let name = self.names[0].clone();
        let token = self.token(&name, "check");
        tokio::time::timeout(WAIT, conn.login(&token, "check", 0))
            .await
            .expect("LOGIN_ACK within 5 s after the input")
            .expect("an honest client logs in after the input");
        tokio::time::timeout(WAIT, conn.heartbeat())
            .await
            .expect("HEARTBEAT_ACK within 5 s after the input")
            .expect("HEARTBEAT after the input");
        let mut synced = Vec::new();
        let mut since = 0;
        loop {
            let reply = tokio::time::timeout(
                WAIT,
                conn.request(Packet::Sync(pb::Sync {
                    since_version: since,
                    limit: 0,
                })),
            )
            .await
            .expect("SYNC_ACK within 5 s")
            .expect("SYNC after the input");
            let Packet::SyncAck(page) = reply else {
                panic!("SYNC answered {reply:?}")
            };
            since = page.new_version;
            synced.extend(page.entries);
            if !page.has_more {
                break;
            }
        }
        let _ = conn.shutdown().await;
        while let Ok(Ok(Some(_))) = tokio::time::timeout(WAIT, conn.recv_frame()).await {}

        // The store's invariants, and the acks against it.
        let mut ledger = Ledger::new(&self.acked).unwrap_or_else(|e| panic!("{e}"));
        ledger.allow_sender(&self.raw_user);
        let rules = InboxRules::default();
        let mut everyone = self.names.clone();
        everyone.push(self.raw_user.clone());
        let mut inboxes = HashMap::new();
        for (i, user) in everyone.iter().enumerate() {
            let entries = check::check_store_user(&store, user).unwrap_or_else(|e| panic!("{e}"));
            check::check_inbox(&ledger, user, &entries, "store", rules)
                .unwrap_or_else(|e| panic!("{e}"));
            if i < USERS {
                let ack = store.unread(user).unwrap();
                self.check_unread(i, &ack, "stored unread");
            }
            inboxes.insert(i, entries);
        }
        assert_eq!(
            synced, inboxes[&0],
            "SYNC from 0 differs from the stored inbox"
        );
        for g in &self.groups {
            let members = check::check_group(&store, &g.id, &everyone)
                .unwrap_or_else(|e| panic!("{e}"))
                .expect("the group exists");
            let want: Vec<String> = g
                .members
                .iter()
                .map(|&i| self.names[i].clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            assert_eq!(members, want, "group {}: stored members vs the model", g.id);
        }
        check::check_group_sends(&store, &ledger).unwrap_or_else(|e| panic!("{e}"));

        // The blocks stored are the model's (their count is checked by `check_store_user`).
        for (i, user) in self.names.iter().enumerate() {
            let page = store.blocked_users(user, "", 1000).unwrap();
            let want = if i < USERS {
                self.blocked_names(i)
            } else {
                Vec::new()
            };
            assert_eq!(
                (page.user_ids, page.total, page.has_more),
                (want.clone(), want.len() as u64, false),
                "{user}: stored blocks vs the model"
            );
        }

        // Group messages are in exactly the inboxes of their fan-out.
        for (msg_id, want) in &self.group_inboxes {
            for (i, entries) in &inboxes {
                let has = entries
                    .iter()
                    .any(|e| matches!(&e.body, Some(Body::Message(m)) if m.msg_id == *msg_id));
                assert_eq!(
                    has,
                    want.contains(i),
                    "group msg {msg_id} in {}'s inbox",
                    everyone[*i]
                );
            }
        }

        // Every push is the stored entry at its version.
        for (u, pushed) in &self.pushes {
            let stored = (pushed.version as usize)
                .checked_sub(1)
                .and_then(|i| inboxes[u].get(i))
                .unwrap_or_else(|| {
                    panic!(
                        "{}: pushed version {} is not stored",
                        self.names[*u], pushed.version
                    )
                });
            let same = match (&pushed.body, &stored.body) {
                (Some(Body::Message(a)), Some(Body::Message(b))) => {
                    a.msg_id == b.msg_id && pushed.conversation == stored.conversation
                }
                _ => pushed == stored,
            };
            assert!(
                same,
                "{}: pushed {pushed:?}, stored {stored:?}",
                self.names[*u]
            );
        }
        trace(format!(
            "ok: {} acks, {} groups",
            self.acked.len(),
            self.groups.len()
        ));
    }
}
