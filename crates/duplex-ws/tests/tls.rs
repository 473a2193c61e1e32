//! TLS end to end over real sockets, with certificates made at run time
//! (rcgen): `wss://` echo in both directions with every key type, typed
//! certificate failures (wrong host, unknown issuer, expired), a TLS client
//! on a plain port and plain text on a TLS port (clean errors, the server
//! keeps serving), the handshake timeout, and certificate reload.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use duplex_testing::pki::{Ca, KeyFormat, KeyKind};
use duplex_ws::tls::{TlsAcceptor, TlsError, rustls};
use duplex_ws::{ClientBuilder, Config, Error, Event, MaybeTlsStream, Message, WebSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

type Client = WebSocket<MaybeTlsStream<TcpStream>>;
/// How each connection ended, as the server saw it.
type Outcomes = mpsc::UnboundedReceiver<Result<(), Error>>;

/// A `wss://` server that greets each client with "welcome NAME", NAME being
/// the SNI the client sent or "-" (server to client first), then echoes
/// until the client closes.
async fn tls_echo_server(acceptor: TlsAcceptor) -> (SocketAddr, Outcomes) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let result = async {
                    let tls = acceptor.accept(tcp).await?;
                    let sni = tls.get_ref().1.server_name().unwrap_or("-").to_owned();
                    let mut ws = duplex_ws::accept(tls).await?;
                    ws.send(format!("welcome {sni}")).await?;
                    while let Some(message) = ws.recv().await? {
                        ws.send(message).await?;
                    }
                    Ok(())
                }
                .await;
                let _ = tx.send(result);
            });
        }
    });
    (addr, rx)
}

/// A plain `ws://` echo server that reports each connection's outcome.
async fn plain_echo_server() -> (SocketAddr, Outcomes) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move {
                let result = async {
                    let mut ws = duplex_ws::accept(tcp).await?;
                    while let Some(message) = ws.recv().await? {
                        ws.send(message).await?;
                    }
                    Ok(())
                }
                .await;
                let _ = tx.send(result);
            });
        }
    });
    (addr, rx)
}

async fn next_outcome(outcomes: &mut Outcomes) -> Result<(), Error> {
    tokio::time::timeout(Duration::from_secs(10), outcomes.recv())
        .await
        .expect("the server reports the connection's end")
        .expect("the server is running")
}

async fn wss(url: &str, roots: &[&Ca]) -> Result<Client, Error> {
    let mut builder = ClientBuilder::new(url);
    for ca in roots {
        builder = builder.add_root_certificate(ca.der());
    }
    builder.connect().await
}

/// The greeting (which names the SNI the server saw), a text and a 64 KiB
/// binary echo, and a clean close.
async fn talk(mut ws: Client) {
    let sni = match ws.url() {
        url if url.starts_with("wss://localhost") => "localhost",
        _ => "-", // RFC 6066 §3: no SNI for an IP address
    };
    let greeting = ws.recv().await.unwrap().unwrap();
    assert_eq!(greeting, Message::from(format!("welcome {sni}")));
    ws.send("hello over TLS").await.unwrap();
    assert_eq!(
        ws.recv().await.unwrap().unwrap(),
        Message::from("hello over TLS")
    );
    let blob: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
    ws.send(Message::Binary(blob.clone().into())).await.unwrap();
    assert_eq!(
        ws.recv().await.unwrap().unwrap(),
        Message::Binary(blob.into())
    );
    ws.close(1000, "done").await.unwrap();
    let mut close = None;
    while let Some(event) = ws.next().await {
        if let Event::Close {
            code, was_clean, ..
        } = event
        {
            close = Some((code.0, was_clean));
        }
    }
    assert_eq!(close, Some((1000, true)));
}

fn tls_error(result: Result<Client, Error>) -> TlsError {
    match result {
        Err(Error::Tls(e)) => e,
        Err(other) => panic!("expected a TLS error, got {other:?}"),
        Ok(ws) => panic!("expected a TLS error, connected: {ws:?}"),
    }
}

fn acceptor_for(leaf: &duplex_testing::pki::Leaf, dir: &str, format: KeyFormat) -> TlsAcceptor {
    let (cert, key) = leaf.write(&duplex_testing::pki::temp_dir(dir), format);
    TlsAcceptor::from_pem_files(&cert, &key).unwrap()
}

