//! Commands that talk to a server: log in, one request, print the reply; and `watch`.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use missive_client::{
    direct, group, pb, Client, ClientConfig, ClientEvent, Connection, DisconnectReason,
};
use missive_protocol::{token, Packet};

use crate::args::{Cmd, Global, GroupCmd, Target};
use crate::output;

/// The secret: `--secret`, else `<data-dir>/secret` (trimmed, as the server reads it).
pub fn secret(g: &Global) -> Result<String> {
    if let Some(s) = &g.secret {
        return Ok(s.clone());
    }
    let path = g.data_dir.join("secret");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no --secret given and cannot read {} (use --secret, --data-dir or --token)",
            path.display()
        )
    })?;
    Ok(text.trim().to_string())
}

fn mint(g: &Global) -> Result<(String, String, u64)> {
    let user = g
        .user
        .as_deref()
        .ok_or_else(|| anyhow!("give --user (to mint a token) or --token"))?;
    token::check_id(user).map_err(|e| anyhow!("--user: {e}"))?;
    token::check_id(g.device()).map_err(|e| anyhow!("--device: {e}"))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let expires = now + g.ttl;
    // v2, issued now: a token the server can revoke (PROTOCOL.md section 10.3).
    let tok = token::mint_v2(secret(g)?.as_bytes(), user, g.device(), now, expires);
    Ok((tok, user.to_string(), expires))
}

/// The token to log in with (also the bearer of the media requests).
pub(crate) fn login_token(g: &Global) -> Result<String> {
    match &g.token {
        Some(t) => Ok(t.clone()),
        None => Ok(mint(g)?.0),
    }
}

