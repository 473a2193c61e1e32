//! The hub on NATS JetStream (a `nats-server -js` the test starts on a
//! free loopback port with a store directory of its own), spoken to over
//! duplex.v1 by two nodes: offsets that agree, history, resume on another
//! node after the first is gone, history kept across a `nats-server`
//! restart, and presence over both nodes.
#![cfg(feature = "server")]

mod common;
use common as v1;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use duplex_hub::backplane::{Backplane, BackplaneError, BackplaneState};
use duplex_hub::{Hub, HubConfig};
use duplex_testing::nats::Nats;
use duplex_ws::ServerHandle;
use serde_json::{Value, json};
use v1::{Client, ask, connect, frame};

async fn node(url: &str) -> (SocketAddr, ServerHandle, Backplane) {
    let (addr, handle, backplane) =
        v1::node_on(async |hub| Backplane::nats(hub, url).await.unwrap()).await;
    assert_eq!(backplane.state().engine(), "nats");
    (addr, handle, backplane)
}

async fn publish(ws: &mut Client, id: u64, data: &str) -> Value {
    let ack = ask(
        ws,
        json!({"op":"publish","id":id,"topic":"t.1:x","data":data}),
    )
    .await;
    assert_eq!(ack["type"], "published", "{ack}");
    ack
}

async fn until_connected(state: &BackplaneState) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !state.is_connected() {
        assert!(Instant::now() < deadline, "NATS not back within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_nats_offsets_agree_resume_elsewhere_and_history_outlives_a_restart() {
    let store = tempfile::tempdir().unwrap();
    let mut nats = Nats::start(store.path());
    let (a, ha, pa) = node(&nats.url()).await;
    let (b, _hb, pb) = node(&nats.url()).await;

    // Offsets that agree: published on B, received on A with B's offsets.
    let mut sub = connect(a).await;
    let reply = ask(&mut sub, json!({"op":"subscribe","id":1,"topic":"t.1:x"})).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    let epoch = reply["epoch"].as_str().unwrap().to_owned();
    let mut publisher = connect(b).await;
    for offset in 1..=5u64 {
        let ack = publish(&mut publisher, offset, &format!("m{offset}")).await;
        assert_eq!(
            (ack["epoch"].as_str(), ack["offset"].as_u64()),
            (Some(epoch.as_str()), Some(offset))
        );
        let got = frame(&mut sub).await;
        assert_eq!(
            (got["offset"].as_u64(), got["data"].as_str()),
            (Some(offset), Some(format!("m{offset}").as_str()))
        );
    }
    // Presence over both nodes.
    let mut watcher = connect(b).await;
    ask(
        &mut watcher,
        json!({"op":"subscribe","id":1,"topic":"t.1:x","presence":true}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = ask(&mut sub, json!({"op":"presence","id":9,"topic":"t.1:x"})).await;
        if p["count"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{p}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A is gone; B takes five more; the subscriber resumes on B.
    drop(sub);
    ha.shutdown();
    drop(pa);
    for offset in 6..=10u64 {
        publish(&mut publisher, offset, &format!("m{offset}")).await;
    }
    let mut back = connect(b).await;
    let reply = ask(
        &mut back,
        json!({"op":"subscribe","id":2,"topic":"t.1:x","since":{"epoch":epoch,"offset":5}}),
    )
    .await;
    assert_eq!(
        (reply["offset"].as_u64(), reply["recovered"].as_bool()),
        (Some(10), Some(true)),
        "{reply}"
    );
    for offset in 6..=10u64 {
        assert_eq!(frame(&mut back).await["offset"].as_u64(), Some(offset));
    }

    // NATS restarts: the history and the epoch are still there, and the
    // live subscription goes on where it was.
    nats.restart();
    until_connected(&pb.state()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let ack = loop {
        let ack = ask(
            &mut publisher,
            json!({"op":"publish","id":11,"topic":"t.1:x","data":"m11"}),
        )
        .await;
        if ack["type"] == "published" {
            break ack;
        }
        assert_eq!(ack["code"], "unavailable", "{ack}");
        assert!(Instant::now() < deadline, "{ack}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (ack["epoch"].as_str(), ack["offset"].as_u64()),
        (Some(epoch.as_str()), Some(11))
    );
    let got = frame(&mut back).await;
    assert_eq!(
        (got["type"].as_str(), got["offset"].as_u64()),
        (Some("message"), Some(11)),
        "{got}"
    );
    let mut all = connect(b).await;
    let reply = ask(
        &mut all,
        json!({"op":"subscribe","id":3,"topic":"t.1:x","since":{"epoch":epoch,"offset":0}}),
    )
    .await;
    assert_eq!(reply["recovered"], true, "{reply}");
    for offset in 1..=11u64 {
        assert_eq!(frame(&mut all).await["offset"].as_u64(), Some(offset));
    }
}

#[tokio::test]
async fn a_nats_without_jetstream_or_with_a_bad_url_is_refused_at_start() {
    let hub = Hub::new(HubConfig::default());
    let err = Backplane::nats(&hub, "redis://127.0.0.1:1")
        .await
        .unwrap_err();
    assert!(matches!(err, BackplaneError::InvalidUrl { .. }), "{err}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = Backplane::nats(&hub, &format!("nats://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert!(matches!(err, BackplaneError::Unreachable { .. }), "{err}");
    // A server without -js.
    let mut plain = std::process::Command::new(duplex_testing::nats::program())
        .args(["-a", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = Backplane::nats(&hub, &format!("nats://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    let _ = plain.kill();
    let _ = plain.wait();
    assert!(err.to_string().contains("JetStream"), "{err}");
}