#[tokio::test]
async fn echo_over_tls_with_every_key_type_and_format() {
    let ca = Ca::new("duplex test CA");
    let cases = [
        (KeyKind::EcdsaP256, KeyFormat::Pkcs8),
        (KeyKind::EcdsaP256, KeyFormat::Sec1),
        (KeyKind::EcdsaP384, KeyFormat::Sec1),
        (KeyKind::Ed25519, KeyFormat::Pkcs8),
        (KeyKind::Rsa2048, KeyFormat::Pkcs8),
        (KeyKind::Rsa2048, KeyFormat::Pkcs1),
    ];
    for (kind, format) in cases {
        let leaf = ca.leaf(&["localhost", "127.0.0.1"], kind);
        let acceptor = acceptor_for(&leaf, &format!("echo-{kind:?}-{format:?}"), format);
        let (addr, mut outcomes) = tls_echo_server(acceptor).await;
        for url in [
            format!("wss://127.0.0.1:{}/", addr.port()),
            format!("wss://localhost:{}/chat?room=1", addr.port()),
        ] {
            let ws = wss(&url, &[&ca])
                .await
                .unwrap_or_else(|e| panic!("{kind:?} {format:?} {url}: {e}"));
            let stream = ws.get_ref();
            assert!(stream.is_tls());
            let session = stream.tls_session().unwrap();
            assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
            talk(ws).await;
            next_outcome(&mut outcomes).await.unwrap();
        }
    }
}

#[tokio::test]
async fn a_caller_tls_config_is_used_as_given() {
    let ca = Ca::new("duplex test CA");
    let leaf = ca.leaf(&["localhost"], KeyKind::EcdsaP256);
    let (addr, mut outcomes) =
        tls_echo_server(acceptor_for(&leaf, "caller-config", KeyFormat::Pkcs8)).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let ws = ClientBuilder::new(format!("wss://localhost:{}/", addr.port()))
        .tls_config(Arc::new(config))
        .connect()
        .await
        .unwrap();
    // No ALPN offered: the server's http/1.1 is not forced on the client.
    assert_eq!(ws.get_ref().tls_session().unwrap().alpn_protocol(), None);
    talk(ws).await;
    next_outcome(&mut outcomes).await.unwrap();
}

#[tokio::test]
async fn wrong_host_is_a_typed_error_and_the_server_keeps_serving() {
    let ca = Ca::new("duplex test CA");
    let leaf = ca.leaf(&["localhost"], KeyKind::EcdsaP256);
    let (addr, mut outcomes) =
        tls_echo_server(acceptor_for(&leaf, "wrong-host", KeyFormat::Pkcs8)).await;
    let err = tls_error(wss(&format!("wss://127.0.0.1:{}/", addr.port()), &[&ca]).await);
    let text = err.to_string();
    match &err {
        TlsError::WrongHost { host, presented } => {
            assert_eq!(host, "127.0.0.1");
            assert!(
                presented.iter().any(|n| n.contains("localhost")),
                "{presented:?}"
            );
        }
        other => panic!("expected WrongHost, got {other:?}"),
    }
    assert!(
        text.contains("not valid for 127.0.0.1") && text.contains("localhost"),
        "{text}"
    );
    // The server saw the client's alert, and goes on.
    assert!(matches!(
        next_outcome(&mut outcomes).await,
        Err(Error::Tls(TlsError::Handshake(_)))
    ));
    let ws = wss(&format!("wss://localhost:{}/", addr.port()), &[&ca])
        .await
        .unwrap();
    talk(ws).await;
    next_outcome(&mut outcomes).await.unwrap();
}

#[tokio::test]
async fn an_untrusted_issuer_is_a_typed_error() {
    let ca = Ca::new("duplex test CA");
    let other_ca = Ca::new("someone else's CA");
    let leaf = ca.leaf(&["localhost", "127.0.0.1"], KeyKind::EcdsaP256);
    let (addr, mut outcomes) =
        tls_echo_server(acceptor_for(&leaf, "untrusted", KeyFormat::Pkcs8)).await;
    let url = format!("wss://127.0.0.1:{}/", addr.port());
    // Platform roots only, then platform roots plus the wrong CA.
    for roots in [&[][..], &[&other_ca][..]] {
        let err = tls_error(wss(&url, roots).await);
        assert!(
            matches!(&err, TlsError::UnknownIssuer { host } if host == "127.0.0.1"),
            "{err:?}"
        );
        assert!(err.to_string().contains("unknown issuer"), "{err}");
        assert!(next_outcome(&mut outcomes).await.is_err());
    }
    talk(wss(&url, &[&other_ca, &ca]).await.unwrap()).await;
    next_outcome(&mut outcomes).await.unwrap();
}

