//! duplex.v1 against a client that means harm, over real sockets: a frame
//! built to cost memory and time (a flat JSON array, deflated so that it
//! is small on the wire) is refused without stalling anyone else, and a
//! client that churns subscriptions can neither drop a presence watcher
//! as slow nor take the room its messages need.
#![cfg(feature = "server")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use duplex_hub::{Hub, HubConfig, HubService};
use duplex_ws::{ClientBuilder, Config, DeflateConfig, Event, MaybeTlsStream, Message, WebSocket};
use serde_json::{Value, json};
use tokio::net::TcpStream;

type Client = WebSocket<MaybeTlsStream<TcpStream>>;

async fn serve(service: HubService) -> SocketAddr {
    let server = duplex_ws::Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.serve_service(service));
    addr
}

async fn connect(addr: SocketAddr) -> Client {
    let mut ws = ClientBuilder::new(format!("ws://{addr}/topics"))
        .protocols(["duplex.v1"])
        .connect()
        .await
        .unwrap();
    assert_eq!(frame(&mut ws).await["type"], "welcome");
    ws
}

/// The next frame that is not a `ping`, within 10 s, or the close code.
/// The next frame that is not a `ping`, or the Close's code and reason.
async fn next(ws: &mut Client) -> Result<Value, (u16, String)> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Event::Message(Message::Text(text)))) => {
                let value: Value = serde_json::from_str(text.as_str()).unwrap();
                if value["type"] != "ping" {
                    return Ok(value);
                }
            }
            Ok(Some(Event::Close { code, reason, .. })) => {
                return Err((code.0, reason.to_string()));
            }
            Ok(Some(_)) => {}
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

async fn frame(ws: &mut Client) -> Value {
    next(ws).await.expect("open")
}

async fn ask(ws: &mut Client, request: Value) -> Value {
    ws.send(Message::text(request.to_string())).await.unwrap();
    frame(ws).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_built_to_cost_is_refused_and_nobody_else_waits() {
    let mut config = Config::server();
    config.deflate = Some(DeflateConfig::default());
    let addr = serve(HubService::new(Hub::new(HubConfig::default())).config(config)).await;
    let mut bystander = connect(addr).await;
    let mut attacker = connect(addr).await;
    assert!(
        attacker
            .extensions()
            .is_some_and(|e| e.contains("permessage-deflate"))
    );
    // Just under the frame limit: a flat array of 32,000 numbers, read
    // without building it.
    let flat = format!(r#"{{"op":"ping","id":1,"x":[{}0]}}"#, "0,".repeat(32_000));
    assert!(flat.len() < 64 << 10);
    let started = Instant::now();
    let reply = ask(&mut attacker, Value::String(String::new())).await;
    assert_eq!(reply["code"], "bad_request");
    attacker.send(Message::text(flat)).await.unwrap();
    assert_eq!(frame(&mut attacker).await, json!({"type":"pong","id":1}));
    let pong = ask(&mut bystander, json!({"op":"ping","id":2})).await;
    assert_eq!(pong, json!({"type":"pong","id":2}));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?} for two pings",
        started.elapsed()
    );
    // The same array ten times longer: a few KiB deflated, past the limit
    // inflated, so the connection is closed with 1009 as it inflates.
    let long = format!(r#"{{"op":"ping","x":[{}0]}}"#, "0,".repeat(320_000));
    attacker.send(Message::text(long)).await.unwrap();
    // 1009 for the message's size, not another rule that closes with it.
    let (code, reason) = next(&mut attacker).await.unwrap_err();
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("exceeds the limit"), "{reason}");
    let pong = ask(&mut bystander, json!({"op":"ping","id":3})).await;
    assert_eq!(pong, json!({"type":"pong","id":3}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churning_subscriptions_cuts_off_no_watcher() {
    let hub = Hub::new(HubConfig::default().queue(16).subscribe_rate(20));
    let addr = serve(HubService::new(hub.clone())).await;
    let mut watcher = connect(addr).await;
    let reply = ask(
        &mut watcher,
        json!({"op":"subscribe","id":1,"topic":"room","presence":true}),
    )
    .await;
    assert_eq!(reply["type"], "subscribed");
    // The watcher reads nothing while a churner subscribes and leaves as
    // fast as it can: 500 times, each a join and a leave for the watcher.
    let mut churner = connect(addr).await;
    let mut refused = 0;
    for i in 0..500 {
        for op in ["subscribe", "unsubscribe"] {
            let reply = ask(&mut churner, json!({"op":op,"id":i,"topic":"room"})).await;
            if reply["code"] == "too_many" {
                refused += 1;
            }
        }
    }
    assert!(
        refused > 800,
        "the churner was slowed down: {refused} refused"
    );
    // Still subscribed, with room for the room's messages.
    let mut publisher = connect(addr).await;
    for i in 0..8 {
        let ack = ask(
            &mut publisher,
            json!({"op":"publish","id":i,"topic":"room","data":format!("m{i}")}),
        )
        .await;
        assert_eq!(ack["type"], "published");
    }
    let mut messages = Vec::new();
    while messages.len() < 8 {
        let f = frame(&mut watcher).await;
        match f["type"].as_str() {
            Some("message") => messages.push(f["data"].as_str().unwrap().to_owned()),
            Some("join" | "leave") => {}
            other => panic!("unexpected {other:?}: {f}"),
        }
    }
    assert_eq!(
        messages,
        (0..8).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    assert_eq!(hub.metrics().snapshot().lagged, 0, "nobody dropped as slow");
}
