//! Bad input from the network, over real sockets: every malformed handshake
//! gets its HTTP status, every protocol violation its close code, and the
//! server keeps serving.

use std::net::SocketAddr;
use std::time::Duration;

use duplex_ws::{Config, Event, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn echo_server(config: Config) -> SocketAddr {
    let server = duplex_ws::Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .config(config);
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

/// Sends `request` raw and returns everything the server wrote before it
/// closed the connection.
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .ok();
    out
}

fn status_of(response: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn upgrade_request(extra: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn malformed_handshakes_get_their_status() {
    let addr = echo_server(Config::server()).await;
    let cases: Vec<(String, u16)> = vec![
        ("garbage\r\n\r\n".into(), 400),
        (
            "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
                .to_owned(),
            400, // no key
        ),
        (
            "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n"
                .to_owned(),
            400, // key not 16 bytes
        ),
        (
            format!(
                "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 8\r\n\r\n"
            ),
            426,
        ),
        (
            format!(
                "POST / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ),
            405,
        ),
        (
            format!(
                "GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n",
                "a".repeat(20_000)
            ),
            431,
        ),
    ];
    for (request, expected) in cases {
        let response = raw_exchange(addr, request.as_bytes()).await;
        assert_eq!(status_of(&response), expected, "for {:.60?}", request);
        if expected == 426 {
            let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
            assert!(text.contains("sec-websocket-version: 13"), "{text}");
        }
    }
    // Still serving.
    let mut ws = duplex_ws::connect(&format!("ws://{addr}/")).await.unwrap();
    ws.send("still here").await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Some(Message::text("still here")));
}

/// Opens a connection by hand, sends `frames`, and returns the close code
/// the server answered with (then checks the server closed the TCP
/// connection).
async fn close_code_for(addr: SocketAddr, frames: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(upgrade_request("").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed during handshake");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    assert_eq!(status_of(&buf), 101);
    buf.drain(..head_end);
    stream.write_all(frames).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf))
        .await
        .expect("the server closes the connection")
        .ok();
    // Skip any echoed frames; find the Close frame (opcode 8, unmasked).
    let mut pos = 0;
    while pos + 2 <= buf.len() {
        let opcode = buf[pos] & 0x0f;
        let (len, header) = match buf[pos + 1] & 0x7f {
            126 => (u16::from_be_bytes([buf[pos + 2], buf[pos + 3]]) as usize, 4),
            127 => panic!("unexpected huge frame"),
            n => (n as usize, 2),
        };
        if opcode == 8 {
            let body = &buf[pos + header..pos + header + len];
            return u16::from_be_bytes([body[0], body[1]]);
        }
        pos += header + len;
    }
    panic!("no close frame in {buf:?}");
}

fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
    let key = [1u8, 2, 3, 4];
    let mut out = vec![b0];
    if payload.len() < 126 {
        out.push(0x80 | payload.len() as u8);
    } else {
        out.push(0x80 | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

#[tokio::test]
async fn protocol_violations_get_their_close_codes() {
    let config = Config::server().max_message_size(1000);
    let addr = echo_server(config).await;
    // Unmasked client frame.
    assert_eq!(close_code_for(addr, &[0x81, 0x02, b'h', b'i']).await, 1002);
    // Reserved opcode, reserved bit, fragmented control frame.
    assert_eq!(close_code_for(addr, &masked(0x83, b"")).await, 1002);
    assert_eq!(close_code_for(addr, &masked(0xc1, b"x")).await, 1002);
    assert_eq!(close_code_for(addr, &masked(0x09, b"")).await, 1002);
    // Continuation with nothing to continue.
    assert_eq!(close_code_for(addr, &masked(0x80, b"x")).await, 1002);
    // Invalid close code and a 1-byte close body.
    assert_eq!(
        close_code_for(addr, &masked(0x88, &[0x03, 0xed])).await,
        1002
    );
    assert_eq!(close_code_for(addr, &masked(0x88, &[0x03])).await, 1002);
    // Invalid UTF-8 in text and in a close reason.
    assert_eq!(
        close_code_for(addr, &masked(0x81, &[0xce, 0xba, 0xff])).await,
        1007
    );
    assert_eq!(
        close_code_for(addr, &masked(0x88, &[0x03, 0xe8, 0xff])).await,
        1007
    );
    // Over the message limit: refused from the header alone.
    assert_eq!(
        close_code_for(addr, &masked(0x82, &[0u8; 1001])).await,
        1009
    );
    // A clean close is echoed.
    assert_eq!(
        close_code_for(addr, &masked(0x88, &[0x0f, 0xa0, b'b', b'y', b'e'])).await,
        4000
    );
}

#[tokio::test]
async fn client_rejects_bad_server_answers() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let answers: [&[u8]; 3] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: wrong\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        ];
        for answer in answers {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            stream.write_all(answer).await.unwrap();
            // The third answer never finishes its head: the client's
            // handshake timeout must end it.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let url = format!("ws://{addr}/");
    let err = duplex_ws::connect(&url).await.unwrap_err();
    assert!(err.to_string().contains("200"), "{err}");
    let err = duplex_ws::connect(&url).await.unwrap_err();
    assert!(matches!(err, duplex_ws::Error::Handshake(_)), "{err}");
    let config = Config::client().handshake_timeout(Duration::from_millis(200));
    let err = duplex_ws::ClientBuilder::new(url)
        .config(config)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, duplex_ws::Error::HandshakeTimeout), "{err}");
}

#[tokio::test]
async fn client_fails_on_masked_server_frames() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut raw = Vec::new();
        while !raw.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8];
            stream.read_exact(&mut byte).await.unwrap();
            raw.push(byte[0]);
        }
        let text = String::from_utf8(raw).unwrap();
        let key = text
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap()
            .trim()
            .to_owned();
        let accept = duplex_proto_accept(&key);
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&masked(0x81, b"masked")).await.unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
    });
    let mut ws = duplex_ws::ClientBuilder::new(format!("ws://{addr}/"))
        .config(
            Config::client()
                .deflate(None)
                .close_timeout(Duration::from_millis(300)),
        )
        .connect()
        .await
        .unwrap();
    assert!(matches!(ws.next().await, Some(Event::Open)));
    match ws.next().await {
        Some(Event::Error(duplex_ws::Error::Protocol(e))) => assert_eq!(e.close_code().0, 1002),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    match ws.next().await {
        Some(Event::Close {
            code, was_clean, ..
        }) => assert_eq!((code.0, was_clean), (1006, false)),
        other => panic!("expected the close event, got {other:?}"),
    }
}

fn duplex_proto_accept(key: &str) -> String {
    duplex_proto::handshake::accept_key(key.as_bytes())
}
