//! Policy: which requests are repeated after a reconnect, which disconnects end the client,
//! how to connect and log in, where a redirect goes.

use missive_protocol::{pb, Command, ErrorCode};

use crate::config::ClientConfig;
use crate::connection::Connection;
use crate::error::{ClientError, Result};
use crate::event::DisconnectReason;

/// Requests whose repetition is harmless: reads, and writes the server deduplicates
/// (SEND by client_msg_id) or ignores when repeated (MARK_READ, RECALL, GROUP_SET_ROLE).
pub(super) fn retry_safe(command: Command) -> bool {
    use Command::*;
    matches!(
        command,
        Send | Sync
            | Contacts
            | Unread
            | MarkRead
            | Recall
            | GroupMembers
            | GroupList
            | GroupHistory
            | GroupSetRole
            | History
            | Readers
            | Heartbeat
    )
}

/// Kicks after which reconnecting would be wrong: another connection took our place, or the
/// app's backend wants this device off.
pub(super) fn may_reconnect(reason: &DisconnectReason) -> bool {
    match reason {
        DisconnectReason::ClientClosed => false,
        DisconnectReason::Kicked(k) => !matches!(
            k,
            pb::KickReason::Replaced | pb::KickReason::TooManyDevices | pb::KickReason::Admin
        ),
        DisconnectReason::ServerError { code, .. } => !login_refused(*code),
        _ => true,
    }
}

/// Errors that no retry with the same token fixes.
pub(super) fn login_refused(code: u32) -> bool {
    code == ErrorCode::AuthFailed as u32 || code == ErrorCode::TokenExpired as u32
}

pub(super) fn server_reason(e: &pb::Error) -> DisconnectReason {
    DisconnectReason::ServerError {
        code: e.code,
        name: crate::error::code_name(e.code),
        message: e.message.clone(),
    }
}

pub(super) fn error_reason(e: ClientError) -> DisconnectReason {
    match e {
        ClientError::Server {
            code,
            name,
            message,
            ..
        } => DisconnectReason::ServerError {
            code,
            name,
            message,
        },
        other => DisconnectReason::Transport(other.to_string()),
    }
}

/// Connects to `addr` and logs in, within `config.connect_timeout`.
pub(crate) async fn connect_and_login(
    addr: &str,
    config: &ClientConfig,
    last_version: u64,
) -> Result<(Connection, pb::LoginAck)> {
    let attempt = async {
        let mut conn = Connection::connect(addr).await?;
        let ack = conn
            .login_with(pb::Login {
                token: config.token.clone(),
                device_id: config.device_id.clone(),
                platform: config.platform as i32,
                last_version,
                client_version: config.client_version.clone(),
                heartbeat_secs: config.heartbeat_secs,
                background: config.background,
            })
            .await?;
        Ok((conn, ack))
    };
    tokio::time::timeout(config.connect_timeout, attempt)
        .await
        .map_err(|_| ClientError::Timeout)?
}

/// `host:port` from a KICK's redirect fields, defaulting to the current address's parts. A
/// WebSocket address stays one (`ws://host:port/path`, same path).
pub(super) fn redirect_addr(current: &str, kick: &pb::Kick) -> String {
    if let Some(rest) = current.strip_prefix("ws://") {
        let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        return format!("ws://{}{path}", redirect_addr(authority, kick));
    }
    let (cur_host, cur_port) = current.rsplit_once(':').unwrap_or((current, "443"));
    let host = if kick.redirect_host.is_empty() {
        cur_host.to_string()
    } else if kick.redirect_host.contains(':') && !kick.redirect_host.starts_with('[') {
        format!("[{}]", kick.redirect_host)
    } else {
        kick.redirect_host.clone()
    };
    let port = if kick.redirect_port == 0 {
        cur_port.to_string()
    } else {
        kick.redirect_port.to_string()
    };
    format!("{host}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_defaults_to_the_current_host_and_port() {
        let kick = |host: &str, port| pb::Kick {
            redirect_host: host.into(),
            redirect_port: port,
            ..Default::default()
        };
        assert_eq!(redirect_addr("10.0.0.1:443", &kick("", 80)), "10.0.0.1:80");
        assert_eq!(
            redirect_addr("10.0.0.1:443", &kick("b.example", 0)),
            "b.example:443"
        );
        assert_eq!(redirect_addr("h:1", &kick("::1", 9)), "[::1]:9");
        assert_eq!(
            redirect_addr("ws://h:80/ws", &kick("b.example", 0)),
            "ws://b.example:80/ws"
        );
    }

    #[test]
    fn kicks_that_must_not_reconnect() {
        assert!(!may_reconnect(&DisconnectReason::Kicked(
            pb::KickReason::Replaced
        )));
        assert!(!may_reconnect(&DisconnectReason::ClientClosed));
        assert!(may_reconnect(&DisconnectReason::Kicked(
            pb::KickReason::Shutdown
        )));
        assert!(may_reconnect(&DisconnectReason::HeartbeatTimeout));
        assert!(retry_safe(Command::Send));
        assert!(!retry_safe(Command::GroupCreate));
    }
}
