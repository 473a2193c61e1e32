//! Behind a load balancer, against duplex's `Server`: a trusted proxy's
//! `X-Forwarded-For` or PROXY header names the client, whose address the
//! per-address limits then count (429 past them) and the application sees;
//! anyone else's `X-Forwarded-For` is ignored, and a trusted proxy's
//! connection without the PROXY header it must send is closed.

// `serve_with`'s hook returns the refusal it would send, as is.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duplex_ws::http::{HeaderName, HeaderValue};
use duplex_ws::{ClientBuilder, Config, Message, Server};
use duplex_ws::{ConnectionInfo, IpNet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Seen = Arc<Mutex<Vec<ConnectionInfo>>>;

/// An echo server that records each upgrade's [`ConnectionInfo`].
fn serve(server: Server) -> (SocketAddr, Seen) {
    let addr = server.local_addr().unwrap();
    let seen = Seen::default();
    let record = Arc::clone(&seen);
    tokio::spawn(server.serve_with(
        move |_, info| {
            record.lock().unwrap().push(*info);
            Ok(Config::server())
        },
        |mut ws| async move {
            while let Ok(Some(message)) = ws.recv().await {
                if ws.send(message).await.is_err() {
                    break;
                }
            }
        },
    ));
    (addr, seen)
}

fn loopback() -> IpNet {
    "127.0.0.0/8".parse().unwrap()
}

fn forwarded(addr: SocketAddr, xff: &str) -> ClientBuilder {
    let mut config = Config::client();
    config.handshake_timeout = Duration::from_secs(2);
    ClientBuilder::new(format!("ws://{addr}/"))
        .config(config)
        .header(
            HeaderName::from_static("x-forwarded-for"),
            HeaderValue::from_str(xff).unwrap(),
        )
}

#[tokio::test]
async fn a_trusted_proxys_clients_are_counted_by_the_address_it_names() {
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .trusted_proxies([loopback()])
        .max_connections_per_ip(2);
    let (addr, seen) = serve(server);
    // What the client put first is not believed; the proxy's entry is.
    let mut a = forwarded(addr, "6.6.6.6, 198.51.100.7")
        .connect()
        .await
        .unwrap();
    let _b = forwarded(addr, "198.51.100.7").connect().await.unwrap();
    let refused = forwarded(addr, "7.7.7.7, 198.51.100.7")
        .connect()
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("429"), "{refused}");
    // Another client of the same proxy is not held to the first's count.
    let _c = forwarded(addr, "198.51.100.8").connect().await.unwrap();
    a.send(Message::text("still here")).await.unwrap();
    assert_eq!(a.recv().await.unwrap(), Some(Message::text("still here")));
    let info = seen.lock().unwrap()[0];
    assert_eq!(info.peer_addr, "198.51.100.7:0".parse().unwrap());
    assert_eq!(
        info.proxy_addr.map(|p| p.ip()),
        Some("127.0.0.1".parse().unwrap())
    );
    // Closing one gives its client room again.
    a.close(1000, "").await.unwrap();
    drop(a);
    let mut again = None;
    for _ in 0..50 {
        if let Ok(ws) = forwarded(addr, "198.51.100.7").connect().await {
            again = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "room again after a close");
    let bad = forwarded(addr, "not-an-address")
        .connect()
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("400"), "{bad}");
}

#[tokio::test]
async fn an_untrusted_peers_forwarded_for_is_ignored() {
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .trusted_proxies(["10.0.0.0/8".parse().unwrap()]);
    let (addr, seen) = serve(server);
    let _ws = forwarded(addr, "198.51.100.7").connect().await.unwrap();
    let info = seen.lock().unwrap()[0];
    assert!(info.peer_addr.ip().is_loopback(), "{info:?}");
    assert_eq!(info.proxy_addr, None);
}

#[tokio::test]
async fn a_proxy_protocol_header_names_the_client_and_is_required() {
    let server = Server::bind("127.0.0.1:0")
        .await
        .unwrap()
        .trusted_proxies([loopback()])
        .proxy_protocol(true)
        .max_connections_per_ip(1);
    let (addr, seen) = serve(server);
    let through_proxy = |client: &'static str| async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(format!("PROXY TCP4 {client} 127.0.0.1 5000 443\r\n").as_bytes())
            .await
            .unwrap();
        ClientBuilder::new(format!("ws://{addr}/"))
            .connect_on(stream)
            .await
    };
    let mut ws = through_proxy("198.51.100.9").await.unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Some(Message::text("hi")));
    let info = seen.lock().unwrap()[0];
    assert_eq!(info.peer_addr, "198.51.100.9:5000".parse().unwrap());
    assert_eq!(
        info.proxy_addr.map(|p| p.ip()),
        Some("127.0.0.1".parse().unwrap())
    );
    // One connection per address: the same client again is closed at once,
    // another is not.
    assert!(through_proxy("198.51.100.9").await.is_err());
    let _other = through_proxy("198.51.100.10").await.unwrap();

    // Without the header the connection is closed, unanswered.
    let mut bare = TcpStream::connect(addr).await.unwrap();
    bare.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), bare.read_to_end(&mut answer)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "{read:?} {answer:?}"
    );
}
