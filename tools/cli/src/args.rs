//! The command line: [`Cli`], the options every command takes ([`Global`]) and the commands
//! ([`Cmd`], [`GroupCmd`]).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const PROXY_HELP: &str = "\
Fault rules (docs/conformance.md has the details):
  [up|down] [COMMAND] [#N | #N-M | every:N] ACTION
      ACTION: drop | dup | corrupt | cut | blackhole | hold | delay MS
      up: client to server; down: server to client; #N counts matching frames from 1
  delay MS [jitter MS]       every frame
  throttle BYTES_PER_SEC     each direction of each connection
  nat-idle SECS              black-hole a connection idle this long (no FIN)
  after SECS cut|blackhole   this long after each connection opens
  refuse N                   close the next N connections at once
  refuse-after-login N       let the next N log in, then cut them

Examples:
  missive --addr 127.0.0.1:443 proxy --listen 127.0.0.1:4430 --fault 'down PUSH #3 drop'
  missive proxy --fault 'down PUSH #2-#3 hold' --fault 'nat-idle 20' --capture run.jsonl
  missive decode --file run.jsonl";

const UPLOAD_HELP: &str = "\
The file's sha-256 is computed first and declared, so the server refuses bytes that changed on
the way (422). The chunks go over one kept-alive connection (plain TCP to --addr; --ws and
tcp:// addresses name the same host:port); a chunk that fails is resumed from where the server's
copy stands, on a new connection, after a short backoff. Progress goes to stderr; the finish's
answer to stdout (JSON with --json).

Examples:
  missive --user alice upload photo.jpg
  missive --user alice --json upload talk.mp4 --chunk 8388608
  missive --user alice send --to bob --text 'the photo' --media 5f0c2b...   # attach it
  missive --user bob download 5f0c2b... -o photo.jpg";

const DOWNLOAD_HELP: &str = "\
Readable by the uploader and the members of a conversation in which a message carries the media;
anyone else gets 404, as for an id that does not exist. A whole file is checked against its
ETag (the sha-256). The summary goes to stderr (JSON with --json: on stdout when -o is given).

Examples:
  missive --user bob download 5f0c2b... -o photo.jpg
  missive --user bob download 5f0c2b... --range 0-1023 > head.bin     # 206, bytes 0-1023
  missive --user bob download 5f0c2b... --range -100 -o tail.bin       # the last 100 bytes
  missive --user bob download 5f0c2b... --thumbnail -o thumb.jpg";

const BACKUP_HELP: &str = "\
The server writes the backup while it keeps serving: a RocksDB checkpoint (every change it
answered before the request), the media files its records use, the token secret; then it
answers with where the backup is and its size. One at a time: a second request while one runs
is refused (409 LIMIT_EXCEEDED). docs/operations.md has the details and the restore.

Examples:
  missive backup --api http://127.0.0.1:8080 --key $MISSIVE_API_KEY
  missive backup --list
  missive backup --delete 20261207T181500Z
  missived --restore missive-data-backups/20261207T181500Z --data-dir missive-restored";

const ABOUT: &str =
    "Missive protocol test CLI: send and watch messages, upload and download media, inspect and forge frames.";

const AFTER_HELP: &str = "\
Credentials: --token TOKEN, or --user U [--device D] to mint a token with the server's secret
(--secret S, or the file <data-dir>/secret; the HMAC key is the secret string's UTF-8 bytes).

Output is for people by default; --json prints JSON (one object, or one line per event for
`watch`). Any error exits non-zero; server errors print their code name and number, e.g.
`server error INVALID_ARGUMENT (11): content_type is 0`.

Examples:
  missive token --user alice --data-dir /var/lib/missive
  missive --user alice send --to bob --text 'hello'
  missive --user alice send --http --addr chat.example:80 --to bob --text 'hi'   # POST /v1/send
  missive --user alice upload photo.jpg          # media over HTTP: prints its media id
  missive --user alice send --to bob --text 'look' --media MEDIA_ID
  missive --user bob download MEDIA_ID -o photo.jpg --range 0-1023
  missive backup --key $MISSIVE_API_KEY      # an online backup through the server's API
  missive --user alice typing --to bob             # bob's online devices see it; nothing stored
  missive --user bob watch --count 1
  missive --ws --addr chat.example:80 --user bob watch   # over a WebSocket (ws://chat.example:80/ws)
  missive --user alice sync --since 0 --all --json
  missive --user alice history --to bob --limit 20       # the newest 20 messages, newest first
  missive --user alice receipts --to bob --watch         # print bob's read receipts live
  missive encode --command HEARTBEAT --request-id 1 --body '{\"client_time_ms\": 5}'
  missive decode 000000104d5301000002000000010805d6008e13
  missive raw --wait 1 000000104d5301000002000000010805d6008e13
  missive --addr 127.0.0.1:7000 conform      # check your app: point it at 127.0.0.1:4430
  missive --addr 127.0.0.1:7000 proxy --fault 'down PUSH #3 drop' --capture run.jsonl
  missive decode --file run.jsonl            # a capture, decoded";

#[derive(Parser, Debug)]
#[command(name = "missive", version, about = ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Cmd,
}

/// Options every command accepts (before or after the command name).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Server address, host:port.
    #[arg(
        long,
        global = true,
        env = "MISSIVE_ADDR",
        default_value = "127.0.0.1:443"
    )]
    pub addr: String,
    /// Connect over a WebSocket (ws://ADDR/ws) instead of plain TCP, as a client on a network
    /// that only lets HTTP through would. `--addr ws://host:port/path` does the same.
    #[arg(long, global = true, env = "MISSIVE_WS")]
    pub ws: bool,
    /// Log in as this user (a token is minted with the secret).
    #[arg(long, global = true, env = "MISSIVE_USER")]
    pub user: Option<String>,
    /// Device id for the minted token and LOGIN [default: `cli`; `cli-watch` for `watch`, so
    /// that a watching terminal stays online while other commands log in as the same user
    /// (a second login of one device replaces the first)].
    #[arg(long, global = true)]
    pub device: Option<String>,
    /// Log in with this token instead of minting one.
    #[arg(long, global = true, env = "MISSIVE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The server's token secret (else read from <data-dir>/secret).
    #[arg(long, global = true, env = "MISSIVE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// The server's data directory, for its `secret` file.
    #[arg(
        long,
        global = true,
        env = "MISSIVE_DATA_DIR",
        default_value = "./missive-data"
    )]
    pub data_dir: PathBuf,
    /// Lifetime of a minted token, in seconds.
    #[arg(long, global = true, default_value_t = 86_400)]
    pub ttl: u64,
    /// Seconds to wait for the connection, the login and each reply.
    #[arg(long, global = true, default_value_t = 10)]
    pub timeout: u64,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Log in as an app in the background: pushes still arrive, and the user also gets
    /// offline-push notifications (PROTOCOL.md 11.2).
    #[arg(long, global = true)]
    pub background: bool,
    /// Propose this heartbeat interval at login (seconds; 0: the server's default). The server
    /// clamps it; the LOGIN_ACK says the value in force (PROTOCOL.md 11.1).
    #[arg(long, global = true, default_value_t = 0, value_name = "SECS")]
    pub heartbeat_secs: u32,
}

