//! What the CLI tests share: a `duplex serve` child on a free port, and the
//! `connect` and `bench` commands run against it.

#![allow(dead_code)] // Each test binary uses its own part of this.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_duplex");

/// A `duplex serve --threads 1` on a free port, killed on drop. Its stderr
/// lines (logged at `info`) are kept for [`Server::wait_for_log`].
pub(crate) struct Server {
    pub(crate) child: Child,
    /// `IP:PORT`, from the "listening on" line.
    pub(crate) addr: String,
    pub(crate) stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub(crate) fn start(args: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--bind", "127.0.0.1:0", "--threads", "1"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("duplex serve starts");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&stderr);
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on wss://")
            .or_else(|| line.trim().strip_prefix("listening on ws://"))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Server {
            child,
            addr,
            stderr,
        }
    }

    /// Waits (up to 10 s) for a stderr line containing `needle`.
    pub(crate) fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?}: {:?}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends the signal `name` (`TERM`, `HUP`...) to the server.
    #[cfg(unix)]
    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The headers of a WebSocket upgrade request (with RFC 6455's sample
/// key), for requests written by hand.
pub(crate) const UPGRADE_HEADERS: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// A TCP connection to `addr` that has sent a WebSocket upgrade request
/// for `path` and read nothing yet: a client that does only what a test
/// makes it do.
pub(crate) fn raw_upgrade(addr: &str, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{UPGRADE_HEADERS}\r\n").as_bytes(),
        )
        .unwrap();
    stream
}

/// Starts `duplex connect URL EXTRA...` with its stdin, stdout and stderr
/// piped.
pub(crate) fn spawn_connect(url: &str, extra: &[&str]) -> std::process::Child {
    Command::new(BIN)
        .args(["connect", url])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `duplex connect URL EXTRA...` with `stdin` as its input.
pub(crate) fn connect(url: &str, stdin: &str, extra: &[&str]) -> Output {
    let mut child = spawn_connect(url, extra);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs `duplex bench LOAD URL --json EXTRA...` (LOAD: echo, idle or
/// fanout) and returns its exit status and the JSON object it printed.
pub(crate) fn bench(load: &str, url: &str, extra: &[&str]) -> (Output, serde_json::Value) {
    let out = Command::new(BIN)
        .args(["bench", load, url, "--json"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bench printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, json)
}

pub(crate) fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Sends one raw HTTP request and reads until the server closes; the status
/// and the whole response.
pub(crate) fn http_status(addr: &str, request: impl AsRef<[u8]>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_ref()).unwrap();
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
