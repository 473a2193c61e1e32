//! duplex.v1 (`docs/protocol.md`) against `HubService` served by duplex's
//! server core, spoken by hand as JSON frames: requests and replies,
//! resuming from history, presence, token claims per operation, malformed
//! frames. Over Redis (a `redis-server` this test starts on a free loopback
//! port), two services stand for two nodes.
#![cfg(feature = "server")]

use std::net::SocketAddr;
use std::time::Duration;

use duplex_hub::auth::{Claims, TokenVerifier};
use duplex_hub::backplane::Backplane;
use duplex_hub::client::{Client as V1Client, ClientError, Event as ClientEvent};
use duplex_hub::v1::ErrorCode;
use duplex_hub::{Hub, HubConfig, HubError, HubService, Since};
use duplex_testing::Redis;
use duplex_ws::{ClientBuilder, Event, MaybeTlsStream, Message, ServerHandle, WebSocket};
use serde_json::{Value, json};
use tokio::net::TcpStream;

type Client = WebSocket<MaybeTlsStream<TcpStream>>;

async fn serve(service: HubService) -> (SocketAddr, ServerHandle) {
    let server = duplex_ws::Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let handle = server.handle();
    tokio::spawn(server.serve_service(service));
    (addr, handle)
}

/// A duplex.v1 connection, its `welcome` read.
async fn connect(addr: SocketAddr, query: &str) -> (Client, Value) {
    let mut ws = ClientBuilder::new(format!("ws://{addr}/topics{query}"))
        .protocols(["duplex.v1"])
        .connect()
        .await
        .unwrap();
    assert_eq!(ws.protocol(), Some("duplex.v1"));
    let welcome = frame(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (ws, welcome)
}

/// The next frame that is not a `ping`, within 10 s.
async fn frame(ws: &mut Client) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Event::Message(Message::Text(text)))) => {
                let value: Value = serde_json::from_str(text.as_str()).unwrap();
                if value["type"] != "ping" {
                    return value;
                }
            }
            Ok(Some(Event::Open)) => {}
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

async fn send(ws: &mut Client, request: Value) {
    ws.send(Message::text(request.to_string())).await.unwrap();
}

/// Sends `request` and returns the reply.
async fn ask(ws: &mut Client, request: Value) -> Value {
    send(ws, request).await;
    frame(ws).await
}

/// Nothing arrives for 300 ms (pings aside).
async fn quiet(ws: &mut Client) {
    let more = tokio::time::timeout(Duration::from_millis(300), frame(ws)).await;
    assert!(more.is_err(), "unexpected {more:?}");
}

