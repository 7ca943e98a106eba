//! The background task behind [`Client`](crate::Client): one connection at a time, its
//! heartbeat, the version rules, acks, gap SYNC and reconnects. See the crate docs.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use missive_protocol::{pb, Frame, Packet, DEFAULT_MAX_FRAME_LEN};

use crate::connection::{heartbeat_body, Connection};
use crate::error::{ClientError, Result};
use crate::event::{ClientEvent, DisconnectReason};

mod inbox;
mod policy;
mod state;

pub(crate) use policy::connect_and_login;
use policy::{
    error_reason, login_refused, may_reconnect, redirect_addr, retry_safe, server_reason,
};
pub(crate) use state::{Cmd, Driver};
use state::{Pending, UserRequest, DEFAULT_HEARTBEAT};

impl Driver {
    /// Runs until closed, or until the connection ends and may not (or cannot) be remade.
    pub(crate) async fn run(mut self, conn: Connection, ack: pb::LoginAck, addr: String) {
        self.addr_index = self
            .config
            .addrs
            .iter()
            .position(|a| *a == addr)
            .unwrap_or(0);
        self.current_addr = addr;
        let mut next = Some((conn, ack));
        while let Some((mut conn, ack)) = next.take() {
            let logged_in = Instant::now();
            let reason = self.session(&mut conn, ack).await;
            if logged_in.elapsed() >= self.config.backoff.reset_after {
                self.attempt = 0;
            }
            drop(conn);
            let reconnecting = self.config.auto_reconnect && may_reconnect(&reason);
            tracing::info!(?reason, reconnecting, "disconnected");
            self.connection_lost(reconnecting);
            self.emit(ClientEvent::Disconnected {
                reason,
                reconnecting,
            });
            if reconnecting {
                next = self.reconnect().await;
            }
        }
        self.finish();
    }

    fn emit(&self, event: ClientEvent) {
        // Nobody listening is fine: the app chose not to take the events.
        let _ = self.events.send(event);
    }

    /// One logged-in connection, until it ends.
    async fn session(&mut self, conn: &mut Connection, ack: pb::LoginAck) -> DisconnectReason {
        if let Err(e) = self.on_login(conn, ack).await {
            return error_reason(e);
        }
        // One timer for the whole connection. The deadline mostly moves later (every frame
        // sent or received pushes the heartbeat back), and moving a timer costs the runtime's
        // timer wheel an update, so it is only moved earlier here; when it fires, `on_timer`
        // does what is due (possibly nothing) and the timer is set to the deadline of then.
        let timer = tokio::time::sleep_until(self.next_deadline(conn).into());
        tokio::pin!(timer);
        loop {
            let deadline = self.next_deadline(conn);
            if deadline < timer.deadline().into_std() {
                timer.as_mut().reset(deadline.into());
            }
            tokio::select! {
                received = conn.recv_frame() => match received {
                    Ok(Some(frame)) => {
                        self.last_received = Instant::now();
                        self.heartbeat_sent = None;
                        match self.on_frames(conn, frame).await {
                            Ok(None) => {}
                            Ok(Some(reason)) => return reason,
                            Err(e) => return error_reason(e),
                        }
                    }
                    Ok(None) => return DisconnectReason::ServerClosed,
                    Err(e) => return error_reason(e),
                },
                cmd = self.cmds.recv() => match cmd {
                    Some(Cmd::Request { packet, reply }) => {
                        match self.send_requests(conn, UserRequest { packet: *packet, reply }).await {
                            Ok(false) => {}
                            Ok(true) => return DisconnectReason::ClientClosed,
                            Err(e) => return error_reason(e),
                        }
                    }
                    Some(Cmd::Close(done)) => {
                        self.close_done = Some(done);
                        self.close(conn).await;
                        return DisconnectReason::ClientClosed;
                    }
                    None => {
                        self.close(conn).await;
                        return DisconnectReason::ClientClosed;
                    }
                },
                _ = &mut timer => {
                    match self.on_timer(conn).await {
                        Ok(None) => timer.as_mut().reset(self.next_deadline(conn).into()),
                        Ok(Some(reason)) => return reason,
                        Err(e) => return error_reason(e),
                    }
                }
            }
        }
    }

