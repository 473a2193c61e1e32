//! `HubService` served by duplex's own server core on a loopback port, with
//! duplex clients: what `duplex serve` does with topics, without the binary.
#![cfg(feature = "server")]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use duplex_hub::auth::{ApiKey, Claims, TokenVerifier};
use duplex_hub::backplane::Backplane;
use duplex_hub::{Hub, HubConfig, HubService};
use duplex_testing::Redis;
use duplex_ws::{Event, MaybeTlsStream, Message, ServerHandle, WebSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Client = WebSocket<MaybeTlsStream<TcpStream>>;

/// Serves `service` on a free loopback port until the test ends.
async fn serve(service: HubService) -> (SocketAddr, ServerHandle) {
    let server = duplex_ws::Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let handle = server.handle();
    tokio::spawn(server.serve_service(service));
    (addr, handle)
}

async fn subscribe(addr: SocketAddr, topic: &str) -> Client {
    duplex_ws::connect(&format!("ws://{addr}/topics/{topic}"))
        .await
        .unwrap()
}

/// The next message, within 10 s.
async fn next_message(ws: &mut Client) -> Message {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Event::Message(message))) => return message,
            Ok(Some(Event::Open)) => {}
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// One HTTP/1.1 request with `Connection: close`: the status and the body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// The value of one sample of `GET /metrics`.
async fn metric(addr: SocketAddr, name: &str) -> u64 {
    metric_at(addr, "/metrics", name).await
}

/// The value of one sample of the metrics at `path`.
async fn metric_at(addr: SocketAddr, path: &str, name: &str) -> u64 {
    let (status, body) = http(addr, "GET", path, "", b"").await;
    assert_eq!(status, 200);
    sample(&body, name)
}

