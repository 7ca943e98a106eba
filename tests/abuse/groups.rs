//! Groups under attack: probing for private groups, joining and reading them, wrapping the
//! history range, ids that look like other users, and requests that would make the writer do
//! or hold a lot (huge member lists, a victim added to ever more groups).

use std::time::{Duration, Instant};

use missive_client::{pb, Connection};
use missive_protocol::{ErrorCode, Packet};

use crate::common::TestServer;
use crate::honest::{ms, HonestPair};

/// The honest pair's delivery and heartbeat bound under attack (a debug build on a loaded
/// 2-core box; release is far below it).
const HONEST_BOUND: Duration = Duration::from_millis(1000);

fn grp(id: &str) -> pb::Conversation {
    missive_client::group(id)
}

/// The error code of a refused request (panics on a reply).
async fn code_of(conn: &mut Connection, packet: Packet) -> ErrorCode {
    let what = packet.command().name();
    match conn.request(packet).await {
        Ok(reply) => panic!("{what} should have been refused, got {reply:?}"),
        Err(missive_client::ClientError::Server { code, .. }) => {
            ErrorCode::from_u32(code).expect("a known code")
        }
        Err(e) => panic!("{what}: {e}"),
    }
}

async fn ok(conn: &mut Connection, packet: Packet) -> Packet {
    let what = packet.command().name();
    conn.request(packet)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn create(name: &str, members: &[&str], history: pb::HistoryVisibility) -> Packet {
    Packet::GroupCreate(pb::GroupCreate {
        name: name.into(),
        members: members.iter().map(|s| s.to_string()).collect(),
        history: history as i32,
        join_policy: pb::JoinPolicy::Invite as i32,
    })
}

fn group_of(reply: Packet) -> pb::GroupInfo {
    match reply {
        Packet::GroupCreateAck(a)
        | Packet::GroupJoinAck(a)
        | Packet::GroupLeaveAck(a)
        | Packet::GroupSetRoleAck(a) => a.group.expect("group in the ack"),
        other => panic!("expected a group ack, got {other:?}"),
    }
}

fn send(to: pb::Conversation, cmid: &str, text: &str) -> Packet {
    Packet::Send(pb::Send {
        client_msg_id: cmid.into(),
        to: Some(to),
        content_type: 1,
        content: text.as_bytes().to_vec(),
        ..Default::default()
    })
}

fn history(group: &str, order: pb::HistoryOrder, before: u64, after: u64) -> Packet {
    Packet::GroupHistory(pb::GroupHistory {
        group_id: group.into(),
        before_seq: before,
        after_seq: after,
        limit: 0,
        order: order as i32,
    })
}

/// The probe of the issue: a stranger asks GROUP_MEMBERS (and everything else) for group ids
/// near a real one and for the real one, and tries to join it. Every answer is NOT_FOUND, the
/// same for the real group as for the missing ones; ids are 128 random bits; only the owner
/// or an admin adds members, and roles can be granted.
#[tokio::test]
async fn private_groups_cannot_be_found_joined_or_read() {
    let _g = crate::honest::exclusive();
    let server = TestServer::start().await;
    let pair = HonestPair::start(&server).await;
    let (mut alice, _) = server.login("alice", "phone").await;
    let (mut mallory, _) = server.login("mallory", "laptop").await;
    let info = group_of(
        ok(
            &mut alice,
            create("secret", &["bob"], pb::HistoryVisibility::Full),
        )
        .await,
    );
    let gid = info.group_id.clone();
    assert_eq!(
        info.join_policy(),
        pb::JoinPolicy::Invite,
        "invite-only by default"
    );
    assert!(
        gid.len() == 33 && gid.starts_with('g') && gid[1..].chars().all(|c| c.is_ascii_hexdigit()),
        "g + 128 bits in hex: {gid}"
    );
    let other = group_of(
        ok(
            &mut alice,
            create("another", &[], pb::HistoryVisibility::Full),
        )
        .await,
    );
    let differ = gid[1..]
        .chars()
        .zip(other.group_id[1..].chars())
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        differ > 16,
        "two ids share most digits: {gid} {}",
        other.group_id
    );
    ok(&mut alice, send(grp(&gid), "s1", "the plan")).await;

    // Probes: the real id and ids one digit away; everything the stranger can ask.
    let mut probes = vec![gid.clone()];
    for i in 1..=16 {
        let mut near: Vec<char> = gid.chars().collect();
        near[i] = if near[i] == '0' { '1' } else { '0' };
        probes.push(near.into_iter().collect());
    }
    let started = Instant::now();
    let mut asked = 0;
    for id in &probes {
        let packets = [
            Packet::GroupMembers(pb::GroupMembers {
                group_id: id.clone(),
                ..Default::default()
            }),
            history(id, pb::HistoryOrder::OldestFirst, 0, 0),
            send(grp(id), &format!("m-{asked}"), "let me in"),
            Packet::GroupJoin(pb::GroupJoin {
                group_id: id.clone(),
                user_ids: vec![],
            }),
            Packet::GroupJoin(pb::GroupJoin {
                group_id: id.clone(),
                user_ids: vec!["mallory".into()],
            }),
            Packet::GroupLeave(pb::GroupLeave {
                group_id: id.clone(),
                user_id: "bob".into(),
            }),
            Packet::MarkRead(pb::MarkRead {
                conversation: Some(grp(id)),
                up_to_seq: 1,
            }),
        ];
        for p in packets {
            let what = p.command().name();
            assert_eq!(
                code_of(&mut mallory, p).await,
                ErrorCode::NotFound,
                "{what} {id}"
            );
            asked += 1;
        }
    }
    let probe_time = started.elapsed();
    // Nothing changed: still two members, and the stranger holds nothing.
    let members = match ok(
        &mut alice,
        Packet::GroupMembers(pb::GroupMembers {
            group_id: gid.clone(),
            ..Default::default()
        }),
    )
    .await
    {
        Packet::GroupMembersAck(a) => a,
        other => panic!("{other:?}"),
    };
    assert_eq!(members.members.len(), 2, "{members:?}");
    let store = server.handle().store();
    assert_eq!(store.core().current_version("mallory").unwrap(), 0);
    assert!(store.core().group_ids_of("mallory").unwrap().is_empty());

    // Roles: the owner makes bob an admin; bob then adds carol; a plain member cannot.
    let (mut bob, _) = server.login("bob", "phone").await;
    let set = Packet::GroupSetRole(pb::GroupSetRole {
        group_id: gid.clone(),
        user_id: "bob".into(),
        role: pb::GroupRole::Admin as i32,
    });
    assert_eq!(code_of(&mut bob, set.clone()).await, ErrorCode::Forbidden);
    group_of(ok(&mut alice, set).await);
    let add = |u: &str| {
        Packet::GroupJoin(pb::GroupJoin {
            group_id: gid.clone(),
            user_ids: vec![u.into()],
        })
    };
    assert_eq!(group_of(ok(&mut bob, add("carol")).await).member_count, 3);
    let (mut carol, _) = server.login("carol", "phone").await;
    assert_eq!(code_of(&mut carol, add("dave")).await, ErrorCode::Forbidden);
    // An admin removes members but not the owner; only the owner sets roles.
    let remove_owner = Packet::GroupLeave(pb::GroupLeave {
        group_id: gid.clone(),
        user_id: "alice".into(),
    });
    assert_eq!(code_of(&mut bob, remove_owner).await, ErrorCode::Forbidden);
    let promote = Packet::GroupSetRole(pb::GroupSetRole {
        group_id: gid.clone(),
        user_id: "carol".into(),
        role: pb::GroupRole::Admin as i32,
    });
    assert_eq!(code_of(&mut bob, promote).await, ErrorCode::Forbidden);

    let report = pair.finish().await;
    println!(
        "private groups: {asked} probes of {} ids (the real one among them) in {:.0} ms, every \
         answer NOT_FOUND; {}",
        probes.len(),
        ms(probe_time),
        report.summary()
    );
    report.assert_healthy(HONEST_BOUND);
    server.stop().await;
}

