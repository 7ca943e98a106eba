//! A raw connection for the attacker: frames written as the attack wants them (pipelined, never
//! read, half sent) and read with a limit of its own, so that a reply larger than the protocol's
//! 1 MiB (which `missive_client::Connection` refuses, as a client should) can still be measured.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use missive_client::pb;
use missive_protocol::frame::{HEADER_LEN, TRAILER_LEN};
use missive_protocol::{Command, Flags, Frame, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

/// Replies are read up to this size (far above the protocol's 1 MiB, to measure what the server
/// sends; bounded, so a broken length cannot make the harness allocate gigabytes).
pub const READ_LIMIT: usize = 256 << 20;

/// A frame as read, with its size on the wire.
pub struct Read {
    pub frame: Frame,
    pub wire_len: usize,
}

pub struct Raw {
    rd: BufReader<OwnedReadHalf>,
    pub wr: OwnedWriteHalf,
    next_id: u32,
}

impl Raw {
    /// Connects over TCP with TCP_NODELAY.
    pub async fn connect(addr: &str) -> Result<Raw> {
        let s = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        s.set_nodelay(true)?;
        Ok(Raw::over(s))
    }

    /// Connects with a small receive buffer: a client that never reads then leaves what the
    /// server sends in the server's memory rather than in this kernel's socket buffers.
    pub async fn connect_small_rcvbuf(addr: &str, rcvbuf: u32) -> Result<Raw> {
        let sa = addr.parse()?;
        let socket = TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(rcvbuf)?;
        let s = socket.connect(sa).await?;
        s.set_nodelay(true)?;
        Ok(Raw::over(s))
    }

    pub fn over(s: TcpStream) -> Raw {
        let (rd, wr) = s.into_split();
        Raw {
            rd: BufReader::with_capacity(64 * 1024, rd),
            wr,
            next_id: 1,
        }
    }

    /// The next request id (1, 2, ...; never 0).
    pub fn id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// `packet` as a frame with a fresh request id.
    pub fn frame(&mut self, packet: &Packet) -> Frame {
        let id = self.id();
        Frame::new(packet, id)
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.wr.write_all(bytes).await?;
        Ok(())
    }

    pub async fn send(&mut self, packet: &Packet) -> Result<u32> {
        let f = self.frame(packet);
        self.write(&f.to_bytes()).await?;
        Ok(f.request_id)
    }

    /// The next frame (any size up to `READ_LIMIT`); `None` at a clean end of stream.
    pub async fn read(&mut self) -> Result<Option<Read>> {
        let mut len = [0u8; 4];
        match self.rd.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let n = u32::from_be_bytes(len) as usize;
        if !(HEADER_LEN - 4 + TRAILER_LEN..=READ_LIMIT).contains(&n) {
            bail!("frame length {n} from the server is out of range");
        }
        let mut rest = vec![0u8; n];
        self.rd.read_exact(&mut rest).await?;
        let flags = Flags(rest[3]);
        let command = u16::from_be_bytes([rest[4], rest[5]]);
        let request_id = u32::from_be_bytes([rest[6], rest[7], rest[8], rest[9]]);
        let body = rest[10..n - TRAILER_LEN].to_vec();
        let frame = Frame {
            flags,
            command,
            request_id,
            body: body.into(),
        };
        // The CRC, checked by encoding the frame again: a mismatch means the bytes are not
        // what the server meant, and no figure should be read from them.
        let again = frame.to_bytes();
        if again[again.len() - TRAILER_LEN..] != rest[n - TRAILER_LEN..] {
            bail!("bad CRC on a {} frame from the server", cmd_name(command));
        }
        Ok(Some(Read {
            frame,
            wire_len: 4 + n,
        }))
    }

    /// [`Raw::read`] within `t`.
    pub async fn read_timeout(&mut self, t: Duration) -> Result<Option<Read>> {
        tokio::time::timeout(t, self.read())
            .await
            .map_err(|_| anyhow!("no frame from the server within {t:?}"))?
    }

    /// Reads until the reply to `id` (acknowledging pushes meanwhile, so the server keeps no
    /// retransmits for us); returns it decoded (bodies up to `READ_LIMIT`) with its wire size.
    pub async fn reply(&mut self, id: u32, t: Duration) -> Result<(Packet, Read)> {
        let deadline = tokio::time::Instant::now() + t;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(r) = self.read_timeout(left).await? else {
                bail!("the server closed the connection before replying");
            };
            if r.frame.command == Command::Push as u16 {
                if let Ok(Packet::Push(p)) = r.frame.packet(READ_LIMIT) {
                    self.send(&Packet::PushAck(pb::PushAck { version: p.version }))
                        .await?;
                }
                continue;
            }
            let fatal_error = r.frame.command == Command::Error as u16 && r.frame.request_id == 0;
            if r.frame.request_id == id || fatal_error {
                let p = r.frame.packet(READ_LIMIT)?;
                return Ok((p, r));
            }
        }
    }

    /// Sends `packet` and waits for its reply (see [`Raw::reply`]).
    pub async fn request(&mut self, packet: &Packet, t: Duration) -> Result<(Packet, Read)> {
        let id = self.send(packet).await?;
        self.reply(id, t).await
    }

    /// LOGIN as `device` with `token`; an ERROR reply is an error naming its code.
    pub async fn login(&mut self, token: &str, device: &str) -> Result<pb::LoginAck> {
        let login = Packet::Login(pb::Login {
            token: token.into(),
            device_id: device.into(),
            platform: 0,
            last_version: 0,
            client_version: "missive-load-abuse".into(),
            ..Default::default()
        });
        match self.request(&login, Duration::from_secs(30)).await?.0 {
            Packet::LoginAck(a) => Ok(a),
            Packet::Error(e) => bail!("LOGIN refused: {}", error_text(&e)),
            other => bail!("LOGIN answered with {}", other.command().name()),
        }
    }

    /// Reads whatever bytes come (buffered ones first), for draining a connection.
    pub async fn read_raw(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.rd.read(buf).await
    }

    /// Closes the write half (the server sees end of stream).
    pub async fn shutdown(&mut self) {
        let _ = self.wr.shutdown().await;
    }
}

