//! The hub on a Redis Cluster (3 masters, 3 replicas, started by the test
//! on free loopback ports), spoken to over duplex.v1 by two nodes: offsets
//! agree for topics on every shard, a subscriber resumes on the other
//! node, and through a kill -9 of a master every subscriber's offsets run
//! on or it is told `recovered: false`.

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/redis.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cluster::RedisCluster;
use duplex_hub::backplane::Backplane;
use duplex_hub::{Hub, HubConfig, HubService};
use duplex_ws::{ClientBuilder, Event, MaybeTlsStream, Message, ServerHandle, WebSocket};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Client = WebSocket<MaybeTlsStream<TcpStream>>;

/// A node: duplex.v1 served over the cluster.
async fn node(url: &str) -> (SocketAddr, ServerHandle, Backplane) {
    let hub = Hub::new(HubConfig::default().history_size(1000));
    let backplane = Backplane::redis(&hub, url).await.unwrap();
    assert_eq!(backplane.state().engine(), "redis+cluster");
    let server = duplex_ws::Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let handle = server.handle();
    tokio::spawn(server.serve_service(HubService::new(hub).backplane(backplane.state())));
    (addr, handle, backplane)
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

async fn ask(ws: &mut Client, request: Value) -> Value {
    ws.send(Message::text(request.to_string())).await.unwrap();
    frame(ws).await
}

/// `GET /healthz`: the status and the body.
async fn health(addr: SocketAddr) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

/// One topic per master: topic names whose slots the masters own.
fn topic_per_shard(cluster: &RedisCluster) -> Vec<(String, u16)> {
    let ask = cluster.nodes[0].port;
    let mut by_master: BTreeMap<u16, String> = BTreeMap::new();
    for i in 0.. {
        let topic = format!("t{i}");
        let master = cluster.master_port_of(&format!("duplex:{{{topic}}}:epoch"), ask);
        by_master.entry(master).or_insert(topic);
        if by_master.len() == cluster.masters {
            break;
        }
    }
    by_master.into_iter().map(|(port, t)| (t, port)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_offsets_agree_on_every_shard_and_a_subscriber_resumes_elsewhere() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 1))
        .await
        .unwrap();
    let topics = topic_per_shard(&cluster);
    let (a, _ha, _pa) = node(&cluster.url()).await;
    let (b, _hb, _pb) = node(&cluster.url()).await;
    let (status, body) = health(a).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"engine\":\"redis+cluster\""), "{body}");

    let mut sub = connect(a).await;
    let mut epochs = BTreeMap::new();
    for (i, (topic, _)) in topics.iter().enumerate() {
        let reply = ask(&mut sub, json!({"op":"subscribe","id":i,"topic":topic})).await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        epochs.insert(topic.clone(), reply["epoch"].as_str().unwrap().to_owned());
    }
    // Published on B, received on A with the offsets B was given.
    let mut publisher = connect(b).await;
    for round in 1..=5u64 {
        for (topic, _) in &topics {
            let ack = ask(
                &mut publisher,
                json!({"op":"publish","id":round,"topic":topic,"data":format!("{topic}-{round}")}),
            )
            .await;
            assert_eq!(ack["type"], "published", "{ack}");
            assert_eq!(ack["offset"].as_u64(), Some(round), "{ack}");
            assert_eq!(ack["epoch"].as_str(), Some(epochs[topic].as_str()), "{ack}");
            let got = frame(&mut sub).await;
            assert_eq!(
                (
                    got["topic"].as_str(),
                    got["offset"].as_u64(),
                    got["data"].as_str()
                ),
                (
                    Some(topic.as_str()),
                    Some(round),
                    Some(format!("{topic}-{round}").as_str())
                )
            );
        }
    }
    // A goes away; ten more each; it resumes on B and gets exactly those.
    drop(sub);
    for round in 6..=15u64 {
        for (topic, _) in &topics {
            ask(
                &mut publisher,
                json!({"op":"publish","id":round,"topic":topic,"data":format!("{topic}-{round}")}),
            )
            .await;
        }
    }
    let mut back = connect(b).await;
    for (i, (topic, _)) in topics.iter().enumerate() {
        let reply = ask(
            &mut back,
            json!({"op":"subscribe","id":i,"topic":topic,"since":{"epoch":epochs[topic],"offset":5}}),
        )
        .await;
        assert_eq!(
            (reply["offset"].as_u64(), reply["recovered"].as_bool()),
            (Some(15), Some(true)),
            "{reply}"
        );
        for offset in 6..=15u64 {
            let got = frame(&mut back).await;
            assert_eq!(
                (got["topic"].as_str(), got["offset"].as_u64()),
                (Some(topic.as_str()), Some(offset))
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_master_s_crash_offsets_run_on_or_the_gap_is_told() {
    let mut cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 1))
        .await
        .unwrap();
    let topics = topic_per_shard(&cluster);
    let (a, _ha, pa) = node(&cluster.url()).await;
    let (b, _hb, pb) = node(&cluster.url()).await;
    let mut sub = connect(a).await;
    // Where each topic stands for the subscriber: its epoch and offset.
    let mut last: BTreeMap<String, (String, u64)> = BTreeMap::new();
    for (i, (topic, _)) in topics.iter().enumerate() {
        let reply = ask(&mut sub, json!({"op":"subscribe","id":i,"topic":topic})).await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        last.insert(
            topic.clone(),
            (
                reply["epoch"].as_str().unwrap().to_owned(),
                reply["offset"].as_u64().unwrap(),
            ),
        );
    }
    // The subscriber's frames, as they come.
    let (tx, mut frames) = tokio::sync::mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        while let Some(event) = sub.next().await {
            let Event::Message(Message::Text(t)) = event else {
                continue;
            };
            let value: Value = serde_json::from_str(t.as_str()).unwrap();
            if tx.send(value).is_err() {
                return;
            }
        }
    });

    let (victim_topic, victim_port) = topics[0].clone();
    let mut publisher = connect(b).await;
    let mut acked: BTreeSet<(String, String, u64)> = BTreeSet::new();
    let started = Instant::now();
    let mut killed_at = None;
    let mut window = None;
    let mut id = 0u64;
    loop {
        if killed_at.is_none() && started.elapsed() > Duration::from_secs(1) {
            // The replica has every write: what follows is a failover
            // that loses nothing acknowledged.
            let waited = cluster::cli(victim_port, &["WAIT", "1", "5000"]);
            assert_eq!(waited.trim(), "1");
            let at = cluster
                .nodes
                .iter()
                .position(|n| n.port == victim_port)
                .unwrap();
            cluster.nodes[at].kill();
            killed_at = Some(Instant::now());
        }
        let mut victim_acked = false;
        for (topic, _) in &topics {
            id += 1;
            let data = format!("{topic}-{id}");
            let reply = tokio::time::timeout(
                Duration::from_secs(8),
                ask(
                    &mut publisher,
                    json!({"op":"publish","id":id,"topic":topic,"data":data}),
                ),
            )
            .await
            .expect("a reply to every publish");
            if reply["type"] == "published" {
                acked.insert((
                    topic.clone(),
                    reply["epoch"].as_str().unwrap().to_owned(),
                    reply["offset"].as_u64().unwrap(),
                ));
                victim_acked |= *topic == victim_topic;
            } else {
                assert_eq!(reply["code"], "unavailable", "{reply}");
            }
        }
        if let Some(at) = killed_at
            && victim_acked
            && window.is_none()
            && at.elapsed() > Duration::from_millis(100)
        {
            window = Some(at.elapsed());
        }
        if window.is_some_and(|w| killed_at.unwrap().elapsed() > w + Duration::from_secs(1)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the victim's shard took no publish for a minute"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "cluster failover: the crashed master's topic took no publish for {:?}; {} acknowledged",
        window.unwrap(),
        acked.len()
    );
    // Both nodes healthy again, naming three masters that are up: the
    // promoted replica in the crashed one's place.
    let deadline = Instant::now() + Duration::from_secs(30);
    for addr in [a, b] {
        loop {
            let (status, body) = health(addr).await;
            let gone = format!("127.0.0.1:{victim_port}\"");
            if status == 200 && body.matches("\"up\":true").count() == 3 && !body.contains(&gone) {
                break;
            }
            assert!(Instant::now() < deadline, "/healthz still {status} {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(pa.state().is_connected() && pb.state().is_connected());

    // What the subscriber got: per topic, offsets that run on, or a
    // `subscribed` with recovered false before any jump.
    let mut received: BTreeSet<(String, String, u64)> = BTreeSet::new();
    let mut told = 0;
    let drain_until = Instant::now() + Duration::from_secs(3);
    loop {
        let left = drain_until.saturating_duration_since(Instant::now());
        let Ok(Some(f)) = tokio::time::timeout(left, frames.recv()).await else {
            break;
        };
        match f["type"].as_str() {
            Some("subscribed") => {
                let topic = f["topic"].as_str().unwrap().to_owned();
                if f.get("id").is_none() {
                    assert_eq!(f["recovered"], false, "{f}");
                    told += 1;
                }
                last.insert(
                    topic,
                    (
                        f["epoch"].as_str().unwrap().to_owned(),
                        f["offset"].as_u64().unwrap(),
                    ),
                );
            }
            Some("message") => {
                let topic = f["topic"].as_str().unwrap().to_owned();
                let offset = f["offset"].as_u64().unwrap();
                let (epoch, previous) = last.get(&topic).cloned().unwrap();
                assert_eq!(offset, previous + 1, "{topic}: a jump without being told");
                last.insert(topic.clone(), (epoch.clone(), offset));
                received.insert((topic, epoch, offset));
            }
            _ => {}
        }
    }
    let missing: Vec<_> = acked.difference(&received).collect();
    println!(
        "cluster failover: {} received, {} acknowledged but not received, told of a gap {told} times",
        received.len(),
        missing.len()
    );
    assert!(
        missing.is_empty() || told > 0,
        "acknowledged, never delivered, no gap told: {missing:?}"
    );
}

/// A node's cluster id, by its port, from `CLUSTER NODES`.
fn node_id(cluster: &RedisCluster, port: u16) -> String {
    let nodes = cluster::cli(cluster.nodes[0].port, &["CLUSTER", "NODES"]);
    nodes
        .lines()
        .find(|line| line.contains(&format!("127.0.0.1:{port}@")))
        .and_then(|line| line.split_whitespace().next())
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_whose_slot_moves_to_another_master_is_followed_there() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 0))
        .await
        .unwrap();
    let topics = topic_per_shard(&cluster);
    let (topic, from) = topics[0].clone();
    let to = topics[1].1;
    let (a, _ha, _pa) = node(&cluster.url()).await;
    let (b, _hb, _pb) = node(&cluster.url()).await;
    let mut sub = connect(a).await;
    let reply = ask(&mut sub, json!({"op":"subscribe","id":1,"topic":topic})).await;
    let epoch = reply["epoch"].as_str().unwrap().to_owned();
    let mut publisher = connect(b).await;
    for offset in 1..=3u64 {
        let ack = ask(
            &mut publisher,
            json!({"op":"publish","id":offset,"topic":topic,"data":"before"}),
        )
        .await;
        assert_eq!(ack["offset"].as_u64(), Some(offset), "{ack}");
        assert_eq!(frame(&mut sub).await["offset"].as_u64(), Some(offset));
    }

    // Move the topic's slot, keys and all, as `redis-cli --cluster
    // reshard` does: IMPORTING, MIGRATING, MIGRATE, then NODE everywhere.
    let slot = cluster::cli(
        from,
        &["CLUSTER", "KEYSLOT", &format!("duplex:{{{topic}}}:epoch")],
    )
    .trim()
    .to_owned();
    let (from_id, to_id) = (node_id(&cluster, from), node_id(&cluster, to));
    cluster::cli(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
    cluster::cli(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
    let keys = cluster::cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
    let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
    assert!(!keys.is_empty(), "the topic's keys are in its slot");
    let to_port = to.to_string();
    let mut migrate = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
    migrate.extend(&keys);
    assert!(cluster::cli(from, &migrate).contains("OK"));
    for node in &cluster.nodes {
        cluster::cli(node.port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
    }
    cluster.wait_until_ok(Duration::from_secs(30));
    assert_eq!(
        cluster.master_port_of(&format!("duplex:{{{topic}}}:epoch"), from),
        to
    );

    // Publishes follow the slot (MOVED), and so does the subscription:
    // offsets go on in the same epoch, none missed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut next = 4u64;
    while next <= 6 {
        let ack = ask(
            &mut publisher,
            json!({"op":"publish","id":next,"topic":topic,"data":"after"}),
        )
        .await;
        assert_eq!(ack["type"], "published", "{ack}");
        assert_eq!(
            (ack["epoch"].as_str(), ack["offset"].as_u64()),
            (Some(epoch.as_str()), Some(next)),
            "{ack}"
        );
        next += 1;
        assert!(Instant::now() < deadline);
    }
    for offset in 4..=6u64 {
        let got = frame(&mut sub).await;
        assert_eq!(
            (got["type"].as_str(), got["offset"].as_u64()),
            (Some("message"), Some(offset)),
            "{got}"
        );
    }
}