    async fn on_login(&mut self, conn: &mut Connection, ack: pb::LoginAck) -> Result<()> {
        self.heartbeat = match ack.heartbeat_interval_secs {
            0 => DEFAULT_HEARTBEAT,
            secs => Duration::from_secs(secs.into()),
        };
        self.user_id = ack.user_id.clone();
        self.last_received = Instant::now();
        self.heartbeat_sent = None;
        self.syncing = false;
        self.versions.saw(ack.current_version);
        tracing::info!(user = %ack.user_id, current = ack.current_version,
            held = self.versions.held(), "logged in");
        self.emit(ClientEvent::Connected(ack));
        while let Some(req) = self.waiting.pop_front() {
            self.send_user(conn, req).await?;
        }
        if self.versions.behind() {
            self.start_sync(conn).await?;
        }
        Ok(())
    }

    /// The next time something must happen without a frame arriving.
    fn next_deadline(&self, conn: &Connection) -> Instant {
        let mut at = match self.heartbeat_sent {
            Some(sent) => sent + self.heartbeat,
            None => conn.last_sent().min(self.last_received) + self.heartbeat,
        };
        if let Some((_, due)) = self.expect_own {
            at = at.min(due);
        }
        if let Some(due) = self.ack_due {
            at = at.min(due);
        }
        at
    }

    async fn on_timer(&mut self, conn: &mut Connection) -> Result<Option<DisconnectReason>> {
        let now = Instant::now();
        self.send_ack_if_due(conn, now).await?;
        if let Some(sent) = self.heartbeat_sent {
            if now >= sent + self.heartbeat {
                return Ok(Some(DisconnectReason::HeartbeatTimeout));
            }
        }
        if let Some((version, due)) = self.expect_own {
            if now >= due {
                self.expect_own = None;
                if self.versions.held() < version {
                    self.start_sync(conn).await?;
                }
            }
        }
        let quiet_since = conn.last_sent().min(self.last_received);
        if self.heartbeat_sent.is_none() && now >= quiet_since + self.heartbeat {
            let id = conn.next_request_id();
            self.pending.insert(id, Pending::Heartbeat);
            let frame = Frame::new(&Packet::Heartbeat(heartbeat_body()), id);
            conn.send_frame(&frame).await?;
            self.heartbeat_sent = Some(now);
        }
        Ok(None)
    }

    async fn send_user(&mut self, conn: &mut Connection, req: UserRequest) -> Result<()> {
        self.feed_ack(conn).await?;
        self.feed_user(conn, req).await?;
        conn.flush().await
    }

    /// Sends `first` and every other request already submitted (up to 64), in one write, with
    /// the PUSH_ACK that is due if there is one. Returns true if a close came in behind them
    /// (they are sent, then the connection closes).
    async fn send_requests(&mut self, conn: &mut Connection, first: UserRequest) -> Result<bool> {
        self.feed_ack(conn).await?;
        self.feed_user(conn, first).await?;
        for _ in 0..63 {
            match self.cmds.try_recv() {
                Ok(Cmd::Request { packet, reply }) => {
                    self.feed_user(
                        conn,
                        UserRequest {
                            packet: *packet,
                            reply,
                        },
                    )
                    .await?
                }
                Ok(Cmd::Close(done)) => {
                    conn.flush().await?;
                    self.close_done = Some(done);
                    self.close(conn).await;
                    return Ok(true);
                }
                Err(_) => break,
            }
        }
        conn.flush().await?;
        Ok(false)
    }

    async fn feed_user(&mut self, conn: &mut Connection, req: UserRequest) -> Result<()> {
        if req.reply.is_closed() {
            return Ok(()); // the caller gave up (timeout) before it was sent
        }
        let id = conn.next_request_id();
        let frame = Frame::new(&req.packet, id);
        if let Packet::Signal(_) = req.packet {
            // No reply on success: done once written. A refusal comes back as an ERROR that
            // matches nothing pending, and is logged.
            conn.feed_frame(&frame).await?;
            let _ = req.reply.send(Ok(req.packet));
            return Ok(());
        }
        self.pending.insert(id, Pending::User(Box::new(req)));
        conn.feed_frame(&frame).await
    }

