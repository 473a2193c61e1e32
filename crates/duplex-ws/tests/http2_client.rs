//! The client's WebSocket over HTTP/2 (RFC 8441) against an in-test hyper 1
//! HTTP/2 server with extended CONNECT, over TLS (ALPN h2, certificates made
//! at run time) and over cleartext with prior knowledge (h2c): echo of text
//! and of 64 KiB binary, the close handshake seen by both ends, two
//! WebSockets on one HTTP/2 connection, and the typed failures (no
//! SETTINGS_ENABLE_CONNECT_PROTOCOL, a non-200 answer, ALPN other than h2,
//! an HTTP/1.1 server, a silent server).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use duplex_testing::pki::{Ca, KeyFormat, KeyKind};
use duplex_ws::tls::{TlsAcceptor, rustls};
use duplex_ws::{
    ClientBuilder, Config, Error, Event, Http2Connection, Http2Error, MaybeTlsStream, Message,
    Role, WebSocket,
};

type Client = WebSocket<MaybeTlsStream<TcpStream>>;

/// How the test server behaves.
#[derive(Debug, Clone, Copy)]
struct Behaviour {
    /// Send SETTINGS_ENABLE_CONNECT_PROTOCOL.
    enable_connect: bool,
    /// The status answering a good CONNECT.
    status: StatusCode,
}

const GOOD: Behaviour = Behaviour {
    enable_connect: true,
    status: StatusCode::OK,
};

/// What the server saw: one line per event, for the test to assert on.
type Seen = mpsc::UnboundedReceiver<String>;

struct Server {
    addr: SocketAddr,
    seen: Seen,
    /// TCP connections accepted.
    connections: Arc<AtomicUsize>,
}

/// An HTTP/2 server on 127.0.0.1, over TLS if `tls` is given.
async fn h2_server(tls: Option<TlsAcceptor>, behaviour: Behaviour) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, seen) = mpsc::unbounded_channel();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            let (tls, tx) = (tls.clone(), tx.clone());
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => match acceptor.accept(tcp).await {
                        Ok(stream) => serve_h2(stream, behaviour, tx).await,
                        Err(e) => {
                            let _ = tx.send(format!("tls failed: {e}"));
                        }
                    },
                    None => serve_h2(tcp, behaviour, tx).await,
                }
            });
        }
    });
    Server {
        addr,
        seen,
        connections,
    }
}

async fn serve_h2<S>(io: S, behaviour: Behaviour, tx: mpsc::UnboundedSender<String>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    if behaviour.enable_connect {
        builder.enable_connect_protocol();
    }
    let service = service_fn(move |req| {
        let tx = tx.clone();
        async move { Ok::<_, Infallible>(handle(req, behaviour, tx)) }
    });
    let _ = builder.serve_connection(TokioIo::new(io), service).await;
}

/// Checks an extended CONNECT (RFC 8441 §5), answers it, and runs an echo
/// WebSocket on the stream.
fn handle(
    mut req: Request<Incoming>,
    behaviour: Behaviour,
    tx: mpsc::UnboundedSender<String>,
) -> Response<Empty<Bytes>> {
    let headers = req.headers();
    let mut problems = Vec::new();
    if req.method() != Method::CONNECT {
        problems.push("method");
    }
    if req
        .extensions()
        .get::<hyper::ext::Protocol>()
        .map(|p| p.as_str())
        != Some("websocket")
    {
        problems.push(":protocol");
    }
    if headers.get("sec-websocket-version").map(|v| v.as_bytes()) != Some(b"13") {
        problems.push("version");
    }
    for name in ["sec-websocket-key", "upgrade", "connection", "host"] {
        if headers.contains_key(name) {
            problems.push(name);
        }
    }
    let answer = |status: StatusCode| {
        let mut response = Response::new(Empty::new());
        *response.status_mut() = status;
        response
    };
    if !problems.is_empty() {
        let _ = tx.send(format!("bad request: {problems:?}"));
        return answer(StatusCode::BAD_REQUEST);
    }
    let _ = tx.send(format!(
        "CONNECT {} {}",
        req.uri().authority().map_or("-", |a| a.as_str()),
        req.uri().path()
    ));
    if behaviour.status != StatusCode::OK {
        return answer(behaviour.status);
    }
    let offered_chat = headers
        .get_all("sec-websocket-protocol")
        .iter()
        .any(|v| v.to_str().unwrap().split(',').any(|p| p.trim() == "chat"));
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                let _ = tx.send(format!("upgrade failed: {e}"));
                return;
            }
        };
        let mut ws = WebSocket::from_raw(TokioIo::new(upgraded), Role::Server, &Config::server());
        while let Some(event) = ws.next().await {
            match event {
                Event::Message(message) => {
                    if ws.send(message).await.is_err() {
                        break;
                    }
                }
                Event::Close {
                    code, was_clean, ..
                } => {
                    let _ = tx.send(format!("closed {code} clean={was_clean}"));
                }
                Event::Open | Event::Error(_) => {}
            }
        }
    });
    let mut response = answer(StatusCode::OK);
    if offered_chat {
        response
            .headers_mut()
            .insert("sec-websocket-protocol", "chat".parse().unwrap());
    }
    response
}