/// `missive token`.
pub fn token(g: &Global) -> Result<ExitCode> {
    let (tok, user, expires) = mint(g)?;
    if g.json {
        let v = serde_json::json!({
            "token": tok, "user": user, "device": g.device(), "expires": expires,
        });
        println!("{v}");
    } else {
        println!("{tok}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn timeout(g: &Global) -> Duration {
    Duration::from_secs(g.timeout.max(1))
}

/// Connects and logs in with a raw connection (pushes are ignored: one-shot commands).
async fn connect(g: &Global) -> Result<(Connection, pb::LoginAck)> {
    let tok = login_token(g)?;
    let mut conn = Connection::connect_timeout(&g.endpoint(), timeout(g))
        .await
        .with_context(|| format!("cannot connect to {}", g.endpoint()))?;
    let login = pb::Login {
        token: tok,
        device_id: g.device().to_owned(),
        platform: pb::Platform::Desktop as i32,
        client_version: format!("missive-cli/{}", env!("CARGO_PKG_VERSION")),
        heartbeat_secs: g.heartbeat_secs,
        background: g.background,
        ..Default::default()
    };
    let ack = tokio::time::timeout(timeout(g), conn.login_with(login))
        .await
        .map_err(|_| anyhow!("no LOGIN_ACK within {}s", g.timeout))??;
    Ok((conn, ack))
}

fn conversation(t: &Target) -> pb::Conversation {
    match (&t.to, &t.group) {
        (Some(user), _) => direct(user.as_str()),
        (None, Some(g)) => group(g.as_str()),
        (None, None) => direct(""), // clap requires one of them
    }
}

/// The request a one-shot command makes.
fn request_for(cmd: Cmd) -> Result<Packet> {
    Ok(match cmd {
        Cmd::Send {
            target,
            text,
            content_type,
            client_msg_id,
            mentions,
            media,
            ..
        } => Packet::Send(pb::Send {
            client_msg_id: client_msg_id.unwrap_or_else(missive_client::new_client_msg_id),
            to: Some(conversation(&target)),
            content_type,
            content: text.unwrap_or_default().into_bytes(),
            mentions,
            // Only the id is read; the server fills in the rest (PROTOCOL.md 9, MediaRef).
            media: media
                .into_iter()
                .map(|media_id| pb::MediaRef {
                    media_id,
                    ..Default::default()
                })
                .collect(),
        }),
        Cmd::Mute { target, off } => Packet::Mute(pb::Mute {
            conversation: Some(conversation(&target)),
            muted: !off,
        }),
        Cmd::Block { other } => Packet::Block(pb::Block {
            user_id: other,
            blocked: true,
        }),
        Cmd::Unblock { other } => Packet::Block(pb::Block {
            user_id: other,
            blocked: false,
        }),
        Cmd::Blocked { after, limit } => Packet::BlockList(pb::BlockList { after, limit }),
        Cmd::Sync { since, limit, .. } => Packet::Sync(pb::Sync {
            since_version: since,
            limit,
        }),
        Cmd::Contacts { limit, cursor } => Packet::Contacts(pb::Contacts {
            cursor: hex::decode(cursor.trim()).context("--cursor is not hex")?,
            limit,
        }),
        Cmd::Unread => Packet::Unread(pb::Unread::default()),
        Cmd::Read { target, seq } => Packet::MarkRead(pb::MarkRead {
            conversation: Some(conversation(&target)),
            up_to_seq: seq,
        }),
        Cmd::Recall { target, msg_id } => Packet::Recall(pb::RecallMessage {
            conversation: Some(conversation(&target)),
            msg_id,
        }),
        Cmd::Delete { target, msg_id } => Packet::Delete(pb::DeleteMessage {
            conversation: Some(conversation(&target)),
            msg_id,
        }),
        Cmd::History {
            target,
            before,
            after,
            oldest_first,
            limit,
            ..
        } => Packet::History(pb::History {
            conversation: Some(conversation(&target)),
            before_seq: before,
            after_seq: after,
            limit,
            order: if oldest_first || after > 0 {
                pb::HistoryOrder::OldestFirst as i32
            } else {
                pb::HistoryOrder::NewestFirst as i32
            },
        }),
        Cmd::Group(gc) => match gc {
            GroupCmd::Create {
                name,
                members,
                from_join,
                open,
            } => Packet::GroupCreate(pb::GroupCreate {
                name,
                members,
                history: if from_join {
                    pb::HistoryVisibility::FromJoin as i32
                } else {
                    pb::HistoryVisibility::Full as i32
                },
                join_policy: if open {
                    pb::JoinPolicy::Open as i32
                } else {
                    pb::JoinPolicy::Invite as i32
                },
            }),
            GroupCmd::Join { group, users } => Packet::GroupJoin(pb::GroupJoin {
                group_id: group,
                user_ids: users,
            }),
            GroupCmd::Leave { group, user } => Packet::GroupLeave(pb::GroupLeave {
                group_id: group,
                user_id: user,
            }),
            GroupCmd::Members { group } => Packet::GroupMembers(pb::GroupMembers {
                group_id: group,
                ..Default::default()
            }),
            GroupCmd::List => Packet::GroupList(pb::GroupList::default()),
            GroupCmd::Role { group, user, role } => Packet::GroupSetRole(pb::GroupSetRole {
                group_id: group,
                user_id: user,
                role: match role.as_str() {
                    "admin" => pb::GroupRole::Admin as i32,
                    "member" => pb::GroupRole::Member as i32,
                    other => bail!("--role {other:?}: admin or member"),
                },
            }),
            GroupCmd::History {
                group,
                before,
                after,
                oldest_first,
                limit,
            } => Packet::GroupHistory(pb::GroupHistory {
                group_id: group,
                before_seq: before,
                after_seq: after,
                limit,
                order: if oldest_first || after > 0 {
                    pb::HistoryOrder::OldestFirst as i32
                } else {
                    pb::HistoryOrder::NewestFirst as i32
                },
            }),
        },
        other => bail!("not a one-shot command: {other:?}"),
    })
}

/// Every command that is one request and its reply (plus `sync --all` and `ping`).
pub async fn one_shot(g: &Global, cmd: Cmd) -> Result<ExitCode> {
    let (mut conn, _ack) = connect(g).await?;
    match cmd {
        Cmd::Ping { count } => {
            let mut rtts = Vec::new();
            for _ in 0..count.max(1) {
                let start = std::time::Instant::now();
                tokio::time::timeout(timeout(g), conn.heartbeat())
                    .await
                    .map_err(|_| anyhow!("no HEARTBEAT_ACK within {}s", g.timeout))??;
                rtts.push(start.elapsed());
            }
            output::print_ping(&g.endpoint(), &rtts, g.json);
        }
        Cmd::Sync { since, limit, all } => {
            let mut since = since;
            loop {
                let sync = Packet::Sync(pb::Sync {
                    since_version: since,
                    limit,
                });
                let reply = conn.request_timeout(sync, timeout(g)).await?;
                let Packet::SyncAck(page) = &reply else {
                    bail!("unexpected reply {}", reply.command().name());
                };
                let (more, next) = (page.has_more, page.new_version);
                output::print_reply(&reply, g.json);
                if !all || !more || next <= since {
                    break;
                }
                since = next;
            }
        }
        cmd @ Cmd::History { all: true, .. } => {
            let mut request = request_for(cmd)?;
            loop {
                let reply = conn.request_timeout(request.clone(), timeout(g)).await?;
                let Packet::HistoryAck(page) = &reply else {
                    bail!("unexpected reply {}", reply.command().name());
                };
                output::print_reply(&reply, g.json);
                let Packet::History(h) = &mut request else {
                    unreachable!("a HISTORY request");
                };
                if !page.has_more || page.next_seq == 0 {
                    break;
                }
                if h.order == pb::HistoryOrder::OldestFirst as i32 {
                    h.after_seq = page.next_seq;
                } else {
                    h.before_seq = page.next_seq;
                }
            }
        }
        Cmd::Receipts { target, seq, .. } => receipts(g, &mut conn, &target, seq).await?,
        cmd => {
            let reply = conn.request_timeout(request_for(cmd)?, timeout(g)).await?;
            output::print_reply(&reply, g.json);
        }
    }
    let _ = conn.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// `missive send --http`: the message over `POST /v1/send` with the login token, no connection.
pub async fn send_http(g: &Global, cmd: Cmd) -> Result<ExitCode> {
    let tok = login_token(g)?;
    let Packet::Send(req) = request_for(cmd)? else {
        bail!("not a send");
    };
    let addr = g.addr.strip_prefix("tcp://").unwrap_or(&g.addr);
    let ack = missive_client::send_over_http(addr, &tok, &req, timeout(g)).await?;
    output::print_reply(&Packet::SendAck(ack), g.json);
    Ok(ExitCode::SUCCESS)
}

/// `missive typing`: one SIGNAL. It has no reply on success, so a HEARTBEAT follows it: a
/// refusal (an ERROR with the SIGNAL's request id) arrives before the HEARTBEAT_ACK.
pub async fn typing(
    g: &Global,
    target: &Target,
    stop: bool,
    app: Option<String>,
) -> Result<ExitCode> {
    let (mut conn, _ack) = connect(g).await?;
    let (kind, payload) = match app {
        Some(p) => (pb::SignalKind::App, p.into_bytes()),
        None if stop => (pb::SignalKind::TypingStopped, Vec::new()),
        None => (pb::SignalKind::Typing, Vec::new()),
    };
    let rid = conn.signal(conversation(target), kind, payload).await?;
    tokio::time::timeout(timeout(g), conn.heartbeat())
        .await
        .map_err(|_| anyhow!("no HEARTBEAT_ACK within {}s", g.timeout))??;
    // Frames that came before the HEARTBEAT_ACK are kept by the connection: look for the
    // refusal among them.
    while let Ok(Some(frame)) = conn.recv_frame_timeout(Duration::from_millis(1)).await {
        if frame.request_id == rid {
            if let Ok(Packet::Error(e)) = frame.packet(missive_protocol::DEFAULT_MAX_FRAME_LEN) {
                return Err(missive_client::ClientError::from_server(&e).into());
            }
        }
    }
    if g.json {
        println!(
            "{}",
            serde_json::json!({"signal": kind.as_str_name(), "sent": true})
        );
    } else {
        println!("sent {}", kind.as_str_name());
    }
    let _ = conn.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// `missive receipts` without `--watch`: a direct conversation's read positions (one HISTORY of
/// one message), or the readers of a group message (every page of READERS).
async fn receipts(
    g: &Global,
    conn: &mut Connection,
    target: &Target,
    seq: Option<u64>,
) -> Result<()> {
    match (&target.group, seq) {
        (Some(group_id), Some(seq)) => {
            let mut read_by = Vec::new();
            let mut cursor = Vec::new();
            loop {
                let body = pb::Readers {
                    group_id: group_id.clone(),
                    seq,
                    cursor,
                    limit: 0,
                };
                let reply = conn
                    .request_timeout(Packet::Readers(body), timeout(g))
                    .await?;
                let Packet::ReadersAck(page) = reply else {
                    bail!("unexpected reply {}", reply.command().name());
                };
                read_by.extend(page.read_by);
                cursor = page.next_cursor;
                if cursor.is_empty() {
                    break;
                }
            }
            output::print_readers(group_id, seq, &read_by, g.json);
        }
        (Some(_), None) => bail!("--group needs --seq: the message whose readers to list"),
        (None, _) => {
            let body = pb::History {
                conversation: Some(conversation(target)),
                limit: 1,
                order: pb::HistoryOrder::NewestFirst as i32,
                ..Default::default()
            };
            let reply = conn
                .request_timeout(Packet::History(body), timeout(g))
                .await?;
            let Packet::HistoryAck(page) = reply else {
                bail!("unexpected reply {}", reply.command().name());
            };
            output::print_positions(&conversation(target), &page, g.json);
        }
    }
    Ok(())
}

/// `missive receipts --watch`: the reliable client, printing RECEIPTs until told to stop.
pub async fn watch_receipts(
    g: &Global,
    count: Option<u64>,
    for_secs: Option<u64>,
) -> Result<ExitCode> {
    let tok = login_token(g)?;
    // Only receipts: start from the version the server has now, so no entry is replayed.
    let (mut conn, ack) = connect(g).await?;
    let _ = conn.shutdown().await;
    let mut config = ClientConfig::new(g.endpoint(), tok, g.device());
    config.last_version = ack.current_version;
    config.platform = pb::Platform::Desktop;
    config.connect_timeout = timeout(g);
    config.request_timeout = timeout(g);
    let mut client = Client::connect(config)
        .await
        .with_context(|| format!("cannot log in at {}", g.endpoint()))?;
    let mut events = client
        .events()
        .ok_or_else(|| anyhow!("event stream already taken"))?;
    let deadline = for_secs.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let mut seen = 0u64;
    while count.is_none_or(|n| seen < n) {
        let event = match deadline {
            Some(at) => match tokio::time::timeout_at(at, events.recv()).await {
                Ok(ev) => ev,
                Err(_) => break,
            },
            None => events.recv().await,
        };
        let Some(event) = event else { break };
        match event {
            ClientEvent::Receipt(_) => {
                output::print_event(&event, g.json);
                seen += 1;
            }
            ClientEvent::Disconnected {
                reason,
                reconnecting: false,
            } => {
                if reason == DisconnectReason::ClientClosed {
                    break;
                }
                bail!("disconnected for good: {}", output::reason_text(&reason));
            }
            ClientEvent::Disconnected { .. } | ClientEvent::Kicked(_) => {
                output::print_event(&event, g.json)
            }
            _ => {}
        }
    }
    client.close().await;
    Ok(ExitCode::SUCCESS)
}

/// `missive watch`: the reliable client, printing events until told to stop.
pub async fn watch(
    g: &Global,
    since: Option<u64>,
    count: Option<u64>,
    for_secs: Option<u64>,
) -> Result<ExitCode> {
    let tok = login_token(g)?;
    let since = match since {
        Some(v) => v,
        None => {
            // Only new entries: start from the version the server has now.
            let (mut conn, ack) = connect(g).await?;
            let _ = conn.shutdown().await;
            ack.current_version
        }
    };
    let mut config = ClientConfig::new(g.endpoint(), tok, g.device());
    config.last_version = since;
    config.platform = pb::Platform::Desktop;
    config.background = g.background;
    config.heartbeat_secs = g.heartbeat_secs;
    config.connect_timeout = timeout(g);
    config.request_timeout = timeout(g);
    let mut client = Client::connect(config)
        .await
        .with_context(|| format!("cannot log in at {}", g.endpoint()))?;
    let mut events = client
        .events()
        .ok_or_else(|| anyhow!("event stream already taken"))?;
    let deadline = for_secs.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let mut entries = 0u64;
    if count == Some(0) {
        client.close().await;
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        let event = match deadline {
            Some(at) => match tokio::time::timeout_at(at, events.recv()).await {
                Ok(ev) => ev,
                Err(_) => break,
            },
            None => events.recv().await,
        };
        let Some(event) = event else { break };
        output::print_event(&event, g.json);
        match event {
            ClientEvent::Entry(_) => {
                entries += 1;
                if count.is_some_and(|n| entries >= n) {
                    break;
                }
            }
            ClientEvent::Disconnected {
                reason,
                reconnecting: false,
            } => {
                if reason == DisconnectReason::ClientClosed {
                    break;
                }
                bail!("disconnected for good: {}", output::reason_text(&reason));
            }
            _ => {}
        }
    }
    client.close().await;
    Ok(ExitCode::SUCCESS)
}
