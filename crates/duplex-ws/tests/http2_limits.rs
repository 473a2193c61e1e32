//! HTTP/2 held to the limits of HTTP/1.1, against duplex's `Server` over
//! cleartext HTTP/2 (prior knowledge): every WebSocket on a connection
//! counts against the per-address limit as a connection would (429 past
//! it); a connection has at most so many streams; one that sends only the
//! preface, or a header block it never finishes, is closed at the
//! handshake timeout, and one with nothing open at the idle timeout, while
//! one with a WebSocket open stays.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use duplex_ws::{ClientBuilder, Config, Http2Connection, Message, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn echo(server: Server) -> SocketAddr {
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.serve(|mut ws| async move {
        while let Ok(Some(message)) = ws.recv().await {
            if ws.send(message).await.is_err() {
                break;
            }
        }
    }));
    addr
}

fn config(handshake_timeout: Duration) -> Config {
    let mut config = Config::server();
    config.handshake_timeout = handshake_timeout;
    config
}

async fn h2(addr: SocketAddr) -> Http2Connection {
    Http2Connection::connect(&ClientBuilder::new(format!("ws://{addr}/")).http2(true))
        .await
        .unwrap()
}

fn builder(addr: SocketAddr) -> ClientBuilder {
    let mut config = Config::client();
    config.handshake_timeout = Duration::from_secs(2);
    ClientBuilder::new(format!("ws://{addr}/")).config(config)
}

#[tokio::test]
async fn each_websocket_counts_against_the_per_address_limit() {
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .max_connections_per_ip(3)
        .limit_loopback(true);
    let addr = echo(server);
    let connection = h2(addr).await;
    // The connection is one; two WebSockets on it make three.
    let mut a = connection.websocket(builder(addr)).await.unwrap();
    let _b = connection.websocket(builder(addr)).await.unwrap();
    let refused = connection.websocket(builder(addr)).await.unwrap_err();
    assert!(refused.to_string().contains("429"), "{refused}");
    // The open ones are unharmed; closing one frees its count.
    a.send("still here").await.unwrap();
    assert_eq!(a.recv().await.unwrap(), Some(Message::text("still here")));
    a.close(1000, "").await.unwrap();
    while a.recv().await.is_ok_and(|m| m.is_some()) {}
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match connection.websocket(builder(addr)).await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "no room came back: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_connection_has_at_most_its_streams() {
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .max_streams_per_connection(2);
    let addr = echo(server);
    let connection = h2(addr).await;
    let _a = connection.websocket(builder(addr)).await.unwrap();
    let _b = connection.websocket(builder(addr)).await.unwrap();
    // The third waits for a stream that never frees, until its handshake
    // timeout.
    assert!(connection.websocket(builder(addr)).await.is_err());
}

/// Whether the server ends a connection that sent `bytes` within `within`.
async fn closed_after(addr: SocketAddr, bytes: &[u8], within: Duration) -> Option<Duration> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((start + within).into(), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[tokio::test]
async fn a_connection_that_never_finishes_a_request_is_closed() {
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .config(config(Duration::from_millis(300)));
    let addr = echo(server);
    let waited = closed_after(addr, PREFACE, Duration::from_secs(5)).await;
    assert!(waited.is_some(), "the preface alone held the connection");
    // A HEADERS frame on stream 1 without END_HEADERS, and no CONTINUATION.
    let mut unfinished = PREFACE.to_vec();
    unfinished.extend_from_slice(&[0, 0, 1, 0x01, 0x00, 0, 0, 0, 1, 0x82]);
    let waited = closed_after(addr, &unfinished, Duration::from_secs(5)).await;
    assert!(
        waited.is_some(),
        "an unfinished header block held the connection"
    );
}

#[tokio::test]
async fn an_idle_connection_goes_and_one_with_a_websocket_stays() {
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .config(config(Duration::from_millis(300)))
        .idle_timeout(Duration::from_millis(300));
    let addr = echo(server);
    let connection = h2(addr).await;
    let mut ws = connection.websocket(builder(addr)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ws.send("after a while").await.unwrap();
    assert_eq!(
        ws.recv().await.unwrap(),
        Some(Message::text("after a while"))
    );
    drop(ws);
    drop(connection);
    // And one that only says hello goes.
    assert!(
        closed_after(addr, PREFACE, Duration::from_secs(5))
            .await
            .is_some()
    );
}