/// FROM_JOIN history cannot be widened with bounds that wrap: after_seq = 2^64-1 (and every
/// other extreme, in every order) shows a late joiner nothing from before its join.
#[tokio::test]
async fn from_join_history_cannot_be_bypassed_with_extreme_bounds() {
    let _g = crate::honest::exclusive();
    let server = TestServer::start().await;
    let pair = HonestPair::start(&server).await;
    let (mut alice, _) = server.login("alice", "phone").await;
    let gid = group_of(
        ok(
            &mut alice,
            create("minutes", &[], pb::HistoryVisibility::FromJoin),
        )
        .await,
    )
    .group_id;
    for i in 0..5 {
        ok(
            &mut alice,
            send(grp(&gid), &format!("old-{i}"), "before dave"),
        )
        .await;
    }
    ok(
        &mut alice,
        Packet::GroupJoin(pb::GroupJoin {
            group_id: gid.clone(),
            user_ids: vec!["dave".into()],
        }),
    )
    .await;
    ok(&mut alice, send(grp(&gid), "new-1", "after dave")).await;
    let (mut dave, _) = server.login("dave", "phone").await;
    use pb::HistoryOrder::*;
    let extremes = [0, 1, 4, 5, u64::MAX - 1, u64::MAX];
    let mut asked = 0;
    for order in [Unspecified, NewestFirst, OldestFirst] {
        for before in extremes {
            for after in extremes {
                let page = match ok(&mut dave, history(&gid, order, before, after)).await {
                    Packet::GroupHistoryAck(a) => a,
                    other => panic!("{other:?}"),
                };
                asked += 1;
                for m in &page.messages {
                    assert_eq!(
                        (m.seq, m.content.as_slice()),
                        (6, b"after dave".as_slice()),
                        "{order:?} before {before} after {after}: a message from before the join"
                    );
                }
            }
        }
    }
    let report = pair.finish().await;
    println!(
        "FROM_JOIN history: {asked} pages with extreme bounds, none showed a message from \
         before the join; {}",
        report.summary()
    );
    report.assert_healthy(HONEST_BOUND);
    server.stop().await;
}