impl Global {
    /// The address to connect to: `--addr`, as a `ws://` URL with `--ws`.
    pub fn endpoint(&self) -> String {
        if self.ws && !self.addr.starts_with("ws://") {
            let addr = self.addr.strip_prefix("tcp://").unwrap_or(&self.addr);
            format!("ws://{addr}/ws")
        } else {
            self.addr.clone()
        }
    }
}

/// A DIRECT peer or a group.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// The other user of a direct conversation.
    #[arg(long, visible_alias = "conv")]
    pub to: Option<String>,
    /// A group id.
    #[arg(long)]
    pub group: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Mint a login token (needs the secret) and print it.
    Token,
    /// Send a message and print the SEND_ACK.
    Send {
        #[command(flatten)]
        target: Target,
        /// The content (UTF-8 text); with --media, a caption (may be left out).
        #[arg(long, required_unless_present = "media")]
        text: Option<String>,
        /// content_type (application-defined; 0 is invalid).
        #[arg(long = "type", default_value_t = 1)]
        content_type: u32,
        /// Dedup key; a random one if not given. Resending with the same id stores nothing new.
        #[arg(long)]
        client_msg_id: Option<String>,
        /// Send over HTTP (`POST http://ADDR/v1/send` with the login token) instead of a
        /// connection, as an app without one would (PROTOCOL.md 27). Prints the same ack.
        /// Not with --media (that request carries no media).
        #[arg(long, conflicts_with = "ws")]
        http: bool,
        /// Group messages: members to @mention (comma-separated user ids).
        #[arg(long = "mention", value_delimiter = ',', value_name = "USERS")]
        mentions: Vec<String>,
        /// Attach an uploaded media file by its id (from `missive upload`); repeatable, at
        /// most 10. The server fills in its type, size, dimensions and preview (PROTOCOL.md 28).
        #[arg(long = "media", value_name = "MEDIA_ID", conflicts_with = "http")]
        media: Vec<String>,
    },
    /// Upload a file as media and print its media id, size, sha-256 and type.
    ///
    /// Resumable, over HTTP on --addr with the login token (PROTOCOL.md 28). Attach the media
    /// to a message with `send --media ID`.
    #[command(after_help = UPLOAD_HELP)]
    Upload {
        /// The file to upload (streamed: never read whole into memory).
        file: PathBuf,
        /// Bytes per chunk (one PATCH each; the server takes at most 16 MiB by default).
        #[arg(long, default_value_t = 4 << 20, value_name = "BYTES",
              value_parser = clap::value_parser!(u64).range(1..))]
        chunk: u64,
        /// The type to declare (the server sniffs the bytes and answers with what it found).
        #[arg(long, value_name = "TYPE")]
        content_type: Option<String>,
        /// Failed requests retried in a row before giving up (each after asking the server
        /// where the upload stands, on a new connection).
        #[arg(long, default_value_t = 5)]
        retries: u32,
    },
    /// Back the server up online, or list or delete its backups, through its API (POST, GET
    /// and DELETE /v1/backups on `http_listen`, with the API key). The backup goes to the
    /// server's `backup_dir`; restore one with `missived --restore DIR --data-dir NEW`.
    #[command(after_help = BACKUP_HELP)]
    Backup {
        /// The server's API address (its `http_listen`).
        #[arg(long, env = "MISSIVE_API", default_value = "http://127.0.0.1:8080")]
        api: String,
        /// The API key (the server's `api_key`).
        #[arg(long, env = "MISSIVE_API_KEY", hide_env_values = true)]
        key: Option<String>,
        /// List the backups instead of writing one.
        #[arg(long, conflicts_with = "delete")]
        list: bool,
        /// Delete the backup of this name (e.g. 20261207T181500Z) instead of writing one.
        #[arg(long, value_name = "NAME")]
        delete: Option<String>,
        /// Seconds to wait for a backup to be written.
        #[arg(long, default_value_t = 3600)]
        wait: u64,
    },
    /// Download a media file or its thumbnail, whole or a byte range.
    ///
    /// To a file or stdout; what came (status, bytes, type) is printed on stderr.
    #[command(after_help = DOWNLOAD_HELP)]
    Download {
        /// The media id (from `missive upload`, or a message's media).
        media_id: String,
        /// Write the bytes to this file (without it, or with `-`: to stdout). A failed
        /// download leaves no file.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Only these bytes: `a-b` (inclusive), `a-` (from a to the end) or `-n` (the last n).
        /// The answer must be a 206 with the matching Content-Range.
        #[arg(long, value_name = "a-b", allow_hyphen_values = true)]
        range: Option<String>,
        /// The thumbnail (images) instead of the file.
        #[arg(long)]
        thumbnail: bool,
    },
    /// Mute a conversation (no offline notifications but @mentions), or unmute it with --off.
    Mute {
        #[command(flatten)]
        target: Target,
        /// Unmute.
        #[arg(long)]
        off: bool,
    },
    /// Block a user: direct messages between you are refused (BLOCKED) either way until you
    /// unblock them.
    Block {
        /// The user to block.
        #[arg(value_name = "USER")]
        other: String,
    },
    /// Unblock a user.
    Unblock {
        /// The user to unblock.
        #[arg(value_name = "USER")]
        other: String,
    },
    /// List the users you blocked.
    Blocked {
        /// Start after this user id (the last one of the page before).
        #[arg(long, default_value = "")]
        after: String,
        /// Users per page (0: the server's default, 200; at most 1000).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Stay connected; print inbox entries as they arrive (acked after printing).
    Watch {
        /// Deliver entries after this version (default: only new ones).
        #[arg(long)]
        since: Option<u64>,
        /// Exit after this many entries.
        #[arg(long)]
        count: Option<u64>,
        /// Exit after this many seconds.
        #[arg(long = "for", value_name = "SECS")]
        for_secs: Option<u64>,
    },
    /// Print inbox entries after a version (one SYNC page, or all with --all).
    Sync {
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// Page size (0: the server's default).
        #[arg(long, default_value_t = 0)]
        limit: u32,
        /// Follow has_more to the end.
        #[arg(long)]
        all: bool,
    },
    /// List recent conversations, newest first.
    Contacts {
        #[arg(long, default_value_t = 0)]
        limit: u32,
        /// next_cursor of the previous page, in hex.
        #[arg(long, default_value = "")]
        cursor: String,
    },
    /// Show unread counts.
    Unread,
    /// Mark a conversation read up to a seq.
    Read {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        seq: u64,
    },
    /// Recall a message you sent.
    Recall {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        msg_id: u64,
    },
    /// Delete a message from your own view.
    Delete {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        msg_id: u64,
    },
    /// Page through any conversation's messages, direct or group (HISTORY), with the read
    /// positions of both sides.
    History {
        #[command(flatten)]
        target: Target,
        /// Messages before this seq, newest first (0: from the newest).
        #[arg(long, default_value_t = 0)]
        before: u64,
        /// Messages after this seq, oldest first (catch-up).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Oldest first from the start (with --after 0); implied by --after above 0.
        #[arg(long)]
        oldest_first: bool,
        /// Page size (0: the server's default, 50; at most 500).
        #[arg(long, default_value_t = 0)]
        limit: u32,
        /// Follow has_more (from next_seq) to the end.
        #[arg(long)]
        all: bool,
    },
    /// Read receipts: how far the other user has read a direct conversation (--to; with
    /// --watch, print RECEIPTs as they arrive), or who has read a group message (--group with
    /// --seq).
    Receipts {
        #[command(flatten)]
        target: Target,
        /// The group message's seq (READERS).
        #[arg(long)]
        seq: Option<u64>,
        /// Stay connected and print RECEIPT frames as they arrive (any conversation).
        #[arg(long)]
        watch: bool,
        /// With --watch: exit after this many receipts.
        #[arg(long)]
        count: Option<u64>,
        /// With --watch: exit after this many seconds.
        #[arg(long = "for", value_name = "SECS")]
        for_secs: Option<u64>,
    },
    /// Group commands.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Measure the HEARTBEAT round trip.
    Ping {
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
    /// Relay clients to the server (--addr), print every frame both ways, decoded, and inject
    /// faults (rules below, from --fault or a --scenario file).
    #[command(after_help = PROXY_HELP)]
    Proxy(ProxyArgs),
    /// Check a client under test against PROTOCOL.md's client rules: it connects through a
    /// fault-injecting proxy, you drive the app as told, conform reports pass/fail per rule.
    Conform(ConformArgs),
    /// Decode frames from hex (argument or stdin), a file of raw frames, or a capture of
    /// `missive proxy` / `missive conform`.
    Decode {
        /// Hex digits (white space ignored); read from stdin when absent.
        hex: Vec<String>,
        /// A file of raw frame bytes, or a capture (JSON lines) of `missive proxy --capture`.
        #[arg(long, conflicts_with = "hex")]
        file: Option<PathBuf>,
    },
    /// Encode one frame and print it as hex.
    Encode {
        /// Command name (SEND) or number (0x0003).
        #[arg(long)]
        command: String,
        #[arg(long, default_value_t = 0)]
        request_id: u32,
        /// The body as JSON, field names as in missive.proto (bytes fields in hex).
        #[arg(long, default_value = "{}")]
        body: String,
        /// The flags byte, as is (bit 0 also zlib-compresses the body). Reserved bits are
        /// allowed, to forge invalid frames.
        #[arg(long, default_value_t = 0)]
        flags: u8,
    },
    /// Tell a conversation you are typing (or stopped, or an app-defined signal). Nothing is
    /// stored; only the other side's online devices see it (PROTOCOL.md 26).
    Typing {
        #[command(flatten)]
        target: Target,
        /// TYPING_STOPPED instead of TYPING.
        #[arg(long, conflicts_with = "app")]
        stop: bool,
        /// An APP signal with this payload (UTF-8, at most 256 bytes) instead of TYPING.
        #[arg(long)]
        app: Option<String>,
    },
    /// Send raw bytes (hex) and print, decoded, whatever comes back.
    Raw {
        /// Hex digits to send (white space ignored).
        hex: Vec<String>,
        /// Stop waiting this many seconds after sending.
        #[arg(long, default_value_t = 2.0)]
        wait: f64,
    },
}

#[derive(Subcommand, Debug)]
pub enum GroupCmd {
    /// Create a group; you become its owner.
    Create {
        #[arg(long)]
        name: String,
        /// Initial members besides you, comma-separated.
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
        /// New members see messages from their join on (default: the whole history).
        #[arg(long)]
        from_join: bool,
        /// Anyone who knows the group id may join it (default: invite only).
        #[arg(long)]
        open: bool,
    },
    /// Join an open group, or add users to a group (owner or admin).
    Join {
        #[arg(long)]
        group: String,
        /// Users to add, comma-separated (default: yourself).
        #[arg(long, value_delimiter = ',')]
        users: Vec<String>,
    },
    /// Leave a group, or remove a user from it (owner or admin).
    Leave {
        #[arg(long)]
        group: String,
        /// The user to remove (default: yourself).
        #[arg(long, default_value = "")]
        user: String,
    },
    /// List a group's members.
    Members {
        #[arg(long)]
        group: String,
    },
    /// List your groups.
    List,
    /// Make a member an admin, or a member again (owner only).
    Role {
        #[arg(long)]
        group: String,
        #[arg(long)]
        user: String,
        /// `admin` or `member`.
        #[arg(long)]
        role: String,
    },
    /// Page through a group's messages.
    History {
        #[arg(long)]
        group: String,
        /// Messages before this seq, newest first (0: from the newest).
        #[arg(long, default_value_t = 0)]
        before: u64,
        /// Messages after this seq, oldest first (catch-up).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Oldest first from the start (with --after 0); implied by --after above 0.
        #[arg(long)]
        oldest_first: bool,
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
}

impl Global {
    /// The device id to log in as (see `--device`).
    pub fn device(&self) -> &str {
        self.device.as_deref().unwrap_or("cli")
    }
}

/// `missive proxy`'s options.
#[derive(Args, Debug, Clone)]
pub struct ProxyArgs {
    /// Where clients connect (repeatable).
    #[arg(long, default_value = "127.0.0.1:4430")]
    pub listen: Vec<String>,
    /// A fault rule (repeatable), e.g. 'down PUSH #3 drop'.
    #[arg(long = "fault", value_name = "RULE")]
    pub faults: Vec<String>,
    /// A file of fault rules, one per line (# comments).
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Write every event to this capture file (JSON lines; `missive decode --file` reads it).
    #[arg(long)]
    pub capture: Option<PathBuf>,
    /// Print nothing (with --capture).
    #[arg(long)]
    pub quiet: bool,
    /// Exit after this many seconds.
    #[arg(long)]
    pub for_secs: Option<u64>,
}

/// `missive conform`'s options.
#[derive(Args, Debug, Clone)]
pub struct ConformArgs {
    /// Where the app connects (plain TCP).
    #[arg(long, default_value = "127.0.0.1:4430")]
    pub listen: String,
    /// The address a KICK REDIRECT sends the app to.
    #[arg(long, default_value = "127.0.0.1:4431")]
    pub redirect_listen: String,
    /// The peer user conform plays (messages to and from the app's user).
    #[arg(long, default_value = "conform-peer")]
    pub peer: String,
    /// Write every event to this capture file.
    #[arg(long)]
    pub capture: Option<PathBuf>,
    /// Print every frame as it passes.
    #[arg(long)]
    pub verbose: bool,
    /// Connections refused in a row in the backoff step.
    #[arg(long, default_value_t = 6)]
    pub refusals: u32,
    /// The client's backoff base (PROTOCOL.md 21: 1000 ms); for clients configured otherwise.
    #[arg(long, default_value_t = 1000)]
    pub backoff_base_ms: u64,
    /// How long a connection must stay logged in before the client's backoff starts again
    /// (PROTOCOL.md 21: 60 s).
    #[arg(long, default_value_t = 60)]
    pub backoff_reset_secs: u64,
    /// How long to wait for the app at each step.
    #[arg(long, default_value_t = 300)]
    pub wait_secs: u64,
    /// Messages the peer sends in the receive step (at least 12).
    #[arg(long, default_value_t = 12)]
    pub messages: u32,
}