/// The value of the sample `name` in a Prometheus text body.
fn sample(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_what_is_published_by_websocket_and_post() {
    let (addr, _server) = serve(HubService::new(Hub::new(HubConfig::default()))).await;
    let mut a = subscribe(addr, "news").await;
    let mut b = subscribe(addr, "news").await;
    let mut other = subscribe(addr, "sport").await;

    a.send("from a").await.unwrap();
    assert_eq!(next_message(&mut a).await, Message::text("from a"));
    assert_eq!(next_message(&mut b).await, Message::text("from a"));

    let (status, body) = http(
        addr,
        "POST",
        "/topics/news",
        "Content-Type: text/plain\r\n",
        b"by post",
    )
    .await;
    assert_eq!(status, 200);
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&answer["topic"], &answer["offset"], &answer["delivered"]),
        (&"news".into(), &2.into(), &2.into()),
        "{body}"
    );
    assert!(answer["epoch"].is_string(), "{body}");
    assert_eq!(next_message(&mut a).await, Message::text("by post"));
    assert_eq!(next_message(&mut b).await, Message::text("by post"));
    let (status, _) = http(addr, "POST", "/topics/sport", "", b"\x01\x02").await;
    assert_eq!(status, 200);
    assert_eq!(
        next_message(&mut other).await,
        Message::binary(&b"\x01\x02"[..])
    );

    assert_eq!(metric(addr, "duplex_published_total").await, 3);
    assert_eq!(metric(addr, "duplex_subscribers").await, 3);
    assert_eq!(metric(addr, "duplex_topics").await, 2);
    assert_eq!(metric(addr, "duplex_connections").await, 3);
    // The server's own counters, by HTTP version.
    assert_eq!(
        metric(addr, "duplex_websockets_open{http=\"1.1\"}").await,
        3
    );
    assert_eq!(metric(addr, "duplex_websockets_open{http=\"2\"}").await, 0);

    // Bad names are refused as a subscription and as a POST.
    let err = duplex_ws::connect(&format!("ws://{addr}/topics/a%20b"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("400"), "{err}");
    let (status, _) = http(addr, "POST", "/topics/", "", b"x").await;
    assert_eq!(status, 400);
    let (status, _) = http(addr, "GET", "/elsewhere", "", b"").await;
    assert_eq!(status, 404);

    other.close(1000, "").await.unwrap();
    while other.next().await.is_some() {}
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(addr, "duplex_connections").await != 2 {
        assert!(
            Instant::now() < deadline,
            "the closed subscriber is still counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_a_whole_queue_behind_is_closed_with_1008() {
    let hub = Hub::new(HubConfig::default().queue(4));
    let (addr, _server) = serve(HubService::new(hub.clone())).await;
    let mut slow = subscribe(addr, "t").await;
    // The subscriber reads nothing meanwhile: the socket buffers fill, the
    // server's write waits, and the queue of four overflows.
    let payload = Bytes::from(vec![7u8; 256 << 10]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while hub.metrics().snapshot().lagged == 0 {
        assert!(Instant::now() < deadline, "the queue never overflowed");
        hub.publish("t", Message::Binary(payload.clone()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Reading again, it gets what was queued, then the close.
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.next()).await {
            Ok(Some(Event::Close { code, reason, .. })) => break (code.0, reason),
            Ok(Some(_)) => {}
            other => panic!("expected a close, got {other:?}"),
        }
    };
    assert_eq!(close, (1008, "slow consumer".to_owned()));
    assert!(metric(addr, "duplex_slow_consumers_total").await >= 1);
    assert_eq!(metric(addr, "duplex_subscribers").await, 0);
}

#[tokio::test]
async fn messages_arrive_once_each_and_in_order_corked_or_queued() {
    once_each_and_in_order().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arrive_once_each_and_in_order_corked_or_queued_on_two_threads() {
    once_each_and_in_order().await;
}

async fn once_each_and_in_order() {
    // Bursts (queued, written by the subscriber's task) and pauses (corked
    // by the publisher, written by the topic's flush pass), to a
    // subscriber that reads nothing at first, so that writes are also left
    // half done in a full socket.
    let hub = Hub::new(HubConfig::default().queue(8192));
    let (addr, _server) = serve(HubService::new(hub.clone())).await;
    let mut ws = subscribe(addr, "t").await;
    let wait = Instant::now() + Duration::from_secs(10);
    while hub.subscriber_count("t") == 0 {
        assert!(Instant::now() < wait, "never subscribed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    const COUNT: u32 = 3000;
    let publisher = tokio::spawn(async move {
        for seq in 0..COUNT {
            let mut payload = vec![0u8; 4096];
            payload[..4].copy_from_slice(&seq.to_be_bytes());
            hub.publish("t", Message::Binary(payload.into()))
                .await
                .unwrap();
            if seq % 100 == 99 {
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    for expected in 0..COUNT {
        let Message::Binary(payload) = next_message(&mut ws).await else {
            panic!("expected a binary message");
        };
        let seq = u32::from_be_bytes(payload[..4].try_into().unwrap());
        assert_eq!(seq, expected, "out of order or lost");
    }
    publisher.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_follows_the_backplane() {
    let (addr, _server) = serve(HubService::new(Hub::new(HubConfig::default()))).await;
    let (status, body) = http(addr, "GET", "/healthz", "", b"").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "{\"status\":\"ok\",\"backplane\":\"none\"}\n")
    );

    let redis = Redis::start();
    let port = redis.port;
    let hub = Hub::new(HubConfig::default());
    let backplane = Backplane::redis(&hub, &redis.url()).await.unwrap();
    let (addr, _server) = serve(HubService::new(hub).backplane(backplane.state())).await;
    let (status, body) = http(addr, "GET", "/healthz", "", b"").await;
    assert_eq!(
        (status, body),
        (
            200,
            format!(
                "{{\"status\":\"ok\",\"backplane\":\"connected\",\"engine\":\"redis\",\
                 \"masters\":[{{\"address\":\"127.0.0.1:{port}\",\"up\":true}}]}}\n"
            )
        )
    );

    drop(redis);
    wait_for_health(addr, 503).await;
    // The master shows as down once the next look at it fails.
    let down = format!(
        "{{\"status\":\"unavailable\",\"backplane\":\"disconnected\",\"engine\":\"redis\",\
         \"masters\":[{{\"address\":\"127.0.0.1:{port}\",\"up\":false}}]}}\n"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http(addr, "GET", "/healthz", "", b"").await;
        if body == down {
            assert_eq!(status, 503);
            break;
        }
        assert!(Instant::now() < deadline, "/healthz still {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The backplane reconnects by itself once Redis is back.
    let _redis = Redis::start_on(port);
    let body = wait_for_health(addr, 200).await;
    assert_eq!(
        body,
        format!(
            "{{\"status\":\"ok\",\"backplane\":\"connected\",\"engine\":\"redis\",\
             \"masters\":[{{\"address\":\"127.0.0.1:{port}\",\"up\":true}}]}}\n"
        )
    );
}

/// Polls `GET /healthz` until it answers `status` (10 s at most); the body.
async fn wait_for_health(addr: SocketAddr, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (got, body) = http(addr, "GET", "/healthz", "", b"").await;
        if got == status {
            return body;
        }
        assert!(Instant::now() < deadline, "/healthz still {got} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_axum_app_mounts_the_service_under_a_prefix() {
    let hub = Hub::new(HubConfig::default());
    let app = axum::Router::new().nest_service("/push", HubService::new(hub));
    let server = duplex_ws::Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.serve_service(hyper_util::service::TowerToHyperService::new(app)));

    let mut sub = duplex_ws::connect(&format!("ws://{addr}/push/topics/news"))
        .await
        .unwrap();
    let (status, body) = http(addr, "POST", "/push/topics/news", "", b"hi").await;
    assert_eq!(status, 200);
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&answer["offset"], &answer["delivered"]),
        (&1.into(), &1.into()),
        "{body}"
    );
    assert_eq!(next_message(&mut sub).await, Message::binary(&b"hi"[..]));
    // Counted by the server it runs under, through axum.
    assert_eq!(
        metric_at(
            addr,
            "/push/metrics",
            "duplex_websockets_open{http=\"1.1\"}"
        )
        .await,
        1
    );
    let (status, _) = http(addr, "GET", "/push/healthz", "", b"").await;
    assert_eq!(status, 200);
    let (status, _) = http(addr, "GET", "/topics/news", "", b"").await;
    assert_eq!(status, 404, "outside the mount");
}

const SECRET: &[u8] = b"the hub's test secret";
const KEY: &str = "the-api-key";

/// A token for `alice`, valid `secs` from now (negative: expired).
fn token(secs: i64, subscribe: &[&str], publish: &[&str]) -> String {
    let now = std::time::SystemTime::now();
    let exp = if secs >= 0 {
        now + Duration::from_secs(secs.unsigned_abs())
    } else {
        now - Duration::from_secs(secs.unsigned_abs())
    };
    let claims = Claims::new("alice", exp)
        .subscribe(subscribe.iter().copied())
        .publish(publish.iter().copied());
    duplex_hub::auth::sign_hs256(SECRET, &claims).unwrap()
}

fn guarded(verifier: TokenVerifier) -> HubService {
    HubService::new(Hub::new(HubConfig::default()))
        .tokens(verifier)
        .api_key(ApiKey::new(KEY).unwrap())
}

/// The next event that is not `Open`, within 10 s.
async fn next_close(ws: &mut Client) -> (u16, String) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Event::Close { code, reason, .. })) => return (code.0, reason),
            Ok(Some(Event::Open)) => {}
            other => panic!("expected a close, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_decide_who_subscribes_and_publishes() {
    let (addr, _server) = serve(guarded(TokenVerifier::hs256(SECRET).unwrap())).await;
    let refused =
        |url: String| async move { duplex_ws::connect(&url).await.unwrap_err().to_string() };
    let err = refused(format!("ws://{addr}/topics/news")).await;
    assert!(err.contains("401"), "{err}");
    let expired = token(-60, &["news"], &[]);
    let err = refused(format!("ws://{addr}/topics/news?token={expired}")).await;
    assert!(err.contains("401"), "{err}");
    let (status, body) = http(
        addr,
        "GET",
        &format!("/topics/news?token={expired}"),
        "",
        b"",
    )
    .await;
    assert_eq!((status, body.as_str()), (401, "the token has expired\n"));
    let forged = {
        let claims = Claims::new(
            "alice",
            std::time::SystemTime::now() + Duration::from_secs(60),
        )
        .subscribe(["news"]);
        duplex_hub::auth::sign_hs256(b"not the secret", &claims).unwrap()
    };
    let (status, body) = http(
        addr,
        "GET",
        &format!("/topics/news?token={forged}"),
        "",
        b"",
    )
    .await;
    assert_eq!(status, 401);
    assert!(body.contains("signature"), "{body}");

    let reader = token(60, &["news", "chat.*"], &[]);
    let writer = token(60, &["chat.*"], &["chat.*"]);
    let err = refused(format!("ws://{addr}/topics/sport?token={reader}")).await;
    assert!(err.contains("403"), "{err}");
    let err = refused(format!("ws://{addr}/topics/chat?token={reader}")).await;
    assert!(err.contains("403"), "chat.* is not chat: {err}");

    // By the query and by the header.
    let mut news = duplex_ws::connect(&format!("ws://{addr}/topics/news?token={reader}"))
        .await
        .unwrap();
    let mut room_reader = duplex_ws::ClientBuilder::new(format!("ws://{addr}/topics/chat.room"))
        .header(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_str(&format!("Bearer {reader}")).unwrap(),
        )
        .connect()
        .await
        .unwrap();
    let mut room_writer =
        duplex_ws::connect(&format!("ws://{addr}/topics/chat.room?token={writer}"))
            .await
            .unwrap();
    room_writer.send("hi room").await.unwrap();
    assert_eq!(
        next_message(&mut room_writer).await,
        Message::text("hi room")
    );
    assert_eq!(
        next_message(&mut room_reader).await,
        Message::text("hi room")
    );

    // A reader that sends is closed, and what it sent goes nowhere.
    room_reader.send("not mine to say").await.unwrap();
    assert_eq!(
        next_close(&mut room_reader).await,
        (1008, "publish not allowed".to_owned())
    );
    room_writer.send("still here").await.unwrap();
    assert_eq!(
        next_message(&mut room_writer).await,
        Message::text("still here")
    );
    let (status, _) = http(
        addr,
        "POST",
        "/topics/news",
        &format!("Authorization: Bearer {KEY}\r\n"),
        b"by post",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        next_message(&mut news).await,
        Message::binary(&b"by post"[..])
    );
    let published = metric_with_key(addr, "duplex_published_total").await;
    assert_eq!(published, 3, "the refused message was not published");
}

/// A sample of `GET /metrics`, with the API key.
async fn metric_with_key(addr: SocketAddr, name: &str) -> u64 {
    let (status, body) = http(
        addr,
        "GET",
        "/metrics",
        &format!("Authorization: Bearer {KEY}\r\n"),
        b"",
    )
    .await;
    assert_eq!(status, 200);
    sample(&body, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_is_closed_when_its_token_expires() {
    let verifier = TokenVerifier::hs256(SECRET).unwrap().leeway(Duration::ZERO);
    let (addr, _server) = serve(guarded(verifier)).await;
    // `exp` is whole seconds: this one passes within two.
    let short = token(2, &["news"], &[]);
    let start = Instant::now();
    let mut ws = duplex_ws::connect(&format!("ws://{addr}/topics/news?token={short}"))
        .await
        .unwrap();
    assert_eq!(
        next_close(&mut ws).await,
        (1008, "token expired".to_owned())
    );
    let waited = start.elapsed();
    assert!(
        waited > Duration::from_millis(900),
        "closed too soon: {waited:?}"
    );
    // A longer token on the same server stays.
    let long = token(60, &["news"], &[]);
    let mut ws = duplex_ws::connect(&format!("ws://{addr}/topics/news?token={long}"))
        .await
        .unwrap();
    let nothing = tokio::time::timeout(Duration::from_millis(300), ws.next()).await;
    assert!(
        matches!(nothing, Err(_) | Ok(Some(Event::Open))),
        "{nothing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_guards_post_and_metrics_not_healthz() {
    let (addr, _server) = serve(guarded(TokenVerifier::hs256(SECRET).unwrap())).await;
    let (status, body) = http(addr, "POST", "/topics/news", "", b"x").await;
    assert_eq!(
        (status, body.as_str()),
        (401, "an API key is required: Authorization: Bearer KEY\n")
    );
    let (status, body) = http(
        addr,
        "POST",
        "/topics/news",
        "Authorization: Bearer nope\r\n",
        b"x",
    )
    .await;
    assert_eq!((status, body.as_str()), (401, "wrong API key\n"));
    let (status, _) = http(
        addr,
        "POST",
        "/topics/news",
        &format!("Authorization: Bearer {KEY}\r\n"),
        b"x",
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = http(addr, "GET", "/metrics", "", b"").await;
    assert_eq!(status, 401);
    // Beside the API key, a token that may publish everywhere (an
    // operator's) reads the metrics; one that may only subscribe does not.
    for (subscribe, publish, expected) in [(&["*"][..], &["*"][..], 200), (&["*"], &[], 403)] {
        let (status, _) = http(
            addr,
            "GET",
            "/metrics",
            &format!(
                "Authorization: Bearer {}\r\n",
                token(60, subscribe, publish)
            ),
            b"",
        )
        .await;
        assert_eq!(status, expected, "{publish:?}");
    }
    assert_eq!(metric_with_key(addr, "duplex_published_total").await, 1);
    let (status, _) = http(addr, "GET", "/healthz", "", b"").await;
    assert_eq!(status, 200);
}