/// A TLS acceptor for 127.0.0.1 with these ALPN protocols, and the CA's
/// certificate for the client to trust.
fn acceptor(
    name: &str,
    alpn: &[&[u8]],
) -> (TlsAcceptor, rustls::pki_types::CertificateDer<'static>) {
    let ca = Ca::new("duplex http2 test CA");
    let leaf = ca.leaf(&["localhost", "127.0.0.1"], KeyKind::EcdsaP256);
    let dir = duplex_testing::pki::temp_dir(name);
    let (cert, key) = leaf.write(&dir, KeyFormat::Pkcs8);
    let mut config = duplex_ws::tls::load_server_config(&cert, &key).unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    (TlsAcceptor::new(config), ca.der())
}

async fn next_seen(seen: &mut Seen) -> String {
    tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .expect("the server reports in time")
        .expect("the server is running")
}

/// Echoes a text and a 64 KiB binary message, then closes with 1000.
async fn echo_and_close(ws: &mut Client) {
    ws.send("hello over h2").await.unwrap();
    assert_eq!(
        ws.recv().await.unwrap(),
        Some(Message::text("hello over h2"))
    );
    let big: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Some(Message::binary(big)));
    ws.close(1000, "done").await.unwrap();
    loop {
        match ws.next().await.expect("a Close event ends the stream") {
            Event::Close {
                code, was_clean, ..
            } => {
                assert_eq!((code.0, was_clean), (1000, true));
                break;
            }
            Event::Open => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn wss_over_h2_echoes_and_closes_cleanly() {
    let (acceptor, root) = acceptor("h2-echo", &[b"h2"]);
    let mut server = h2_server(Some(acceptor), GOOD).await;
    let url = format!("wss://127.0.0.1:{}/chat?room=1", server.addr.port());
    let mut ws = ClientBuilder::new(&url)
        .add_root_certificate(root)
        .protocols(["chat", "superchat"])
        .http2(true)
        .connect()
        .await
        .unwrap();
    assert_eq!(
        next_seen(&mut server.seen).await,
        format!("CONNECT 127.0.0.1:{} /chat", server.addr.port())
    );
    assert_eq!(ws.url(), url);
    assert_eq!(ws.protocol(), Some("chat"));
    // The server answered no extension, so deflate is off.
    assert_eq!(ws.extensions(), None);
    assert!(ws.get_ref().is_http2());
    assert!(ws.get_ref().is_tls());
    assert!(ws.get_ref().get_ref().is_none());
    echo_and_close(&mut ws).await;
    assert_eq!(next_seen(&mut server.seen).await, "closed 1000 clean=true");
}

#[tokio::test]
async fn h2c_with_prior_knowledge_echoes_and_closes_cleanly() {
    let mut server = h2_server(None, GOOD).await;
    let url = format!("ws://127.0.0.1:{}/", server.addr.port());
    let mut ws = ClientBuilder::new(&url)
        .http2(true)
        .connect()
        .await
        .unwrap();
    assert!(next_seen(&mut server.seen).await.starts_with("CONNECT "));
    assert_eq!(ws.url(), url);
    assert_eq!(ws.protocol(), None);
    assert!(ws.get_ref().is_http2());
    assert!(!ws.get_ref().is_tls());
    echo_and_close(&mut ws).await;
    assert_eq!(next_seen(&mut server.seen).await, "closed 1000 clean=true");
}

#[tokio::test]
async fn two_websockets_share_one_http2_connection() {
    let (acceptor, root) = acceptor("h2-shared", &[b"h2"]);
    let mut server = h2_server(Some(acceptor), GOOD).await;
    let port = server.addr.port();
    let base = ClientBuilder::new(format!("wss://127.0.0.1:{port}/")).add_root_certificate(root);
    let h2 = Http2Connection::connect(&base).await.unwrap();
    let mut a = h2
        .websocket(ClientBuilder::new(format!("wss://127.0.0.1:{port}/a")))
        .await
        .unwrap();
    let mut b = h2
        .websocket(ClientBuilder::new(format!("wss://127.0.0.1:{port}/b")))
        .await
        .unwrap();
    // Interleaved: each stream gets its own echo.
    a.send("to a").await.unwrap();
    b.send("to b").await.unwrap();
    assert_eq!(b.recv().await.unwrap(), Some(Message::text("to b")));
    assert_eq!(a.recv().await.unwrap(), Some(Message::text("to a")));
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    // Closing one leaves the other working.
    echo_and_close(&mut a).await;
    echo_and_close(&mut b).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(next_seen(&mut server.seen).await);
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            format!("CONNECT 127.0.0.1:{port} /a"),
            format!("CONNECT 127.0.0.1:{port} /b"),
            "closed 1000 clean=true".to_owned(),
            "closed 1000 clean=true".to_owned(),
        ]
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    // Another origin is refused rather than sent down this connection.
    let err = h2
        .websocket(ClientBuilder::new("wss://localhost:1/"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Http2(Http2Error::OtherOrigin { .. })),
        "{err}"
    );
}

#[tokio::test]
async fn a_server_without_extended_connect_is_refused() {
    let mut server = h2_server(
        None,
        Behaviour {
            enable_connect: false,
            ..GOOD
        },
    )
    .await;
    let url = format!("ws://127.0.0.1:{}/", server.addr.port());
    let err = ClientBuilder::new(&url)
        .http2(true)
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Http2(Http2Error::ExtendedConnectDisabled { host }) if host == "127.0.0.1"
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("SETTINGS_ENABLE_CONNECT_PROTOCOL"),
        "{err}"
    );
    // No CONNECT was sent.
    assert!(server.seen.try_recv().is_err());
}

