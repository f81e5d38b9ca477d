//! The basic loop: two sockets in one room see each other's messages in order.

use serde_json::json;

use crate::fixtures::TestServer;

#[tokio::test]
async fn two_clients_exchange_messages_over_the_socket() {
    let t = TestServer::start().await;
    t.as_user("alice").create_room("general", "public").await;
    let mut a = t.ws("alice").await;
    let mut b = t.ws("bob").await;
    let ack = b.mutate("room.join", json!({"room": "general"})).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let sub = a.subscribe(&[("general", 0)]).await;
    assert_eq!(sub["result"]["rooms"][0]["status"], "ok");
    let sub = b.subscribe(&[("general", 3)]).await;
    assert_eq!(sub["result"]["rooms"][0]["head_seq"], 3);
    let caught = a.until(|f| f["type"] == "caught_up").await;
    assert_eq!(caught["seq"], 3);
    b.until(|f| f["type"] == "caught_up").await;

    let sent = a
        .mutate("message.send", json!({"room": "general", "body": "hi bob"}))
        .await;
    assert_eq!(sent["type"], "ack", "{sent}");
    assert_eq!(sent["result"]["seq"], 4);
    let ev = b.until(|f| f["type"] == "event").await;
    assert_eq!(ev["kind"], "message_created");
    assert_eq!(ev["data"]["body"], "hi bob");
    assert_eq!(ev["seq"], 4);
}
