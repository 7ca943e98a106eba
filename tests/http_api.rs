//! The server API over real HTTP (hyper's client) against a real server and store, with socket
//! clients that see what the API did.

mod common;

use std::time::Duration;

use common::http::{Api, API_KEY};
use common::*;
use missive_client::{direct, group, pb, ClientError, Connection};
use missive_protocol::{ErrorCode, Packet};
use serde_json::json;

/// The entry's group event, or a panic naming what it was instead.
fn group_event(entry: &pb::InboxEntry) -> &pb::GroupEvent {
    match &entry.body {
        Some(pb::inbox_entry::Body::GroupEvent(e)) => e,
        other => panic!("expected a group event, got {other:?}"),
    }
}

/// The next frame that is not a reply, decoded (PUSH, KICK, ...).
async fn next_packet(conn: &mut Connection) -> Option<Packet> {
    conn.recv_packet_timeout(Duration::from_secs(10))
        .await
        .expect("a frame within 10 s")
        .map(|(_, p)| p)
}

#[tokio::test]
async fn a_backend_sends_a_message_and_both_sides_devices_receive_it_once() {
    let server = TestServer::start_api(|_| {}).await;
    let api = server.api();
    let (_bob, mut bob_events) = server.client("bob", "phone").await;
    let (_alice, mut alice_events) = server.client("alice", "tablet").await;

    let body = json!({
        "from": "alice",
        "to": {"user": "bob"},
        "client_msg_id": "order-42-shipped",
        "content": "your order has shipped",
    });
    let first = api.post("/v1/messages", body.clone()).await;
    assert_eq!(first.status, 201, "{}", first.text());
    let ack = first.json();
    assert_eq!(ack["duplicate"], false);
    assert_eq!(ack["seq"], 1);
    assert_eq!(ack["from"], "alice");
    let msg_id: u64 = ack["msg_id"].as_str().unwrap().parse().unwrap();

    let entry = next_entry(&mut bob_events).await;
    let m = message(&entry);
    assert_eq!(m.content, b"your order has shipped");
    assert_eq!(m.from_user, "alice");
    assert_eq!(m.msg_id, msg_id);
    assert_eq!(m.content_type, 1, "text by default");
    // Sent from no device of alice's, so every one of them gets her own message too.
    let own = next_entry(&mut alice_events).await;
    assert_eq!(message(&own).msg_id, msg_id);
    assert_eq!(own.version, ack["version"].as_u64().unwrap());

    // The same client message id again: stored once, the first answer, flagged.
    let again = api.post("/v1/messages", body).await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["duplicate"], true);
    assert_eq!(again.json()["msg_id"], ack["msg_id"]);
    let (mut bob_raw, login) = server.login("bob", "laptop").await;
    assert_eq!(login.current_version, 1, "one entry only");
    assert_eq!(sync_all(&mut bob_raw, 0).await.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn without_from_the_system_account_sends_and_binary_content_goes_as_base64() {
    let server = TestServer::start_api(|c| c.system_user = "missive-bot".into()).await;
    let api = server.api();
    let (_carol, mut events) = server.client("carol", "phone").await;
    let sent = api
        .post(
            "/v1/messages",
            json!({
                "to": {"user": "carol"},
                "client_msg_id": "welcome-carol",
                "content_type": 7,
                "content_base64": "AAH/",
            }),
        )
        .await;
    assert_eq!(sent.status, 201, "{}", sent.text());
    assert_eq!(sent.json()["from"], "missive-bot");
    let entry = next_entry(&mut events).await;
    let m = message(&entry);
    assert_eq!(m.from_user, "missive-bot");
    assert_eq!(m.content_type, 7);
    assert_eq!(m.content, [0x00, 0x01, 0xff]);
    server.stop().await;
}

/// The same mistakes over HTTP and over the socket get the same protocol code.
#[tokio::test]
async fn refusals_carry_the_socket_protocols_codes() {
    let server = TestServer::start_api(|c| c.max_content_len = 100).await;
    let api = server.api();
    let (mut alice, _) = server.login("alice", "d").await;
    let socket_code = |r: Result<Packet, ClientError>| match r {
        Err(e) => e.server_code().expect("a server error") as u64,
        Ok(p) => panic!("accepted: {p:?}"),
    };
    let cases: Vec<(serde_json::Value, pb::Send, u16)> = vec![
        (
            json!({"from": "alice", "to": {"user": "alice"}, "client_msg_id": "c1", "content": "me"}),
            pb::Send {
                client_msg_id: "c1".into(),
                to: Some(direct("alice")),
                content_type: 1,
                content: b"me".to_vec(),
                ..Default::default()
            },
            400,
        ),
        (
            json!({"from": "alice", "to": {"user": "bob"}, "client_msg_id": "c2", "content_type": 0}),
            pb::Send {
                client_msg_id: "c2".into(),
                to: Some(direct("bob")),
                content_type: 0,
                content: Vec::new(),
                ..Default::default()
            },
            400,
        ),
        (
            json!({"from": "alice", "to": {"user": "bob"}, "content": "no id"}),
            pb::Send {
                client_msg_id: String::new(),
                to: Some(direct("bob")),
                content_type: 1,
                content: b"no id".to_vec(),
                ..Default::default()
            },
            400,
        ),
        (
            json!({"from": "alice", "to": {"user": "bob"}, "client_msg_id": "c3", "content": "x".repeat(101)}),
            pb::Send {
                client_msg_id: "c3".into(),
                to: Some(direct("bob")),
                content_type: 1,
                content: vec![b'x'; 101],
                ..Default::default()
            },
            413,
        ),
        (
            json!({"from": "alice", "to": {"group": "g-none"}, "client_msg_id": "c4", "content": "hi"}),
            pb::Send {
                client_msg_id: "c4".into(),
                to: Some(group("g-none")),
                content_type: 1,
                content: b"hi".to_vec(),
                ..Default::default()
            },
            404,
        ),
    ];
    for (body, send, status) in cases {
        let http = api.post("/v1/messages", body.clone()).await;
        let socket = socket_code(alice.request(Packet::Send(send)).await);
        assert_eq!(http.status, status, "{body}: {}", http.text());
        assert_eq!(http.error_code(), socket, "{body}: {}", http.text());
        let error = &http.json()["error"];
        let code = ErrorCode::from_u32(socket as u32).unwrap();
        assert_eq!(error["name"], code.name());
        assert!(!error["message"].as_str().unwrap().is_empty());
    }
    // Only HTTP has these.
    let bad_json = api.raw("POST", "/v1/messages", b"{not json".to_vec()).await;
    assert_eq!((bad_json.status, bad_json.error_code()), (400, 6));
    let both = api
        .post(
            "/v1/messages",
            json!({"to": {"user": "a", "group": "g"}, "client_msg_id": "c"}),
        )
        .await;
    assert_eq!((both.status, both.error_code()), (400, 11));
    let bad_from = api
        .post(
            "/v1/messages",
            json!({"from": "x".repeat(65), "to": {"user": "bob"}, "client_msg_id": "c"}),
        )
        .await;
    assert_eq!((bad_from.status, bad_from.error_code()), (400, 11));
    let nowhere = api.get("/v1/nothing-here").await;
    assert_eq!((nowhere.status, nowhere.error_code()), (404, 13));
    server.stop().await;
}

#[tokio::test]
async fn groups_are_created_changed_and_messaged_over_http() {
    let server = TestServer::start_api(|_| {}).await;
    let api = server.api();
    let (_bob, mut bob_events) = server.client("bob", "phone").await;
    let (_carol, mut carol_events) = server.client("carol", "phone").await;

    let created = api
        .post(
            "/v1/groups",
            json!({"owner": "alice", "name": "hikers", "members": ["bob"]}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let g = created.json()["group"].clone();
    let gid = g["group_id"].as_str().unwrap().to_owned();
    assert_eq!(g["owner"], "alice");
    assert_eq!(g["member_count"], 2);
    assert_eq!(g["history"], "full");
    let event = next_entry(&mut bob_events).await;
    assert_eq!(group_event(&event).kind, pb::GroupEventKind::Created as i32);

    let sent = api
        .post(
            "/v1/messages",
            json!({"from": "alice", "to": {"group": gid}, "client_msg_id": "g1", "content": "trail at 9"}),
        )
        .await;
    assert_eq!(sent.status, 201, "{}", sent.text());
    let entry = next_entry(&mut bob_events).await;
    assert_eq!(message(&entry).content, b"trail at 9");

    // Added by the owner (the default actor): carol sees her join.
    let added = api
        .post(
            &format!("/v1/groups/{gid}/members"),
            json!({"users": ["carol"]}),
        )
        .await;
    assert_eq!(added.status, 200, "{}", added.text());
    assert_eq!(added.json()["group"]["member_count"], 3);
    let joined = next_entry(&mut carol_events).await;
    assert_eq!(group_event(&joined).kind, pb::GroupEventKind::Joined as i32);
    assert_eq!(group_event(&joined).user_id, "carol");

    // A member may not add others (the protocol's rule).
    let refused = api
        .post(
            &format!("/v1/groups/{gid}/members"),
            json!({"users": ["dave"], "by": "bob"}),
        )
        .await;
    assert_eq!((refused.status, refused.error_code()), (403, 14));

    let bob_heard = next_entry(&mut bob_events).await;
    assert_eq!(
        group_event(&bob_heard).user_id,
        "carol",
        "bob heard of carol's join"
    );
    // Roles: the owner makes bob an admin (bob and carol hear of it); bob then adds dave.
    let role = api
        .put(
            &format!("/v1/groups/{gid}/members/bob"),
            json!({"role": "admin"}),
        )
        .await;
    assert_eq!(role.status, 200, "{}", role.text());
    for events in [&mut bob_events, &mut carol_events] {
        let e = next_entry(events).await;
        let ev = group_event(&e);
        assert_eq!(
            (ev.kind, ev.user_id.as_str(), ev.role),
            (
                pb::GroupEventKind::RoleChanged as i32,
                "bob",
                pb::GroupRole::Admin as i32
            )
        );
    }
    let shown = api.get(&format!("/v1/groups/{gid}")).await;
    let bob_role = shown.json()["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"] == "bob")
        .map(|m| m["role"].clone());
    assert_eq!(bob_role, Some(json!("admin")));
    let by_admin = api
        .post(
            &format!("/v1/groups/{gid}/members"),
            json!({"users": ["dave"], "by": "bob"}),
        )
        .await;
    assert_eq!(by_admin.status, 200, "{}", by_admin.text());
    for events in [&mut bob_events, &mut carol_events] {
        let e = next_entry(events).await;
        assert_eq!(group_event(&e).user_id, "dave");
    }
    let gone = api.delete(&format!("/v1/groups/{gid}/members/dave")).await;
    assert_eq!(gone.status, 200, "{}", gone.text());
    for events in [&mut bob_events, &mut carol_events] {
        next_entry(events).await;
    }
    let bad_role = api
        .put(
            &format!("/v1/groups/{gid}/members/bob"),
            json!({"role": "owner"}),
        )
        .await;
    assert_eq!((bad_role.status, bad_role.error_code()), (400, 11));
    let not_member = api
        .put(
            &format!("/v1/groups/{gid}/members/zed"),
            json!({"role": "admin"}),
        )
        .await;
    assert_eq!((not_member.status, not_member.error_code()), (404, 13));
    let back = api
        .put(
            &format!("/v1/groups/{gid}/members/bob"),
            json!({"role": "member"}),
        )
        .await;
    assert_eq!(back.status, 200, "{}", back.text());
    for events in [&mut bob_events, &mut carol_events] {
        let e = next_entry(events).await;
        assert_eq!(group_event(&e).role, pb::GroupRole::Member as i32);
    }

    let removed = api.delete(&format!("/v1/groups/{gid}/members/bob")).await;
    assert_eq!(removed.status, 200, "{}", removed.text());
    assert_eq!(removed.json()["group"]["member_count"], 2);
    let gone = next_entry(&mut carol_events).await;
    assert_eq!(group_event(&gone).kind, pb::GroupEventKind::Removed as i32);
    assert_eq!(group_event(&gone).user_id, "bob");
    let shown = api.get(&format!("/v1/groups/{gid}")).await;
    assert_eq!(shown.status, 200, "{}", shown.text());
    let members: Vec<String> = shown.json()["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(members.len(), 2);
    assert!(members.contains(&"alice".to_owned()) && members.contains(&"carol".to_owned()));
    assert_eq!(shown.json()["group"]["last_seq"], 1);
    // Bob is out: sending there is refused as over the socket (to him the group does not
    // exist).
    let out = api
        .post(
            "/v1/messages",
            json!({"from": "bob", "to": {"group": gid}, "client_msg_id": "b1", "content": "hi"}),
        )
        .await;
    assert_eq!((out.status, out.error_code()), (404, 13));
    let owner_leaves = api.delete(&format!("/v1/groups/{gid}/members/alice")).await;
    assert_eq!((owner_leaves.status, owner_leaves.error_code()), (403, 14));
    let missing = api.get("/v1/groups/g-missing").await;
    assert_eq!((missing.status, missing.error_code()), (404, 13));
    let bad_history = api
        .post("/v1/groups", json!({"history": "sometimes"}))
        .await;
    assert_eq!((bad_history.status, bad_history.error_code()), (400, 11));

    // A group of the system account, which then posts to it.
    let announce = api
        .post(
            "/v1/groups",
            json!({"name": "news", "members": ["carol"], "history": "from_join"}),
        )
        .await;
    assert_eq!(announce.status, 201, "{}", announce.text());
    let news = announce.json()["group"].clone();
    assert_eq!(news["owner"], "system");
    assert_eq!(news["history"], "from_join");
    let created = next_entry(&mut carol_events).await;
    assert_eq!(
        group_event(&created).kind,
        pb::GroupEventKind::Created as i32
    );
    let posted = api
        .post(
            "/v1/messages",
            json!({"to": {"group": news["group_id"]}, "client_msg_id": "n1", "content": "v2 is out"}),
        )
        .await;
    assert_eq!(posted.status, 201, "{}", posted.text());
    let entry = next_entry(&mut carol_events).await;
    assert_eq!(message(&entry).from_user, "system");
    assert_eq!(message(&entry).content, b"v2 is out");
    server.stop().await;
}

#[tokio::test]
async fn tokens_devices_and_kicks() {
    let server = TestServer::start_api(|_| {}).await;
    let api = server.api();
    let minted = api
        .post(
            "/v1/tokens",
            json!({"user": "dana", "device": "phone", "ttl_secs": 600}),
        )
        .await;
    assert_eq!(minted.status, 200, "{}", minted.text());
    let token = minted.json()["token"].as_str().unwrap().to_owned();
    let expires = minted.json()["expires"].as_u64().unwrap();
    let now = (missive::now_ms() / 1000) as u64;
    assert!((now + 590..=now + 610).contains(&expires), "{expires}");
    // A v2 token, issued now: it can be revoked.
    let issued = minted.json()["issued"].as_u64().unwrap();
    assert_eq!(issued + 600, expires);
    let claims = missive_protocol::token::verify(SECRET.as_bytes(), &token, now).unwrap();
    assert_eq!(claims.issued, Some(issued));
    let mut phone = server.connect().await;
    phone
        .login(&token, "phone", 0)
        .await
        .expect("the minted token logs in");
    let (mut laptop, _) = server.login("dana", "laptop").await;

    let listed = api.get("/v1/users/dana/devices").await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    let mut devices: Vec<String> = listed.json()["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device"].as_str().unwrap().to_owned())
        .collect();
    devices.sort();
    assert_eq!(devices, ["laptop", "phone"]);
    assert_eq!(listed.json()["online"], true);
    let nobody = api.get("/v1/users/nobody/devices").await.json();
    assert_eq!(nobody["online"], false);
    assert_eq!(nobody["devices"], json!([]));

    // One device: KICK ADMIN on that connection only.
    let kicked = api
        .post(
            "/v1/users/dana/kick",
            json!({"device": "phone", "message": "password changed"}),
        )
        .await;
    assert_eq!(kicked.status, 200, "{}", kicked.text());
    assert_eq!(kicked.json()["kicked"], 1);
    match next_packet(&mut phone).await {
        Some(Packet::Kick(k)) => {
            assert_eq!(k.reason, pb::KickReason::Admin as i32);
            assert_eq!(k.message, "password changed");
        }
        other => panic!("expected KICK, got {other:?}"),
    }
    assert!(
        next_packet(&mut phone).await.is_none(),
        "closed after the kick"
    );
    let left = api.get("/v1/users/dana/devices").await.json();
    assert_eq!(left["devices"].as_array().unwrap().len(), 1);
    assert_eq!(left["devices"][0]["device"], "laptop");
    laptop.heartbeat().await.expect("the other device stays");

    // Every device, with no body at all.
    let all = api.raw("POST", "/v1/users/dana/kick", Vec::new()).await;
    assert_eq!(all.json()["kicked"], 1, "{}", all.text());
    match next_packet(&mut laptop).await {
        Some(Packet::Kick(k)) => assert_eq!(k.reason, pb::KickReason::Admin as i32),
        other => panic!("expected KICK, got {other:?}"),
    }

    let bad_ttl = api
        .post(
            "/v1/tokens",
            json!({"user": "dana", "device": "phone", "ttl_secs": 0}),
        )
        .await;
    assert_eq!((bad_ttl.status, bad_ttl.error_code()), (400, 11));
    let long_ttl = api
        .post(
            "/v1/tokens",
            json!({"user": "dana", "device": "phone", "ttl_secs": 30 * 86_400 + 1}),
        )
        .await;
    assert_eq!((long_ttl.status, long_ttl.error_code()), (400, 11));
    // A revocation covers every device of the user: not with `device`.
    let one_device = api
        .post(
            "/v1/users/dana/kick",
            json!({"device": "phone", "revoke": true}),
        )
        .await;
    assert_eq!(
        (one_device.status, one_device.error_code()),
        (400, 11),
        "{}",
        one_device.text()
    );
    let bad_user = api
        .post("/v1/tokens", json!({"user": "", "device": "phone"}))
        .await;
    assert_eq!((bad_user.status, bad_user.error_code()), (400, 11));
    server.stop().await;
}

#[tokio::test]
async fn the_api_key_guards_v1_but_not_health_readiness_or_metrics() {
    let server = TestServer::start_api(|_| {}).await;
    let addr = server.handle().http_addr().unwrap();
    let body = json!({"user": "u", "device": "d"});
    for key in [
        None,
        Some("wrong-key-0123456789"),
        Some(&API_KEY[..API_KEY.len() - 1]),
    ] {
        let r = Api::new(addr, key).post("/v1/tokens", body.clone()).await;
        assert_eq!(
            (r.status, r.error_code()),
            (401, 9),
            "{key:?}: {}",
            r.text()
        );
        assert_eq!(r.json()["error"]["name"], "AUTH_FAILED");
        assert_eq!(r.headers["www-authenticate"], "Bearer");
    }
    assert_eq!(
        server.api().post("/v1/tokens", body.clone()).await.status,
        200
    );
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(Api::new(addr, None).get(path).await.status, 200, "{path}");
    }
    server.stop().await;

    // No key configured: /v1 refuses everything.
    let keyless = TestServer::start_with(|c| c.http_listen = "127.0.0.1:0".into()).await;
    let addr = keyless.handle().http_addr().unwrap();
    for key in [None, Some(API_KEY)] {
        let r = Api::new(addr, key).post("/v1/tokens", body.clone()).await;
        assert_eq!((r.status, r.error_code()), (403, 14), "{}", r.text());
    }
    let health = Api::new(addr, None).get("/healthz").await;
    assert_eq!(
        (health.status, health.json()["status"].clone()),
        (200, json!("ok"))
    );
    let ready = Api::new(addr, None).get("/readyz").await;
    assert_eq!(
        (ready.status, ready.json()["status"].clone()),
        (200, json!("ready"))
    );
    keyless.stop().await;
}

/// Real traffic moves the counters by exactly what it did.
#[tokio::test]
async fn metrics_count_real_traffic() {
    let server = TestServer::start_api(|c| {
        c.ack_timeout_ms = 200;
        c.max_retransmits = 10;
    })
    .await;
    let api = server.api();
    let before = api.metrics().await;
    for name in [
        "missive_connections",
        "missive_sessions",
        "missive_store_queue_depth",
        "missive_outbound_queued_frames",
        "missive_store_commit_seconds_count",
        "missive_pushes_retransmitted_total",
        "missive_sync_pages_total",
    ] {
        assert!(before.has(name), "{name} missing");
    }

    // Two logins, one refused token.
    let (mut erin, _) = server.login("erin", "phone").await;
    let (_frank, mut frank_events) = server.client("frank", "phone").await;
    let mut bad = server.connect().await;
    assert!(bad.login("not-a-token", "d", 0).await.is_err());
    // Three sends over the socket (one a repeat), two over HTTP, one refused over each.
    for id in ["s1", "s2", "s1"] {
        let reply = erin
            .request(Packet::Send(pb::Send {
                client_msg_id: id.into(),
                to: Some(direct("frank")),
                content_type: 1,
                content: b"hi".to_vec(),
                ..Default::default()
            }))
            .await;
        assert!(matches!(reply, Ok(Packet::SendAck(_))), "{reply:?}");
    }
    let refused = erin
        .request(Packet::Send(pb::Send {
            client_msg_id: "s3".into(),
            to: Some(direct("erin")),
            content_type: 1,
            content: b"me".to_vec(),
            ..Default::default()
        }))
        .await;
    assert!(refused.is_err());
    for id in ["h1", "h2"] {
        let body =
            json!({"from": "frank", "to": {"user": "erin"}, "client_msg_id": id, "content": "yo"});
        assert_eq!(api.post("/v1/messages", body).await.status, 201);
    }
    let body = json!({"from": "frank", "to": {"user": "frank"}, "client_msg_id": "h3"});
    assert_eq!(api.post("/v1/messages", body).await.status, 400);
    // Frank's client gets erin's two messages (and acks them); erin's raw connection gets
    // frank's two and never acks, so they are retransmitted.
    for _ in 0..2 {
        next_entry(&mut frank_events).await;
    }
    let mut pushes = 0;
    while pushes < 4 {
        if let Some(Packet::Push(_)) = next_packet(&mut erin).await {
            pushes += 1;
        }
    }
    sync_all(&mut erin, 0).await;

    let after = api.metrics().await;
    let delta = |name: &str| after.get(name) - before.get(name);
    assert_eq!(delta("missive_logins_total{result=\"ok\"}"), 2.0);
    assert_eq!(delta("missive_logins_total{result=\"AUTH_FAILED\"}"), 1.0);
    assert_eq!(delta("missive_messages_in_total{via=\"socket\"}"), 2.0);
    assert_eq!(delta("missive_messages_in_total{via=\"http\"}"), 2.0);
    assert_eq!(delta("missive_sends_duplicate_total"), 1.0);
    assert_eq!(delta("missive_sync_pages_total"), 1.0);
    assert_eq!(
        delta("missive_errors_total{code=\"11\",name=\"INVALID_ARGUMENT\"}"),
        2.0,
        "one over the socket, one over HTTP"
    );
    assert_eq!(
        delta("missive_errors_total{code=\"9\",name=\"AUTH_FAILED\"}"),
        1.0
    );
    // Frank's client got erin's 2 and his own 2 (sent over HTTP, from none of his devices),
    // erin's raw connection frank's 2; retransmits are not in this.
    assert_eq!(delta("missive_pushes_out_total"), 6.0);
    assert!(delta("missive_pushes_retransmitted_total") >= 2.0);
    // Six stored changes went through the writer, each committed (and timed).
    assert!(delta("missive_store_commit_seconds_count") >= 1.0);
    assert_eq!(
        after.get("missive_store_commit_seconds_bucket{le=\"+Inf\"}"),
        after.get("missive_store_commit_seconds_count")
    );
    assert!(delta("missive_store_keys_written_total") > 0.0);
    assert_eq!(after.get("missive_sessions"), 2.0);
    // The refused connection is closed by the server right after its ERROR.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while api.metrics().await.get("missive_connections") != 2.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections gauge stays off 2"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(delta("missive_http_requests_total") >= 4.0);
    assert_eq!(
        delta("missive_connections_accepted_total"),
        3.0,
        "three connections were opened"
    );
    server.stop().await;
}

/// The server's own HTTP/1 connections (`http_max_connections`, the head and body timeouts)
/// keep graceful shutdown: a request whose body is still arriving is answered, an idle
/// connection is closed at once (not at the 10 s head timeout).
#[tokio::test]
async fn shutdown_answers_the_request_in_flight_and_closes_idle_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    let server = TestServer::start_api(|_| {}).await;
    let addr = server.handle().http_addr().unwrap();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    let body = json!({"user": "alice", "device": "phone"}).to_string();
    let (first, rest) = body.split_at(10);
    let mut busy = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/tokens HTTP/1.1\r\nHost: missive\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{first}",
        body.len()
    );
    busy.write_all(head.as_bytes()).await.unwrap();
    // The handler is waiting for the rest of the body when the shutdown begins.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = tokio::spawn(server.stop());
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), idle.read(&mut buf))
        .await
        .expect("an idle connection is closed at shutdown")
        .unwrap_or(0);
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&buf[..n]));
    busy.write_all(rest.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), busy.read_to_end(&mut answer))
        .await
        .expect("the request in flight is answered and its connection closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"token\""), "{answer}");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the server stops")
        .unwrap();
}