/// "NAME (code): message".
pub fn error_text(e: &pb::Error) -> String {
    format!(
        "{} ({}): {}",
        missive_client::error::code_name(e.code),
        e.code,
        e.message
    )
}

/// The error code's name of a reply, or the reply's command name.
pub fn reply_name(p: &Packet) -> String {
    match p {
        Packet::Error(e) => missive_client::error::code_name(e.code),
        other => other.command().name().to_string(),
    }
}

pub fn cmd_name(command: u16) -> String {
    Command::from_u16(command)
        .map(|c| c.name().to_string())
        .unwrap_or_else(|_| format!("{command:#06x}"))
}

/// Runs `requests` through `raw` with at most `window` in flight, acknowledging pushes; returns
/// the replies' names counted (e.g. GROUP_CREATE_ACK, SERVER_BUSY). Stops at the first fatal
/// ERROR or end of stream (with an error).
pub async fn pipeline(
    raw: &mut Raw,
    requests: impl IntoIterator<Item = Packet>,
    window: usize,
    per_reply: Duration,
    mut on_reply: impl FnMut(&Packet),
) -> Result<std::collections::BTreeMap<String, u64>> {
    let mut counts = std::collections::BTreeMap::new();
    let mut requests = requests.into_iter().peekable();
    let mut in_flight = 0usize;
    let mut out = Vec::new();
    loop {
        out.clear();
        while in_flight < window.max(1) {
            let Some(p) = requests.next() else { break };
            raw.frame(&p).write_to_vec(&mut out);
            in_flight += 1;
        }
        if !out.is_empty() {
            raw.write(&out).await?;
        }
        if in_flight == 0 {
            return Ok(counts);
        }
        let Some(r) = raw.read_timeout(per_reply).await? else {
            bail!("the server closed the connection ({counts:?} so far)");
        };
        match r.frame.command {
            c if c == Command::Push as u16 => {
                if let Ok(Packet::Push(p)) = r.frame.packet(READ_LIMIT) {
                    raw.send(&Packet::PushAck(pb::PushAck { version: p.version }))
                        .await?;
                }
            }
            c if c == Command::GroupNotify as u16 => {}
            _ if r.frame.request_id == 0 => {
                let p = r.frame.packet(READ_LIMIT)?;
                bail!("the server sent {} ({counts:?} so far)", describe(&p));
            }
            _ => {
                in_flight -= 1;
                let p = r.frame.packet(READ_LIMIT)?;
                on_reply(&p);
                *counts.entry(reply_name(&p)).or_insert(0) += 1;
            }
        }
    }
}

/// A packet for an error message: ERROR with its code, KICK with its reason, else the name.
pub fn describe(p: &Packet) -> String {
    match p {
        Packet::Error(e) => format!("ERROR {}", error_text(e)),
        Packet::Kick(k) => format!("KICK {:?} {}", k.reason(), k.message),
        other => other.command().name().to_string(),
    }
}

/// Appends an encoded frame to a plain buffer.
trait WriteToVec {
    fn write_to_vec(&self, out: &mut Vec<u8>);
}

impl WriteToVec for Frame {
    fn write_to_vec(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }
}
