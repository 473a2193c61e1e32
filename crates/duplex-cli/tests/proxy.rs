//! `duplex serve` behind a load balancer, through the built binary: with
//! `--trusted-proxy`, the client a proxy names in `X-Forwarded-For` is the
//! one the per-address limits and the hub's per-client topic quota count;
//! with `--proxy-protocol`, the one its PROXY header names.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Server, UPGRADE_HEADERS, http_status};

/// Sends an upgrade for `/echo` as the proxy would, naming `client`; the
/// status, and the connection (open after a 101).
fn upgrade_for(addr: &str, prefix: &str, client: &str) -> (u16, TcpStream) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "{prefix}GET /echo HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: {client}\r\n{UPGRADE_HEADERS}\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut head = [0u8; 12];
    let status = match stream.read_exact(&mut head) {
        Ok(()) => String::from_utf8_lossy(&head[9..12]).parse().unwrap_or(0),
        Err(_) => 0,
    };
    (status, stream)
}

fn post_for(addr: &str, topic: &str, client: &str) -> u16 {
    http_status(
        addr,
        format!(
            "POST /topics/{topic} HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: {client}\r\n\
             Content-Length: 2\r\nConnection: close\r\n\r\nhi"
        ),
    )
    .0
}

#[test]
fn a_trusted_proxys_clients_are_limited_one_by_one() {
    let server = Server::start(&[
        "--trusted-proxy",
        "127.0.0.1",
        "--max-connections-per-ip",
        "1",
        "--max-topics-per-client",
        "1",
    ]);
    let addr = &server.addr;
    let (status, _held) = upgrade_for(addr, "", "198.51.100.7");
    assert_eq!(status, 101);
    assert_eq!(upgrade_for(addr, "", "198.51.100.7").0, 429);
    assert_eq!(upgrade_for(addr, "", "198.51.100.8").0, 101);
    // Topics made are counted by the client the proxy names, too.
    assert_eq!(post_for(addr, "a", "198.51.100.7"), 200);
    assert_eq!(post_for(addr, "b", "198.51.100.7"), 429);
    assert_eq!(post_for(addr, "b", "198.51.100.8"), 200);
}

#[test]
fn with_the_proxy_protocol_its_header_names_the_client() {
    let server = Server::start(&[
        "--trusted-proxy",
        "127.0.0.0/8",
        "--proxy-protocol",
        "--max-connections-per-ip",
        "1",
    ]);
    let addr = &server.addr;
    let header = "PROXY TCP4 198.51.100.9 127.0.0.1 5000 80\r\n";
    let (status, _held) = upgrade_for(addr, header, "ignored");
    assert_eq!(status, 101);
    // The same client again: closed unanswered.
    assert_eq!(upgrade_for(addr, header, "ignored").0, 0);
    // No header: closed unanswered.
    assert_eq!(upgrade_for(addr, "", "198.51.100.10").0, 0);
}

#[test]
fn a_trusted_proxy_flag_is_checked() {
    let out = std::process::Command::new(common::BIN)
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--trusted-proxy",
            "10.0.0.0/99",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        common::stderr_of(&out).contains("neither an address nor a network"),
        "{}",
        common::stderr_of(&out)
    );
}
