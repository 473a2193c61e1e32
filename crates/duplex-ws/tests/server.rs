//! The server core end to end over real sockets: the WebSocket limit holds
//! however a WebSocket was upgraded (fresh or kept-alive connections), a
//! slot frees on close, the hook accepts or refuses, every WebSocket gets
//! 1001 at shutdown, the shutdown timeout drops what will not close, and a
//! silent client is dropped after the handshake timeout.

// The hook refuses with a whole response, by design.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use duplex_ws::{Config, Event, Server, ServerHandle, Upgrade};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(10);

/// A server whose service answers `GET /` with a page and upgrades any
/// WebSocket request to an echo.
async fn page_and_echo(max: usize) -> (SocketAddr, ServerHandle, JoinHandle<std::io::Result<()>>) {
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .max_connections(max);
    let addr = server.local_addr().unwrap();
    let handle = server.handle();
    let service = hyper::service::service_fn(|mut request: Request<Incoming>| async move {
        if !duplex_ws::is_upgrade_request(&request) {
            return Ok::<_, Infallible>(Response::new("page\n".to_owned()));
        }
        Ok(match Upgrade::new(&mut request, &Config::server()) {
            Ok(upgrade) => upgrade.on_upgrade(echo),
            Err(e) => e.to_response(),
        })
    });
    let task = tokio::spawn(server.serve_service(service));
    (addr, handle, task)
}

async fn echo(mut ws: duplex_ws::WebSocket<duplex_ws::ServerStream>) {
    while let Ok(Some(message)) = ws.recv().await {
        if ws.send(message).await.is_err() {
            break;
        }
    }
}

/// Reads one HTTP response head (and a short body, if any arrived with it).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut byte))
            .await
            .expect("an answer in time")
            .unwrap();
        assert_eq!(
            n,
            1,
            "connection closed after {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .unwrap_or(0)
}

/// A kept-alive connection: `GET /` first, then the Upgrade on the same
/// socket. Returns the socket and the status of the upgrade's answer.
async fn upgrade_after_get(addr: SocketAddr) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = vec![0u8; content_length(&head)];
    stream.read_exact(&mut body).await.unwrap();
    stream
        .write_all(
            b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    let status = head.split(' ').nth(1).unwrap().to_owned();
    (stream, status)
}