/// Ids that would show up as someone else, or break a log line: control characters, bidi
/// overrides, zero-width characters. Refused in every field, over the socket and the API,
/// and nothing is stored for them.
#[tokio::test]
async fn ids_with_control_or_invisible_characters_are_refused_everywhere() {
    let _g = crate::honest::exclusive();
    let server = TestServer::start_api(|_| {}).await;
    let pair = HonestPair::start(&server).await;
    let (mut alice, _) = server.login("alice", "phone").await;
    let api = server.api();
    let bad = [
        "bob\n",
        "bob\0",
        "\u{202e}bob",
        "b\u{200b}ob",
        "\u{feff}bob",
        "bob\u{2028}",
    ];
    for id in bad {
        let direct = missive_client::direct(id);
        assert_eq!(
            code_of(&mut alice, send(direct.clone(), "c1", "hi")).await,
            ErrorCode::InvalidArgument,
            "SEND to {id:?}"
        );
        assert_eq!(
            code_of(&mut alice, send(missive_client::direct("bob"), id, "hi")).await,
            ErrorCode::InvalidArgument,
            "client_msg_id {id:?}"
        );
        assert_eq!(
            code_of(&mut alice, create("g", &[id], pb::HistoryVisibility::Full)).await,
            ErrorCode::InvalidArgument,
            "member {id:?}"
        );
        for body in [
            serde_json::json!({"from": "alice", "to": {"user": id}, "client_msg_id": "h1", "content": "x"}),
            serde_json::json!({"from": id, "to": {"user": "bob"}, "client_msg_id": "h1", "content": "x"}),
            serde_json::json!({"from": "alice", "to": {"user": "bob"}, "client_msg_id": id, "content": "x"}),
        ] {
            let r = api.post("/v1/messages", body.clone()).await;
            assert_eq!((r.status, r.error_code()), (400, 11), "{body}");
        }
        let r = api
            .post(
                "/v1/groups",
                serde_json::json!({"owner": "alice", "members": [id]}),
            )
            .await;
        assert_eq!((r.status, r.error_code()), (400, 11), "group member {id:?}");
        let token = missive_protocol::token::mint(
            crate::common::SECRET.as_bytes(),
            id,
            "phone",
            (missive::now_ms() / 1000) as u64 + 60,
        );
        let mut c = server.connect().await;
        let refused = c.login(&token, "phone", 0).await;
        assert!(refused.is_err(), "a token for {id:?} logs in");
        let store = server.handle().store();
        assert_eq!(
            store.core().current_version(id).unwrap(),
            0,
            "{id:?} has an inbox"
        );
    }
    let store = server.handle().store();
    assert_eq!(
        store.core().current_version("alice").unwrap(),
        0,
        "nothing was sent"
    );
    let report = pair.finish().await;
    println!(
        "ids: {} bad ids refused in SEND (to, client_msg_id), GROUP_CREATE, the API and tokens; {}",
        bad.len(),
        report.summary()
    );
    report.assert_healthy(HONEST_BOUND);
    server.stop().await;
}

