//! The backplane against a real Redis: a `redis-server` this test starts on
//! a free loopback port (Debian's package; the test command installs it).
//! Two hubs stand for two `duplex serve` processes.
#![cfg(feature = "server")]

use std::time::{Duration, Instant};

use duplex_hub::backplane::Backplane;
use duplex_hub::{Hub, HubConfig, Subscription};
use duplex_testing::Redis;
use duplex_ws::Message;

async fn next(sub: &mut Subscription) -> Message {
    tokio::time::timeout(Duration::from_secs(10), sub.recv())
        .await
        .expect("a message within 10 s")
        .expect("the subscription is open")
        .message()
        .clone()
}

async fn nothing_more(sub: &mut Subscription) {
    let more = tokio::time::timeout(Duration::from_millis(300), sub.recv()).await;
    assert!(more.is_err(), "unexpected {more:?}");
}

/// Publishes until the other node has it (a fresh pattern subscription may
/// take a moment), then returns what arrived.
async fn publish_until_received(from: &Hub, to: &mut Subscription, text: &str) -> Message {
    // (Used before any other traffic on the topic.)
    for _ in 0..50 {
        from.publish(to.topic(), Message::text(text)).await.unwrap();
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(200), to.recv()).await {
            return m.message().clone();
        }
    }
    panic!("{text:?} never crossed the backplane");
}

#[tokio::test]
async fn two_nodes_share_topics_and_nobody_gets_a_message_twice() {
    let redis = Redis::start();
    let a = Hub::new(HubConfig::default());
    let b = Hub::new(HubConfig::default());
    let _pa = Backplane::redis(&a, &redis.url()).await.unwrap();
    let _pb = Backplane::redis(&b, &redis.url()).await.unwrap();
    let mut on_a = a.subscribe("news").unwrap();
    let mut on_b = b.subscribe("news").unwrap();

    // Published on B: B's subscriber at once, A's through Redis.
    assert_eq!(
        publish_until_received(&b, &mut on_a, "warm-up").await,
        Message::text("warm-up")
    );
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), on_b.recv()).await {}
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), on_a.recv()).await {}

    b.publish("news", Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    assert_eq!(next(&mut on_b).await, Message::binary(vec![1u8, 2, 3]));
    assert_eq!(next(&mut on_a).await, Message::binary(vec![1u8, 2, 3]));
    // Published on A: once on A (not again from Redis), once on B.
    a.publish("news", Message::text("from a")).await.unwrap();
    assert_eq!(next(&mut on_a).await, Message::text("from a"));
    assert_eq!(next(&mut on_b).await, Message::text("from a"));
    nothing_more(&mut on_a).await;
    nothing_more(&mut on_b).await;
    // Another topic does not leak into this one.
    a.publish("sport", Message::text("goal")).await.unwrap();
    nothing_more(&mut on_b).await;

    let (sa, sb) = (a.metrics().snapshot(), b.metrics().snapshot());
    assert!(
        sa.backplane_in >= 2 && sb.backplane_in >= 1,
        "{sa:?} {sb:?}"
    );
    assert_eq!(sa.backplane_dropped + sb.backplane_dropped, 0);
}

#[tokio::test]
async fn the_backplane_comes_back_after_redis_restarts() {
    let redis = Redis::start();
    let port = redis.port;
    let a = Hub::new(HubConfig::default());
    let b = Hub::new(HubConfig::default());
    let _pa = Backplane::redis(&a, &redis.url()).await.unwrap();
    let _pb = Backplane::redis(&b, &redis.url()).await.unwrap();
    let mut on_a = a.subscribe("t").unwrap();
    publish_until_received(&b, &mut on_a, "before").await;

    drop(redis);
    // Published while Redis is down: refused, and counted as dropped.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..3 {
        assert_eq!(
            b.publish("t", Message::text("during")).await,
            Err(duplex_hub::HubError::Unavailable)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _redis = Redis::start_on(port);
    // Both directions come back: B's publisher and A's subscription. The
    // new Redis knows nothing of the topic: its offsets start again (a new
    // epoch), and whatever the old one had acknowledged and not delivered
    // is lost. A raw subscriber, which cannot be told, is closed for it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let _ = b.publish("t", Message::text("after")).await;
        match tokio::time::timeout(Duration::from_millis(200), on_a.recv()).await {
            Ok(Err(e)) => {
                assert_eq!(e, duplex_hub::RecvError::Lost);
                break;
            }
            Ok(Ok(m)) => panic!("delivered {m:?} across a lost epoch"),
            Err(_) => {}
        }
        assert!(Instant::now() < deadline, "the backplane did not come back");
    }
    let mut again = a.subscribe("t").unwrap();
    publish_until_received(&b, &mut again, "again").await;
    assert!(b.metrics().snapshot().backplane_dropped >= 1);
}

/// What the publish script puts on the channel, read off Redis as any
/// subscriber would, is what `decode` reads: the unit tests of `decode`
/// build their payloads with `encode`, which production never calls (the
/// script builds them), so this pins the two formats together.
#[tokio::test]
async fn the_publish_scripts_payloads_are_what_decode_reads() {
    use duplex_hub::backplane::{CHANNEL_PREFIX, Decoded, decode};
    use futures_util::StreamExt;

    let redis = Redis::start();
    let hub = Hub::new(HubConfig::default());
    let _backplane = Backplane::redis(&hub, &redis.url()).await.unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(format!("{CHANNEL_PREFIX}news.eu"))
        .await
        .unwrap();
    let mut payloads = pubsub.on_message();
    let sent = [
        Message::text("héllo: with colons: and ünïcode"),
        Message::binary(vec![0u8, 255, b':', 1]),
        Message::text(""),
    ];
    for message in &sent {
        let published = hub.publish("news.eu", message.clone()).await.unwrap();
        let raw = tokio::time::timeout(Duration::from_secs(10), payloads.next())
            .await
            .expect("the payload within 10 s")
            .unwrap();
        match decode(raw.get_payload_bytes()) {
            Some(Decoded::Message {
                epoch,
                offset,
                message: got,
            }) => {
                assert_eq!(epoch, &*published.epoch);
                assert_eq!(offset, published.offset);
                assert_eq!(&got, message);
            }
            other => panic!("{other:?} from {:?}", raw.get_payload_bytes()),
        }
    }
}
