//! Opening a connection: TLS or plain, the WebSocket and entry-point requests told apart by
//! the first byte, then LOGIN within the login timeout, and the session registered.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use missive_protocol::pb;
use missive_protocol::token::{self, TokenError};
use missive_protocol::{Command, ErrorCode, Frame, Packet, ProtocolError};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::serve::Session;
use crate::context::Shared;
use crate::net::conn::{Conn, Filled, Stream};
use crate::net::web::{EntryAddresses, Site};
use crate::router::SessionHandle;
use crate::service::refusal::error_frame;
use crate::service::run::{small_read, unread_total};
use crate::service::users::revoked_token;
use crate::service::Refusal;

/// Opens the connection (TLS or plain), waits for LOGIN and registers the session.
pub(super) async fn start(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    mut permit: crate::limits::Permit,
) -> Option<Box<Session>> {
    let _ = stream.set_nodelay(true);
    // One deadline for the TLS handshake (if any) and LOGIN together.
    let deadline = Instant::now() + Duration::from_millis(shared.config.login_timeout_ms);
    let mut stream = stream;
    let client = forwarded_from(&shared, &mut stream, peer, deadline).await?;
    // A forwarded client is checked under its own address: a connection admitted in the total
    // only, or one admitted under the forwarding node's address (before this node knew it as
    // one), is counted again under the client's.
    if (permit.is_deferred() || client != peer)
        && !settle(&shared, &stream, client, &mut permit).await
    {
        return None;
    }
    let peer = client;
    let (stream, read) = open(&shared, stream, deadline, peer.ip()).await?;
    // Until it has logged in, a connection may send frames of the login cap only: nobody
    // unauthenticated makes the server wait for (or buffer) a large frame.
    let mut conn = Conn::new(stream, missive_protocol::MAX_LOGIN_FRAME_LEN);
    conn.unread(read);
    let (handle, current_version) = login(&shared, &mut conn, deadline, peer.ip()).await?;
    // Frames pipelined behind the LOGIN are decoded from here on, with the full limit.
    conn.set_max_frame_len(shared.config.max_frame_len);
    tracing::debug!(%peer, session = %handle.id, user = %handle.user, "logged in");
    let rate = shared.config.sends_per_sec;
    let sends = crate::limits::Bucket::new(rate, rate.saturating_mul(2));
    let mut session = Session::new(shared, conn, handle, sends, permit);
    session.pushed_through = current_version;
    Some(session)
}

/// The client's address: `peer`, or in a cluster the one named by a forwarding node's preamble
/// (`cluster::forward`), which is read off the stream here. `None`: a preamble that does not
/// verify (charged to `peer` as a failed login), or the connection went away.
async fn forwarded_from(
    shared: &Shared,
    stream: &mut TcpStream,
    peer: SocketAddr,
    deadline: Instant,
) -> Option<SocketAddr> {
    use crate::cluster::forward;
    if shared.cluster.is_none() {
        return Some(peer);
    }
    let mut buf = [0u8; forward::MAX_PREAMBLE];
    let mut pause = Duration::from_millis(2);
    // Peeked until the preamble is whole (a forwarding node writes it at once, in one write)
    // or the first bytes show it is none.
    let end = loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            // Silent or gone: what follows (the login timeout) handles it.
            Ok(Ok(_)) | Ok(Err(_)) => return None,
            Err(_) => return Some(peer),
        };
        let seen = &buf[..n];
        let m = n.min(forward::MAGIC.len());
        if seen[..m] != forward::MAGIC[..m] {
            return Some(peer);
        }
        if let Some(end) = forward::preamble_end(seen) {
            break end;
        }
        if n == buf.len() || Instant::now() >= deadline {
            charge(shared, peer.ip());
            return None;
        }
        // A partial line: peek again later, less often each time (a client that sends the
        // magic and stops costs a few wake-ups, not a busy loop).
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    };
    match forward::verify(
        &shared.secret,
        &buf[..end],
        peer.ip(),
        crate::clock::now_ms(),
    ) {
        Ok(client) => {
            // Read exactly: the client's bytes after it stay in the socket.
            let mut line = [0u8; forward::MAX_PREAMBLE];
            let read = tokio::time::timeout_at(deadline, stream.read_exact(&mut line[..end]));
            if !matches!(read.await, Ok(Ok(_))) {
                return None;
            }
            shared.forwarders.saw(peer.ip(), Instant::now());
            Some(client)
        }
        // Signed with the secret, so from a node of this cluster, whose clock is too far from
        // this one's: every client it forwards is refused until the clocks agree. Said loudly,
        // unlike a forgery (which a client could repeat to fill the log).
        Err(e @ forward::PreambleError::Skew(_)) => {
            tracing::warn!(%peer, "forwarded connection refused: {e} (synchronize the clocks)");
            None
        }
        // Signed too: a node whose own address is translated on the way here (or a line
        // replayed from elsewhere, which is charged).
        Err(e @ forward::PreambleError::Via(_)) => {
            tracing::warn!(
                %peer,
                "forwarded connection refused: {e} (nodes must reach each other without \
                 address translation)"
            );
            charge(shared, peer.ip());
            None
        }
        Err(e) => {
            tracing::debug!(%peer, "forwarding preamble refused: {e}");
            charge(shared, peer.ip());
            None
        }
    }
}

