//! Shared plumbing for the peer echo servers used by `bench/compare.sh`.
//!
//! Every peer binary is an echo server, single-threaded (tokio `current_thread`) by
//! default or on a tokio multi-thread runtime of N workers with `--threads N`, that
//! takes `--bind ADDR` (default `127.0.0.1:0`), prints exactly one line
//! `listening on ws://IP:PORT` on stdout once bound, echoes every text/binary message
//! back as the same type, answers pings, finishes the close handshake, sets
//! TCP_NODELAY, logs nothing per message and accepts messages up to [`MAX_MESSAGE`].
//!
//! This module holds what the peers share: argument parsing, the listener (with a deep
//! accept backlog so that 10,000 connections can arrive in a burst), the runtime (the
//! one place that reads `--threads`, so every peer has both modes), and a
//! minimal server handshake for the peers that do not bring their own.

use std::future::Future;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Largest message (and frame) every peer accepts: 128 MiB, comfortably above the
/// 64 MiB floor the harness asks for.
pub const MAX_MESSAGE: usize = 128 << 20;

/// Listen backlog; the kernel caps it at `net.core.somaxconn`.
const BACKLOG: u32 = 4096;

/// Largest opening handshake request the raw handshake accepts.
const MAX_REQUEST: usize = 16 * 1024;

/// The GUID of RFC 6455 §1.3.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Most runtime threads `--threads` accepts.
pub const MAX_THREADS: usize = 256;

/// What a peer is told on its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Where to listen.
    pub bind: SocketAddr,
    /// Runtime threads: 1 is a `current_thread` runtime, more a multi-thread one with
    /// that many workers.
    pub threads: usize,
}

fn usage(name: &str) -> ! {
    eprintln!(
        "usage: {name} [--bind ADDR] [--threads N]   (defaults 127.0.0.1:0, 1 thread; \
         N at most {MAX_THREADS})"
    );
    std::process::exit(2)
}

/// Parses `--bind ADDR` and `--threads N` (also as `--flag=value`) from the command line.
pub fn options() -> Options {
    let mut args = std::env::args();
    let name = args.next().unwrap_or_else(|| "peer".into());
    parse_options(args).unwrap_or_else(|e| {
        eprintln!("{name}: {e}");
        usage(&name)
    })
}

fn parse_options(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut bind = String::from("127.0.0.1:0");
    let mut threads = String::from("1");
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        let slot = match flag.as_str() {
            "--bind" => &mut bind,
            "--threads" => &mut threads,
            _ => return Err(format!("unknown argument {flag:?}")),
        };
        *slot = match inline {
            Some(value) => value,
            None => args.next().ok_or_else(|| format!("{flag} wants a value"))?,
        };
    }
    let bind = bind
        .parse()
        .map_err(|_| format!("--bind wants IP:PORT, got {bind:?}"))?;
    let threads = threads
        .parse()
        .ok()
        .filter(|n| (1..=MAX_THREADS).contains(n))
        .ok_or_else(|| format!("--threads wants 1 to {MAX_THREADS}, got {threads:?}"))?;
    Ok(Options { bind, threads })
}

/// Binds a listener with a deep backlog and `SO_REUSEADDR`.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Binds `addr` with [`listen`] and prints the `listening on ws://ADDR` line the
/// scripts wait for; exits with status 1 if it cannot bind. Call inside a runtime.
pub fn listen_announced(addr: SocketAddr) -> TcpListener {
    let listener = match listen(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            std::process::exit(1)
        }
    };
    let local_addr = listener.local_addr().expect("local_addr");
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "listening on ws://{local_addr}");
    let _ = out.flush();
    listener
}

/// Runs a peer: builds the runtime (`current_thread`, or multi-thread with `--threads`
/// workers), binds, prints the `listening on` line and spawns `handle` for every
/// accepted connection (with TCP_NODELAY set) as a task of its own. Errors of a single
/// connection are the handler's business; this loop never exits on them.
pub fn serve<F, Fut>(handle: F) -> !
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Options {
        bind: addr,
        threads,
    } = options();
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    rt.block_on(async move {
        let listener = listen_announced(addr);
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    // `unconstrained`, as the peers' own echo examples do: no forced
                    // cooperative yields inside a connection's loop.
                    tokio::spawn(tokio::task::unconstrained(handle(stream)));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning or dying.
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
    unreachable!("the accept loop never ends")
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key);
    sha.update(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes())
}

fn bad_request(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

/// A minimal server opening handshake on a raw stream: reads the HTTP request, checks
/// that it is a WebSocket upgrade, answers `101 Switching Protocols` (or `400` and an
/// error). Returns the bytes that followed the request in the same reads (a client that
/// waits for the 101 as RFC 6455 §4.1 requires sends none).
pub async fn raw_handshake(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    // On the heap and freed afterwards: no buffer lives in the connection's future.
    let mut buf = Vec::with_capacity(1024);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve(1024);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_REQUEST {
                    return Err(bad_request("request too large"));
                }
            }
            Ok(httparse::Status::Complete(len)) => {
                let key = match websocket_key(&req) {
                    Some(key) => key,
                    None => {
                        let _ = stream
                            .write_all(
                                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                            )
                            .await;
                        return Err(bad_request("not a WebSocket upgrade"));
                    }
                };
                let response = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    accept_key(key)
                );
                stream.write_all(response.as_bytes()).await?;
                return Ok(buf.split_off(len));
            }
            Err(_) => return Err(bad_request("malformed HTTP request")),
        }
    }
}

fn websocket_key<'b>(req: &httparse::Request<'_, 'b>) -> Option<&'b [u8]> {
    if req.method != Some("GET") {
        return None;
    }
    let has_token = |name: &str, token: &str| {
        req.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case(name)
                && std::str::from_utf8(h.value)
                    .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return None;
    }
    req.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))
        .map(|h| h.value)
        .filter(|k| k.len() == 24)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        parse_options(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn options_are_parsed_and_checked() {
        let default = parse(&[]).unwrap();
        assert_eq!(default.bind, "127.0.0.1:0".parse().unwrap());
        assert_eq!(default.threads, 1);
        let both = parse(&["--bind", "[::1]:9000", "--threads=2"]).unwrap();
        assert_eq!(both.bind, "[::1]:9000".parse().unwrap());
        assert_eq!(both.threads, 2);
        assert_eq!(parse(&["--bind=127.0.0.1:1"]).unwrap().threads, 1);
        for bad in [
            &["--threads", "0"][..],
            &["--threads", "257"],
            &["--threads", "two"],
            &["--threads"],
            &["--bind", "localhost"],
            &["--port", "1"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse(&["--threads", "256"]).is_ok());
    }

    #[test]
    fn rfc6455_sample_key() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