/// `n` short distinct user ids.
fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{i:x}")).collect()
}

/// A GROUP_CREATE as large as a frame holds (140,000 member ids) is refused before the writer
/// sees it, and the largest accepted one (1000 ids) costs the writer little: the honest pair's
/// messages are not held up by either.
#[tokio::test]
async fn huge_member_lists_are_refused_before_any_work() {
    let _g = crate::honest::exclusive();
    let server = TestServer::start_with(|c| c.sends_per_sec = 100_000).await;
    let pair = HonestPair::start(&server).await;
    let (mut attacker, _) = server.login("attacker", "phone").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let huge = ids(140_000);
    let packet = Packet::GroupCreate(pb::GroupCreate {
        name: "everyone".into(),
        members: huge.clone(),
        ..Default::default()
    });
    let body = packet.encode_body().len();
    assert!(body < (1 << 20) - 32, "fits a frame: {body} bytes");
    let started = Instant::now();
    assert_eq!(
        code_of(&mut attacker, packet).await,
        ErrorCode::InvalidArgument
    );
    let refused_in = started.elapsed();
    let join = Packet::GroupJoin(pb::GroupJoin {
        group_id: "gffffffffffffffffffffffffffffffff".into(),
        user_ids: huge,
    });
    assert_eq!(
        code_of(&mut attacker, join).await,
        ErrorCode::InvalidArgument
    );
    // The largest list accepted, a few times over.
    let started = Instant::now();
    for round in 0..4 {
        let members: Vec<String> = (0..1000).map(|i| format!("r{round}-{i}")).collect();
        let p = Packet::GroupCreate(pb::GroupCreate {
            name: "big".into(),
            members,
            ..Default::default()
        });
        let info = group_of(ok(&mut attacker, p).await);
        assert_eq!(info.member_count, 1001);
    }
    let big_time = started.elapsed();
    let report = pair.finish().await;
    println!(
        "GROUP_CREATE of 140,000 ids ({body} bytes) refused in {:.1} ms; 4 GROUP_CREATEs of \
         1000 ids in {:.0} ms; {}",
        ms(refused_in),
        ms(big_time),
        report.summary()
    );
    report.assert_healthy(HONEST_BOUND);
    server.stop().await;
}