/// The per-address checks of a connection admitted in the total only (from a forwarding node):
/// the client's failed-login budget and its address's connection limit. False: refused with
/// SERVER_BUSY.
async fn settle(
    shared: &Shared,
    stream: &TcpStream,
    client: SocketAddr,
    permit: &mut crate::limits::Permit,
) -> bool {
    let (message, retry_after_ms) = match shared.login_failures.check(client.ip(), Instant::now()) {
        Err(wait) => {
            shared.metrics.login_failure_refusals.inc();
            (
                "too many failed logins from this address; retry later",
                wait.max(1000),
            )
        }
        Ok(()) if permit.settle(client.ip()) => return true,
        Ok(()) => {
            shared.metrics.connections_refused.inc();
            (
                "too many connections; retry later",
                1000 + rand::random_range(0..2000),
            )
        }
    };
    shared.metrics.error(ErrorCode::ServerBusy);
    let mut r = crate::service::Refusal::new(ErrorCode::ServerBusy, message);
    r.retry_after_ms = retry_after_ms;
    let bytes = r.frame(0).to_bytes();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut written = 0;
        while written < bytes.len() {
            if stream.writable().await.is_err() {
                return;
            }
            match stream.try_write(&bytes[written..]) {
                Ok(k) => written += k,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
    false
}

/// Tells TLS, HTTP (WebSocket, entry point) and the plain protocol apart by the first byte
/// (inside TLS too) and completes the TLS or WebSocket handshake, all within the login timeout.
/// Plain connections are refused (TLS_REQUIRED) unless allowed. Returns the stream and what was
/// already read of it.
///
/// A `POST /v1/send` (a user's send over HTTP) is answered here and the connection closed
/// (`None`): this layer may call the service, `net::web` may not.
async fn open(
    shared: &Arc<Shared>,
    stream: TcpStream,
    deadline: Instant,
    ip: IpAddr,
) -> Option<(Stream, BytesMut)> {
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        Err(_) => {
            // Silent since connecting: the plain protocol's LOGIN_TIMEOUT.
            let mut conn = Conn::new(Stream::Plain(stream), shared.config.max_frame_len);
            let msg = "no LOGIN within the login timeout";
            fatal(shared, &mut conn, 0, ErrorCode::LoginTimeout, msg).await;
            return None;
        }
        _ => return None,
    }
    let local = stream.local_addr().ok()?;
    // In a cluster, `GET /v1/entry?user=` lists the node that serves the user first.
    let entry = shared.cluster.as_ref().map(|c| {
        let c = c.clone();
        move |user: Option<&str>| c.entry_addresses(user)
    });
    // Without a certificate the byte is just the top byte of a (far too large) frame length:
    // the codec refuses it with FRAME_TOO_LARGE like any other oversized frame.
    if let (crate::net::tls::TLS_HANDSHAKE, Some(acceptor)) = (first[0], shared.tls.as_ref()) {
        let mut tls = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => tls,
            _ => return None,
        };
        // The first bytes inside TLS tell the binary protocol from HTTP.
        let mut buf = BytesMut::with_capacity(4096);
        let read = tokio::select! {
            r = tokio::time::timeout_at(deadline, tls.read_buf(&mut buf)) => r,
            _ = shared.shutdown.cancelled() => return None,
        };
        match read {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return None,
            Err(_) => {
                let mut conn = Conn::new(Stream::Tls(Box::new(tls)), shared.config.max_frame_len);
                let msg = "no LOGIN within the login timeout";
                fatal(shared, &mut conn, 0, ErrorCode::LoginTimeout, msg).await;
                return None;
            }
        }
        let site = Site {
            config: &shared.config,
            bound: &shared.bound,
            shutdown: &shared.shutdown,
            cluster_entry: entry.as_ref().map(|f| f as &EntryAddresses),
        };
        if crate::net::web::may_be_http(buf[0])
            && crate::net::web::sniff(&mut tls, &mut buf, deadline).await?
        {
            let accepted =
                crate::net::web::accept(&site, Box::new(tls), buf, true, local, deadline).await?;
            return http_accepted(shared, accepted, ip, deadline).await;
        }
        return Some((Stream::Tls(Box::new(tls)), buf));
    }
    let mut stream = stream;
    let mut read = BytesMut::new();
    let site = Site {
        config: &shared.config,
        bound: &shared.bound,
        shutdown: &shared.shutdown,
        cluster_entry: entry.as_ref().map(|f| f as &EntryAddresses),
    };
    if crate::net::web::may_be_http(first[0])
        && crate::net::web::sniff(&mut stream, &mut read, deadline).await?
    {
        let io = Box::new(stream);
        let accepted = crate::net::web::accept(&site, io, read, false, local, deadline).await?;
        return http_accepted(shared, accepted, ip, deadline).await;
    }
    if !shared.config.allow_plain {
        let mut conn = Conn::new(Stream::Plain(stream), shared.config.max_frame_len);
        fatal(
            shared,
            &mut conn,
            0,
            ErrorCode::TlsRequired,
            "this server accepts TLS only",
        )
        .await;
        return None;
    }
    Some((Stream::Plain(stream), read))
}

