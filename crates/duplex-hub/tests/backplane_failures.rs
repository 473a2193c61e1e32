//! The backplane when Redis misbehaves, against a `redis-server` of the
//! test's own: a message too large for Redis's pub/sub buffers is refused
//! before it reaches Redis (it would cut every node's subscription); an
//! error reply fails that one publish and leaves the connection up; after
//! the subscription to Redis is lost, what was published meanwhile is
//! delivered from the stream without waiting for another message; and a
//! Redis that comes back with fewer offsets than were delivered starts the
//! topic's offsets again, closing raw subscribers (`RecvError::Lost`) rather
//! than handing out an offset twice.
#![cfg(feature = "server")]

use std::time::Duration;

use duplex_hub::backplane::Backplane;
use duplex_hub::{Hub, HubConfig, HubError, RecvError, Subscription};
use duplex_testing::Redis;
use duplex_ws::Message;

/// The test's own connection, tried for 5 s: on a loaded machine the
/// client's 1 s connection timeout can pass before a fresh Redis answers.
async fn redis_connection(redis: &Redis) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis.url()).unwrap();
    for _ in 0..50 {
        if let Ok(c) = client.get_multiplexed_async_connection().await {
            return c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("cannot connect to the test's Redis at {}", redis.url());
}

async fn command(c: &mut redis::aio::MultiplexedConnection, args: &[&str]) -> redis::Value {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(c).await.unwrap()
}

/// Publishes on `from` until `to` has received one (the subscription has
/// crossed Redis); drains what else came.
async fn warm_up(from: &Hub, to: &mut Subscription) {
    for _ in 0..50 {
        from.publish(to.topic(), Message::text("warm-up"))
            .await
            .unwrap();
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), to.recv()).await {
            while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), to.recv()).await
            {
            }
            return;
        }
    }
    panic!("the backplane never relayed");
}

