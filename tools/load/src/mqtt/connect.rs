//! `mqtt connect`: the `connect` workload against an MQTT broker. Ramps up N idle MQTT
//! connections (CONNECT, CONNACK, clean session, TCP_NODELAY on) at a rate, holds them with a
//! PINGREQ every keep-alive interval, and reports the connect rate, failures and the broker's
//! resident memory per connection. As `connect` does with raw Missive connections, each
//! connection is a socket of its own (so that it can be bound to --sources) speaking rumqttc's
//! MQTT 3.1.1 codec, without a client's event loop and queues.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{Connect, ConnectReturnCode, Packet};
use rumqttc::mqttbytes::Error as CodecError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

use super::common::{Broker, Env};
use crate::common::{cpu_secs, vm_rss_kib};
use crate::connect::{add_ramp, add_server_use, settled_rss_kib, ServerUse};
use crate::stats::{progress, Latency, Report};

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

#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    connect_failed: AtomicU64,
    login_failed: AtomicU64,
    closed: AtomicU64,
    pings: AtomicU64,
    pongs: AtomicU64,
    other_frames: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Counters {
    fn error(&self, what: String) {
        let mut errors = self.errors.lock().expect("errors lock");
        if errors.len() < 5 {
            errors.push(what);
        }
    }
    fn done(&self) -> u64 {
        self.connected.load(Relaxed)
            + self.connect_failed.load(Relaxed)
            + self.login_failed.load(Relaxed)
    }
}

pub async fn run(args: &Args) -> Result<Report> {
    let env = Env::new(&args.broker, 1)?;
    let n = args.connections;
    let pid = args.server_pid.as_deref();
    eprintln!(
        "missive-load: mqtt clients {}-*, broker {}",
        env.prefix, env.settings.addr
    );
    let rss_before = match pid {
        Some(pid) => settled_rss_kib(pid).await,
        None => None,
    };
    let counters = Arc::new(Counters::default());
    let login_latency = Arc::new(Latency::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let c = counters.clone();
    let ticker = progress("mqtt-connect", move || {
        format!(
            "connected {} open {} failed {} pings {}/{}",
            c.connected.load(Relaxed),
            c.connected.load(Relaxed) - c.closed.load(Relaxed),
            c.connect_failed.load(Relaxed) + c.login_failed.load(Relaxed),
            c.pongs.load(Relaxed),
            c.pings.load(Relaxed),
        )
    });

    let timeout = Duration::from_secs(env.settings.timeout.max(1));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / args.rate);
        tokio::time::sleep_until(due.into()).await;
        let one = One {
            addr: env.settings.addr,
            source: (!args.sources.is_empty()).then(|| args.sources[i % args.sources.len()]),
            client_id: env.client_id("c", i),
            keep_alive: env.settings.keep_alive.max(1),
            timeout,
        };
        let (counters, latency, stop) = (counters.clone(), login_latency.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(one.hold(counters, latency, stop)));
    }
    // The ramp ends when every connection has its CONNACK or has failed.
    let ramp_deadline = Instant::now() + timeout + Duration::from_secs(5);
    while (counters.done() as usize) < n && Instant::now() < ramp_deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ramp = start.elapsed();
    let connected = counters.connected.load(Relaxed);
    // Let the broker settle before reading its memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_up = pid.and_then(vm_rss_kib);
    eprintln!(
        "missive-load: {connected} of {n} connections up in {:.2} s; holding for {} s",
        ramp.as_secs_f64(),
        args.duration
    );
    let cpu_before = pid.and_then(cpu_secs);
    let hold_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    let cpu_after = pid.and_then(cpu_secs);
    let hold = hold_start.elapsed().as_secs_f64();
    let rss_end = pid.and_then(vm_rss_kib);
    let own_rss = vm_rss_kib("self");
    let open_at_end = connected - counters.closed.load(Relaxed);
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    ticker.abort();

    let c = &counters;
    let mut r = Report::new("mqtt-connect");
    r.add("broker", format!("mqtt {}", args.broker.addr), "");
    let failures = (c.connect_failed.load(Relaxed), c.login_failed.load(Relaxed));
    add_ramp(
        &mut r,
        n,
        connected,
        failures,
        args.rate,
        ramp,
        &login_latency,
    );
    r.add("hold", args.duration, "s");
    r.add("keep-alive", u64::from(env.settings.keep_alive.max(1)), "s");
    r.add("open at end of hold", open_at_end, "");
    r.add("closed by server during run", c.closed.load(Relaxed), "");
    r.add("heartbeats sent", c.pings.load(Relaxed), "");
    r.add("heartbeat acks", c.pongs.load(Relaxed), "");
    r.add("other frames received", c.other_frames.load(Relaxed), "");
    let server = ServerUse {
        pid,
        rss_kib: [rss_before, rss_up, rss_end],
        cpu_secs: [cpu_before, cpu_after],
        hold,
        own_rss,
    };
    add_server_use(&mut r, &server, connected);
    for e in c.errors.lock().expect("errors lock").iter() {
        r.add("sample error", e.clone(), "");
    }
    let failed = c.connect_failed.load(Relaxed) + c.login_failed.load(Relaxed);
    if failed > 0 {
        r.fail(format!(
            "{failed} of {n} connections failed to connect or get a CONNACK"
        ));
    }
    if c.closed.load(Relaxed) > 0 {
        r.fail(format!(
            "{} connections were closed by the broker while held",
            c.closed.load(Relaxed)
        ));
    }
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
    async fn hold(self, c: Arc<Counters>, latency: Arc<Latency>, mut stop: watch::Receiver<bool>) {
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
                    c.pings.fetch_add(1, Relaxed);
                }
                packet = next_packet(&mut stream, &mut rbuf) => match packet {
                    Ok(Some(Packet::PingResp)) => {
                        c.pongs.fetch_add(1, Relaxed);
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
