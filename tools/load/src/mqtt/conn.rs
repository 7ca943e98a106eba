//! One MQTT 3.1.1 connection through `rumqttc`, with TCP_NODELAY on: connect (and subscribe
//! with QoS 1), publish QoS 1 messages under the harness's message number, and a task that
//! drives the connection and reports each PUBACK as the number of the message it acknowledges,
//! each message received, and a lost connection (never reconnected: a run that loses a
//! connection fails).
//!
//! rumqttc assigns packet ids itself, when its event loop writes a publish, and reports that as
//! `Outgoing::Publish(pkid)` in the order the publishes were handed to it. So [`Conn::publish`]
//! queues the message number next to the request, under one lock, and the driver pairs the
//! queue's head with each `Outgoing::Publish`, then each PUBACK with its packet id.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing,
    Packet, Publish, QoS, SubscribeReasonCode,
};
use tokio::task::JoinHandle;

/// How every connection of a run reaches the broker.
#[derive(Clone, Debug)]
pub struct Settings {
    pub addr: SocketAddr,
    /// Seconds between PINGREQs when the connection is otherwise idle.
    pub keep_alive: u16,
    /// QoS 1 publishes a connection has unacknowledged at once (rumqttc's window; more wait
    /// in the request queue, and that wait counts as latency).
    pub inflight: u16,
    /// Requests a connection queues before [`Conn::publish`] fails.
    pub queue: usize,
    /// Seconds allowed for connecting and for each acknowledgement of the setup (CONNACK,
    /// SUBACK).
    pub timeout: u64,
}

/// What a driven connection reports (called from its task).
pub trait Handler: Send + Sync + 'static {
    /// The broker acknowledged (PUBACK) message `k`, published on connection `conn`.
    fn acked(&self, conn: usize, k: u64);
    /// A message arrived on connection `conn` (rumqttc has already sent its PUBACK).
    fn received(&self, conn: usize, publish: &Publish);
    /// Connection `conn` failed, other than by [`Conn::close`].
    fn lost(&self, conn: usize, error: String);
}

/// The publishing side of a connection; its event loop runs in [`drive`].
pub struct Conn {
    client: AsyncClient,
    /// Numbers of the messages handed to rumqttc and not yet written, oldest first.
    queued: Arc<Mutex<VecDeque<u64>>>,
    closing: Arc<AtomicBool>,
}

/// A connection whose CONNACK (and SUBACK, if it subscribed) has arrived; its event loop is to
/// be handed to [`drive`].
pub struct Opened {
    pub conn: Conn,
    pub events: EventLoop,
    pub session_present: bool,
}

impl Conn {
    /// Hands message `k` to the connection, to be published QoS 1 on `topic`. Fails only when
    /// the connection's request queue is full or its event loop has stopped.
    pub fn publish(&self, k: u64, topic: String, payload: Vec<u8>) -> Result<()> {
        let mut queued = self.queued.lock().expect("queue lock");
        self.client
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
            .map_err(|e| anyhow::anyhow!("publish #{k}: {e}"))?;
        queued.push_back(k);
        Ok(())
    }

    /// Sends DISCONNECT (after the requests already queued); the driver then stops quietly.
    pub async fn close(&self) {
        self.closing.store(true, Relaxed);
        let _ = self.client.disconnect().await;
    }
}

/// Connects as `client_id` (a persistent session when `clean` is false) and subscribes to
/// `topic` with QoS 1 if one is given.
pub async fn open(
    s: &Settings,
    client_id: &str,
    clean: bool,
    topic: Option<&str>,
) -> Result<Opened> {
    let mut options = MqttOptions::new(client_id, s.addr.ip().to_string(), s.addr.port());
    options
        .set_keep_alive(Duration::from_secs(u64::from(s.keep_alive.max(1))))
        .set_clean_session(clean)
        .set_inflight(s.inflight.max(1))
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(options, s.queue.max(1));
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(s.timeout.max(1));
    events.set_network_options(network);
    let timeout = Duration::from_secs(s.timeout.max(1));
    let connack = match tokio::time::timeout(timeout, events.poll()).await {
        Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => ack,
        Ok(Ok(other)) => bail!("{client_id}: {other:?} before CONNACK"),
        Ok(Err(e)) => return Err(e).with_context(|| format!("{client_id} cannot connect")),
        Err(_) => bail!("{client_id}: no CONNACK within {} s", timeout.as_secs()),
    };
    if connack.code != ConnectReturnCode::Success {
        bail!("{client_id}: CONNACK refused: {:?}", connack.code);
    }
    if let Some(topic) = topic {
        client
            .subscribe(topic, QoS::AtLeastOnce)
            .await
            .with_context(|| format!("{client_id}: SUBSCRIBE {topic}"))?;
        let suback = tokio::time::timeout(timeout, async {
            loop {
                match events.poll().await? {
                    Event::Incoming(Packet::SubAck(ack)) => return Ok(ack),
                    Event::Incoming(Packet::Publish(p)) => {
                        bail!("a message on {} before the SUBACK", p.topic)
                    }
                    _ => {}
                }
            }
        })
        .await
        .map_err(|_| anyhow::anyhow!("{client_id}: no SUBACK within {} s", timeout.as_secs()))?
        .with_context(|| format!("{client_id}: SUBSCRIBE {topic}"))?;
        match suback.return_codes.as_slice() {
            [SubscribeReasonCode::Success(QoS::AtLeastOnce)] => {}
            other => bail!("{client_id}: SUBSCRIBE {topic} QoS 1 answered {other:?}"),
        }
    }
    Ok(Opened {
        conn: Conn {
            client,
            queued: Arc::new(Mutex::new(VecDeque::new())),
            closing: Arc::new(AtomicBool::new(false)),
        },
        events,
        session_present: connack.session_present,
    })
}

/// Runs connection `index`'s event loop until it fails or is closed, reporting to `handler`.
pub fn drive<H: Handler>(
    index: usize,
    conn: &Conn,
    mut events: EventLoop,
    handler: Arc<H>,
) -> JoinHandle<()> {
    let queued = conn.queued.clone();
    let closing = conn.closing.clone();
    let window = usize::from(events.mqtt_options.inflight());
    tokio::spawn(async move {
        // pkid -> message number, for the publishes written and not yet acknowledged.
        let mut by_pkid: Vec<Option<u64>> = vec![None; window + 1];
        loop {
            match events.poll().await {
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    let k = queued.lock().expect("queue lock").pop_front();
                    match by_pkid.get_mut(usize::from(pkid)) {
                        Some(slot) => *slot = k,
                        None => {
                            handler.lost(index, format!("packet id {pkid} beyond the window"));
                            return;
                        }
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(k) = by_pkid
                        .get_mut(usize::from(ack.pkid))
                        .and_then(Option::take)
                    {
                        handler.acked(index, k);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => handler.received(index, &p),
                Ok(Event::Outgoing(Outgoing::Disconnect)) if closing.load(Relaxed) => return,
                Ok(_) => {}
                Err(e) => {
                    if !closing.load(Relaxed) {
                        handler.lost(index, e.to_string());
                    }
                    // Polling again would reconnect: a lost connection stays lost.
                    return;
                }
            }
        }
    })
}