/// A WebSocket becomes the session's stream; a user's send over HTTP is answered and closed.
async fn http_accepted(
    shared: &Arc<Shared>,
    accepted: crate::net::web::Accepted,
    ip: IpAddr,
    deadline: Instant,
) -> Option<(Stream, BytesMut)> {
    match accepted {
        crate::net::web::Accepted::Ws(ws) => Some((Stream::Ws(ws), BytesMut::new())),
        crate::net::web::Accepted::Send(post) => {
            crate::http::user_send::serve(shared, post, ip, deadline).await;
            None
        }
        crate::net::web::Accepted::Media(conn) => {
            crate::http::media::serve(shared, conn, ip).await;
            None
        }
    }
}

async fn fatal(shared: &Shared, conn: &mut Conn, request_id: u32, code: ErrorCode, message: &str) {
    shared.metrics.error(code);
    let _ = conn
        .write_frames(&[error_frame(request_id, code, message)])
        .await;
}

/// Counts a failed login against the source address `ip` (`limits::LoginFailures`): a refused
/// token, an undecodable or compressed LOGIN, another frame before LOGIN, a framing error or
/// an unfinished frame before login. Not counted: silence (LOGIN_TIMEOUT), a connection
/// closed or reset, and the server's own refusals (SERVER_BUSY, SHUTTING_DOWN).
fn charge(shared: &Shared, ip: IpAddr) {
    shared.login_failures.charge(ip, Instant::now());
}

/// The next frame before login, within the login deadline; a frame begun but not completed
/// within `frame_timeout_ms` is refused as after login (BAD_FRAME). `None`: the connection is
/// done (the fatal ERROR, if any, was written; a framing error is charged to `ip`).
async fn next_frame(
    shared: &Shared,
    conn: &mut Conn,
    deadline: Instant,
    ip: IpAddr,
) -> Option<Frame> {
    let frame_timeout = Duration::from_millis(shared.config.frame_timeout_ms);
    loop {
        match conn.buffered_frame() {
            Ok(Some(f)) => return Some(f),
            Ok(None) => {}
            Err(e) => {
                charge(shared, ip);
                fatal(shared, conn, 0, e.code(), &e.to_string()).await;
                return None;
            }
        }
        conn.release_idle();
        let frame_deadline = conn.partial_since().map(|t| t + frame_timeout);
        let wake = frame_deadline.map_or(deadline, |f| f.min(deadline));
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {
                if frame_deadline.is_some_and(|f| f < deadline) {
                    charge(shared, ip);
                    let msg = "frame not completed within frame_timeout_ms";
                    fatal(shared, conn, 0, ErrorCode::BadFrame, msg).await;
                } else {
                    let msg = "no LOGIN within the login timeout";
                    fatal(shared, conn, 0, ErrorCode::LoginTimeout, msg).await;
                }
                return None;
            }
            _ = shared.shutdown.cancelled() => {
                fatal(shared, conn, 0, ErrorCode::ShuttingDown, "server shutting down").await;
                return None;
            }
            r = conn.fill() => {
                match r {
                    Ok(Filled::Data) => {}
                    Ok(Filled::Eof) | Err(ProtocolError::Truncated { .. }) => return None,
                    Err(e) => {
                        // A failed connection is not the client's doing; a WebSocket message
                        // over the limit is.
                        if !matches!(e, ProtocolError::Io(_)) {
                            charge(shared, ip);
                        }
                        fatal(shared, conn, 0, e.code(), &e.to_string()).await;
                        return None;
                    }
                }
            }
        }
    }
}