fn offsets(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .map(|f| f["offset"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_publish_ack_unsubscribe() {
    let (addr, _server) = serve(HubService::new(Hub::new(HubConfig::default()))).await;
    let (mut a, welcome) = connect(addr, "").await;
    let (mut b, other) = connect(addr, "").await;
    assert_eq!(
        (
            welcome["version"].as_u64(),
            welcome["ping_interval"].as_u64()
        ),
        (Some(1), Some(25))
    );
    assert_ne!(welcome["client"], other["client"]);

    let reply = ask(&mut a, json!({"op":"subscribe","id":1,"topic":"news"})).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert_eq!(
        (reply["id"].as_u64(), reply["offset"].as_u64()),
        (Some(1), Some(0))
    );
    assert!(reply.get("recovered").is_none());
    let epoch = reply["epoch"].as_str().unwrap().to_owned();

    let ack = ask(
        &mut b,
        json!({"op":"publish","id":7,"topic":"news","data":"hello"}),
    )
    .await;
    assert_eq!(
        ack,
        json!({"type":"published","id":7,"topic":"news","epoch":epoch,"offset":1})
    );
    assert_eq!(
        frame(&mut a).await,
        json!({"type":"message","topic":"news","offset":1,"data":"hello"})
    );
    let ack = ask(
        &mut b,
        json!({"op":"publish","id":8,"topic":"news","b64":"AAH/"}),
    )
    .await;
    assert_eq!(ack["offset"], 2);
    assert_eq!(
        frame(&mut a).await,
        json!({"type":"message","topic":"news","offset":2,"b64":"AAH/"})
    );
    // A raw subscriber's message gets an offset too.
    let mut raw = duplex_ws::connect(&format!("ws://{addr}/topics/news"))
        .await
        .unwrap();
    raw.send("raw").await.unwrap();
    assert_eq!(frame(&mut a).await["offset"], 3);

    assert_eq!(
        ask(&mut a, json!({"op":"ping","id":9})).await,
        json!({"type":"pong","id":9})
    );
    let again = ask(&mut a, json!({"op":"subscribe","id":10,"topic":"news"})).await;
    assert_eq!(
        (again["type"].as_str(), again["code"].as_str()),
        (Some("error"), Some("already_subscribed"))
    );
    let left = ask(&mut a, json!({"op":"unsubscribe","id":11,"topic":"news"})).await;
    assert_eq!(left, json!({"type":"unsubscribed","id":11,"topic":"news"}));
    ask(
        &mut b,
        json!({"op":"publish","id":12,"topic":"news","data":"unheard"}),
    )
    .await;
    quiet(&mut a).await;
    let not = ask(&mut a, json!({"op":"unsubscribe","id":13,"topic":"news"})).await;
    assert_eq!(not["code"], "not_subscribed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_bad_request_and_binary_closes() {
    let (addr, _server) = serve(HubService::new(Hub::new(HubConfig::default()))).await;
    let (mut ws, _) = connect(addr, "").await;
    for (text, id) in [
        ("not json", Value::Null),
        ("[1]", Value::Null),
        (r#"{"op":"fly","id":3}"#, json!(3)),
        (r#"{"op":"subscribe","id":4}"#, json!(4)),
        (r#"{"op":"subscribe","id":5,"topic":"a/b"}"#, json!(5)),
        (
            r#"{"op":"publish","id":6,"topic":"t","data":"x","b64":"eA=="}"#,
            json!(6),
        ),
        (r#"{"op":"ping","id":-2}"#, Value::Null),
    ] {
        ws.send(Message::text(text)).await.unwrap();
        let reply = frame(&mut ws).await;
        assert_eq!(
            (reply["type"].as_str(), reply["code"].as_str()),
            (Some("error"), Some("bad_request")),
            "{text}: {reply}"
        );
        assert_eq!(
            reply.get("id").cloned().unwrap_or(Value::Null),
            id,
            "{text}"
        );
    }
    // Still open.
    assert_eq!(
        ask(&mut ws, json!({"op":"ping","id":1})).await["type"],
        "pong"
    );
    ws.send(Message::binary(vec![1u8])).await.unwrap();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Event::Close { code, .. })) => break code.0,
            Ok(Some(_)) => {}
            other => panic!("expected a close, got {other:?}"),
        }
    };
    assert_eq!(close, 1003);
    // /topics without the subprotocol is refused.
    let err = duplex_ws::connect(&format!("ws://{addr}/topics"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("400"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_in_memory_gets_what_was_missed_or_says_it_cannot() {
    let hub = Hub::new(HubConfig::default().history_size(10));
    let (addr, _server) = serve(HubService::new(hub.clone())).await;
    for i in 1..=5 {
        hub.publish("t", Message::text(format!("m{i}")))
            .await
            .unwrap();
    }
    let (mut ws, _) = connect(addr, "").await;
    let reply = ask(
        &mut ws,
        json!({"op":"subscribe","id":1,"topic":"t","since":{"offset":2}}),
    )
    .await;
    assert_eq!(
        (reply["offset"].as_u64(), reply["recovered"].as_bool()),
        (Some(5), Some(true)),
        "{reply}"
    );
    let epoch = reply["epoch"].as_str().unwrap().to_owned();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(frame(&mut ws).await);
    }
    assert_eq!(offsets(&got), [3, 4, 5]);
    assert_eq!(got[0]["data"], "m3");
    hub.publish("t", Message::text("m6")).await.unwrap();
    assert_eq!(frame(&mut ws).await["offset"], 6);

    // 15 more: the history of 10 no longer reaches back to 7.
    for i in 7..=21 {
        hub.publish("t", Message::text(format!("m{i}")))
            .await
            .unwrap();
    }
    let (mut late, _) = connect(addr, "").await;
    let reply = ask(
        &mut late,
        json!({"op":"subscribe","id":1,"topic":"t","since":{"epoch":epoch,"offset":6}}),
    )
    .await;
    assert_eq!(
        (reply["offset"].as_u64(), reply["recovered"].as_bool()),
        (Some(21), Some(false))
    );
    let mut got = Vec::new();
    for _ in 0..10 {
        got.push(frame(&mut late).await);
    }
    assert_eq!(offsets(&got), (12..=21).collect::<Vec<_>>());
    // Another epoch: nothing old.
    let reply = ask(
        &mut late,
        json!({"op":"subscribe","id":2,"topic":"u","since":{"epoch":"gone","offset":3}}),
    )
    .await;
    assert_eq!(reply["recovered"], false);
    quiet(&mut late).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_counts_and_tells_joins_and_leaves() {
    let (addr, _server) = serve(HubService::new(Hub::new(HubConfig::default()))).await;
    let (mut watcher, w) = connect(addr, "").await;
    ask(
        &mut watcher,
        json!({"op":"subscribe","id":1,"topic":"room","presence":true}),
    )
    .await;
    let own = frame(&mut watcher).await;
    assert_eq!(
        own,
        json!({"type":"join","topic":"room","client":w["client"],"user":null})
    );
    let (mut other, o) = connect(addr, "").await;
    ask(&mut other, json!({"op":"subscribe","id":1,"topic":"room"})).await;
    assert_eq!(frame(&mut watcher).await["client"], o["client"]);
    let presence = ask(&mut other, json!({"op":"presence","id":2,"topic":"room"})).await;
    assert_eq!(
        (presence["type"].as_str(), presence["count"].as_u64()),
        (Some("presence"), Some(2)),
        "{presence}"
    );
    assert_eq!(presence["clients"].as_array().unwrap().len(), 2);
    drop(other);
    let leave = frame(&mut watcher).await;
    assert_eq!(
        (leave["type"].as_str(), &leave["client"]),
        (Some("leave"), &o["client"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_claims_are_checked_per_operation() {
    let secret = b"v1 test secret";
    let service = HubService::new(Hub::new(HubConfig::default()))
        .tokens(TokenVerifier::hs256(secret).unwrap());
    let (addr, _server) = serve(service).await;
    let err = ClientBuilder::new(format!("ws://{addr}/topics"))
        .protocols(["duplex.v1"])
        .connect()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    let claims = Claims::new(
        "alice",
        std::time::SystemTime::now() + Duration::from_secs(60),
    )
    .subscribe(["news"])
    .publish(["chat.*"]);
    let token = duplex_hub::auth::sign_hs256(secret, &claims).unwrap();
    let (mut ws, _) = connect(addr, &format!("?token={token}")).await;
    let ok = ask(
        &mut ws,
        json!({"op":"subscribe","id":1,"topic":"news","presence":true}),
    )
    .await;
    assert_eq!(ok["type"], "subscribed");
    assert_eq!(frame(&mut ws).await["user"], "alice");
    let no = ask(&mut ws, json!({"op":"subscribe","id":2,"topic":"chat.a"})).await;
    assert_eq!(
        (no["code"].as_str(), no["id"].as_u64()),
        (Some("forbidden"), Some(2))
    );
    let no = ask(
        &mut ws,
        json!({"op":"publish","id":3,"topic":"news","data":"x"}),
    )
    .await;
    assert_eq!(no["code"], "forbidden");
    let no = ask(&mut ws, json!({"op":"presence","id":4,"topic":"chat.a"})).await;
    assert_eq!(no["code"], "forbidden");
    let yes = ask(
        &mut ws,
        json!({"op":"publish","id":5,"topic":"chat.a","data":"x"}),
    )
    .await;
    assert_eq!(yes["type"], "published");
    let presence = ask(&mut ws, json!({"op":"presence","id":6,"topic":"news"})).await;
    assert_eq!(presence["clients"][0]["user"], "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_per_connection_are_limited() {
    let hub = Hub::new(HubConfig::default().max_subscriptions(2));
    let (addr, _server) = serve(HubService::new(hub)).await;
    let (mut ws, _) = connect(addr, "").await;
    for topic in ["a", "b"] {
        assert_eq!(
            ask(&mut ws, json!({"op":"subscribe","topic":topic})).await["type"],
            "subscribed"
        );
    }
    let no = ask(&mut ws, json!({"op":"subscribe","id":3,"topic":"c"})).await;
    assert_eq!(no["code"], "too_many");
}

/// Two nodes on one Redis, each serving duplex.v1.
async fn two_nodes(redis: &Redis, config: HubConfig) -> [(SocketAddr, ServerHandle, Backplane); 2] {
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let hub = Hub::new(config.clone());
        let backplane = Backplane::redis(&hub, &redis.url()).await.unwrap();
        let (addr, handle) = serve(HubService::new(hub).backplane(backplane.state())).await;
        nodes.push((addr, handle, backplane));
    }
    nodes.try_into().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_redis_a_subscriber_resumes_on_another_node() {
    let redis = Redis::start();
    let [(a, _ha, _pa), (b, _hb, _pb)] =
        two_nodes(&redis, HubConfig::default().history_size(150)).await;
    let (mut sub, _) = connect(a, "").await;
    let reply = ask(&mut sub, json!({"op":"subscribe","id":1,"topic":"t"})).await;
    let epoch = reply["epoch"].as_str().unwrap().to_owned();
    let (mut publisher, _) = connect(b, "").await;
    let ack = ask(
        &mut publisher,
        json!({"op":"publish","id":1,"topic":"t","data":"first"}),
    )
    .await;
    assert_eq!(
        (ack["offset"].as_u64(), ack["epoch"].as_str()),
        (Some(1), Some(epoch.as_str()))
    );
    assert_eq!(frame(&mut sub).await["data"], "first");
    // The subscriber goes away; 100 messages are published meanwhile.
    drop(sub);
    for i in 0..100 {
        let ack = ask(
            &mut publisher,
            json!({"op":"publish","id":i,"topic":"t","data":format!("m{i}")}),
        )
        .await;
        assert_eq!(ack["offset"].as_u64(), Some(i + 2));
    }
    // It comes back on the other node and gets all of them, in order.
    let (mut back, _) = connect(b, "").await;
    let reply = ask(
        &mut back,
        json!({"op":"subscribe","id":2,"topic":"t","since":{"epoch":epoch,"offset":1}}),
    )
    .await;
    assert_eq!(
        (reply["offset"].as_u64(), reply["recovered"].as_bool()),
        (Some(101), Some(true)),
        "{reply}"
    );
    let mut got = Vec::new();
    for _ in 0..100 {
        got.push(frame(&mut back).await);
    }
    assert_eq!(offsets(&got), (2..=101).collect::<Vec<_>>());
    assert_eq!(got[99]["data"], "m99");
    // Live messages follow, once each.
    ask(
        &mut publisher,
        json!({"op":"publish","id":1000,"topic":"t","data":"live"}),
    )
    .await;
    assert_eq!(frame(&mut back).await["offset"], 102);
    quiet(&mut back).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_redis_a_gap_past_the_history_is_not_recovered() {
    let redis = Redis::start();
    let [(a, _ha, _pa), (b, _hb, _pb)] =
        two_nodes(&redis, HubConfig::default().history_size(10)).await;
    let (mut publisher, _) = connect(a, "").await;
    for i in 0..30 {
        ask(
            &mut publisher,
            json!({"op":"publish","id":i,"topic":"t","data":"x"}),
        )
        .await;
    }
    let (mut sub, _) = connect(b, "").await;
    let reply = ask(
        &mut sub,
        json!({"op":"subscribe","id":1,"topic":"t","since":{"offset":5}}),
    )
    .await;
    assert_eq!(
        (reply["offset"].as_u64(), reply["recovered"].as_bool()),
        (Some(30), Some(false)),
        "{reply}"
    );
    let mut got = Vec::new();
    for _ in 0..10 {
        got.push(frame(&mut sub).await);
    }
    assert_eq!(offsets(&got), (21..=30).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_redis_two_nodes_give_one_order() {
    let redis = Redis::start();
    let [(a, _ha, _pa), (b, _hb, _pb)] = two_nodes(&redis, HubConfig::default()).await;
    let (mut on_a, _) = connect(a, "").await;
    let (mut on_b, _) = connect(b, "").await;
    ask(&mut on_a, json!({"op":"subscribe","id":0,"topic":"t"})).await;
    ask(&mut on_b, json!({"op":"subscribe","id":0,"topic":"t"})).await;
    // Both publish at once, 50 each, without waiting for the acks.
    for i in 1..=50 {
        send(
            &mut on_a,
            json!({"op":"publish","id":i,"topic":"t","data":format!("a{i}")}),
        )
        .await;
        send(
            &mut on_b,
            json!({"op":"publish","id":i,"topic":"t","data":format!("b{i}")}),
        )
        .await;
    }
    let mut seen = [Vec::new(), Vec::new()];
    let mut acked = std::collections::HashMap::new();
    for (n, ws) in [&mut on_a, &mut on_b].into_iter().enumerate() {
        while seen[n].len() < 100 || acked.len() < 50 * (n + 1) {
            let f = frame(ws).await;
            match f["type"].as_str() {
                Some("message") => seen[n].push((
                    f["offset"].as_u64().unwrap(),
                    f["data"].as_str().unwrap().to_owned(),
                )),
                Some("published") => {
                    let prefix = if n == 0 { "a" } else { "b" };
                    acked.insert(
                        format!("{prefix}{}", f["id"]),
                        f["offset"].as_u64().unwrap(),
                    );
                }
                other => panic!("unexpected {other:?}: {f}"),
            }
        }
    }
    assert_eq!(seen[0], seen[1], "one order on both nodes");
    let offsets: Vec<u64> = seen[0].iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, (1..=100).collect::<Vec<_>>());
    for (offset, data) in &seen[0] {
        assert_eq!(acked[data], *offset, "the ack's offset is the message's");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_redis_presence_counts_every_node() {
    let redis = Redis::start();
    let [(a, _ha, _pa), (b, _hb, _pb)] = two_nodes(&redis, HubConfig::default()).await;
    let (mut watcher, _) = connect(a, "").await;
    ask(
        &mut watcher,
        json!({"op":"subscribe","id":1,"topic":"room","presence":true}),
    )
    .await;
    frame(&mut watcher).await; // its own join
    let (mut other, o) = connect(b, "").await;
    ask(&mut other, json!({"op":"subscribe","id":1,"topic":"room"})).await;
    let join = frame(&mut watcher).await;
    assert_eq!(
        (join["type"].as_str(), &join["client"]),
        (Some("join"), &o["client"])
    );
    for ws in [&mut watcher, &mut other] {
        let presence = ask(ws, json!({"op":"presence","id":2,"topic":"room"})).await;
        assert_eq!(presence["count"], 2, "{presence}");
    }
    drop(other);
    let leave = frame(&mut watcher).await;
    assert_eq!(
        (leave["type"].as_str(), &leave["client"]),
        (Some("leave"), &o["client"])
    );
    let presence = ask(&mut watcher, json!({"op":"presence","id":3,"topic":"room"})).await;
    assert_eq!(presence["count"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_redis_without_redis_v1_answers_unavailable() {
    let redis = Redis::start();
    let [(a, _ha, _pa), _] = two_nodes(&redis, HubConfig::default()).await;
    let (mut ws, _) = connect(a, "").await;
    drop(redis);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let no = ask(
        &mut ws,
        json!({"op":"publish","id":1,"topic":"t","data":"x"}),
    )
    .await;
    assert_eq!(no["code"], "unavailable", "{no}");
    let no = ask(&mut ws, json!({"op":"subscribe","id":2,"topic":"t"})).await;
    assert_eq!(no["code"], "unavailable", "{no}");
    // The failed subscription left nothing behind (no already_subscribed).
    let no = ask(&mut ws, json!({"op":"subscribe","id":3,"topic":"t"})).await;
    assert_eq!(no["code"], "unavailable", "{no}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_subscribes_publishes_and_resumes() {
    let hub = Hub::new(HubConfig::default());
    let (addr, _server) = serve(HubService::new(hub.clone())).await;
    let client = V1Client::connect(&format!("ws://{addr}/topics"))
        .await
        .unwrap();
    let first = client.publish("news", "one").await.unwrap();
    assert_eq!(first.offset, 1);
    assert_eq!(
        client.publish("news", vec![0u8, 1]).await.unwrap().offset,
        2
    );
    let since = Since {
        epoch: Some(first.epoch.clone()),
        offset: 0,
    };
    let mut sub = client.subscribe("news", Some(since), true).await.unwrap();
    assert_eq!(
        sub.next().await.unwrap(),
        ClientEvent::Subscribed {
            epoch: first.epoch.clone(),
            offset: 2,
            recovered: Some(true)
        }
    );
    assert_eq!(
        sub.next().await.unwrap(),
        ClientEvent::Message {
            offset: 1,
            message: Message::text("one")
        }
    );
    assert_eq!(
        sub.next().await.unwrap(),
        ClientEvent::Message {
            offset: 2,
            message: Message::binary(vec![0u8, 1])
        }
    );
    assert!(matches!(sub.next().await.unwrap(), ClientEvent::Join(_)));
    assert_eq!(client.presence("news").await.unwrap().count, 1);
    let again = client.subscribe("news", None, false).await.unwrap_err();
    assert!(
        matches!(
            again,
            ClientError::Refused {
                code: ErrorCode::AlreadySubscribed,
                ..
            }
        ),
        "{again}"
    );
    // A name that breaks the rule is refused before anything is sent.
    let bad = client.publish("a b", "x").await.unwrap_err();
    assert!(
        matches!(bad, ClientError::InvalidTopic(HubError::InvalidTopic(_))),
        "{bad}"
    );
    drop(sub);
    // The unsubscribe reaches the server.
    for _ in 0..100 {
        if client.presence("news").await.unwrap().count == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("dropping the subscription did not unsubscribe");
}

/// A board of prices, a few of which move from one state to the next.
fn board(step: usize) -> String {
    let prices: Vec<String> = (0..30)
        .map(|k| {
            let px = 100 + (k * 7 + if k % 5 == step % 5 { step } else { 0 }) % 90;
            format!(r#"{{"sym":"S{k:02}","px":{px}.25,"qty":{}}}"#, 1000 + k)
        })
        .collect();
    format!(r#"{{"seq":{step},"board":[{}]}}"#, prices.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_that_asks_for_deltas_gets_them_and_rebuilds_every_message() {
    let hub = Hub::new(HubConfig::default());
    let (addr, _server) = serve(HubService::new(hub.clone())).await;
    let (mut deltas, _) = connect(addr, "").await;
    let (mut whole, _) = connect(addr, "").await;
    let ok = ask(
        &mut deltas,
        json!({"op":"subscribe","id":1,"topic":"b","delta":"fossil"}),
    )
    .await;
    assert_eq!(ok["delta"], "fossil", "{ok}");
    let ok = ask(&mut whole, json!({"op":"subscribe","id":1,"topic":"b"})).await;
    assert!(ok.get("delta").is_none(), "{ok}");
    let no = ask(
        &mut whole,
        json!({"op":"subscribe","id":2,"topic":"c","delta":"vcdiff"}),
    )
    .await;
    assert_eq!(no["code"], "bad_request", "{no}");
    let rust = V1Client::connect_with(
        ClientBuilder::new(format!("ws://{addr}/topics")),
        duplex_hub::client::Options::default().delta(true),
    )
    .await
    .unwrap();
    let mut sub = rust.subscribe("b", None, false).await.unwrap();
    assert!(matches!(
        sub.next().await,
        Some(ClientEvent::Subscribed { .. })
    ));

    let states: Vec<String> = (0..20).map(board).collect();
    for state in &states {
        hub.publish("b", Message::text(state.clone()))
            .await
            .unwrap();
    }
    hub.publish("b", Message::binary(vec![7u8; 3]))
        .await
        .unwrap();
    hub.publish("b", Message::text(states[0].clone()))
        .await
        .unwrap();
    let (mut on_wire, mut whole_bytes) = (0, 0);
    let mut last: Option<String> = None;
    for (i, state) in states.iter().chain([&states[0]]).enumerate() {
        let offset = i as u64 + 1 + u64::from(i == states.len());
        if i == states.len() {
            let binary = frame(&mut deltas).await;
            assert_eq!(binary["b64"], "BwcH", "{binary}");
            assert_eq!(frame(&mut whole).await["b64"], "BwcH");
            last = None;
        }
        let got = frame(&mut deltas).await;
        assert_eq!(got["offset"], offset, "{got}");
        let text = match (got["data"].as_str(), got["delta"].as_str(), &last) {
            // The first, and the first after a binary message, are whole.
            (Some(data), None, None) => data.to_owned(),
            (None, Some(delta), Some(before)) => {
                on_wire += delta.len();
                let made = duplex_hub::delta::apply(before.as_bytes(), delta.as_bytes(), 1 << 20);
                String::from_utf8(made.unwrap()).unwrap()
            }
            _ => panic!("unexpected {got} after {last:?}"),
        };
        assert_eq!(&text, state);
        let full = frame(&mut whole).await;
        assert_eq!(full["data"].as_str(), Some(state.as_str()), "{full}");
        if last.is_some() {
            whole_bytes += state.len();
        }
        last = Some(text);
    }
    assert!(
        on_wire * 5 < whole_bytes,
        "{on_wire} bytes of deltas for {whole_bytes}"
    );
    let mut rebuilt = Vec::new();
    while rebuilt.len() < states.len() + 2 {
        if let Some(ClientEvent::Message { message, .. }) = sub.next().await {
            rebuilt.push(message);
        }
    }
    let mut want: Vec<Message> = states.iter().map(|s| Message::text(s.clone())).collect();
    want.push(Message::binary(vec![7u8; 3]));
    want.push(Message::text(states[0].clone()));
    assert_eq!(rebuilt, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_redis_a_message_lost_by_pub_sub_is_filled_from_the_stream() {
    let redis = Redis::start();
    let [(a, _ha, _pa), _] = two_nodes(&redis, HubConfig::default()).await;
    let (mut sub, _) = connect(a, "").await;
    ask(&mut sub, json!({"op":"subscribe","id":1,"topic":"t"})).await;
    let (mut publisher, _) = connect(a, "").await;
    ask(
        &mut publisher,
        json!({"op":"publish","id":1,"topic":"t","data":"one"}),
    )
    .await;
    assert_eq!(frame(&mut sub).await["offset"], 1);
    // Offset 2 is assigned and stored as the publish script does, but its
    // pub/sub message never goes out.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let offset: u64 = redis::cmd("INCR")
        .arg("duplex:{t}:offset")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(offset, 2);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let () = redis::cmd("XADD")
        .arg("duplex:{t}:stream")
        .arg("2-0")
        .arg("k")
        .arg("t")
        .arg("d")
        .arg("lost")
        .arg("t")
        .arg(now)
        .query_async::<String>(&mut c)
        .await
        .map(drop)
        .unwrap();
    ask(
        &mut publisher,
        json!({"op":"publish","id":2,"topic":"t","data":"three"}),
    )
    .await;
    let two = frame(&mut sub).await;
    assert_eq!(
        (two["offset"].as_u64(), two["data"].as_str()),
        (Some(2), Some("lost"))
    );
    assert_eq!(frame(&mut sub).await["offset"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_redis_a_quiet_topic_keeps_its_epoch_while_followed() {
    let redis = Redis::start();
    let config = HubConfig::default().history_ttl(Duration::from_secs(2));
    let [(a, _ha, _pa), (b, _hb, _pb)] = two_nodes(&redis, config).await;
    let (mut sub, _) = connect(a, "").await;
    let reply = ask(&mut sub, json!({"op":"subscribe","id":1,"topic":"t"})).await;
    let (mut publisher, _) = connect(b, "").await;
    let one = ask(
        &mut publisher,
        json!({"op":"publish","id":1,"topic":"t","data":"one"}),
    )
    .await;
    assert_eq!(one["epoch"], reply["epoch"]);
    assert_eq!(frame(&mut sub).await["offset"], 1);
    // Longer than the TTL without a message.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let two = ask(
        &mut publisher,
        json!({"op":"publish","id":2,"topic":"t","data":"two"}),
    )
    .await;
    assert_eq!(
        (&two["epoch"], two["offset"].as_u64()),
        (&reply["epoch"], Some(2))
    );
    assert_eq!(
        frame(&mut sub).await,
        json!({"type":"message","topic":"t","offset":2,"data":"two"})
    );
    // Its history aged out meanwhile: resuming from 0 is not recovered.
    let (mut late, _) = connect(b, "").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let resumed = ask(
        &mut late,
        json!({"op":"subscribe","id":1,"topic":"t","since":{"offset":0}}),
    )
    .await;
    assert_eq!(
        (resumed["offset"].as_u64(), resumed["recovered"].as_bool()),
        (Some(2), Some(false)),
        "{resumed}"
    );
}
