mod common;

use common::*;
use missive_client::direct;

#[tokio::test]
async fn alice_sends_bob_receives_push() {
    let server = TestServer::start().await;
    let (alice, _a_events) = server.client("alice", "phone").await;
    let (_bob, mut b_events) = server.client("bob", "phone").await;
    let ack = alice.send(direct("bob"), 1, "hi bob", None).await.unwrap();
    assert_eq!(ack.seq, 1);
    let entry = next_entry(&mut b_events).await;
    let m = message(&entry);
    assert_eq!(m.content, b"hi bob");
    assert_eq!(m.from_user, "alice");
    assert_eq!(entry.version, 1);
    server.stop().await;
}