/// Writes ERROR `code` marked fatal, whatever the code's own fatal flag (BAD_BODY before login),
/// for a connection that is closed after it.
async fn fatal_anyway(
    shared: &Shared,
    conn: &mut Conn,
    request_id: u32,
    code: ErrorCode,
    message: &str,
) {
    shared.metrics.error(code);
    let error = Packet::Error(pb::Error {
        code: code as u32,
        message: message.to_owned(),
        fatal: true,
        ..Default::default()
    });
    let _ = conn.write_frames(&[Frame::new(&error, request_id)]).await;
}

/// Waits for LOGIN (within the login timeout) and registers the session.
///
/// Any other command, known or not, is NOT_LOGGED_IN (fatal), whatever its body. A LOGIN with
/// the COMPRESSED flag is BAD_BODY, fatal: inflating is the costly part of decoding a body, and
/// nobody unauthenticated gets it done (a LOGIN is small; nothing is inflated). The first LOGIN
/// whose body does not decode gets BAD_BODY, not fatal: the connection still waits for a LOGIN,
/// within the same deadline; a second one is fatal.
///
/// Every refusal for the client's doing is charged to `ip` (see [`charge`]).
async fn login(
    shared: &Arc<Shared>,
    conn: &mut Conn,
    deadline: Instant,
    ip: IpAddr,
) -> Option<(Arc<SessionHandle>, u64)> {
    let mut forgiven = false;
    let (rid, login) = loop {
        let frame = next_frame(shared, conn, deadline, ip).await?;
        let rid = frame.request_id;
        if frame.command != Command::Login as u16 {
            let name = Command::from_u16(frame.command)
                .map(|c| c.name().to_owned())
                .unwrap_or_else(|_| format!("unknown command {:#06x}", frame.command));
            let msg = format!("{name} before LOGIN");
            charge(shared, ip);
            fatal(shared, conn, rid, ErrorCode::NotLoggedIn, &msg).await;
            return None;
        }
        if frame.flags.compressed() {
            charge(shared, ip);
            shared.metrics.login(Err(ErrorCode::BadBody));
            let msg = "a compressed frame before login: send LOGIN uncompressed";
            fatal_anyway(shared, conn, rid, ErrorCode::BadBody, msg).await;
            return None;
        }
        // Not compressed: the body is at most the login cap, the limit is never reached.
        match frame.packet(missive_protocol::MAX_LOGIN_FRAME_LEN) {
            Ok(Packet::Login(l)) => break (rid, l),
            Ok(other) => {
                // Not reached: a LOGIN frame decodes to a Login body.
                let msg = format!("{} before LOGIN", other.command().name());
                fatal(shared, conn, rid, ErrorCode::NotLoggedIn, &msg).await;
                return None;
            }
            Err(e) if forgiven => {
                charge(shared, ip);
                shared.metrics.login(Err(e.code()));
                let msg = format!("{e}; a second undecodable LOGIN closes the connection");
                fatal_anyway(shared, conn, rid, e.code(), &msg).await;
                return None;
            }
            Err(e) => {
                forgiven = true;
                charge(shared, ip);
                shared.metrics.login(Err(e.code()));
                shared.metrics.error(e.code());
                let refusal = error_frame(rid, e.code(), &e.to_string());
                if conn.write_frames(&[refusal]).await.is_err() || e.code().is_fatal() {
                    return None;
                }
            }
        }
    };
    let admitted = admit(shared, conn, rid, login, ip).await;
    shared
        .metrics
        .login(admitted.as_ref().map(|_| ()).map_err(|code| *code));
    admitted.ok().flatten()
}