#[tokio::test]
async fn an_expired_or_not_yet_valid_certificate_is_a_typed_error() {
    let ca = Ca::new("duplex test CA");
    let expired = ca.leaf_with(&["127.0.0.1"], KeyKind::EcdsaP256, |p| {
        p.not_before = rcgen::date_time_ymd(2001, 1, 1);
        p.not_after = rcgen::date_time_ymd(2002, 1, 1);
    });
    let (addr, mut outcomes) =
        tls_echo_server(acceptor_for(&expired, "expired", KeyFormat::Pkcs8)).await;
    let err = tls_error(wss(&format!("wss://127.0.0.1:{}/", addr.port()), &[&ca]).await);
    assert!(
        matches!(err, TlsError::CertificateExpired { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("has expired"), "{err}");
    assert!(next_outcome(&mut outcomes).await.is_err());

    let future = ca.leaf_with(&["127.0.0.1"], KeyKind::EcdsaP256, |p| {
        p.not_before = rcgen::date_time_ymd(2090, 1, 1);
        p.not_after = rcgen::date_time_ymd(2091, 1, 1);
    });
    let (addr, _outcomes) =
        tls_echo_server(acceptor_for(&future, "not-yet", KeyFormat::Pkcs8)).await;
    let err = tls_error(wss(&format!("wss://127.0.0.1:{}/", addr.port()), &[&ca]).await);
    assert!(
        matches!(err, TlsError::CertificateNotYetValid { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_tls_client_hello_to_a_plain_listener_fails_cleanly_on_both_ends() {
    let (addr, mut outcomes) = plain_echo_server().await;
    let ca = Ca::new("duplex test CA");
    let err = tls_error(wss(&format!("wss://127.0.0.1:{}/", addr.port()), &[&ca]).await);
    assert!(matches!(err, TlsError::ServerNotTls { .. }), "{err:?}");
    assert!(err.to_string().contains("ws:// endpoint"), "{err}");
    // The plain server answered 400 to bytes that are not HTTP.
    let server = next_outcome(&mut outcomes).await.unwrap_err();
    assert!(matches!(server, Error::Handshake(_)), "{server:?}");
    // And goes on serving ws://.
    let mut ws = duplex_ws::connect(&format!("ws://127.0.0.1:{}/", addr.port()))
        .await
        .unwrap();
    assert!(!ws.get_ref().is_tls());
    ws.send("still here").await.unwrap();
    assert_eq!(
        ws.recv().await.unwrap().unwrap(),
        Message::from("still here")
    );
}

/// Sends `bytes` raw and returns all the server wrote before it closed.
async fn raw_exchange(addr: SocketAddr, bytes: &[u8], then_close: bool) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    if then_close {
        stream.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .ok();
    out
}

#[tokio::test]
async fn plain_text_to_a_tls_listener_fails_cleanly_and_the_server_keeps_serving() {
    let ca = Ca::new("duplex test CA");
    let leaf = ca.leaf(&["127.0.0.1"], KeyKind::EcdsaP256);
    let (addr, mut outcomes) =
        tls_echo_server(acceptor_for(&leaf, "plain-to-tls", KeyFormat::Pkcs8)).await;

    // Plain HTTP gets a plain 400 that says why.
    let answer = raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("speaks TLS"), "{answer}");
    assert!(matches!(
        next_outcome(&mut outcomes).await,
        Err(Error::Tls(TlsError::ClientNotTls))
    ));

    // A ws:// client gets a handshake error (the 400), not a hang.
    let err = duplex_ws::connect(&format!("ws://127.0.0.1:{}/", addr.port()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Handshake(_)), "{err:?}");
    assert!(matches!(
        next_outcome(&mut outcomes).await,
        Err(Error::Tls(TlsError::ClientNotTls))
    ));

    // Binary garbage is closed without an answer.
    assert!(
        raw_exchange(addr, &[0x00, 0xff, 0x13, 0x37], false)
            .await
            .is_empty()
    );
    assert!(matches!(
        next_outcome(&mut outcomes).await,
        Err(Error::Tls(TlsError::ClientNotTls))
    ));

    // A ClientHello cut short, then EOF; and a record that is no ClientHello.
    raw_exchange(addr, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00], true).await;
    assert!(matches!(
        next_outcome(&mut outcomes).await,
        Err(Error::Tls(TlsError::Io(_)))
    ));
    raw_exchange(
        addr,
        &[0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00],
        true,
    )
    .await;
    assert!(matches!(
        next_outcome(&mut outcomes).await,
        Err(Error::Tls(TlsError::Handshake(_)))
    ));

    // Nothing of that stopped the server.
    talk(
        wss(&format!("wss://127.0.0.1:{}/", addr.port()), &[&ca])
            .await
            .unwrap(),
    )
    .await;
    next_outcome(&mut outcomes).await.unwrap();
}

#[tokio::test]
async fn a_silent_server_hits_the_handshake_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(tcp);
    });
    let config = Config::client().handshake_timeout(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let err = ClientBuilder::new(format!("wss://127.0.0.1:{}/", addr.port()))
        .config(config)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::HandshakeTimeout), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    held.abort();
}

#[tokio::test]
async fn a_key_that_does_not_match_the_certificate_fails_at_load_with_the_path() {
    let ca = Ca::new("duplex test CA");
    let a = ca.leaf(&["localhost"], KeyKind::EcdsaP256);
    let b = ca.leaf(&["localhost"], KeyKind::EcdsaP256);
    let (cert, _) = a.write(
        &duplex_testing::pki::temp_dir("mismatch-a"),
        KeyFormat::Pkcs8,
    );
    let (_, key) = b.write(
        &duplex_testing::pki::temp_dir("mismatch-b"),
        KeyFormat::Pkcs8,
    );
    let err = duplex_ws::tls::load_server_config(&cert, &key).unwrap_err();
    assert!(
        matches!(&err, TlsError::File { path, .. } if *path == key),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains(&*key.to_string_lossy()), "{text}");
    assert!(text.contains(&*cert.to_string_lossy()), "{text}");
    // A certificate where the key should be.
    let err = duplex_ws::tls::load_server_config(&cert, &cert).unwrap_err();
    assert!(err.to_string().contains("no private key"), "{err}");
}

#[tokio::test]
async fn reload_swaps_the_certificate_for_new_connections_only() {
    let (old_ca, new_ca) = (Ca::new("old CA"), Ca::new("new CA"));
    let dir = duplex_testing::pki::temp_dir("reload");
    let old = old_ca.leaf(&["127.0.0.1"], KeyKind::EcdsaP256);
    let (cert, key) = old.write(&dir, KeyFormat::Pkcs8);
    let acceptor = TlsAcceptor::from_pem_files(&cert, &key).unwrap();
    let (addr, mut outcomes) = tls_echo_server(acceptor.clone()).await;
    let url = format!("wss://127.0.0.1:{}/", addr.port());

    let mut open = wss(&url, &[&old_ca]).await.unwrap();
    assert_eq!(
        open.recv().await.unwrap().unwrap(),
        Message::from("welcome -")
    );

    new_ca
        .leaf(&["127.0.0.1"], KeyKind::Ed25519)
        .write(&dir, KeyFormat::Pkcs8);
    acceptor.reload_pem_files(&cert, &key).unwrap();

    // New connections get the new certificate...
    let err = tls_error(wss(&url, &[&old_ca]).await);
    assert!(matches!(err, TlsError::UnknownIssuer { .. }), "{err:?}");
    assert!(next_outcome(&mut outcomes).await.is_err());
    talk(wss(&url, &[&new_ca]).await.unwrap()).await;
    next_outcome(&mut outcomes).await.unwrap();
    // ...the open one keeps its own.
    open.send("after reload").await.unwrap();
    assert_eq!(
        open.recv().await.unwrap().unwrap(),
        Message::from("after reload")
    );

    // A bad reload changes nothing.
    std::fs::write(&key, "not a key").unwrap();
    let err = acceptor.reload_pem_files(&cert, &key).unwrap_err();
    assert!(err.to_string().contains("key.pem"), "{err}");
    talk(wss(&url, &[&new_ca]).await.unwrap()).await;
    next_outcome(&mut outcomes).await.unwrap();
    open.close(1000, "").await.unwrap();
}
