//! A tiny fake Missive server for tests: a loopback listener whose peers are driven by hand.
#![allow(dead_code)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use missive_protocol::{pb, Command, Frame, FrameCodec, Packet};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

/// Every wait in the tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(5);

pub struct FakeServer {
    listener: TcpListener,
}

impl FakeServer {
    pub async fn bind() -> FakeServer {
        FakeServer {
            listener: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    pub fn addr(&self) -> String {
        self.listener.local_addr().unwrap().to_string()
    }

    pub async fn accept(&self) -> Peer {
        let (stream, _) = tokio::time::timeout(WAIT, self.listener.accept())
            .await
            .expect("no connection arrived")
            .unwrap();
        Peer {
            framed: Framed::new(stream, FrameCodec::default()),
        }
    }
}

/// The server side of one connection.
pub struct Peer {
    pub framed: Framed<TcpStream, FrameCodec>,
}

impl Peer {
    /// The next frame from the client (None when it closed); panics after [`WAIT`].
    pub async fn recv(&mut self) -> Option<(Frame, Packet)> {
        self.recv_within(WAIT).await.expect("client sent nothing")
    }

    /// The next frame, or Err(()) if none arrives within `d`.
    pub async fn recv_within(&mut self, d: Duration) -> Result<Option<(Frame, Packet)>, ()> {
        match tokio::time::timeout(d, self.framed.next()).await {
            Err(_) => Err(()),
            Ok(None) | Ok(Some(Err(_))) => Ok(None),
            Ok(Some(Ok(frame))) => {
                let packet = frame.packet(1 << 20).unwrap();
                Ok(Some((frame, packet)))
            }
        }
    }

    /// The next frame that is not a HEARTBEAT (heartbeats are answered).
    pub async fn recv_skip_heartbeats(&mut self) -> Option<(Frame, Packet)> {
        loop {
            let (frame, packet) = self.recv().await?;
            if let Packet::Heartbeat(hb) = &packet {
                let ack = pb::HeartbeatAck {
                    server_time_ms: 1,
                    client_time_ms: hb.client_time_ms,
                    ..Default::default()
                };
                self.send(Packet::HeartbeatAck(ack), frame.request_id).await;
                continue;
            }
            return Some((frame, packet));
        }
    }

    /// The next frame, which must carry `command`; returns its request id and body.
    pub async fn expect(&mut self, command: Command) -> (u32, Packet) {
        let (frame, packet) = self.recv_skip_heartbeats().await.expect("client closed");
        assert_eq!(packet.command(), command, "unexpected {packet:?}");
        (frame.request_id, packet)
    }

    pub async fn send(&mut self, packet: Packet, request_id: u32) {
        self.send_frame(Frame::new(&packet, request_id)).await;
    }

    pub async fn send_frame(&mut self, frame: Frame) {
        self.framed.send(frame).await.unwrap();
    }

    /// Reads LOGIN and answers LOGIN_ACK; returns the LOGIN body.
    pub async fn accept_login(&mut self, current_version: u64, heartbeat_secs: u32) -> pb::Login {
        let (id, packet) = self.expect(Command::Login).await;
        let Packet::Login(login) = packet else {
            unreachable!()
        };
        let ack = pb::LoginAck {
            user_id: "alice".into(),
            server_time_ms: 1,
            heartbeat_interval_secs: heartbeat_secs,
            current_version,
            unread_total: 0,
            session_id: 7,
            heartbeat_timeout_secs: 2 * heartbeat_secs,
        };
        self.send(Packet::LoginAck(ack), id).await;
        login
    }

    /// Sends PUSH of entry `version` (prev_version = version - 1).
    pub async fn push(&mut self, version: u64) {
        self.send(push(version), 0).await;
    }

    /// Reads one SYNC and answers with the entries `from..=to` (has_more as given).
    pub async fn answer_sync(&mut self, to: u64, has_more: bool, current: u64) -> u64 {
        let (id, packet) = self.expect(Command::Sync).await;
        let Packet::Sync(sync) = packet else {
            unreachable!()
        };
        let from = sync.since_version + 1;
        let ack = pb::SyncAck {
            entries: (from..=to).map(entry).collect(),
            new_version: to.max(sync.since_version),
            has_more,
            current_version: current,
        };
        self.send(Packet::SyncAck(ack), id).await;
        sync.since_version
    }
}

pub fn bob() -> pb::Conversation {
    pb::Conversation {
        kind: pb::ConversationKind::Direct as i32,
        id: "bob".into(),
    }
}

/// Inbox entry `version`: a message from bob whose text is "m<version>".
pub fn entry(version: u64) -> pb::InboxEntry {
    pb::InboxEntry {
        version,
        conversation: Some(bob()),
        timestamp_ms: 1,
        body: Some(pb::inbox_entry::Body::Message(pb::Message {
            msg_id: 1000 + version,
            from_user: "bob".into(),
            conversation: Some(bob()),
            seq: version,
            timestamp_ms: 1,
            content_type: 1,
            content: format!("m{version}").into_bytes(),
            client_msg_id: format!("c{version}"),
            recalled: false,
            ..Default::default()
        })),
    }
}

pub fn push(version: u64) -> Packet {
    Packet::Push(pb::Push {
        version,
        prev_version: version - 1,
        entry: Some(entry(version)),
    })
}
