//! The origin policy of `duplex serve`, end to end: which pages may open a
//! WebSocket or POST, and DNS rebinding refused on loopback.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Server, UPGRADE_HEADERS, http_status};

/// The status of an upgrade to `/echo` (or to a topic) with these headers,
/// read from the head alone (a 101 leaves the connection open).
fn upgrade(server: &Server, path: &str, host: &str, origin: Option<&str>) -> u16 {
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{origin}{UPGRADE_HEADERS}\r\n");
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn post(server: &Server, origin: &str) -> (u16, String) {
    http_status(
        &server.addr,
        format!(
            "POST /topics/news HTTP/1.1\r\nHost: localhost\r\nOrigin: {origin}\r\n\
             Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
        ),
    )
}

#[test]
fn by_default_a_foreign_page_is_refused_and_loopback_pages_are_not() {
    let server = Server::start(&[]);
    let own = format!("http://{}", server.addr);
    let host = server.addr.as_str();
    assert_eq!(
        upgrade(&server, "/echo", host, None),
        101,
        "no Origin: not a browser"
    );
    assert_eq!(
        upgrade(&server, "/echo", host, Some(&own)),
        101,
        "own origin"
    );
    assert_eq!(
        upgrade(
            &server,
            "/echo",
            "localhost:1",
            Some("http://localhost:3000")
        ),
        101
    );
    assert_eq!(
        upgrade(&server, "/echo", "localhost", Some("null")),
        403,
        "a file page, or any site's sandboxed iframe: only with --allowed-origin null"
    );
    assert_eq!(
        upgrade(&server, "/echo", host, Some("https://evil.example")),
        403
    );
    assert_eq!(
        upgrade(&server, "/topics/news", host, Some("https://evil.example")),
        403
    );
    let (status, body) = post(&server, "https://evil.example");
    assert_eq!(status, 403);
    assert!(
        body.contains("--allowed-origin https://evil.example"),
        "{body}"
    );
    assert_eq!(post(&server, &own).0, 200);
    // DNS rebinding: the attacker's name, resolved to 127.0.0.1.
    assert_eq!(upgrade(&server, "/echo", "rebind.example", None), 421);
    let (status, _) = http_status(
        &server.addr,
        "GET / HTTP/1.1\r\nHost: rebind.example:8080\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 421, "even the page");
    server.wait_for_log("may not use this server");
}

#[test]
fn allowed_origins_and_any_origin() {
    let server = Server::start(&["--allowed-origin", "https://*.example.com"]);
    let host = server.addr.clone();
    assert_eq!(
        upgrade(&server, "/echo", &host, Some("https://app.example.com")),
        101
    );
    assert_eq!(
        upgrade(&server, "/echo", &host, Some("https://example.org")),
        403
    );
    drop(server);

    let server = Server::start(&["--any-origin"]);
    let host = server.addr.clone();
    assert_eq!(
        upgrade(&server, "/echo", &host, Some("https://example.org")),
        101
    );
    assert_eq!(post(&server, "https://example.org").0, 200);
    assert_eq!(upgrade(&server, "/echo", "rebind.example", None), 421);
}

#[test]
fn null_and_other_hosts_only_when_named() {
    let server = Server::start(&[
        "--allowed-origin",
        "null",
        "--allowed-host",
        "push.example.com",
    ]);
    assert_eq!(
        upgrade(&server, "/echo", "localhost", Some("null")),
        101,
        "file pages, allowed on purpose"
    );
    assert_eq!(
        upgrade(&server, "/echo", "push.example.com", None),
        101,
        "a name of this server, e.g. behind a proxy"
    );
    assert_eq!(upgrade(&server, "/echo", "rebind.example", None), 421);
    server.wait_for_log("Host rebind.example");
}

#[test]
fn a_bad_allowed_origin_stops_the_start() {
    let out = std::process::Command::new(common::BIN)
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--allowed-origin",
            "example.com/path",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--allowed-origin"), "{stderr}");
}