/// Checks a LOGIN (drain, token, login rate, revocation) and registers its session; returns it
/// with the LOGIN_ACK's `current_version`. A refusal has been written when its code is
/// returned; `Ok(None)`: accepted, but the connection failed.
///
/// The token is checked first (an HMAC: cheap), and only a valid one takes a token of the
/// server-wide login rate, so a flood of garbage cannot use up the rate that real logins need;
/// a refused token is charged to `ip` instead.
async fn admit(
    shared: &Arc<Shared>,
    conn: &mut Conn,
    rid: u32,
    login: pb::Login,
    ip: IpAddr,
) -> Result<Option<(Arc<SessionHandle>, u64)>, ErrorCode> {
    if shared.drain.is_active() {
        let msg = "server draining: reconnect (to another server)";
        fatal(shared, conn, rid, ErrorCode::ShuttingDown, msg).await;
        return Err(ErrorCode::ShuttingDown);
    }
    let now_s = (crate::clock::now_ms() / 1000) as u64;
    let claims = match token::verify(&shared.secret, &login.token, now_s) {
        Ok(c) => c,
        Err(e) => {
            let code = match e {
                TokenError::Expired(_) => ErrorCode::TokenExpired,
                _ => ErrorCode::AuthFailed,
            };
            charge(shared, ip);
            fatal(shared, conn, rid, code, &e.to_string()).await;
            return Err(code);
        }
    };
    if claims.device_id != login.device_id {
        charge(shared, ip);
        let msg = "device_id differs from the token's device";
        fatal(shared, conn, rid, ErrorCode::AuthFailed, msg).await;
        return Err(ErrorCode::AuthFailed);
    }
    let allowed = shared.logins.lock().take(Instant::now());
    if let Err(wait) = allowed {
        let mut r = Refusal::new(ErrorCode::ServerBusy, "too many logins; retry later");
        r.retry_after_ms = wait.max(100);
        shared.metrics.error(r.code);
        let _ = conn.write_frames(&[r.frame(rid)]).await;
        return Err(r.code);
    }
    // A revoked token is refused before it is registered: registering kicks the connection of
    // the same device (REPLACED) and, past the device limit, the user's oldest one.
    let user = claims.user_id.clone();
    let revoked = small_read(shared, move |s| s.store.core().revoked_through(&user)).await;
    let why = match revoked {
        Ok(r) => revoked_token(&claims, r),
        Err(r) => {
            fatal(shared, conn, rid, r.code, &r.message).await;
            return Err(r.code);
        }
    };
    if let Some(why) = why {
        charge(shared, ip);
        fatal(shared, conn, rid, ErrorCode::AuthFailed, &why).await;
        return Err(ErrorCode::AuthFailed);
    }
    // Register before reading the version, so no entry after it can be missed.
    let heartbeat_secs = shared.config.heartbeat_secs_for(login.heartbeat_secs);
    let handle = shared.router.register_as(
        &claims.user_id,
        &claims.device_id,
        shared.config.outbound_queue,
        shared.config.max_devices_per_user,
        crate::clock::now_ms(),
        heartbeat_secs,
        login.background,
    );
    // The revocation is read again, after registering: a revocation committed since the read
    // above kicked the user's sessions registered then, maybe not this one.
    let user = claims.user_id.clone();
    let read = small_read(shared, move |s| {
        Ok((
            s.store.core().current_version(&user)?,
            s.store.core().revoked_through(&user)?,
        ))
    })
    .await;
    let state = match read {
        Ok((version, revoked)) => unread_total(shared, &claims.user_id)
            .await
            .map(|unread| (version, unread, revoked)),
        Err(r) => Err(r),
    };
    let (current_version, unread_total) = match state {
        Ok((version, unread, revoked)) => match revoked_token(&claims, revoked) {
            None => (version, unread),
            Some(why) => {
                shared.router.unregister(&handle);
                charge(shared, ip);
                fatal(shared, conn, rid, ErrorCode::AuthFailed, &why).await;
                return Err(ErrorCode::AuthFailed);
            }
        },
        Err(r) => {
            shared.router.unregister(&handle);
            fatal(shared, conn, rid, r.code, &r.message).await;
            return Err(r.code);
        }
    };
    crate::service::users::note_login(shared, &claims.user_id, &claims.device_id);
    let ack = Packet::LoginAck(pb::LoginAck {
        user_id: claims.user_id,
        server_time_ms: crate::clock::now_ms(),
        heartbeat_interval_secs: heartbeat_secs,
        current_version,
        unread_total,
        session_id: handle.id.0,
        heartbeat_timeout_secs: 2 * heartbeat_secs,
    });
    if conn.write_frames(&[Frame::new(&ack, rid)]).await.is_err() {
        shared.router.unregister(&handle);
        return Ok(None);
    }
    Ok(Some((handle, current_version)))
}