/// A group change costs the connection's rate of changes (`sends_per_sec`) one token per user
/// id it names: with 30 changes a second (a burst of 60; the honest pair sends 25 a second per
/// connection), one GROUP_CREATE of 1000 ids spends the whole burst, and another waits about
/// 2 s for it to refill.
#[tokio::test]
async fn a_large_group_change_spends_the_connections_budget() {
    let _g = crate::honest::exclusive();
    let server = TestServer::start_with(|c| c.sends_per_sec = 30).await;
    let pair = HonestPair::start(&server).await;
    let (mut attacker, _) = server.login("attacker", "phone").await;
    let members: Vec<String> = (0..1000).map(|i| format!("m{i}")).collect();
    let create = |members: Vec<String>| {
        Packet::GroupCreate(pb::GroupCreate {
            name: "big".into(),
            members,
            ..Default::default()
        })
    };
    group_of(ok(&mut attacker, create(members.clone())).await);
    let rid = attacker.send_packet(create(members)).await.expect("sent");
    let error = loop {
        let (frame, packet) = attacker
            .recv_packet_timeout(Duration::from_secs(5))
            .await
            .expect("a reply")
            .expect("the connection stays");
        if frame.request_id == rid {
            break packet;
        }
    };
    let retry = match error {
        Packet::Error(e) if e.code == ErrorCode::RateLimited as u32 => {
            assert!(!e.fatal);
            e.retry_after_ms
        }
        other => panic!("expected RATE_LIMITED, got {other:?}"),
    };
    assert!(
        retry >= 1000,
        "the burst of 60 refills in about 2 s: {retry} ms"
    );
    let report = pair.finish().await;
    println!(
        "change budget: a GROUP_CREATE of 1000 ids spent the burst, the next change told to \
         retry after {retry} ms; {}",
        report.summary()
    );
    report.assert_healthy(HONEST_BOUND);
    server.stop().await;
}

/// A victim put into groups without its consent: at `max_groups_per_user` the next group is
/// refused (LIMIT_EXCEEDED), and the victim's GROUP_LIST comes in pages that each fit a frame.
#[tokio::test]
async fn a_victim_cannot_be_put_in_more_than_max_groups() {
    let _g = crate::honest::exclusive();
    const CAP: usize = 300;
    let server = TestServer::start_with(|c| {
        c.max_groups_per_user = CAP;
        c.sends_per_sec = 100_000;
    })
    .await;
    let pair = HonestPair::start(&server).await;
    let (mut attacker, _) = server.login("attacker", "phone").await;
    let long_name = "n".repeat(128);
    let mut created = 0;
    let refused = loop {
        let p = Packet::GroupCreate(pb::GroupCreate {
            name: long_name.clone(),
            members: vec!["victim".into()],
            ..Default::default()
        });
        match attacker.request(p).await {
            Ok(_) => created += 1,
            Err(missive_client::ClientError::Server { code, message, .. }) => {
                break (ErrorCode::from_u32(code), message)
            }
            Err(e) => panic!("{e}"),
        }
        assert!(created <= CAP, "more than {CAP} groups created");
    };
    assert_eq!(
        created, CAP,
        "the attacker is capped too, at the same count"
    );
    assert_eq!(refused.0, Some(ErrorCode::LimitExceeded), "{}", refused.1);
    let (mut victim, _) = server.login("victim", "phone").await;
    let mut cursor = Vec::new();
    let mut listed = 0;
    let mut pages = 0;
    loop {
        let frame_limit = server.config.max_frame_len;
        let reply = ok(
            &mut victim,
            Packet::GroupList(pb::GroupList {
                cursor: cursor.clone(),
                limit: 0,
            }),
        )
        .await;
        let Packet::GroupListAck(page) = reply else {
            panic!("{reply:?}")
        };
        let size = Packet::GroupListAck(page.clone()).encode_body().len();
        assert!(size <= frame_limit / 2 + 4096, "a page of {size} bytes");
        listed += page.groups.len();
        pages += 1;
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    assert_eq!(listed, CAP);
    let report = pair.finish().await;
    println!(
        "groups per user: the {}th group refused ({}), the victim's {listed} groups listed in \
         {pages} page(s); {}",
        CAP + 1,
        refused.1,
        report.summary()
    );
    report.assert_healthy(HONEST_BOUND);
    server.stop().await;
}