/// The socket's answer to `packet`: INVALID_ARGUMENT's message, or a panic naming what came.
async fn socket_refusal(conn: &mut Connection, packet: Packet) -> String {
    match conn.request(packet).await {
        Err(ClientError::Server { code, message, .. }) => {
            assert_eq!(code, ErrorCode::InvalidArgument as u32, "{message}");
            message
        }
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

/// The API's answer: 400 with INVALID_ARGUMENT, and its message.
fn api_refusal(answer: &common::http::Answer) -> String {
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert_eq!(answer.error_code(), ErrorCode::InvalidArgument as u64);
    answer.json()["error"]["message"]
        .as_str()
        .expect("an error message")
        .to_owned()
}

/// Percent-encodes every byte of a path segment.
fn encoded(segment: &str) -> String {
    segment.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// The socket and the HTTP API go through the same service functions: each bad id (empty, too
/// long, a control character, a text-direction override) is refused by both with the same code
/// and the same message, naming the same field.
#[tokio::test]
async fn sockets_and_the_api_refuse_the_same_bad_ids_with_the_same_message() {
    let server = TestServer::start_api(|_| {}).await;
    let api = server.api();
    let (mut alice, _) = server.login("alice", "phone").await;
    let created = api
        .post("/v1/groups", json!({"owner": "alice", "members": ["bob"]}))
        .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let group_id = created.json()["group"]["group_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let long = "x".repeat(65);
    for bad in ["", long.as_str(), "a\nb", "a\u{202E}b"] {
        // A SEND's client_msg_id.
        let send = |client_msg_id: &str, to: pb::Conversation| {
            Packet::Send(pb::Send {
                client_msg_id: client_msg_id.into(),
                to: Some(to),
                content_type: 1,
                content: b"hi".to_vec(),
                ..Default::default()
            })
        };
        let socket = socket_refusal(&mut alice, send(bad, direct("bob"))).await;
        let http = api
            .post(
                "/v1/messages",
                json!({"from": "alice", "to": {"user": "bob"}, "client_msg_id": bad, "content": "hi"}),
            )
            .await;
        assert_eq!(socket, api_refusal(&http), "client_msg_id {bad:?}");
        assert!(socket.starts_with("client_msg_id: "), "{socket}");

        // The user a message goes to.
        let socket = socket_refusal(&mut alice, send("m-1", direct(bad))).await;
        let http = api
            .post(
                "/v1/messages",
                json!({"from": "alice", "to": {"user": bad}, "client_msg_id": "m-1", "content": "hi"}),
            )
            .await;
        assert_eq!(socket, api_refusal(&http), "recipient {bad:?}");
        assert!(socket.starts_with("conversation id: "), "{socket}");

        // A user added to a group.
        let join = Packet::GroupJoin(pb::GroupJoin {
            group_id: group_id.clone(),
            user_ids: vec![bad.into()],
        });
        let socket = socket_refusal(&mut alice, join).await;
        let http = api
            .post(
                &format!("/v1/groups/{group_id}/members"),
                json!({"users": [bad], "by": "alice"}),
            )
            .await;
        assert_eq!(socket, api_refusal(&http), "user to add {bad:?}");
        assert!(socket.starts_with("user id: "), "{socket}");

        // A group's id (in the API, a path segment).
        if !bad.is_empty() {
            let join = Packet::GroupJoin(pb::GroupJoin {
                group_id: bad.into(),
                user_ids: vec!["carol".into()],
            });
            let socket = socket_refusal(&mut alice, join).await;
            let http = api
                .post(
                    &format!("/v1/groups/{}/members", encoded(bad)),
                    json!({"users": ["carol"], "by": "alice"}),
                )
                .await;
            assert_eq!(socket, api_refusal(&http), "group id {bad:?}");
            assert!(socket.starts_with("group_id: "), "{socket}");
        }
    }
    // Nothing was stored: bob has no message, the group still has its two members.
    let group = api.get(&format!("/v1/groups/{group_id}")).await.json();
    assert_eq!(group["group"]["member_count"], 2);
    let (mut bob, _) = server.login("bob", "phone").await;
    let entries = sync_all(&mut bob, 0).await;
    assert!(
        entries
            .iter()
            .all(|e| !matches!(e.body, Some(pb::inbox_entry::Body::Message(_)))),
        "a refused send was stored: {entries:?}"
    );
}