async fn wait_for(handle: &ServerHandle, what: impl Fn(&duplex_ws::ServerStats) -> bool) {
    tokio::time::timeout(WAIT, async {
        while !what(&handle.stats()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("stats never got there: {:?}", handle.stats()));
}

#[tokio::test]
async fn the_limit_counts_upgrades_on_kept_alive_connections() {
    let (addr, handle, _task) = page_and_echo(4).await;
    let mut open = Vec::new();
    for _ in 0..4 {
        let (stream, status) = upgrade_after_get(addr).await;
        assert_eq!(status, "101");
        open.push(stream);
    }
    wait_for(&handle, |s| s.websockets == 4).await;
    let (_refused, status) = upgrade_after_get(addr).await;
    assert_eq!(
        status, "503",
        "a fifth WebSocket is refused before upgrading"
    );
    let (_refused, status) = upgrade_after_get(addr).await;
    assert_eq!(status, "503");
    assert_eq!(handle.stats().refused, 2);
    assert_eq!(handle.stats().websockets_http1, 4);

    // A slot frees when its WebSocket ends.
    drop(open.pop());
    wait_for(&handle, |s| s.websockets == 3).await;
    let (_again, status) = upgrade_after_get(addr).await;
    assert_eq!(status, "101");
}

#[tokio::test]
async fn the_limit_counts_clients_of_the_library() {
    let (addr, handle, _task) = page_and_echo(2).await;
    let url = format!("ws://{addr}/");
    let mut a = duplex_ws::connect(&url).await.unwrap();
    let _b = duplex_ws::connect(&url).await.unwrap();
    let err = duplex_ws::connect(&url).await.unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    a.close(1000, "").await.unwrap();
    while a.next().await.is_some() {}
    wait_for(&handle, |s| s.websockets == 1).await;
    let mut c = duplex_ws::connect(&url).await.unwrap();
    assert!(matches!(c.next().await, Some(Event::Open)));
    c.send("again").await.unwrap();
    assert!(
        matches!(c.next().await, Some(Event::Message(m)) if m == duplex_ws::Message::text("again"))
    );
}

#[tokio::test]
async fn shutdown_closes_every_websocket_with_1001_and_returns() {
    let (addr, handle, task) = page_and_echo(100).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut ws = duplex_ws::connect(&format!("ws://{addr}/")).await.unwrap();
        assert!(matches!(ws.next().await, Some(Event::Open)));
        clients.push(ws);
    }
    wait_for(&handle, |s| s.websockets == 3).await;
    handle.shutdown();
    for mut ws in clients {
        let close = close_event(&mut ws).await;
        assert_eq!(close, (1001, "server shutting down".to_owned(), true));
    }
    tokio::time::timeout(WAIT, task)
        .await
        .expect("serve returns once every connection is closed")
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn shutdown_drops_a_handler_that_will_not_close_after_the_timeout() {
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .shutdown_timeout(Duration::from_millis(200));
    let addr = server.local_addr().unwrap();
    let handle = server.handle();
    // This handler never reads, so it never sees the 1001.
    let task = tokio::spawn(server.serve(|ws| async move {
        let _keep = ws;
        std::future::pending::<()>().await;
    }));
    let mut ws = duplex_ws::connect(&format!("ws://{addr}/")).await.unwrap();
    wait_for(&handle, |s| s.websockets == 1).await;
    handle.shutdown();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("serve returns after the shutdown timeout")
        .unwrap()
        .unwrap();
    // The connection was dropped without a closing handshake.
    let (code, _, was_clean) = close_event(&mut ws).await;
    assert_eq!((code, was_clean), (1006, false));
    assert_eq!(handle.stats().websockets, 0);
}

#[tokio::test]
async fn the_hook_accepts_with_a_config_or_refuses_with_a_response() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.serve_with(
        |request, conn| {
            assert!(conn.peer_addr.ip().is_loopback());
            match request.uri.path() {
                "/chat" => {
                    let mut config = Config::server();
                    config.protocols = vec!["chat.v1".to_owned()];
                    Ok(config)
                }
                _ => Err(Response::builder()
                    .status(StatusCode::NOT_FOUND)
                    .body("no WebSocket here\n".to_owned())
                    .unwrap()),
            }
        },
        |mut ws| async move {
            let _ = ws.send(format!("protocol {:?}", ws.protocol())).await;
            while ws.next().await.is_some() {}
        },
    ));
    let mut ws = duplex_ws::ClientBuilder::new(format!("ws://{addr}/chat"))
        .protocols(["chat.v1"])
        .connect()
        .await
        .unwrap();
    assert_eq!(ws.protocol(), Some("chat.v1"));
    assert!(matches!(ws.next().await, Some(Event::Open)));
    match ws.next().await {
        Some(Event::Message(m)) => {
            assert_eq!(m, duplex_ws::Message::text("protocol Some(\"chat.v1\")"))
        }
        other => panic!("{other:?}"),
    }
    let err = duplex_ws::connect(&format!("ws://{addr}/elsewhere"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");

    // A plain request to `serve_with` gets 426 and says why.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 426"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{head}"
    );
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    let mut config = Config::server();
    config.handshake_timeout = Duration::from_millis(300);
    let server = Server::bind("127.0.0.1:0").await.unwrap().config(config);
    let addr = server.local_addr().unwrap();
    let handle = server.handle();
    tokio::spawn(server.serve(echo));
    for partial in [&b""[..], b"GET / HTTP/1.1\r\nHost: x\r\n"] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(partial).await.unwrap();
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut rest))
            .await
            .expect("the server ends the connection")
            .ok();
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }
    wait_for(&handle, |s| s.connections == 0).await;
}

/// Reads events until the Close event, and returns it.
async fn close_event<S>(ws: &mut duplex_ws::WebSocket<S>) -> (u16, String, bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Event::Close {
                    code,
                    reason,
                    was_clean,
                }) => break (code.0, reason, was_clean),
                Some(_) => {}
                None => panic!("no close event"),
            }
        }
    })
    .await
    .expect("a close event in time")
}

