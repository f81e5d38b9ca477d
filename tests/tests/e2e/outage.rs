//! Outage and recovery: client B is cut off (a proxy that drops connections, then one that
//! stalls them half-open, and a server restart in between) while A sends; B comes back with
//! every message, in order, none twice.

use roam_core::{ConnectionState, RoomKind};
use roam_tests::{fast_config, local_bodies, open_client, wait_until, Backend, Fault, Proxy};

fn numbered(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("m{i:04}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_off_client_recovers_every_missed_message() {
    let mut backend = Backend::up().await;
    let proxy = Proxy::start(backend.addr).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let a = open_client(
        fast_config(&dir.path().join("a.db"), &backend.url(), "alice"),
        backend.token("alice"),
    );
    let b = open_client(
        fast_config(&dir.path().join("b.db"), &proxy.url(), "bob"),
        backend.token("bob"),
    );
    a.start().await.expect("start a");
    b.start().await.expect("start b");
    a.create_room("ops".into(), RoomKind::Public, "Ops".into(), None)
        .expect("create");
    wait_until("the room exists", || a.metrics().outbox_depth == 0).await;
    b.join_room("ops".into()).expect("join");
    wait_until("bob joined", || b.metrics().outbox_depth == 0).await;

    // 1. Connections dropped (and refused) while A sends 500.
    proxy.set(Fault::Drop);
    wait_until("bob notices", || {
        b.connection_state() != ConnectionState::Connected
    })
    .await;
    for i in 0..500 {
        a.send_message("ops".into(), format!("m{i:04}"))
            .expect("send");
    }
    wait_until("alice's 500 are sent", || a.metrics().outbox_depth == 0).await;
    assert!(
        local_bodies(&b, "ops").is_empty(),
        "bob saw nothing while cut off"
    );
    proxy.set(Fault::Pass);
    let want = numbered(0..500);
    wait_until("bob has all 500 in order", || {
        local_bodies(&b, "ops") == want
    })
    .await;

    // 2. A half-open link (nothing forwarded, nothing closed), and the server restarted while
    //    bob is stuck: he must detect the dead link by heartbeat and recover from the store.
    proxy.set(Fault::Stall);
    for i in 500..600 {
        a.send_message("ops".into(), format!("m{i:04}"))
            .expect("send");
    }
    wait_until("alice's next 100 are sent", || {
        a.metrics().outbox_depth == 0
    })
    .await;
    backend.stop().await;
    backend.start().await;
    a.network_available();
    for i in 600..700 {
        a.send_message("ops".into(), format!("m{i:04}"))
            .expect("send");
    }
    wait_until("alice's last 100 are sent", || {
        a.metrics().outbox_depth == 0
    })
    .await;
    proxy.set(Fault::Pass);
    b.network_available();
    let want = numbered(0..700);
    wait_until("bob has all 700 in order, none twice", || {
        local_bodies(&b, "ops") == want
    })
    .await;
    let m = b.metrics();
    assert!(m.reconnects >= 2, "bob reconnected: {m:?}");
    assert!(
        m.events_recovered >= 200,
        "bob recovered from the store: {m:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
    backend.stop().await;
}
