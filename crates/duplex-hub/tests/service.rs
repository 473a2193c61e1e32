//! `HubService` served by duplex's own server core on a loopback port, with
//! duplex clients: what `duplex serve` does with topics, without the binary.

#[path = "support/redis.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use duplex::{Event, MaybeTlsStream, Message, ServerHandle, WebSocket};
use duplex_hub::backplane::Backplane;
use duplex_hub::{Hub, HubConfig, HubService};
use support::Redis;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Client = WebSocket<MaybeTlsStream<TcpStream>>;

/// Serves `service` on a free loopback port until the test ends.
async fn serve(service: HubService) -> (SocketAddr, ServerHandle) {
    let server = duplex::Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let handle = server.handle();
    tokio::spawn(server.serve_service(service));
    (addr, handle)
}

async fn subscribe(addr: SocketAddr, topic: &str) -> Client {
    duplex::connect(&format!("ws://{addr}/topics/{topic}"))
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
    assert_eq!(
        (status, body.as_str()),
        (200, "{\"topic\":\"news\",\"delivered\":2}\n")
    );
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
    let err = duplex::connect(&format!("ws://{addr}/topics/a%20b"))
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
    let hub = Hub::new(HubConfig {
        queue: 4,
        ..HubConfig::default()
    });
    let (addr, _server) = serve(HubService::new(hub.clone())).await;
    let mut slow = subscribe(addr, "t").await;
    // The subscriber reads nothing meanwhile: the socket buffers fill, the
    // server's write waits, and the queue of four overflows.
    let payload = Bytes::from(vec![7u8; 256 << 10]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while hub.metrics().snapshot().lagged == 0 {
        assert!(Instant::now() < deadline, "the queue never overflowed");
        hub.publish("t", Message::Binary(payload.clone())).unwrap();
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
        (status, body.as_str()),
        (200, "{\"status\":\"ok\",\"backplane\":\"connected\"}\n")
    );

    drop(redis);
    let body = wait_for_health(addr, 503).await;
    assert_eq!(
        body,
        "{\"status\":\"unavailable\",\"backplane\":\"disconnected\"}\n"
    );

    // The backplane reconnects by itself once Redis is back.
    let _redis = Redis::start_on(port);
    let body = wait_for_health(addr, 200).await;
    assert_eq!(body, "{\"status\":\"ok\",\"backplane\":\"connected\"}\n");
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
    let server = duplex::Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.serve_service(hyper_util::service::TowerToHyperService::new(app)));

    let mut sub = duplex::connect(&format!("ws://{addr}/push/topics/news"))
        .await
        .unwrap();
    let (status, body) = http(addr, "POST", "/push/topics/news", "", b"hi").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "{\"topic\":\"news\",\"delivered\":1}\n")
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
