//! `connect`: ramp up N logged-in raw connections (one user each) at a rate, hold them with
//! heartbeats at the server's interval, and report the connect rate, failures and the server's
//! resident memory per connection.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Result;
use missive_client::{pb, Connection};
use missive_protocol::Packet;

use crate::common::{Common, Env, DEVICE};
use crate::stats::Report;
use crate::workload;
use crate::workload::connect::{Hold, Ramp, Side};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Connections to open (one user each). Each holds one file descriptor in this process.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub connections: usize,
    /// New connections per second during the ramp.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Seconds to hold the connections once all are up.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// The server's pid, to read its resident memory (/proc/PID/status VmRSS).
    #[arg(long)]
    pub server_pid: Option<String>,
    /// Local source addresses to connect from, round-robin (e.g. 127.0.0.2,127.0.0.3): past a
    /// server's per-address connection limit, or one source address's port range.
    #[arg(long, value_delimiter = ',')]
    pub sources: Vec<std::net::IpAddr>,
    /// Seconds allowed for one connect + LOGIN.
    #[arg(long, default_value_t = 20)]
    pub login_timeout: u64,
}

pub async fn run(env: &Env, args: &Args) -> Result<Report> {
    let ramp = Ramp {
        scenario: "connect",
        n: args.connections,
        rate: args.rate,
        hold: args.duration,
        pid: args.server_pid.as_deref(),
        timeout: Duration::from_secs(args.login_timeout),
        beats: "heartbeats",
    };
    let held = workload::connect::ramp(&ramp, |i, hold| {
        let addr = env.addr(i).to_string();
        let token = env.token(&env.user("c", i))?;
        let timeout = Duration::from_secs(args.login_timeout);
        let source = (!args.sources.is_empty()).then(|| args.sources[i % args.sources.len()]);
        Ok(hold_one(addr, source, token, timeout, hold))
    })
    .await?;
    let mut r = Report::new("connect");
    let side = Side {
        keep_alive: None,
        kicks: true,
        login: "log in",
        server: "server",
    };
    workload::connect::report(&mut r, &ramp, &held, &side);
    Ok(r)
}

/// One connection: connect, LOGIN, then heartbeats at the server's interval until `stop`.
async fn hold_one(
    addr: String,
    source: Option<std::net::IpAddr>,
    token: String,
    timeout: Duration,
    hold: Hold,
) {
    let Hold {
        c,
        latency,
        mut stop,
    } = hold;
    let began = Instant::now();
    let mut conn = match connect_from(&addr, source, timeout).await {
        Ok(conn) => conn,
        Err(e) => {
            c.connect_failed.fetch_add(1, Relaxed);
            c.error(format!("connect {addr}: {e}"));
            return;
        }
    };
    let ack = match tokio::time::timeout(timeout, conn.login(&token, DEVICE, 0)).await {
        Ok(Ok(ack)) => ack,
        Ok(Err(e)) => {
            c.login_failed.fetch_add(1, Relaxed);
            c.error(format!("login: {e}"));
            return;
        }
        Err(_) => {
            c.login_failed.fetch_add(1, Relaxed);
            c.error("login: timed out".into());
            return;
        }
    };
    latency.record(began.elapsed());
    c.connected.fetch_add(1, Relaxed);
    let interval = Duration::from_secs(u64::from(ack.heartbeat_interval_secs.max(1)));
    loop {
        let due = conn.last_sent() + interval;
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep_until(due.into()) => {
                let body = pb::Heartbeat { client_time_ms: 0, ..Default::default() };
                if conn.send_packet(Packet::Heartbeat(body)).await.is_err() {
                    c.closed.fetch_add(1, Relaxed);
                    return;
                }
                c.heartbeats.fetch_add(1, Relaxed);
            }
            frame = conn.recv_packet() => match frame {
                Ok(Some((_, Packet::HeartbeatAck(_)))) => {
                    c.heartbeat_acks.fetch_add(1, Relaxed);
                }
                Ok(Some((_, Packet::Kick(k)))) => {
                    c.kicked.fetch_add(1, Relaxed);
                    c.error(format!("kicked: {:?} {}", k.reason(), k.message));
                }
                Ok(Some((_, Packet::Push(p)))) => {
                    c.other_frames.fetch_add(1, Relaxed);
                    let _ = conn.push_ack(p.version).await;
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

/// Connects to `addr`, from `source` if given (any port).
async fn connect_from(
    addr: &str,
    source: Option<std::net::IpAddr>,
    timeout: Duration,
) -> anyhow::Result<Connection> {
    let Some(source) = source else {
        return Ok(Connection::connect_timeout(addr, timeout).await?);
    };
    let target: std::net::SocketAddr = addr.parse()?;
    let socket = match source {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind((source, 0).into())?;
    let stream = tokio::time::timeout(timeout, socket.connect(target)).await??;
    Ok(Connection::from_stream(stream)?)
}
