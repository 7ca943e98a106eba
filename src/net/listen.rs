//! Listening sockets.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;

/// A listener that could not be opened.
#[derive(Debug, thiserror::Error)]
// The io::Error is part of the message, not a `source`, so it is printed once.
#[error("cannot listen on {addr}: {error}. {hint}")]
pub struct BindError {
    pub addr: String,
    pub error: io::Error,
    pub hint: String,
}

/// A listener on `addr` (`IP:PORT`), with a hint in the error for the usual mistakes.
pub async fn bind(addr: &str) -> Result<TcpListener, BindError> {
    let sock_addr: SocketAddr = addr.parse().map_err(|_| BindError {
        addr: addr.to_owned(),
        error: io::Error::new(io::ErrorKind::InvalidInput, "not an address"),
        hint: "Write it as IP:PORT, for example 0.0.0.0:443.".into(),
    })?;
    let socket = if sock_addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    };
    let result = socket.and_then(|s| {
        s.set_reuseaddr(true)?;
        s.bind(sock_addr)?;
        s.listen(4096)
    });
    result.map_err(|error| {
        let choose = "choose other ports with --listen 0.0.0.0:8443,0.0.0.0:8000 \
                      (environment MISSIVE_LISTEN, config setting `listen`)";
        let hint = match error.kind() {
            io::ErrorKind::PermissionDenied => format!(
                "Ports below 1024 need root or the CAP_NET_BIND_SERVICE capability \
                 (sudo setcap cap_net_bind_service=+ep $(which missived)); or {choose}."
            ),
            io::ErrorKind::AddrInUse => format!(
                "Another process listens there (`ss -ltnp` shows which); stop it, or {choose}."
            ),
            _ => format!("Check the address, or {choose}."),
        };
        BindError {
            addr: addr.to_owned(),
            error,
            hint,
        }
    })
}
