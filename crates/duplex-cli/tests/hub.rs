//! Topics through the built binary: `duplex serve` with `/topics/{name}`,
//! `duplex publish`, `POST /topics/{name}`, `GET /metrics`, a subscriber
//! that stops reading, and two servers sharing topics over a real Redis,
//! a Redis Cluster and NATS JetStream (each started here on free loopback
//! ports).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{BIN, Server, UPGRADE_HEADERS, http_status, raw_upgrade, stderr_of};
use duplex_testing::Redis;

/// A `duplex connect` subscribed to a topic; its printed lines arrive on a
/// channel. Its stdin stays open (so it stays connected) until dropped.
struct Subscriber {
    /// What `connect` said once connected: the negotiated extensions.
    connected: String,
    child: Child,
    _stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Subscriber {
    fn start(addr: &str, topic: &str) -> Subscriber {
        Subscriber::connect(addr, &format!("/topics/{topic}"))
    }

    /// A `duplex connect` to any path.
    fn connect(addr: &str, path: &str) -> Subscriber {
        let mut child = Command::new(BIN)
            .args(["connect", &format!("ws://{addr}{path}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Subscribed once the handshake is done: connect says so on stderr.
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        assert!(line.starts_with("connected to"), "{line:?}");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take().unwrap();
        Subscriber {
            connected: line,
            child,
            _stdin: stdin,
            lines,
        }
    }

    fn next(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a message within 10 s")
    }

    fn nothing_more(&self) {
        let more = self.lines.recv_timeout(Duration::from_millis(300));
        assert!(more.is_err(), "unexpected {more:?}");
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn publish(addr: &str, topic: &str, messages: &[&str]) {
    let out = Command::new(BIN)
        .args(["publish", &format!("ws://{addr}"), topic])
        .args(messages)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
}

/// One HTTP/1.1 request with `Connection: close`; the status and the body.
fn http(addr: &str, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, String) {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let (status, text) = http_status(addr, request);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
}

/// The value of one sample of `GET /metrics`.
fn metric(addr: &str, name: &str) -> u64 {
    let (status, body) = http(addr, "GET", "/metrics", "", b"");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

#[test]
fn subscribers_with_deflate_share_one_compression() {
    let server = Server::start(&[]);
    let a = Subscriber::start(&server.addr, "prices");
    let b = Subscriber::start(&server.addr, "prices");
    // Topic connections reset the server's compressor after each message,
    // which is what lets them share one compressed copy.
    for sub in [&a, &b] {
        assert!(
            sub.connected.contains("permessage-deflate")
                && sub.connected.contains("server_no_context_takeover"),
            "{}",
            sub.connected
        );
    }
    let echo = Subscriber::connect(&server.addr, "/echo");
    assert!(
        !echo.connected.contains("server_no_context_takeover"),
        "{}",
        echo.connected
    );
    let body: String = (0..2000).map(|i| format!("{{\"id\":{i}}},")).collect();
    let (status, response) = http(
        &server.addr,
        "POST",
        "/topics/prices",
        "Content-Type: text/plain\r\n",
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{response}");
    assert!(
        response.starts_with("{\"topic\":\"prices\",\"epoch\":\"")
            && response.ends_with(",\"offset\":1,\"delivered\":2}\n"),
        "{response}"
    );
    assert_eq!(a.next(), body);
    assert_eq!(b.next(), body);
}

#[test]
fn publish_subscribe_and_post_on_one_server() {
    let server = Server::start(&[]);
    let sub = Subscriber::start(&server.addr, "news");
    let other = Subscriber::start(&server.addr, "sport");

    publish(&server.addr, "news", &["hello", "world"]);
    assert_eq!(sub.next(), "hello");
    assert_eq!(sub.next(), "world");

    let (status, body) = http(
        &server.addr,
        "POST",
        "/topics/news",
        "Content-Type: text/plain\r\n",
        b"via http",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with(",\"offset\":3,\"delivered\":1}\n"), "{body}");
    assert_eq!(sub.next(), "via http");
    other.nothing_more();

    assert_eq!(metric(&server.addr, "duplex_published_total"), 3);
    assert_eq!(metric(&server.addr, "duplex_subscribers"), 2);
    assert_eq!(metric(&server.addr, "duplex_topics"), 2);
    assert_eq!(metric(&server.addr, "duplex_connections"), 2);

    // Bad topic names get 400, as a subscription and as a POST.
    let (status, _) = http(&server.addr, "GET", "/topics/a%20b", UPGRADE_HEADERS, b"");
    assert_eq!(status, 400);
    let (status, _) = http(&server.addr, "POST", "/topics/", "", b"x");
    assert_eq!(status, 400);
    // The echo on every other path is as before.
    let out = common::connect(&format!("ws://{}/", server.addr), "hello\n", &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
}

#[test]
fn a_subscriber_that_stops_reading_is_dropped() {
    let server = Server::start(&["--topic-queue", "4", "--topic-send-timeout", "0.5"]);
    // Subscribes, then never reads.
    let mut silent = raw_upgrade(&server.addr, "/topics/t");
    let mut head = [0u8; 12];
    silent.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    // Enough to fill the socket buffers and the queue of four.
    let body = vec![7u8; 256 << 10];
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&server.addr, "duplex_connections") > 0 {
        assert!(
            Instant::now() < deadline,
            "the silent subscriber was never dropped"
        );
        let (status, _) = http(&server.addr, "POST", "/topics/t", "", &body);
        assert_eq!(status, 200);
    }
    assert_eq!(metric(&server.addr, "duplex_subscribers"), 0);
    assert!(metric(&server.addr, "duplex_slow_consumers_total") >= 1);
    assert_eq!(metric(&server.addr, "duplex_stalled_subscribers_total"), 1);
    server.wait_for_log("dropping a subscriber that stopped reading");
}

#[test]
fn two_servers_share_topics_over_redis() {
    let redis = Redis::start();
    let a = Server::start(&["--redis", &redis.url()]);
    let b = Server::start(&["--redis", &redis.url()]);
    let on_a = Subscriber::start(&a.addr, "news");
    let on_b = Subscriber::start(&b.addr, "news");

    publish(&b.addr, "news", &["from b"]);
    assert_eq!(on_a.next(), "from b");
    assert_eq!(on_b.next(), "from b");
    publish(&a.addr, "news", &["from a"]);
    assert_eq!(on_a.next(), "from a");
    assert_eq!(on_b.next(), "from a");
    // Each exactly once: a server skips its own messages coming back.
    on_a.nothing_more();
    on_b.nothing_more();
    let (status, _) = http(&a.addr, "POST", "/topics/news", "", b"\x01\x02");
    assert_eq!(status, 200);
    assert_eq!(on_b.next(), "0102", "binary, printed as hex");
    assert!(metric(&b.addr, "duplex_backplane_received_total") >= 2);
}

/// Two servers on `args`, sharing `news`: each message reaches both
/// subscribers once, and `/healthz` names the engine.
fn two_servers_share_topics(args: &[&str], engine: &str) {
    let a = Server::start(args);
    let b = Server::start(args);
    let on_a = Subscriber::start(&a.addr, "news");
    let on_b = Subscriber::start(&b.addr, "news");
    publish(&b.addr, "news", &["from b"]);
    assert_eq!(on_a.next(), "from b");
    assert_eq!(on_b.next(), "from b");
    publish(&a.addr, "news", &["from a"]);
    assert_eq!(on_a.next(), "from a");
    assert_eq!(on_b.next(), "from a");
    on_a.nothing_more();
    on_b.nothing_more();
    let (status, body) = http(&a.addr, "GET", "/healthz", "", b"");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("\"engine\":\"{engine}\"")), "{body}");
}

#[test]
fn two_servers_share_topics_over_a_redis_cluster() {
    let cluster = duplex_testing::cluster::RedisCluster::start(3, 0);
    two_servers_share_topics(&["--redis", &cluster.url()], "redis+cluster");
}

#[test]
fn two_servers_share_topics_over_nats() {
    let store = tempfile::tempdir().unwrap();
    let nats = duplex_testing::nats::Nats::start(store.path());
    two_servers_share_topics(&["--nats", &nats.url()], "nats");
}

#[test]
fn serve_with_an_unreachable_nats_or_two_backplanes_fails_at_start() {
    let url = format!("nats://127.0.0.1:{}", duplex_testing::free_port());
    for args in [
        vec!["--nats", url.as_str()],
        vec!["--nats", url.as_str(), "--redis", "redis://127.0.0.1:1/"],
    ] {
        let out = Command::new(BIN)
            .args(["serve", "--bind", "127.0.0.1:0"])
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = stderr_of(&out);
        assert!(
            stderr.contains("cannot use --nats") || stderr.contains("cannot be used with"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn serve_with_an_unreachable_redis_fails_at_start() {
    let url = format!("redis://127.0.0.1:{}/", duplex_testing::free_port());
    let out = Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:0", "--redis", &url])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("cannot use --redis") && stderr.contains(&url),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no `listening on` line");
}
