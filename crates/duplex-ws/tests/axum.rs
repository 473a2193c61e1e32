//! The axum extractor end to end: an axum 0.8 app upgrades to duplex
//! WebSockets with a `Config`, served by axum's own `serve` and by duplex's
//! `Server` (where its WebSockets count against the server's limit), over
//! HTTP/1.1 and HTTP/2.

use std::net::SocketAddr;

use axum::Router;
use axum::response::Response;
use axum::routing::any;
use duplex_ws::axum::WebSocketUpgrade;
use duplex_ws::{Config, DeflateConfig, Event, Message, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Echoes with permessage-deflate and the `echo.v1` subprotocol, and says
/// first which subprotocols the client offered.
async fn echo(upgrade: WebSocketUpgrade) -> Response {
    let offered: Vec<String> = upgrade.offered_protocols().map(str::to_owned).collect();
    let mut config = Config::server();
    config.deflate = Some(DeflateConfig::default());
    config.protocols = vec!["echo.v1".to_owned()];
    upgrade.config(config).on_upgrade(move |mut ws| async move {
        let _ = ws.send(format!("offered {}", offered.join(","))).await;
        while let Ok(Some(message)) = ws.recv().await {
            if ws.send(message).await.is_err() {
                break;
            }
        }
    })
}

fn app() -> Router {
    Router::new().route("/echo", any(echo))
}

async fn check_echo(addr: SocketAddr, http2: bool) {
    let mut ws = duplex_ws::ClientBuilder::new(format!("ws://{addr}/echo"))
        .http2(http2)
        .protocols(["other", "echo.v1"])
        .connect()
        .await
        .unwrap();
    assert_eq!(ws.get_ref().is_http2(), http2);
    assert_eq!(ws.protocol(), Some("echo.v1"));
    assert!(ws.extensions().unwrap().starts_with("permessage-deflate"));
    assert!(matches!(ws.next().await, Some(Event::Open)));
    assert_eq!(
        ws.recv().await.unwrap(),
        Some(Message::text("offered other,echo.v1"))
    );
    let big = Message::binary(vec![7u8; 100_000]);
    ws.send(big.clone()).await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Some(big));
    ws.close(1000, "done").await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), None);
}

#[tokio::test]
async fn served_by_axum() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app()).await });
    check_echo(addr, false).await;
    // axum's serve speaks HTTP/2 (prior knowledge here) with extended CONNECT.
    check_echo(addr, true).await;

    // A plain GET is refused by the extractor with 426.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 426"), "{answer}");
}

#[tokio::test]
async fn served_by_duplex_with_its_limit() {
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .max_connections(1);
    let addr = server.local_addr().unwrap();
    let handle = server.handle();
    let service = hyper_util::service::TowerToHyperService::new(app());
    tokio::spawn(server.serve_service(service));
    check_echo(addr, false).await;
    check_echo(addr, true).await;
    // The HTTP/2 connection goes once its last stream has: wait for it, so
    // that the next connection is not refused at the TCP limit of one.
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while handle.stats().connections + handle.stats().websockets > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the connections end");

    let _first = duplex_ws::connect(&format!("ws://{addr}/echo"))
        .await
        .unwrap();
    let err = duplex_ws::connect(&format!("ws://{addr}/echo"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(handle.stats().websockets_http1, 1);
}
