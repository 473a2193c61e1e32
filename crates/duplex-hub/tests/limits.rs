//! The hub's limits against real peers: a POST whose body drips in is
//! answered 408 and closed at the body timeout, and a message from Redis
//! over the message size limit is dropped and counted, not relayed.
#![cfg(feature = "server")]

use std::time::{Duration, Instant};

use duplex_hub::backplane::Backplane;
use duplex_hub::{Hub, HubConfig, HubService};
use duplex_testing::Redis;
use duplex_ws::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_body_that_drips_in_gets_408_and_the_connection_ends_at_the_timeout() {
    let hub = Hub::new(HubConfig::default().body_timeout(Duration::from_millis(500)));
    let server = duplex_ws::Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.serve_service(HubService::new(hub.clone())));

    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"POST /topics/t HTTP/1.1\r\nHost: localhost\r\n\
              Content-Type: text/plain\r\nContent-Length: 1000\r\n\r\n",
        )
        .await
        .unwrap();
    let started = Instant::now();
    // One byte every 50 ms (1000 bytes would take 50 s), reading the
    // answer meanwhile.
    let (mut reader, mut writer) = stream.into_split();
    let drip = tokio::spawn(async move {
        while writer.write_all(b"x").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut answer))
        .await
        .expect("the server ends the connection")
        .ok();
    let elapsed = started.elapsed();
    drip.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        elapsed >= Duration::from_millis(500) && elapsed < Duration::from_secs(3),
        "answered and closed after {elapsed:?}"
    );
    assert_eq!(hub.metrics().snapshot().published, 0);
}

#[tokio::test]
async fn a_message_from_redis_over_the_size_limit_is_dropped_and_counted() {
    let redis = Redis::start();
    let big = Hub::new(HubConfig::default());
    let small = Hub::new(HubConfig::default().max_message_size(1000));
    let _pa = Backplane::redis(&big, &redis.url()).await.unwrap();
    let _pb = Backplane::redis(&small, &redis.url()).await.unwrap();
    let mut on_small = small.subscribe("t").unwrap();
    // Wait until the subscription crosses Redis.
    let mut crossed = false;
    for _ in 0..50 {
        big.publish("t", Message::text("warm-up")).await.unwrap();
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), on_small.recv()).await {
            crossed = true;
            break;
        }
    }
    assert!(crossed, "the backplane never relayed");
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), on_small.recv()).await {}

    // 1001 bytes: over the limit. Then exactly 1000: at it.
    big.publish("t", Message::binary(vec![1u8; 1001]))
        .await
        .unwrap();
    big.publish("t", Message::binary(vec![2u8; 1000]))
        .await
        .unwrap();
    // The one it could not take is a gap in the topic: a raw subscriber,
    // which cannot be told which, is closed.
    let next = tokio::time::timeout(Duration::from_secs(10), on_small.recv())
        .await
        .expect("an answer within 10 s");
    assert_eq!(next.unwrap_err(), duplex_hub::RecvError::Lost);
    let mut again = small.subscribe("t").unwrap();
    big.publish("t", Message::binary(vec![3u8; 1000]))
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), again.recv())
        .await
        .expect("a message within 10 s")
        .expect("the subscription is open");
    assert_eq!(*next.message(), Message::binary(vec![3u8; 1000]));
    let snapshot = small.metrics().snapshot();
    assert_eq!(snapshot.backplane_too_large, 1, "{snapshot:?}");
    let metrics = small.metrics().render();
    assert!(
        metrics.contains("duplex_backplane_too_large_total 1\n"),
        "{metrics}"
    );
    // The big hub relays what it publishes itself, whatever the size.
    assert_eq!(big.metrics().snapshot().backplane_too_large, 0);
}
