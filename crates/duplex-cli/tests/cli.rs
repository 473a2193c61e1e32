//! The built `duplex` binary, end to end: `serve` then `connect`, the
//! page, flag validation, and the 1001 close on SIGTERM.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Server, UPGRADE_HEADERS, bench, connect, http_status, raw_upgrade};

#[test]
fn echo_hello_through_serve_and_connect() {
    let server = Server::start(&[]);
    let out = connect(&format!("ws://{}/", server.addr), "hello\n", &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("extensions: permessage-deflate"),
        "{stderr}"
    );
    assert!(stderr.contains("closed: code 1000"), "{stderr}");
}

#[test]
fn many_lines_come_back_in_order_without_deflate() {
    let server = Server::start(&["--no-deflate"]);
    let input: String = (0..200).map(|i| format!("line {i}\n")).collect();
    let out = connect(&format!("ws://{}/x?y=z", server.addr), &input, &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("extensions: -"), "{stderr}");
}

#[test]
fn the_page_and_plain_http() {
    let server = Server::start(&[]);
    let close = "Connection: close\r\n\r\n";
    let (status, text) = http_status(
        &server.addr,
        format!("GET / HTTP/1.1\r\nHost: localhost\r\n{close}"),
    );
    assert_eq!(status, 200);
    assert!(text.contains("text/html"));
    assert!(text.contains(r#"new WebSocket("ws://localhost:8080")"#));
    let (status, _) = http_status(
        &server.addr,
        format!("GET /nope HTTP/1.1\r\nHost: localhost\r\n{close}"),
    );
    assert_eq!(status, 404);
    let (status, _) = http_status(
        &server.addr,
        format!("DELETE / HTTP/1.1\r\nHost: localhost\r\n{close}"),
    );
    assert_eq!(status, 405);
    let (status, text) = http_status(
        &server.addr,
        "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 7\r\n\r\n",
    );
    assert_eq!(status, 426);
    assert!(
        text.to_ascii_lowercase()
            .contains("sec-websocket-version: 13")
    );
}

#[test]
fn bad_flags_fail_with_a_message() {
    for args in [
        vec!["serve", "--threads", "0"],
        vec!["serve", "--bind", "not-an-address"],
        vec!["serve", "--max-connections", "0"],
        vec!["serve", "--close-timeout", "-1"],
        vec!["connect", "ftp://127.0.0.1/"],
        vec!["connect", "ws://127.0.0.1:1/", "--header", "no colon"],
        vec!["serve", "--ping-interval=-1"],
        vec!["serve", "--ping-timeout", "0"],
        vec!["serve", "--write-timeout", "-1"],
        vec!["bench", "ws://127.0.0.1:1/"],
        vec!["bench", "echo", "ws://127.0.0.1:1/", "--conns", "0"],
        vec!["bench", "echo", "ws://127.0.0.1:1/", "--size", "1G"],
        vec!["bench", "echo", "ws://127.0.0.1:1/", "--pipeline", "0"],
        vec!["bench", "idle", "ws://127.0.0.1:1/", "--pipeline", "2"],
        vec!["bench", "fanout", "ws://127.0.0.1:1/", "--size", "10"],
        vec![
            "bench",
            "echo",
            "ws://127.0.0.1:1/",
            "--pipeline",
            "64",
            "--size",
            "2048",
        ],
        vec!["bench", "echo", "ws://127.0.0.1:1/", "--ca", "ca.pem"],
        vec![
            "bench",
            "idle",
            "wss://127.0.0.1:1/",
            "--ca",
            "/nonexistent/ca.pem",
        ],
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.is_empty() && !stderr.contains("panicked"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn help_on_every_command() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["connect", "--help"],
        vec!["bench", "--help"],
        vec!["bench", "echo", "--help"],
        vec!["bench", "idle", "--help"],
        vec!["bench", "fanout", "--help"],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
    }
}

#[test]
fn connect_help_documents_http2() {
    let out = Command::new(BIN)
        .args(["connect", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--http2") && help.contains("RFC 8441") && help.contains("h2c"),
        "{help}"
    );
}

#[cfg(unix)]
#[test]
fn sigterm_closes_connections_with_1001() {
    let mut server = Server::start(&[]);
    let mut client = Command::new(BIN)
        .args(["connect", &format!("ws://{}/", server.addr)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"ping\n").unwrap();
    let mut stdout = BufReader::new(client.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ping\n");
    server.signal("TERM");
    let out = client.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("closed: code 1001"), "{stderr}");
    assert!(stderr.contains("clean: true"), "{stderr}");
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    drop(stdin);
}

#[test]
fn bench_echoes_and_measures_the_server() {
    // Keepalive every 100 ms: bench must answer the Pings, or the server
    // fails its connections (1011) and they count as errors.
    let server = Server::start(&["--ping-interval", "0.1", "--ping-timeout", "0.3"]);
    let pid = server.child.id().to_string();
    let url = format!("ws://{}/", server.addr);
    let (out, json) = bench(
        "echo",
        &url,
        &[
            "--conns",
            "4",
            "--size",
            "1024",
            "--secs",
            "1",
            "--warmup",
            "0.1",
            "--server-pid",
            &pid,
        ],
    );
    assert!(out.status.success(), "{json}");
    assert_eq!(json["mode"], "echo");
    assert_eq!(json["errors"], 0, "{json}");
    assert!(json["msgs"].as_u64().unwrap() > 0, "{json}");
    assert!(json["p99_us"].as_f64().unwrap() > 0.0, "{json}");
    assert!(json["server_cpu_us_per_msg"].is_number(), "{json}");

    let (out, json) = bench(
        "idle",
        &url,
        &["--conns", "50", "--settle", "1", "--server-pid", &pid],
    );
    assert!(out.status.success(), "{json}");
    assert_eq!(json["errors"], 0, "{json}");
    assert!(json["bytes_per_conn"].is_number(), "{json}");
}

#[test]
fn bench_pipelines_messages_on_several_threads() {
    let server = Server::start(&["--ping-interval", "0.1", "--ping-timeout", "0.3"]);
    let pid = server.child.id().to_string();
    let (out, json) = bench(
        "echo",
        &format!("ws://{}/", server.addr),
        &[
            "--conns",
            "6",
            "--size",
            "20",
            "--pipeline",
            "8",
            "--threads",
            "2",
            "--secs",
            "1",
            "--warmup",
            "0.1",
            "--server-pid",
            &pid,
        ],
    );
    assert!(out.status.success(), "{json}");
    assert_eq!(json["errors"], 0, "{json}");
    assert_eq!(
        (&json["pipeline"], &json["threads"]),
        (&8.into(), &2.into())
    );
    assert!(json["msgs"].as_u64().unwrap() > 0, "{json}");
    assert!(json["p50_us"].as_f64().unwrap() > 0.0, "{json}");
    assert!(json["server_cpu_us_per_msg"].is_number(), "{json}");
}

#[test]
fn bench_says_why_connections_failed() {
    // A port nobody listens on: every connection is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (out, json) = bench(
        "echo",
        &format!("ws://127.0.0.1:{port}/"),
        &["--conns", "2", "--secs", "0.1", "--warmup", "0"],
    );
    assert!(!out.status.success());
    assert_eq!(json["errors"], 2, "{json}");
    assert!(
        json["first_error"].as_str().unwrap().contains("refused"),
        "{json}"
    );
}

#[test]
fn keepalive_fails_a_silent_client_with_1011() {
    let server = Server::start(&["--ping-interval", "0.2", "--ping-timeout", "0.3"]);
    let mut stream = raw_upgrade(&server.addr, "/");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Read everything until the server ends the connection; answer nothing.
    let started = std::time::Instant::now();
    let mut wire = Vec::new();
    stream.read_to_end(&mut wire).unwrap();
    let elapsed = started.elapsed();
    let head_end = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(wire.starts_with(b"HTTP/1.1 101"));
    let frames = &wire[head_end..];
    // A Ping with a 4-byte payload, then a Close with 1011.
    assert_eq!(&frames[..2], &[0x89, 4]);
    let close = &frames[6..];
    assert_eq!(close[0], 0x88);
    assert_eq!(&close[2..4], &1011u16.to_be_bytes());
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    server.wait_for_log("keepalive ping timed out");
}

#[test]
fn a_client_that_stops_reading_is_dropped_after_the_write_timeout() {
    let server = Server::start(&["--write-timeout", "0.3", "--ping-interval", "0"]);
    let mut stream = raw_upgrade(&server.addr, "/");
    // 16 KiB binary frames, masked with a zero key, sent until the server's
    // echo fills every buffer between us and stops taking them; never read.
    let mut frame = vec![0x82, 0xfe, 0x40, 0x00, 0, 0, 0, 0];
    frame.resize(8 + (16 << 10), b'x');
    stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut sent = 0usize;
    while stream.write_all(&frame).is_ok() {
        sent += frame.len();
        assert!(sent < 1 << 30, "the server never stopped taking frames");
    }
    server.wait_for_log("the peer stopped reading");
    // The server dropped the connection: what it had sent, then the end.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("expected the end of the connection, got {e}"),
        }
    }
}

/// Reads one HTTP/1.1 response from `stream`: its status, and its body by
/// `Content-Length` (nothing past it, so the connection can go on).
fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A kept-alive HTTP/1.1 connection that gets the page, then asks for a
/// WebSocket: the upgrade's status, and the connection.
fn upgrade_after_the_page(addr: &str) -> (u16, TcpStream) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let (status, page) = read_response(&mut stream);
    assert_eq!(status, 200);
    assert!(page.contains("new WebSocket"));
    stream
        .write_all(
            format!("GET /echo HTTP/1.1\r\nHost: localhost\r\n{UPGRADE_HEADERS}\r\n").as_bytes(),
        )
        .unwrap();
    let (status, _) = read_response(&mut stream);
    (status, stream)
}

/// One sample of `GET /metrics`.
fn metric(addr: &str, sample: &str) -> String {
    let (status, text) = http_status(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{sample} ")))
        .unwrap_or_else(|| panic!("no {sample} in {text}"))
        .to_owned()
}

#[test]
fn max_connections_counts_websockets_upgraded_on_kept_alive_connections() {
    let server = Server::start(&["--max-connections", "4"]);
    let mut open: Vec<TcpStream> = (0..4)
        .map(|_| {
            let (status, stream) = upgrade_after_the_page(&server.addr);
            assert_eq!(status, 101);
            stream
        })
        .collect();
    assert_eq!(
        metric(&server.addr, "duplex_websockets_open{http=\"1.1\"}"),
        "4"
    );
    let (status, _) = upgrade_after_the_page(&server.addr);
    assert_eq!(status, 503, "a fifth WebSocket");
    assert_eq!(metric(&server.addr, "duplex_websockets_refused_total"), "1");
    // One goes away; once the server has seen it close, there is room.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = upgrade_after_the_page(&server.addr);
        if status == 101 {
            break;
        }
        assert_eq!(status, 503);
        assert!(
            Instant::now() < deadline,
            "no room after a WebSocket closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
