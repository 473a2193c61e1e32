//! The server's limits on what peers hold, over real sockets: connections
//! per address and the rate of new ones (refused at once, room again as
//! connections close or the bucket refills), and the message budget shared
//! by every WebSocket of a server (the one past it gets 1013, shares come
//! back on close).

use std::net::SocketAddr;
use std::time::Duration;

use duplex_ws::{Server, ServerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

/// Serves the echo with `server`'s limits; returns its address and handle.
fn start(server: Server) -> (SocketAddr, ServerHandle) {
    let addr = server.local_addr().unwrap();
    let handle = server.handle();
    tokio::spawn(server.serve(|mut ws| async move {
        while let Ok(Some(message)) = ws.recv().await {
            if ws.send(message).await.is_err() {
                break;
            }
        }
    }));
    (addr, handle)
}

/// Whether a new TCP connection is closed by the server at once (refused)
/// rather than kept waiting for a request.
async fn closed_at_once(addr: SocketAddr) -> bool {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut byte = [0u8];
    match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut byte)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) => panic!("the server sent something unasked"),
        Err(_) => false,
    }
}

/// An upgraded WebSocket over raw TCP, for sending frames by hand.
async fn raw_websocket(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1);
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// A masked client frame with a zero key (the payload reads as is).
fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![b0];
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&u16::try_from(n).unwrap().to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(payload);
    frame
}

/// Reads to the end and returns the code of the server's Close frame.
async fn close_code(stream: &mut TcpStream) -> u16 {
    let mut wire = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut wire))
        .await
        .expect("the server ends the connection")
        .unwrap();
    assert_eq!(wire[0], 0x88, "{wire:?}");
    u16::from_be_bytes([wire[2], wire[3]])
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never: {what}"));
}

#[tokio::test]
async fn an_address_past_its_connection_limit_is_closed_at_once_and_gets_room_back() {
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .max_connections_per_ip(2)
        .limit_loopback(true);
    let (addr, handle) = start(server);
    let url = format!("ws://{addr}/");
    // Two WebSockets: their upgraded connections stay counted.
    let first = duplex_ws::connect(&url).await.unwrap();
    let mut second = duplex_ws::connect(&url).await.unwrap();
    assert!(closed_at_once(addr).await, "a third connection is refused");
    assert!(duplex_ws::connect(&url).await.is_err());
    second.close(1000, "bye").await.unwrap();
    while second.next().await.is_some() {}
    eventually("one WebSocket left", || handle.stats().websockets == 1).await;
    // The slot of the closed one is free again.
    let _third = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(ws) = duplex_ws::connect(&url).await {
                break ws;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("room again once a WebSocket closed");
    drop(first);
}

#[tokio::test]
async fn loopback_peers_are_exempt_by_default() {
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .max_connections_per_ip(1)
        .connection_rate(1, 1);
    let (addr, _handle) = start(server);
    let url = format!("ws://{addr}/");
    let mut open = Vec::new();
    for _ in 0..5 {
        open.push(duplex_ws::connect(&url).await.unwrap());
    }
}

#[tokio::test]
async fn an_address_opening_too_fast_is_refused_until_its_bucket_refills() {
    // Burst 3, then one new connection every 500 ms.
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .connection_rate(2, 3)
        .limit_loopback(true);
    let (addr, _handle) = start(server);
    for _ in 0..3 {
        assert!(!closed_at_once(addr).await, "within the burst");
    }
    // Judging each open took 300 ms, so the bucket may be full again (3):
    // twenty more within a second (two more tokens) go past it.
    let mut refused = 0;
    for _ in 0..20 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut byte = [0u8];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(50), stream.read(&mut byte)).await
        {
            refused += 1;
        }
    }
    assert!(
        refused >= 10,
        "past the rate, connections are refused: {refused}"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!closed_at_once(addr).await, "a token came back");
}

#[tokio::test]
async fn the_websocket_past_the_message_budget_gets_1013_and_shares_come_back() {
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .message_budget(64 << 10);
    let (addr, handle) = start(server);
    let budget = handle.message_budget().clone();
    assert_eq!(budget.limit(), 64 << 10);
    // A holds 40 KiB of an unfinished message.
    let mut a = raw_websocket(addr).await;
    a.write_all(&client_frame(0x02, &[1; 20 << 10]))
        .await
        .unwrap();
    a.write_all(&client_frame(0x00, &[1; 20 << 10]))
        .await
        .unwrap();
    eventually("A's 40 KiB counted", || budget.used() == 40 << 10).await;
    // B asks for 40 KiB more: over the budget.
    let mut b = raw_websocket(addr).await;
    b.write_all(&client_frame(0x02, &[2; 20 << 10]))
        .await
        .unwrap();
    b.write_all(&client_frame(0x00, &[2; 20 << 10]))
        .await
        .unwrap();
    assert_eq!(close_code(&mut b).await, 1013);
    eventually("B's share back", || budget.used() == 40 << 10).await;
    // A, unharmed, finishes and gets its 40 KiB back as one message.
    a.write_all(&client_frame(0x80, b"")).await.unwrap();
    let mut head = [0u8; 4];
    a.read_exact(&mut head).await.unwrap();
    assert_eq!(head, [0x82, 126, 0xa0, 0x00], "a 40 KiB binary message");
    let mut payload = vec![0u8; 40 << 10];
    a.read_exact(&mut payload).await.unwrap();
    assert!(payload.iter().all(|&b| b == 1));
    eventually("A's share back", || budget.used() == 0).await;
    // One that goes away in the middle of a message gives its share back.
    let mut c = raw_websocket(addr).await;
    c.write_all(&client_frame(0x02, &[3; 1000])).await.unwrap();
    eventually("C's share counted", || budget.used() == 1000).await;
    drop(c);
    eventually("C's share back", || budget.used() == 0).await;
}

#[tokio::test]
async fn a_compressed_message_that_arrives_whole_is_charged_as_it_inflates() {
    let mut config = duplex_ws::Config::server();
    config.deflate = Some(duplex_ws::DeflateConfig::default());
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .config(config)
        .message_budget(1 << 20);
    let (addr, _handle) = start(server);
    let mut ws = duplex_ws::ClientBuilder::new(format!("ws://{addr}/"))
        .connect()
        .await
        .unwrap();
    assert!(
        ws.extensions()
            .is_some_and(|e| e.contains("permessage-deflate")),
        "{:?}",
        ws.extensions()
    );
    // 4 MiB of zeros is a few KiB on the wire: one read, never seen
    // partly received, and four times the budget once inflated.
    ws.send(duplex_ws::Message::binary(vec![0u8; 4 << 20]))
        .await
        .unwrap();
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(duplex_ws::Event::Close { code, .. }) => break code,
                Some(_) => {}
                None => panic!("ended without a Close event"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(closed, 1013);
    // A small message still goes through.
    let mut ws = duplex_ws::ClientBuilder::new(format!("ws://{addr}/"))
        .connect()
        .await
        .unwrap();
    ws.send(duplex_ws::Message::text("x".repeat(8 << 10)))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(WAIT, ws.recv()).await.unwrap();
    assert_eq!(echoed.unwrap().unwrap().len(), 8 << 10);
}
