//! The floor of `bench/fanout.sh`: the least work a push server can do per delivery,
//! single-threaded, with no WebSocket library and no queues.
//!
//! A WebSocket on any path (the raw handshake, httparse + SHA-1) subscribes to that
//! path; `POST <path>` frames its body once as one unmasked text frame and writes those
//! bytes to every subscriber of the path with a non-blocking write, in a plain loop.
//! Only a socket whose kernel buffer is full keeps the bytes that did not fit, and a
//! task of its own writes them when it can (the one queue it must have); a socket whose
//! write fails is dropped. Subscribers are never read from: there is nothing to read.
//! Answers `200 {"delivered":N}` on a keep-alive connection.
//!
//!   peer-fanout-floor [--bind IP:PORT]   (default 127.0.0.1:0)
//!
//! Prints `listening on ws://IP:PORT` once bound.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest request head, and the largest POST body.
const MAX_HEAD: usize = 16 << 10;
const MAX_BODY: usize = 1 << 20;
/// Bytes a subscriber that does not read may have waiting, past which it is dropped.
const MAX_BACKLOG: usize = 4 << 20;

/// One subscriber socket.
struct Sub {
    stream: TcpStream,
    /// Bytes the kernel did not take yet (empty nearly always).
    backlog: RefCell<Vec<u8>>,
    dead: Cell<bool>,
}

/// Subscribers by path.
type Topics = Rc<RefCell<HashMap<String, Vec<Rc<Sub>>>>>;

fn main() {
    let options = bench_peers::options();
    if options.threads != 1 {
        eprintln!("peer-fanout-floor is single-threaded: --threads must be 1");
        std::process::exit(2);
    }
    let addr = options.bind;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = bench_peers::listen_announced(addr);
        let topics: Topics = Rc::default();
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::task::spawn_local(connection(stream, Rc::clone(&topics)));
                }
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
}

/// What a request head asked for.
enum Request {
    Upgrade { path: String, key: Vec<u8> },
    Post { path: String, len: usize },
    Bad(&'static str),
}

fn parse(req: &httparse::Request<'_, '_>) -> Request {
    let path = req
        .path
        .unwrap_or("/")
        .split('?')
        .next()
        .unwrap_or("/")
        .to_owned();
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    match req.method {
        Some("GET") => match header("sec-websocket-key") {
            Some(key) if key.len() == 24 => Request::Upgrade {
                path,
                key: key.to_vec(),
            },
            _ => Request::Bad("400 Bad Request"),
        },
        Some("POST") => {
            let len = header("content-length")
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse::<usize>().ok());
            match len {
                Some(len) if len <= MAX_BODY => Request::Post { path, len },
                Some(_) => Request::Bad("413 Payload Too Large"),
                None => Request::Bad("411 Length Required"),
            }
        }
        _ => Request::Bad("405 Method Not Allowed"),
    }
}

/// Serves one TCP connection: requests until it upgrades (and joins the subscribers)
/// or ends.
async fn connection(mut stream: TcpStream, topics: Topics) {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        // Read a whole request head.
        let (request, head_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => break (parse(&req), len),
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
                _ => {
                    let _ = stream
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    return;
                }
            }
            if buf.len() == buf.capacity() {
                buf.reserve(1024);
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        buf.drain(..head_len);
        match request {
            Request::Upgrade { path, key } => {
                let response = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    bench_peers::accept_key(&key)
                );
                if stream.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
                let sub = Rc::new(Sub {
                    stream,
                    backlog: RefCell::default(),
                    dead: Cell::new(false),
                });
                topics.borrow_mut().entry(path).or_default().push(sub);
                return;
            }
            Request::Post { path, len } => {
                while buf.len() < len {
                    buf.reserve(len - buf.len());
                    match stream.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
                let frame = text_frame(&buf[..len]);
                buf.drain(..len);
                let delivered = publish(&topics, &path, &frame);
                let body = format!("{{\"delivered\":{delivered}}}");
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
            Request::Bad(status) => {
                let answer =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = stream.write_all(answer.as_bytes()).await;
                return;
            }
        }
    }
}

/// An unmasked, final text frame holding `payload`.
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    frame.push(0x81);
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n if n <= 0xffff => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame
}

/// Writes `frame` to every subscriber of `path`; returns how many took it (all of it,
/// or the rest queued behind a full socket buffer).
fn publish(topics: &Topics, path: &str, frame: &[u8]) -> usize {
    let mut topics = topics.borrow_mut();
    let Some(subs) = topics.get_mut(path) else {
        return 0;
    };
    let mut delivered = 0;
    for sub in subs.iter() {
        if sub.dead.get() {
            continue;
        }
        let mut backlog = sub.backlog.borrow_mut();
        if !backlog.is_empty() {
            // Behind already: keep the order.
            if backlog.len() + frame.len() > MAX_BACKLOG {
                sub.dead.set(true);
                continue;
            }
            backlog.extend_from_slice(frame);
            delivered += 1;
            continue;
        }
        match sub.stream.try_write(frame) {
            Ok(n) if n == frame.len() => delivered += 1,
            Ok(n) => {
                backlog.extend_from_slice(&frame[n..]);
                delivered += 1;
                tokio::task::spawn_local(flush(Rc::clone(sub)));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                backlog.extend_from_slice(frame);
                delivered += 1;
                tokio::task::spawn_local(flush(Rc::clone(sub)));
            }
            Err(_) => sub.dead.set(true),
        }
    }
    subs.retain(|s| !s.dead.get());
    delivered
}

/// Writes a subscriber's backlog as its socket drains.
async fn flush(sub: Rc<Sub>) {
    loop {
        if sub.stream.writable().await.is_err() {
            sub.dead.set(true);
            return;
        }
        let mut backlog = sub.backlog.borrow_mut();
        match sub.stream.try_write(&backlog) {
            Ok(n) => {
                backlog.drain(..n);
                if backlog.is_empty() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => {
                sub.dead.set(true);
                backlog.clear();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_three_length_forms() {
        for (len, header) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let frame = text_frame(&vec![b'x'; len]);
            assert_eq!(frame.len(), header + len, "{len}");
            assert_eq!(frame[0], 0x81);
            assert_eq!(frame[1] & 0x80, 0, "server frames are unmasked");
        }
        assert_eq!(text_frame(b"hi"), b"\x81\x02hi");
    }

    #[test]
    fn requests_are_sorted_out() {
        let parse_head = |head: &[u8]| {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            assert!(req.parse(head).unwrap().is_complete());
            parse(&req)
        };
        let upgrade =
            b"GET /topics/t?x=1 HTTP/1.1\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        assert!(
            matches!(parse_head(upgrade), Request::Upgrade { path, .. } if path == "/topics/t")
        );
        let post = b"POST /topics/t HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
        assert!(matches!(parse_head(post), Request::Post { path, len: 5 } if path == "/topics/t"));
        let huge = b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n";
        assert!(matches!(parse_head(huge), Request::Bad(s) if s.starts_with("413")));
        let no_len = b"POST / HTTP/1.1\r\n\r\n";
        assert!(matches!(parse_head(no_len), Request::Bad(s) if s.starts_with("411")));
        let no_key = b"GET / HTTP/1.1\r\n\r\n";
        assert!(matches!(parse_head(no_key), Request::Bad(s) if s.starts_with("400")));
    }
}