async fn next_text(sub: &mut Subscription) -> (u64, String) {
    let d = tokio::time::timeout(Duration::from_secs(10), sub.recv())
        .await
        .expect("a message within 10 s")
        .expect("the subscription is open");
    match d.message() {
        Message::Text(t) => (d.offset(), t.as_str().to_owned()),
        Message::Binary(_) => panic!("binary"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_past_redis_pubsub_buffers_is_refused_and_the_backplane_stays_up() {
    let redis = Redis::start();
    let mut c = redis_connection(&redis).await;
    command(
        &mut c,
        &[
            "CONFIG",
            "SET",
            "client-output-buffer-limit",
            "pubsub 1mb 256kb 60",
        ],
    )
    .await;
    let (a, b) = (
        Hub::new(HubConfig::default()),
        Hub::new(HubConfig::default()),
    );
    let pa = Backplane::redis(&a, &redis.url()).await.unwrap();
    let _pb = Backplane::redis(&b, &redis.url()).await.unwrap();
    let mut on_a = a.subscribe("t").unwrap();
    warm_up(&b, &mut on_a).await;
    // Half the hard limit, less duplex's header, is the most it carries.
    let max = (1 << 20) / 2 - 84;
    assert_eq!(
        b.publish("t", Message::binary(vec![0u8; max + 1])).await,
        Err(HubError::TooLarge(max))
    );
    b.publish("t", Message::binary(vec![1u8; max]))
        .await
        .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(10), on_a.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.message().len(), max);
    b.publish("t", Message::text("still live")).await.unwrap();
    assert_eq!(next_text(&mut on_a).await.1, "still live");
    assert!(pa.state().is_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_reply_fails_one_publish_and_the_connection_stays() {
    let redis = Redis::start();
    let mut c = redis_connection(&redis).await;
    let (a, b) = (
        Hub::new(HubConfig::default()),
        Hub::new(HubConfig::default()),
    );
    let _pa = Backplane::redis(&a, &redis.url()).await.unwrap();
    let pb = Backplane::redis(&b, &redis.url()).await.unwrap();
    let mut on_a = a.subscribe("t").unwrap();
    warm_up(&b, &mut on_a).await;
    // Out of memory: every write is refused.
    command(&mut c, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]).await;
    command(&mut c, &["CONFIG", "SET", "maxmemory", "1"]).await;
    match b.publish("t", Message::text("refused")).await {
        Err(HubError::Refused(why)) => assert!(why.contains("OOM"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(pb.state().is_connected(), "one refusal is not a lost link");
    command(&mut c, &["CONFIG", "SET", "maxmemory", "0"]).await;
    let published = b.publish("t", Message::text("after")).await.unwrap();
    assert_eq!(
        next_text(&mut on_a).await,
        (published.offset, "after".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_published_while_the_subscription_was_lost_is_delivered() {
    let redis = Redis::start();
    let mut c = redis_connection(&redis).await;
    let (a, b) = (
        Hub::new(HubConfig::default()),
        Hub::new(HubConfig::default()),
    );
    let _pa = Backplane::redis(&a, &redis.url()).await.unwrap();
    let _pb = Backplane::redis(&b, &redis.url()).await.unwrap();
    let mut on_a = a.subscribe("t").unwrap();
    warm_up(&b, &mut on_a).await;
    // Every node loses its subscription; B publishes five, acknowledged,
    // and then nothing more.
    command(&mut c, &["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        let p = b
            .publish("t", Message::text(format!("m{i}")))
            .await
            .unwrap();
        acknowledged.push((p.offset, format!("m{i}")));
    }
    let mut received = Vec::new();
    for _ in 0..5 {
        received.push(next_text(&mut on_a).await);
    }
    assert_eq!(received, acknowledged, "each once, in order");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), on_a.recv())
            .await
            .is_err(),
        "nothing twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_went_back_in_time_starts_the_offsets_again() {
    let redis = Redis::start();
    let mut c = redis_connection(&redis).await;
    let (a, b) = (
        Hub::new(HubConfig::default()),
        Hub::new(HubConfig::default()),
    );
    let _pa = Backplane::redis(&a, &redis.url()).await.unwrap();
    let _pb = Backplane::redis(&b, &redis.url()).await.unwrap();
    let mut on_a = a.subscribe("t").unwrap();
    warm_up(&b, &mut on_a).await;
    let last = b.publish("t", Message::text("x")).await.unwrap();
    next_text(&mut on_a).await;
    assert!(last.offset >= 2);
    // As if Redis came back from a snapshot taken one message earlier.
    command(
        &mut c,
        &["SET", "duplex:{t}:offset", &(last.offset - 1).to_string()],
    )
    .await;
    command(&mut c, &["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    let lost = tokio::time::timeout(Duration::from_secs(10), on_a.recv())
        .await
        .expect("told within 10 s");
    assert_eq!(lost.unwrap_err(), RecvError::Lost);
    let again = b.publish("t", Message::text("new")).await.unwrap();
    assert_ne!(again.epoch, last.epoch, "a new run of offsets");
    assert_eq!(again.offset, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_topics_bounds_every_node_together() {
    let redis = Redis::start();
    let config = || HubConfig::default().max_topics(3);
    let (a, b) = (Hub::new(config()), Hub::new(config()));
    let _pa = Backplane::redis(&a, &redis.url()).await.unwrap();
    let _pb = Backplane::redis(&b, &redis.url()).await.unwrap();
    for (hub, topic) in [(&a, "t1"), (&a, "t2"), (&b, "t3")] {
        hub.publish(topic, Message::text("x")).await.unwrap();
    }
    // Each node holds fewer than three, but Redis holds three.
    assert_eq!(
        b.publish("t4", Message::text("x")).await,
        Err(HubError::TooManyTopics(3))
    );
    let mut c = redis_connection(&redis).await;
    let held = command(&mut c, &["ZCARD", "duplex:topics"]).await;
    assert_eq!(held, redis::Value::Int(3));
    // Topics that exist take more messages, on any node.
    b.publish("t1", Message::text("y")).await.unwrap();
}
