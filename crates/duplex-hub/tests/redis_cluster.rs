//! The hub on a Redis Cluster (3 masters, 3 replicas, started by the test
//! on free loopback ports), spoken to over duplex.v1 by two nodes: offsets
//! agree for topics on every shard, a subscriber resumes on the other
//! node, and through a kill -9 of a master every subscriber's offsets run
//! on or it is told `recovered: false`.
#![cfg(feature = "server")]

mod common;
use common as v1;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use duplex_testing::cluster::RedisCluster;
use serde_json::json;
use v1::{ask, connect, frame, health, healthy, node};

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
    let shards = topic_per_shard(&cluster);
    let topics: Vec<String> = shards.iter().map(|(t, _)| t.clone()).collect();
    let victim_port = shards[0].1;
    let (a, _ha, pa) = node(&cluster.url()).await;
    let (b, _hb, pb) = node(&cluster.url()).await;
    let run = v1::failover(a, b, [&pa.state(), &pb.state()], &topics, || {
        // The replica has every write: what follows is a failover that
        // loses nothing acknowledged.
        assert_eq!(
            duplex_testing::cli(victim_port, &["WAIT", "1", "5000"]).trim(),
            "1"
        );
        let at = cluster
            .nodes
            .iter()
            .position(|n| n.port == victim_port)
            .unwrap();
        cluster.nodes[at].kill();
    })
    .await;
    println!(
        "cluster failover: the crashed master's topic took no publish for {:?}; {} acknowledged, \
         {} received, told of a gap {} times",
        run.window,
        run.acked.len(),
        run.received.len(),
        run.told
    );
    // Every acknowledged publish reaches the subscriber (offsets
    // contiguous, or told: the harness checks each frame). After WAIT no
    // write is lost, so a gap told here is a spurious one: about one run in
    // three on a 2-core machine tells one (its cause not found yet, noted
    // in the issue); the rule, contiguous or told, holds either way.
    assert!(
        run.missing().is_empty(),
        "acknowledged, never delivered: {:?}; gaps told: {}",
        run.missing(),
        run.told
    );
    // Both nodes name three masters that are up: the promoted replica in
    // the crashed one's place.
    let gone = format!("127.0.0.1:{victim_port}\"");
    for addr in [a, b] {
        healthy(addr, Duration::from_secs(30), |body| {
            body.matches("\"up\":true").count() == 3 && !body.contains(&gone)
        })
        .await;
    }
}

/// A node's cluster id, by its port, from `CLUSTER NODES`.
fn node_id(cluster: &RedisCluster, port: u16) -> String {
    let nodes = duplex_testing::cli(cluster.nodes[0].port, &["CLUSTER", "NODES"]);
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
    let slot = duplex_testing::cli(
        from,
        &["CLUSTER", "KEYSLOT", &format!("duplex:{{{topic}}}:epoch")],
    )
    .trim()
    .to_owned();
    let (from_id, to_id) = (node_id(&cluster, from), node_id(&cluster, to));
    duplex_testing::cli(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
    duplex_testing::cli(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
    let keys = duplex_testing::cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
    let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
    assert!(!keys.is_empty(), "the topic's keys are in its slot");
    let to_port = to.to_string();
    let mut migrate = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
    migrate.extend(&keys);
    assert!(duplex_testing::cli(from, &migrate).contains("OK"));
    for node in &cluster.nodes {
        duplex_testing::cli(node.port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
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