#[tokio::test]
async fn http2_streams_share_a_connection_count_against_the_limit_and_get_1001() {
    let (addr, handle, task) = page_and_echo(2).await;
    // Prior knowledge over plain TCP (h2c): the same server core.
    let base = duplex_ws::ClientBuilder::new(format!("ws://{addr}/")).http2(true);
    let h2 = duplex_ws::Http2Connection::connect(&base).await.unwrap();
    let mut a = h2
        .websocket(duplex_ws::ClientBuilder::new(format!("ws://{addr}/a")))
        .await
        .unwrap();
    let mut b = h2
        .websocket(duplex_ws::ClientBuilder::new(format!("ws://{addr}/b")))
        .await
        .unwrap();
    for (ws, text) in [(&mut a, "on a"), (&mut b, "on b")] {
        assert!(matches!(ws.next().await, Some(Event::Open)));
        ws.send(text).await.unwrap();
        assert_eq!(
            ws.recv().await.unwrap(),
            Some(duplex_ws::Message::text(text))
        );
    }
    let stats = handle.stats();
    assert_eq!((stats.websockets_http2, stats.websockets_http1), (2, 0));
    assert_eq!(stats.connections, 1, "both WebSockets ride one connection");

    // A third stream on the same connection is refused before upgrading.
    let err = h2
        .websocket(duplex_ws::ClientBuilder::new(format!("ws://{addr}/c")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");

    // Shutdown sends 1001 on each stream, and the server returns.
    handle.shutdown();
    assert_eq!(
        close_event(&mut a).await,
        (1001, "server shutting down".into(), true)
    );
    assert_eq!(
        close_event(&mut b).await,
        (1001, "server shutting down".into(), true)
    );
    tokio::time::timeout(WAIT, task)
        .await
        .expect("serve returns")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn http2_negotiates_permessage_deflate_and_subprotocols_in_the_headers() {
    let server = Server::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let mut config = Config::server();
    config.deflate = Some(duplex_ws::DeflateConfig::default());
    config.protocols = vec!["chat.v2".to_owned()];
    tokio::spawn(server.config(config).serve(echo));
    let mut ws = duplex_ws::ClientBuilder::new(format!("ws://{addr}/"))
        .http2(true)
        .protocols(["chat.v1", "chat.v2"])
        .connect()
        .await
        .unwrap();
    assert!(ws.get_ref().is_http2());
    assert_eq!(ws.protocol(), Some("chat.v2"));
    assert!(
        ws.extensions().unwrap().starts_with("permessage-deflate"),
        "{:?}",
        ws.extensions()
    );
    assert!(matches!(ws.next().await, Some(Event::Open)));
    // Compressible, and larger than one HTTP/2 flow-control window.
    let text = "duplex over HTTP/2 ".repeat(10_000);
    ws.send(text.as_str()).await.unwrap();
    assert_eq!(
        ws.recv().await.unwrap(),
        Some(duplex_ws::Message::text(text))
    );
    ws.close(1000, "done").await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), None);
}

/// The status of an upgrade to `addr` with these `Host` and `Origin`.
async fn upgrade_status(addr: SocketAddr, host: &str, origin: Option<&str>) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    let request = format!(
        "GET /chat HTTP/1.1\r\nHost: {host}\r\n{origin}Upgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await;
    head.split(' ').nth(1).unwrap().to_owned()
}

#[tokio::test]
async fn the_origin_policy_refuses_foreign_pages_and_rebound_hosts() {
    let (addr, _handle, _task) = page_and_echo(100).await;
    let own = format!("http://{addr}");
    let port = addr.port();
    for (host, origin, status) in [
        (format!("127.0.0.1:{port}"), None, "101"),
        (format!("127.0.0.1:{port}"), Some(own.as_str()), "101"),
        (
            format!("localhost:{port}"),
            Some("http://localhost:3000"),
            "101",
        ),
        (format!("localhost:{port}"), Some("null"), "403"),
        (
            format!("127.0.0.1:{port}"),
            Some("https://evil.example"),
            "403",
        ),
        (
            "rebind.example".to_owned(),
            Some("http://rebind.example"),
            "421",
        ),
        ("rebind.example".to_owned(), None, "421"),
    ] {
        assert_eq!(
            upgrade_status(addr, &host, origin).await,
            status,
            "{host} {origin:?}"
        );
    }
}

#[tokio::test]
async fn allowed_origins_are_let_in_and_any_lets_everyone_in() {
    let policy = duplex_ws::OriginPolicy::new()
        .allow("https://*.example.com")
        .unwrap();
    let server = Server::bind("127.0.0.1:0").await.unwrap().origins(policy);
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.serve(echo));
    assert_eq!(
        upgrade_status(addr, "localhost", Some("https://app.example.com")).await,
        "101"
    );
    assert_eq!(
        upgrade_status(addr, "localhost", Some("https://example.com")).await,
        "403"
    );

    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .origins(duplex_ws::OriginPolicy::any());
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.serve(echo));
    assert_eq!(
        upgrade_status(addr, "localhost", Some("https://evil.example")).await,
        "101"
    );
    // Any origin, but DNS rebinding is still refused on loopback.
    assert_eq!(upgrade_status(addr, "rebind.example", None).await, "421");
}