    /// Handles `first` and every frame already received behind it; what they brought is
    /// acknowledged with one PUSH_ACK, now if `ack_delay` is zero, else within it.
    async fn on_frames(
        &mut self,
        conn: &mut Connection,
        first: Frame,
    ) -> Result<Option<DisconnectReason>> {
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            if let Some(reason) = self.on_frame(conn, frame).await? {
                return Ok(Some(reason));
            }
            next = conn.buffered_frame()?;
        }
        self.send_ack_if_due(conn, Instant::now()).await?;
        Ok(None)
    }

    /// Closing: the ack that is due goes first, then the write half is shut (errors ignored:
    /// the connection ends either way).
    async fn close(&mut self, conn: &mut Connection) {
        let _ = self.send_ack(conn).await;
        let _ = conn.shutdown().await;
    }

    /// Entries were applied: a PUSH_ACK is due within `ack_delay` (if one is not already).
    pub(super) fn ack_later(&mut self) {
        if self.ack_due.is_none() {
            self.ack_due = Some(Instant::now() + self.config.ack_delay);
        }
    }

    /// Sends the PUSH_ACK that is due if its time has come by `now`.
    async fn send_ack_if_due(&mut self, conn: &mut Connection, now: Instant) -> Result<()> {
        if self.ack_due.is_some_and(|due| now >= due) {
            self.send_ack(conn).await?;
        }
        Ok(())
    }

    /// Sends PUSH_ACK{held} now if entries were applied since the last one.
    async fn send_ack(&mut self, conn: &mut Connection) -> Result<()> {
        if self.feed_ack(conn).await? {
            conn.flush().await?;
        }
        Ok(())
    }

    /// Adds PUSH_ACK{held} to the write buffer if entries were applied since the last one;
    /// true if it did.
    async fn feed_ack(&mut self, conn: &mut Connection) -> Result<bool> {
        if self.ack_due.take().is_none() || self.versions.held() == 0 {
            return Ok(false);
        }
        let version = self.versions.held();
        conn.feed_packet(Packet::PushAck(pb::PushAck { version }))
            .await?;
        Ok(true)
    }

    async fn on_frame(
        &mut self,
        conn: &mut Connection,
        frame: Frame,
    ) -> Result<Option<DisconnectReason>> {
        let packet = match frame.packet(DEFAULT_MAX_FRAME_LEN) {
            Ok(packet) => packet,
            Err(e) => {
                tracing::warn!(command = frame.command, error = %e, "undecodable frame ignored");
                if let Some(Pending::User(req)) = self.pending.remove(&frame.request_id) {
                    let _ = req.reply.send(Err(ClientError::Protocol(e)));
                }
                return Ok(None);
            }
        };
        if let Packet::HeartbeatAck(ack) = &packet {
            // The interval in force, also after the app asked for another one.
            if ack.interval_secs > 0 {
                self.heartbeat = Duration::from_secs(ack.interval_secs.into());
            }
        }
        match packet {
            Packet::Push(push) => {
                self.on_push(conn, push).await?;
                Ok(None)
            }
            Packet::GroupNotify(notify) => {
                self.emit(ClientEvent::GroupNotify(notify));
                Ok(None)
            }
            Packet::SignalNotify(signal) => {
                self.emit(ClientEvent::Signal(signal));
                Ok(None)
            }

            Packet::Receipt(receipt) => {
                self.emit(ClientEvent::Receipt(receipt));
                Ok(None)
            }
            Packet::Kick(kick) => {
                let reason = kick.reason();
                self.min_delay = Duration::from_millis(kick.reconnect_after_ms.into());
                if !kick.redirect_host.is_empty() || kick.redirect_port != 0 {
                    self.redirect = Some(redirect_addr(&self.current_addr, &kick));
                }
                self.emit(ClientEvent::Kicked(kick));
                Ok(Some(DisconnectReason::Kicked(reason)))
            }
            reply => match self.pending.remove(&frame.request_id) {
                Some(pending) => self.on_reply(conn, pending, reply).await,
                None => match reply {
                    Packet::Error(e) if e.fatal => {
                        self.min_delay = Duration::from_millis(e.retry_after_ms.into());
                        Ok(Some(server_reason(&e)))
                    }
                    other => {
                        tracing::debug!(
                            command = other.command().name(),
                            "unmatched frame ignored"
                        );
                        Ok(None)
                    }
                },
            },
        }
    }

    async fn on_reply(
        &mut self,
        conn: &mut Connection,
        pending: Pending,
        reply: Packet,
    ) -> Result<Option<DisconnectReason>> {
        match (pending, reply) {
            (Pending::Heartbeat, _) => Ok(None),
            (Pending::Sync, Packet::SyncAck(ack)) => {
                self.on_sync_ack(conn, ack).await?;
                Ok(None)
            }
            // A failed SYNC: start over on a new connection, which SYNCs again.
            (Pending::Sync, Packet::Error(e)) => Ok(Some(server_reason(&e))),
            (Pending::Sync, other) => Ok(Some(DisconnectReason::Transport(format!(
                "unexpected reply to SYNC: {}",
                other.command().name()
            )))),
            (Pending::User(req), reply) => {
                let mut end = None;
                match &reply {
                    Packet::SendAck(ack) => self.on_send_ack(&req.packet, ack),
                    Packet::MarkReadAck(ack) => self.expect_own(ack.version),
                    Packet::RecallAck(ack) => self.expect_own(ack.version),
                    Packet::DeleteAck(ack) => self.expect_own(ack.version),
                    Packet::Error(e) if e.fatal => end = Some(server_reason(e)),
                    _ => {}
                }
                let result = match reply {
                    Packet::Error(e) => Err(ClientError::from_server(&e)),
                    other => Ok(other),
                };
                let _ = req.reply.send(result);
                Ok(end)
            }
        }
    }

    /// After a connection ended: requests safe to repeat wait for the next one.
    fn connection_lost(&mut self, reconnecting: bool) {
        self.syncing = false;
        self.heartbeat_sent = None;
        self.ack_due = None;
        self.expect_own = None;
        self.own.clear();
        let mut ids: Vec<u32> = self.pending.keys().copied().collect();
        ids.sort_unstable();
        let mut resend = VecDeque::new();
        for id in ids {
            if let Some(Pending::User(req)) = self.pending.remove(&id) {
                if reconnecting && retry_safe(req.packet.command()) && !req.reply.is_closed() {
                    resend.push_back(*req);
                } else {
                    let _ = req.reply.send(Err(ClientError::Closed));
                }
            }
        }
        self.pending.clear();
        resend.extend(self.waiting.drain(..));
        self.waiting = resend;
        if !reconnecting {
            for req in self.waiting.drain(..) {
                let _ = req.reply.send(Err(ClientError::Closed));
            }
        }
    }

    /// Handles a command while disconnected; false means stop.
    fn offline_cmd(&mut self, cmd: Option<Cmd>) -> bool {
        match cmd {
            Some(Cmd::Request { packet, reply }) if matches!(*packet, Packet::Signal(_)) => {
                // A signal is worth nothing later: it fails now rather than wait for a
                // connection.
                let _ = reply.send(Err(ClientError::Closed));
                true
            }
            Some(Cmd::Request { packet, reply }) => {
                self.waiting.push_back(UserRequest {
                    packet: *packet,
                    reply,
                });
                true
            }
            Some(Cmd::Close(done)) => {
                self.close_done = Some(done);
                false
            }
            None => false,
        }
    }

    /// Reconnects with backoff; None if closed meanwhile or the login is refused for good.
    async fn reconnect(&mut self) -> Option<(Connection, pb::LoginAck)> {
        loop {
            // Full jitter, and at least what the server asked for (PROTOCOL.md 21).
            let delay = self
                .config
                .backoff
                .delay(self.attempt)
                .max(std::mem::take(&mut self.min_delay));
            let attempt = self.attempt;
            self.attempt = self.attempt.saturating_add(1);
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    cmd = self.cmds.recv() => if !self.offline_cmd(cmd) { return None },
                }
            }
            let addr = match self.redirect.take() {
                Some(addr) => addr,
                None => {
                    let addrs = &self.config.addrs;
                    addrs[self.addr_index % addrs.len().max(1)].clone()
                }
            };
            let config = self.config.clone();
            let held = self.versions.held();
            let attempt_fut = async { connect_and_login(&addr, &config, held).await };
            tokio::pin!(attempt_fut);
            let result = loop {
                tokio::select! {
                    r = &mut attempt_fut => break r,
                    cmd = self.cmds.recv() => if !self.offline_cmd(cmd) { return None },
                }
            };
            match result {
                Ok((conn, ack)) => {
                    self.current_addr = addr.clone();
                    return Some((conn, ack));
                }
                Err(ClientError::Server { code, .. }) if login_refused(code) => {
                    tracing::warn!(code, "login refused; not reconnecting");
                    let reason = error_reason(result.err().unwrap_or(ClientError::Closed));
                    self.connection_lost(false);
                    self.emit(ClientEvent::Disconnected {
                        reason,
                        reconnecting: false,
                    });
                    return None;
                }
                Err(e) => {
                    tracing::debug!(%addr, attempt, error = %e, "reconnect failed");
                    self.addr_index = self.addr_index.wrapping_add(1);
                }
            }
        }
    }

    /// Fails whatever is left and tells `close()` the task is done.
    fn finish(mut self) {
        self.connection_lost(false);
        self.cmds.close();
        while let Ok(cmd) = self.cmds.try_recv() {
            match cmd {
                Cmd::Request { reply, .. } => {
                    let _ = reply.send(Err(ClientError::Closed));
                }
                Cmd::Close(done) => {
                    let _ = done.send(());
                }
            }
        }
        if let Some(done) = self.close_done.take() {
            let _ = done.send(());
        }
    }
}
