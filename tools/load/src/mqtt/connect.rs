//! `mqtt connect`: the `connect` workload against an MQTT broker. Ramps up N idle MQTT
//! connections (CONNECT, CONNACK, clean session, TCP_NODELAY on) at a rate, holds them with a
//! PINGREQ every keep-alive interval, and reports the connect rate, failures and the broker's
//! resident memory per connection. As `connect` does with raw Missive connections, each
//! connection is a socket of its own (so that it can be bound to --sources) speaking rumqttc's
//! MQTT 3.1.1 codec, without a client's event loop and queues.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, Packet};
use rumqttc::mqttbytes::Error as CodecError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::common::{Broker, Env};
use crate::stats::Report;
use crate::workload;
use crate::workload::connect::{Hold, Ramp, Side};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub broker: Broker,
    /// Connections to open. Each holds one file descriptor in this process.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub connections: usize,
    /// New connections per second during the ramp.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Seconds to hold the connections once all are up.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// The broker's pid, to read its resident memory (/proc/PID/status VmRSS).
    #[arg(long)]
    pub server_pid: Option<String>,
    /// Local source addresses to connect from, round-robin (e.g. 127.0.0.2,127.0.0.3): past
    /// one source address's port range.
    #[arg(long, value_delimiter = ',')]
    pub sources: Vec<IpAddr>,
}

/// Largest packet read (a connection only expects CONNACK and PINGRESP).
const MAX_PACKET: usize = 64 * 1024;

pub async fn run(args: &Args) -> Result<Report> {
    let env = Env::new(&args.broker, 1)?;
    eprintln!(
        "missive-load: mqtt clients {}-*, broker {}",
        env.prefix, env.settings.addr
    );
    let timeout = Duration::from_secs(env.settings.timeout.max(1));
    let keep_alive = env.settings.keep_alive.max(1);
    let ramp = Ramp {
        scenario: "mqtt-connect",
        n: args.connections,
        rate: args.rate,
        hold: args.duration,
        pid: args.server_pid.as_deref(),
        timeout,
        beats: "pings",
    };
    let held = workload::connect::ramp(&ramp, |i, hold| {
        let one = One {
            addr: env.settings.addr,
            source: (!args.sources.is_empty()).then(|| args.sources[i % args.sources.len()]),
            client_id: env.client_id("c", i),
            keep_alive,
            timeout,
        };
        Ok(one.hold(hold))
    })
    .await?;
    let mut r = Report::new("mqtt-connect");
    r.add("broker", format!("mqtt {}", args.broker.addr), "");
    let side = Side {
        keep_alive: Some(u64::from(keep_alive)),
        kicks: false,
        login: "get a CONNACK",
        server: "broker",
    };
    workload::connect::report(&mut r, &ramp, &held, &side);
    Ok(r)
}

/// One connection to hold.
struct One {
    addr: SocketAddr,
    source: Option<IpAddr>,
    client_id: String,
    keep_alive: u16,
    timeout: Duration,
}

impl One {
    /// Connect, CONNECT, CONNACK, then a PINGREQ every keep-alive interval until `stop`.
    async fn hold(self, hold: Hold) {
        let Hold {
            c,
            latency,
            mut stop,
        } = hold;
        let began = Instant::now();
        let mut stream = match tokio::time::timeout(self.timeout, self.connect()).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                c.connect_failed.fetch_add(1, Relaxed);
                c.error(format!("connect {}: {e:#}", self.addr));
                return;
            }
            Err(_) => {
                c.connect_failed.fetch_add(1, Relaxed);
                c.error(format!("connect {}: timed out", self.addr));
                return;
            }
        };
        let mut connect = Connect::new(self.client_id.as_str());
        connect.keep_alive = self.keep_alive;
        let mut rbuf = BytesMut::with_capacity(64);
        let connack = tokio::time::timeout(self.timeout, async {
            send(&mut stream, Packet::Connect(connect)).await?;
            next_packet(&mut stream, &mut rbuf).await
        })
        .await;
        match connack {
            Ok(Ok(Some(Packet::ConnAck(ack)))) if ack.code == ConnectReturnCode::Success => {}
            Ok(Ok(other)) => {
                c.login_failed.fetch_add(1, Relaxed);
                c.error(format!("CONNECT answered with {other:?}"));
                return;
            }
            Ok(Err(e)) => {
                c.login_failed.fetch_add(1, Relaxed);
                c.error(format!("CONNECT: {e:#}"));
                return;
            }
            Err(_) => {
                c.login_failed.fetch_add(1, Relaxed);
                c.error("CONNECT: no CONNACK in time".into());
                return;
            }
        }
        latency.record(began.elapsed());
        c.connected.fetch_add(1, Relaxed);
        let interval = Duration::from_secs(u64::from(self.keep_alive));
        let mut last_sent = Instant::now();
        loop {
            tokio::select! {
                _ = stop.changed() => {
                    let _ = send(&mut stream, Packet::Disconnect).await;
                    return;
                }
                _ = tokio::time::sleep_until((last_sent + interval).into()) => {
                    if send(&mut stream, Packet::PingReq).await.is_err() {
                        c.closed.fetch_add(1, Relaxed);
                        return;
                    }
                    last_sent = Instant::now();
                    c.heartbeats.fetch_add(1, Relaxed);
                }
                packet = next_packet(&mut stream, &mut rbuf) => match packet {
                    Ok(Some(Packet::PingResp)) => {
                        c.heartbeat_acks.fetch_add(1, Relaxed);
                    }
                    Ok(Some(_)) => {
                        c.other_frames.fetch_add(1, Relaxed);
                    }
                    Ok(None) | Err(_) => {
                        c.closed.fetch_add(1, Relaxed);
                        return;
                    }
                }
            }
        }
    }

    /// A TCP connection to the broker with TCP_NODELAY on, from `source` if given.
    async fn connect(&self) -> Result<TcpStream> {
        let socket = match self.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(source) = self.source {
            socket.bind((source, 0).into())?;
        }
        socket.set_nodelay(true)?;
        Ok(socket.connect(self.addr).await?)
    }
}

async fn send(stream: &mut TcpStream, packet: Packet) -> Result<()> {
    let mut buf = BytesMut::with_capacity(64);
    packet
        .write(&mut buf, MAX_PACKET)
        .map_err(|e| anyhow::anyhow!("encoding {packet:?}: {e}"))?;
    stream.write_all(&buf).await?;
    Ok(())
}

/// The next packet from the broker; `None` when it closed the connection. Cancel-safe: a
/// partial packet stays in `buf`.
async fn next_packet(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<Option<Packet>> {
    loop {
        match Packet::read(buf, MAX_PACKET) {
            Ok(packet) => return Ok(Some(packet)),
            Err(CodecError::InsufficientBytes(_)) => {}
            Err(e) => bail!("bad packet from the broker: {e}"),
        }
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}