#[tokio::test]
async fn a_non_200_answer_is_an_error_with_the_status() {
    let mut server = h2_server(
        None,
        Behaviour {
            status: StatusCode::FORBIDDEN,
            ..GOOD
        },
    )
    .await;
    let url = format!("ws://127.0.0.1:{}/private", server.addr.port());
    let err = ClientBuilder::new(&url)
        .http2(true)
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Handshake(duplex_proto::handshake::HandshakeError::ConnectStatus(403))
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("403"), "{err}");
    assert!(next_seen(&mut server.seen).await.starts_with("CONNECT "));
}

#[tokio::test]
async fn alpn_other_than_h2_is_refused() {
    // A server whose ALPN lacks h2 refuses the TLS handshake; one with no
    // ALPN at all selects nothing. Either way: no HTTP/1.1 fallback.
    for (name, alpn) in [
        ("h2-alpn-http11", &[b"http/1.1".as_slice()][..]),
        ("h2-alpn-none", &[][..]),
    ] {
        let (acceptor, root) = acceptor(name, alpn);
        let server = h2_server(Some(acceptor), GOOD).await;
        let url = format!("wss://127.0.0.1:{}/", server.addr.port());
        let err = ClientBuilder::new(&url)
            .add_root_certificate(root)
            .http2(true)
            .connect()
            .await
            .unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Http2(Http2Error::NotNegotiated { selected: None, .. })
            ),
            "{name}: {err:?}"
        );
        assert!(err.to_string().contains("HTTP/2"), "{err}");
    }
}

#[tokio::test]
async fn an_http11_server_is_not_http2() {
    // What an HTTP/1.1 server answers to the HTTP/2 connection preface.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 64];
        let _ = tcp.read(&mut buf).await;
        let _ = tcp
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await;
        let _ = tcp.shutdown().await;
    });
    let err = ClientBuilder::new(format!("ws://127.0.0.1:{port}/"))
        .http2(true)
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Http2(Http2Error::NotHttp2 { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_handshake_timeout_covers_a_silent_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        // Accepts, reads the preface, never answers.
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        while tcp.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    });
    let config = Config::client().handshake_timeout(Duration::from_millis(300));
    let err = ClientBuilder::new(format!("ws://127.0.0.1:{port}/"))
        .config(config)
        .http2(true)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::HandshakeTimeout), "{err:?}");
}

#[tokio::test]
async fn connect_on_a_callers_stream_is_http11_only() {
    let (a, _b) = tokio::io::duplex(64);
    let err = ClientBuilder::new("ws://127.0.0.1/")
        .http2(true)
        .connect_on(a)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Http2(Http2Error::CallerStream)),
        "{err:?}"
    );
}
