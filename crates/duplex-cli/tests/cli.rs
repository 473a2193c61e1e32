//! The built `duplex` binary, end to end: `serve` then `connect`, the
//! page, flag validation, and the 1001 close on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_duplex");

/// A `duplex serve` on a free port, killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--bind", "127.0.0.1:0", "--threads", "1"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("duplex serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ws://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn connect(url: &str, stdin: &str, extra: &[&str]) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(["connect", url])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

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

fn http_status(addr: &str, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[test]
fn the_page_and_plain_http() {
    let server = Server::start(&[]);
    let close = "Connection: close\r\n\r\n";
    let (status, text) = http_status(
        &server.addr,
        &format!("GET / HTTP/1.1\r\nHost: x\r\n{close}"),
    );
    assert_eq!(status, 200);
    assert!(text.contains("text/html"));
    assert!(text.contains(r#"new WebSocket("ws://localhost:8080")"#));
    let (status, _) = http_status(
        &server.addr,
        &format!("GET /nope HTTP/1.1\r\nHost: x\r\n{close}"),
    );
    assert_eq!(status, 404);
    let (status, _) = http_status(
        &server.addr,
        &format!("DELETE / HTTP/1.1\r\nHost: x\r\n{close}"),
    );
    assert_eq!(status, 405);
    let (status, text) = http_status(
        &server.addr,
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
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
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
    }
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
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = client.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("closed: code 1001"), "{stderr}");
    assert!(stderr.contains("clean: true"), "{stderr}");
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    drop(stdin);
}
