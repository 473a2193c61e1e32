//! `duplex bench URL`: a load generator that costs the client little, so that
//! what it measures is the server.
//!
//! It does not use the `WebSocket` type. Each connection does the opening
//! handshake with [`duplex_proto::handshake`] over a raw `TcpStream` (or, for
//! a `wss://` URL, over rustls through [`duplex_ws::tls::connect`], trusting the
//! platform roots plus `--ca`), offering no extension (so that every server
//! is compared on plain RFC 6455), and then:
//!
//! - `--mode echo`: sends one frame and waits for the whole reply, again and
//!   again, so each connection has exactly one message in flight; with
//!   `--pipeline K`, K of them: it sends K frames, and whenever replies come
//!   back sends as many again (one write for all of them), so that one core of
//!   load generation can keep a server busy with small messages. The frame is
//!   encoded and masked once, before the run, and every send writes those same
//!   bytes. Replies are read by parsing frame headers only: payload bytes are
//!   counted and skipped, never copied or unmasked. Reusing one masking key
//!   breaks RFC 6455 §5.3's "unpredictable" rule, which protects proxies from
//!   cache poisoning; a server cannot tell, and on loopback there is no proxy.
//!   After `--warmup` seconds, `--secs` seconds are measured: messages,
//!   latency (from each message's own send time to its whole reply, replies
//!   coming back in order; hdrhistogram) and, with `--server-pid`, the
//!   server's CPU time (utime + stime from `/proc/PID/stat`) per message.
//! - `--mode idle`: opens `--conns` connections, holds them, and with
//!   `--server-pid` reports the growth of the server's RSS per connection.
//!
//! `--json` prints one JSON object on stdout (the contract `bench/compare.sh`
//! reads); otherwise a human summary, with a progress bar on stderr while it
//! runs. Connections are spread over `--threads` single-threaded runtimes
//! (default one, so that the load generator can be pinned to one core).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use duplex_proto::handshake::{ClientHandshake, ClientRequest, HandshakeError, write_request};
use duplex_proto::{CloseCode, CloseFrame, FrameHeader, OpCode, ProtocolError, apply_mask};
use duplex_ws::MaybeTlsStream;
use duplex_ws::tls::rustls::ClientConfig;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

mod fanout;

/// The largest message `--size` accepts: the default message limit of most
/// servers, duplex's included.
const MAX_SIZE: usize = 64 << 20;
/// The largest handshake response head accepted.
const MAX_RESPONSE_HEAD: usize = 16 << 10;
/// How long one connection may take to connect and finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After the measured window, how long a connection may still wait for its
/// last reply and for the closing handshake.
const FINISH_GRACE: Duration = Duration::from_secs(3);
/// Handshakes in progress at once per thread, below the usual listen backlog.
const OPENERS: usize = 64;
/// File descriptors needed besides the connections (stdio, epoll, /proc...).
const SPARE_FDS: u64 = 64;
/// With `--pipeline` above 1, the most bytes of frames one connection may have
/// in flight. The connection writes while it is not reading: the server's
/// echoes must fit in the kernel's receive buffer meanwhile (128 KiB by
/// default on Linux, about half of it for data), or the server stops reading
/// while blocked writing and both ends wait for ever.
const MAX_PIPELINE_BYTES: usize = 64 << 10;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// Each connection echoes one message at a time: throughput, latency,
    /// server CPU per message.
    Echo,
    /// Open the connections and hold them: server memory per connection.
    Idle,
    /// Subscribers on topics and a publisher: deliveries a second, publish
    /// to delivery latency, lost and duplicated messages (see `fanout`).
    Fanout,
}

/// Arguments of `duplex bench`.
#[derive(Debug, Clone, Args)]
pub(crate) struct BenchArgs {
    /// The ws:// or wss:// URL of the server to load. With wss:// every
    /// connection speaks TLS (rustls), which is what it measures: the cost
    /// of TLS against the same server over ws://.
    url: String,
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Echo)]
    mode: Mode,
    /// Connections to open.
    #[arg(long, default_value_t = 100, value_name = "N")]
    conns: usize,
    /// Echo: payload size of each message, in bytes (at most 64 MiB).
    #[arg(long, default_value_t = 20, value_name = "BYTES")]
    size: usize,
    /// Echo: seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    secs: f64,
    /// Echo: seconds of load before measuring starts.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    warmup: f64,
    /// Echo binary messages (the default).
    #[arg(long, conflicts_with = "text")]
    binary: bool,
    /// Echo text messages (ASCII payload, which the server must validate).
    #[arg(long)]
    text: bool,
    /// The server's process id: sample its CPU time (echo) or RSS (idle).
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Idle: seconds to wait after every connection is open before reading
    /// the server's RSS.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    settle: f64,
    /// Load generator threads, each a single-threaded runtime with its share
    /// of the connections.
    #[arg(long, default_value_t = 1, value_name = "N")]
    threads: usize,
    /// Echo: messages in flight per connection. Above 1, the frames of one
    /// connection in flight may total at most 64 KiB (e.g. 20 B × 2,000 or
    /// 1 KiB × 63). Latency is still measured per message, from its own send.
    #[arg(long, default_value_t = 1, value_name = "K")]
    pipeline: usize,
    /// Print one JSON object on stdout instead of a summary, and no progress
    /// bar.
    #[arg(long)]
    json: bool,
    /// Offer permessage-deflate in the handshake (idle mode only: echo
    /// sends pre-encoded uncompressed frames), to measure what a deflate
    /// connection costs the server at rest.
    #[arg(long)]
    deflate: bool,
    /// A PEM file of extra root certificates to trust for wss://, besides
    /// the platform's.
    #[arg(long, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// Open each WebSocket over HTTP/2 (RFC 8441): one HTTP/2 connection
    /// per WebSocket (ALPN h2 for wss://, prior knowledge for ws://), so
    /// that the run compares with HTTP/1.1 connection for connection.
    #[arg(long)]
    http2: bool,
    #[command(flatten)]
    fanout: fanout::FanoutArgs,
}

/// Why a connection, or the whole run, failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BenchError {
    /// A flag is out of range.
    #[error("{0}")]
    Usage(String),
    /// A socket call failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The server refused or botched the opening handshake.
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// A reply frame broke RFC 6455.
    #[error("bad frame from the server: {0}")]
    Protocol(#[from] ProtocolError),
    /// A reply was well-formed but not the echo of what was sent.
    #[error("unexpected reply: {0}")]
    UnexpectedReply(String),
    /// The server ended the connection.
    #[error("the server closed the connection")]
    Closed,
    /// Connecting and the handshake took longer than 10 s.
    #[error("timed out connecting")]
    Timeout,
    /// TLS set-up or handshake failed (bad `--ca`, untrusted certificate...).
    #[error(transparent)]
    Tls(#[from] duplex_ws::tls::TlsError),
    /// The HTTP/2 connection failed (`--http2`).
    #[error(transparent)]
    Http2(#[from] duplex_ws::Error),
    /// `/proc/PID/...` could not be read or parsed.
    #[error("cannot read {path}: {reason}")]
    Proc {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// The validated settings of one run.
#[derive(Debug, Clone)]
struct Plan {
    mode: Mode,
    uri: http::Uri,
    addr: SocketAddr,
    conns: usize,
    size: usize,
    text: bool,
    secs: Duration,
    warmup: Duration,
    settle: Duration,
    threads: usize,
    pipeline: usize,
    server_pid: Option<u32>,
    json: bool,
    deflate: bool,
    http2: bool,
    /// For wss://: the TLS client configuration and the server name.
    tls: Option<Tls>,
}

/// How a wss:// run connects.
#[derive(Debug, Clone)]
struct Tls {
    config: Arc<ClientConfig>,
    host: String,
}

/// One connection's stream: plain TCP, or TLS over it for wss://.
type Conn = MaybeTlsStream<TcpStream>;

pub(crate) fn run(args: BenchArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut plan = validate(&args)?;
    plan.addr = resolve(&plan.uri)?;
    if is_tls(&plan.uri) {
        let roots = match &args.ca {
            Some(path) => duplex_ws::tls::load_certificates(path)?,
            None => Vec::new(),
        };
        plan.tls = Some(Tls {
            config: duplex_ws::tls::client_config(&roots)?,
            host: host_of(&plan.uri).to_owned(),
        });
    }
    if let Some(pid) = plan.server_pid {
        // Fail now, not after the run, if the pid is wrong.
        read_proc_cpu(pid)?;
    }
    raise_fd_limit(plan.conns as u64 + SPARE_FDS);
    let report = match plan.mode {
        Mode::Echo => run_echo(&plan)?,
        Mode::Idle => run_idle(&plan)?,
        Mode::Fanout => return fanout::run(&args),
    };
    if plan.json {
        println!("{}", report.json);
    } else {
        print!("{}", report.summary);
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Checks every flag and turns the arguments into a [`Plan`] (with the
/// address still unresolved).
fn validate(args: &BenchArgs) -> Result<Plan, BenchError> {
    let usage = |s: String| Err(BenchError::Usage(s));
    if args.conns == 0 {
        return usage("--conns must be at least 1".into());
    }
    if args.size > MAX_SIZE {
        return usage(format!(
            "--size {}: at most {MAX_SIZE} bytes (64 MiB)",
            args.size
        ));
    }
    if args.threads == 0 {
        return usage("--threads must be at least 1".into());
    }
    let secs = seconds("--secs", args.secs, false)?;
    let warmup = seconds("--warmup", args.warmup, true)?;
    let settle = seconds("--settle", args.settle, true)?;
    let uri: http::Uri = args
        .url
        .parse()
        .map_err(|e| BenchError::Usage(format!("{}: not a URL: {e}", args.url)))?;
    match uri.scheme_str() {
        Some("ws" | "http" | "wss" | "https") => {}
        _ => return usage(format!("{}: expected a ws:// or wss:// URL", args.url)),
    }
    if args.ca.is_some() && !is_tls(&uri) {
        return usage(format!("--ca: {} is not a wss:// URL", args.url));
    }
    if uri.host().is_none() {
        return usage(format!("{}: the URL has no host", args.url));
    }
    if args.deflate && args.mode != Mode::Idle {
        return usage("--deflate works with --mode idle only".into());
    }
    if args.pipeline == 0 {
        return usage("--pipeline must be at least 1".into());
    }
    if args.pipeline > 1 {
        if args.mode != Mode::Echo {
            return usage("--pipeline works with --mode echo only".into());
        }
        let frame = FrameHeader::new(OpCode::Binary, args.size, Some([0; 4])).len() + args.size;
        if args.pipeline.saturating_mul(frame) > MAX_PIPELINE_BYTES {
            return usage(format!(
                "--pipeline {} with --size {}: {} frames of {frame} bytes exceed the {} KiB \
                 a connection may have in flight",
                args.pipeline,
                args.size,
                args.pipeline,
                MAX_PIPELINE_BYTES >> 10
            ));
        }
    }
    Ok(Plan {
        mode: args.mode,
        uri,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        conns: args.conns,
        size: args.size,
        text: args.text,
        secs,
        warmup,
        settle,
        threads: args.threads.min(args.conns),
        pipeline: args.pipeline,
        server_pid: args.server_pid,
        json: args.json,
        deflate: args.deflate,
        http2: args.http2,
        tls: None,
    })
}

fn is_tls(uri: &http::Uri) -> bool {
    matches!(uri.scheme_str(), Some("wss" | "https"))
}

/// The URL's host without the brackets of an IPv6 literal.
fn host_of(uri: &http::Uri) -> &str {
    let host = uri.host().unwrap_or_default();
    host.trim_start_matches('[').trim_end_matches(']')
}

fn seconds(flag: &str, secs: f64, zero_ok: bool) -> Result<Duration, BenchError> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| zero_ok || !d.is_zero())
        .ok_or_else(|| {
            let what = if zero_ok { "0 or more" } else { "more than 0" };
            BenchError::Usage(format!("{flag} {secs}: must be {what} seconds"))
        })
}

fn resolve(uri: &http::Uri) -> Result<SocketAddr, BenchError> {
    use std::net::ToSocketAddrs;
    let host = host_of(uri);
    let port = uri.port_u16().unwrap_or(if is_tls(uri) { 443 } else { 80 });
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| BenchError::Usage(format!("{host}: no address")))
}

/// Encodes one client frame: a single masked data frame of `size` bytes.
/// Built once; every send writes these bytes.
fn build_frame(text: bool, size: usize, key: [u8; 4]) -> Vec<u8> {
    let opcode = if text { OpCode::Text } else { OpCode::Binary };
    let header = FrameHeader::new(opcode, size, Some(key));
    let mut frame = Vec::with_capacity(header.len() + size);
    header.write(&mut frame);
    let start = frame.len();
    // Printable ASCII, so a text frame is valid UTF-8.
    frame.extend((0..size).map(|i| b' ' + (i % 95) as u8));
    apply_mask(&mut frame[start..], key, 0);
    frame
}

/// A masked Close frame with 1000, to end each connection cleanly.
fn build_close(key: [u8; 4]) -> Vec<u8> {
    let body = CloseFrame::new(CloseCode::NORMAL, "").encode();
    client_frame(OpCode::Close, &body, key)
}

/// A masked client frame of one fragment (a Close, a Pong answering a Ping, a
/// subscribe request of the fan-out mode).
fn client_frame(opcode: OpCode, body: &[u8], key: [u8; 4]) -> Vec<u8> {
    let header = FrameHeader::new(opcode, body.len(), Some(key));
    let mut frame = Vec::with_capacity(header.len() + body.len());
    header.write(&mut frame);
    let start = frame.len();
    frame.extend_from_slice(body);
    apply_mask(&mut frame[start..], key, 0);
    frame
}

/// Follows the server's frames, header by header, skipping payloads, until
/// one whole data message has gone by. Pings are kept to be answered
/// (servers with keepalive, duplex's included, drop a peer that never
/// answers).
#[derive(Debug)]
struct ReplyParser {
    /// The payload of the latest Ping, owed a Pong (§5.5.3: answering the
    /// latest is enough).
    pong: Option<Vec<u8>>,
    /// The payload size the reply must have.
    expected: u64,
    /// Payload bytes of the current frame still to skip.
    remaining: u64,
    /// The current frame is the last of the message.
    fin: bool,
    /// The current frame is a control frame (skipped, not counted).
    control: bool,
    /// A data message has started (its first frame was seen).
    in_message: bool,
    /// Payload bytes of the message so far.
    received: u64,
    /// A header was parsed and its payload is being skipped.
    in_frame: bool,
}

/// What [`ReplyParser::feed`] did with a buffer.
#[derive(Debug, PartialEq, Eq)]
struct Fed {
    /// Bytes of the buffer used up; the rest belongs to later frames.
    consumed: usize,
    /// The whole reply went by.
    done: bool,
}

impl ReplyParser {
    fn new(expected: usize) -> Self {
        ReplyParser {
            pong: None,
            expected: expected as u64,
            remaining: 0,
            fin: false,
            control: false,
            in_message: false,
            received: 0,
            in_frame: false,
        }
    }

    /// Readies the parser for the next reply, keeping a Pong still owed.
    fn next_reply(&mut self) {
        *self = ReplyParser {
            pong: self.pong.take(),
            ..ReplyParser::new(self.expected as usize)
        };
    }

    /// Consumes what it can of `buf`.
    fn feed(&mut self, buf: &[u8]) -> Result<Fed, BenchError> {
        let mut pos = 0;
        loop {
            if self.in_frame {
                let take = self.remaining.min((buf.len() - pos) as u64);
                pos += take as usize;
                self.remaining -= take;
                if self.remaining > 0 {
                    return Ok(Fed {
                        consumed: pos,
                        done: false,
                    });
                }
                self.in_frame = false;
                if !self.control && self.fin {
                    if self.received != self.expected {
                        return Err(BenchError::UnexpectedReply(format!(
                            "a message of {} bytes, expected {}",
                            self.received, self.expected
                        )));
                    }
                    return Ok(Fed {
                        consumed: pos,
                        done: true,
                    });
                }
            }
            let Some((header, len)) = FrameHeader::parse(&buf[pos..])? else {
                return Ok(Fed {
                    consumed: pos,
                    done: false,
                });
            };
            if header.mask.is_some() {
                return Err(ProtocolError::MaskedFrame.into());
            }
            if header.rsv1 || header.rsv2 || header.rsv3 {
                return Err(ProtocolError::ReservedBits.into());
            }
            if header.opcode == OpCode::Ping {
                // Control payloads are at most 125 bytes: wait for all of it.
                let end = pos + len + header.payload_len as usize;
                let Some(payload) = buf.get(pos + len..end) else {
                    return Ok(Fed {
                        consumed: pos,
                        done: false,
                    });
                };
                self.pong = Some(payload.to_vec());
                pos = end;
                continue;
            }
            match (header.opcode, self.in_message) {
                (OpCode::Close, _) => return Err(BenchError::Closed),
                // (Pings were taken whole above.)
                (OpCode::Ping | OpCode::Pong, _) => self.control = true,
                (OpCode::Text | OpCode::Binary, false) | (OpCode::Continuation, true) => {
                    self.control = false;
                    self.in_message = true;
                    self.fin = header.fin;
                    self.received += header.payload_len;
                }
                (OpCode::Continuation, false) => {
                    return Err(ProtocolError::UnexpectedContinuation.into());
                }
                (_, true) => return Err(ProtocolError::ExpectedContinuation.into()),
            }
            pos += len;
            self.remaining = header.payload_len;
            self.in_frame = true;
        }
    }
}

/// A connection's receive buffer: bytes in `buf[start..end]` are unread.
#[derive(Debug)]
struct Reader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Reader {
    fn new(capacity: usize) -> Self {
        Reader {
            // At least room for the handshake response head.
            buf: vec![0; capacity.max(4096)],
            start: 0,
            end: 0,
        }
    }

    /// Makes room at the end of the buffer for the next read.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Reads once; an end of stream is [`BenchError::Closed`].
    ///
    /// (No need to save the "would block" read that follows a reply: tokio
    /// forgets a socket's readiness by itself when a read does not fill the
    /// buffer, so the next read waits for epoll first.)
    async fn read_some(&mut self, stream: &mut Conn) -> Result<(), BenchError> {
        self.make_room();
        let n = stream.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            return Err(BenchError::Closed);
        }
        self.end += n;
        Ok(())
    }

    /// Parses the replies already buffered, without reading: returns how
    /// many went by whole. A partial reply stays in `parser`, and a Ping's
    /// payload owed a Pong in `parser.pong`.
    fn take_replies(&mut self, parser: &mut ReplyParser) -> Result<usize, BenchError> {
        let mut replies = 0;
        loop {
            let fed = parser.feed(&self.buf[self.start..self.end])?;
            self.start += fed.consumed;
            if !fed.done {
                return Ok(replies);
            }
            replies += 1;
            parser.next_reply();
        }
    }

    /// Idle mode: answers the Pings buffered so far. A Close ends the
    /// connection; a data frame is an error (nothing else should come).
    async fn answer_pings(&mut self, stream: &mut Conn, key: [u8; 4]) -> Result<(), BenchError> {
        let mut parser = ReplyParser::new(0);
        let fed = parser.feed(&self.buf[self.start..self.end])?;
        self.start += fed.consumed;
        if fed.done || parser.in_message {
            return Err(BenchError::UnexpectedReply(
                "a data message on an idle connection".into(),
            ));
        }
        if let Some(payload) = parser.pong {
            send(stream, &client_frame(OpCode::Pong, &payload, key)).await?;
        }
        Ok(())
    }
}

/// Connects (with TLS for wss://) and does the opening handshake, offering
/// no extension unless `--deflate`. Bytes after the response head stay in
/// `reader`.
async fn open(plan: &Plan, reader: &mut Reader) -> Result<Conn, BenchError> {
    if plan.http2 {
        return tokio::time::timeout(HANDSHAKE_TIMEOUT, open_http2(plan))
            .await
            .map_err(|_| BenchError::Timeout)?;
    }
    let work = async {
        let tcp = TcpStream::connect(plan.addr).await?;
        tcp.set_nodelay(true)?;
        let mut stream = match &plan.tls {
            None => MaybeTlsStream::Plain(tcp),
            Some(tls) => {
                let tls = duplex_ws::tls::connect(Arc::clone(&tls.config), &tls.host, tcp).await?;
                MaybeTlsStream::Tls(Box::new(tls))
            }
        };
        let mut request = ClientRequest::new(plan.uri.clone());
        if plan.deflate {
            request = request.extensions(duplex_ws::DeflateConfig::default().client_offer());
        }
        let (request, handshake) = request.build()?;
        let mut head = Vec::with_capacity(256);
        write_request(&request, &mut head);
        send(&mut stream, &head).await?;
        read_response(&mut stream, &handshake, reader).await?;
        Ok(stream)
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, work)
        .await
        .map_err(|_| BenchError::Timeout)?
}

/// An HTTP/2 connection of its own and one extended CONNECT on it; the
/// WebSocket protocol on the stream is then the same as over HTTP/1.1.
async fn open_http2(plan: &Plan) -> Result<Conn, BenchError> {
    let mut builder = duplex_ws::ClientBuilder::new(plan.uri.to_string()).http2(true);
    if let Some(tls) = &plan.tls {
        builder = builder.tls_config(Arc::clone(&tls.config));
    }
    let connection = duplex_ws::Http2Connection::connect(&builder).await?;
    let mut request = ClientRequest::new(plan.uri.clone());
    if plan.deflate {
        request = request.extensions(duplex_ws::DeflateConfig::default().client_offer());
    }
    let (request, handshake) = request.build_http2()?;
    let (response, stream) = connection.send_connect(request).await?;
    handshake.validate_response(&response)?;
    stream.ok_or(BenchError::Closed)
}

/// Writes all of `bytes` and flushes (a no-op on plain TCP; with TLS, it
/// pushes the last record out).
async fn send(stream: &mut Conn, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

async fn read_response(
    stream: &mut Conn,
    handshake: &ClientHandshake,
    reader: &mut Reader,
) -> Result<(), BenchError> {
    loop {
        let window = &reader.buf[reader.start..reader.end];
        if let Some((_, head_len)) = handshake.parse_response(window, MAX_RESPONSE_HEAD)? {
            reader.start += head_len;
            return Ok(());
        }
        if reader.end == reader.buf.len() && reader.start == 0 {
            return Err(BenchError::UnexpectedReply(
                "the handshake response does not fit the read buffer".into(),
            ));
        }
        reader.read_some(stream).await?;
    }
}

/// Sends a Close and waits (briefly) for the server's answer and the end of
/// the TCP connection, so that servers see a clean close.
async fn close(mut stream: Conn, close_frame: &[u8]) {
    let work = async {
        send(&mut stream, close_frame).await?;
        let mut sink = [0u8; 512];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    // Either way the connection is over; the server's behaviour is its own.
    let _ = tokio::time::timeout(FINISH_GRACE, work).await;
}

/// When the measured window begins and ends; sent to every connection once
/// all are open.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

/// What one thread counted.
struct Stats {
    /// Round-trip times in nanoseconds, within the window.
    latency: Histogram<u64>,
    /// Replies completed within the window.
    msgs: u64,
    errors: u64,
}

impl Stats {
    fn new() -> Self {
        Stats {
            // 1 µs to 60 s at three significant digits.
            latency: Histogram::new_with_bounds(1_000, 60_000_000_000, 3)
                .expect("constant histogram bounds are valid"),
            msgs: 0,
            errors: 0,
        }
    }
}

/// Counters the threads update and the controller reads while they run.
#[derive(Default)]
struct Progress {
    /// Connections that finished their handshake.
    opened: AtomicU64,
    /// Connections that failed (to open, or later).
    failed: AtomicU64,
    /// Replies received, warm-up included.
    replies: AtomicU64,
    /// Why the first failed connection failed, to tell the user.
    first_error: std::sync::Mutex<Option<String>>,
}

impl Progress {
    /// Logs a connection's failure and keeps the first one's reason.
    fn note_error(&self, e: &BenchError) {
        tracing::debug!(error = %e, "connection failed");
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| e.to_string());
        }
    }

    /// Waits until every connection opened or failed, showing progress.
    fn wait_until_all_tried(&self, conns: usize, bar: &ProgressBar) {
        loop {
            let opened = self.opened.load(Ordering::Relaxed);
            bar.set_position(opened);
            if opened + self.failed.load(Ordering::Relaxed) >= conns as u64 {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A thread's runtime; if it cannot start, its connections count as
    /// failed.
    fn runtime_for(&self, conns: usize) -> Option<tokio::runtime::Runtime> {
        let built = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match built {
            Ok(runtime) => Some(runtime),
            Err(e) => {
                tracing::error!(error = %e, "cannot start a runtime");
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| format!("cannot start a runtime: {e}"));
                }
                self.failed.fetch_add(conns as u64, Ordering::Relaxed);
                None
            }
        }
    }

    fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|first| first.clone())
    }
}

/// The pre-built frames every connection of a run sends.
struct Frames {
    /// The message frame `--pipeline` times over, so that sending n frames at
    /// once is one write of `batch[..n * len]`.
    batch: Vec<u8>,
    /// The length of one message frame.
    len: usize,
    close: Vec<u8>,
    /// The masking key of the run, for Pongs.
    key: [u8; 4],
}

fn run_echo(plan: &Plan) -> Result<Report, BenchError> {
    let key: [u8; 4] = rand_key();
    let message = build_frame(plan.text, plan.size, key);
    let frames = Arc::new(Frames {
        len: message.len(),
        // `validate` bounds the batch to 64 KiB when `pipeline` is above 1.
        batch: message.repeat(plan.pipeline),
        close: build_close(key),
        key,
    });
    let progress = Arc::new(Progress::default());
    let (window_tx, window_rx) = watch::channel(None::<Window>);
    let bar = progress_bar(plan, plan.conns as u64, "connecting");
    let workers: Vec<_> = shares(plan.conns, plan.threads)
        .map(|share| {
            let plan = plan.clone();
            let frames = Arc::clone(&frames);
            let progress = Arc::clone(&progress);
            let window_rx = window_rx.clone();
            std::thread::spawn(move || echo_thread(&plan, share, &frames, &progress, window_rx))
        })
        .collect();
    drop(window_rx);

    // Wait for every connection to be open (or failed) before the clock starts.
    progress.wait_until_all_tried(plan.conns, &bar);
    let opened = progress.opened.load(Ordering::Relaxed);
    let start = Instant::now() + plan.warmup;
    let window = Window {
        start,
        end: start + plan.secs,
    };
    // Receivers are gone only if every thread ended already.
    let _ = window_tx.send(Some(window));

    let total = plan.warmup + plan.secs;
    bar.set_length(total.as_millis() as u64);
    bar.set_position(0);
    bar.set_style(bar_style("{spinner} {prefix} [{bar:30}] {elapsed} {msg}"));
    bar.set_prefix(if plan.warmup.is_zero() {
        "measuring"
    } else {
        "warming up"
    });
    let began = Instant::now();
    let tick = |bar: &ProgressBar| {
        bar.set_position(began.elapsed().as_millis() as u64);
        let replies = progress.replies.load(Ordering::Relaxed);
        bar.set_message(format!("{replies} replies"));
    };
    sleep_until(window.start, || tick(&bar));
    let cpu_before = plan.server_pid.map(read_proc_cpu).transpose()?;
    bar.set_prefix("measuring");
    sleep_until(window.end, || tick(&bar));
    let cpu_after = plan.server_pid.map(read_proc_cpu).transpose()?;
    bar.set_prefix("finishing");

    let mut stats = Stats::new();
    for worker in workers {
        let s = worker
            .join()
            .map_err(|_| BenchError::UnexpectedReply("a load thread panicked".into()))?;
        stats
            .latency
            .add(&s.latency)
            .map_err(|e| BenchError::UnexpectedReply(format!("merging latency histograms: {e}")))?;
        stats.msgs += s.msgs;
        stats.errors += s.errors;
    }
    bar.finish_and_clear();

    let secs = plan.secs.as_secs_f64();
    let cpu_us = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) if stats.msgs > 0 => {
            Some(b.saturating_sub(a) as f64 / stats.msgs as f64)
        }
        _ => None,
    };
    let result = EchoResult {
        conns: plan.conns,
        opened,
        size: plan.size,
        text: plan.text,
        threads: plan.threads,
        pipeline: plan.pipeline,
        secs,
        warmup: plan.warmup.as_secs_f64(),
        msgs: stats.msgs,
        errors: stats.errors,
        first_error: progress.first_error(),
        latency: &stats.latency,
        server_cpu_us_per_msg: cpu_us,
    };
    Ok(Report {
        json: result.json().to_string(),
        summary: result.summary(),
        ok: stats.msgs > 0,
    })
}

/// The connections of one thread, each in its own task.
fn echo_thread(
    plan: &Plan,
    conns: usize,
    frames: &Arc<Frames>,
    progress: &Arc<Progress>,
    window: watch::Receiver<Option<Window>>,
) -> Stats {
    let stats = Rc::new(RefCell::new(Stats::new()));
    let Some(runtime) = progress.runtime_for(conns) else {
        let mut s = Stats::new();
        s.errors = conns as u64;
        return s;
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let mut tasks = Vec::with_capacity(conns);
        for _ in 0..conns {
            let plan = plan.clone();
            let frames = Arc::clone(frames);
            let progress = Arc::clone(progress);
            let stats = Rc::clone(&stats);
            let window = window.clone();
            tasks.push(tokio::task::spawn_local(async move {
                let result = echo_conn(&plan, &frames, &progress, &stats, window).await;
                if let Err(e) = result {
                    progress.note_error(&e);
                    stats.borrow_mut().errors += 1;
                }
            }));
        }
        for task in tasks {
            // A task only ends by returning; a panic would be a bug here.
            let _ = task.await;
        }
    });
    // Every task was awaited, so this is the last reference.
    Rc::try_unwrap(stats).map_or_else(|rc| rc.replace(Stats::new()), RefCell::into_inner)
}

/// One connection of the echo mode.
async fn echo_conn(
    plan: &Plan,
    frames: &Frames,
    progress: &Progress,
    stats: &RefCell<Stats>,
    mut window: watch::Receiver<Option<Window>>,
) -> Result<(), BenchError> {
    // Reads of up to 256 KiB: large replies in few system calls.
    let mut reader = Reader::new((plan.size + duplex_proto::MAX_HEADER_LEN).min(256 << 10));
    let opened = open(plan, &mut reader).await;
    let mut stream = match opened {
        Ok(stream) => {
            progress.opened.fetch_add(1, Ordering::Relaxed);
            stream
        }
        Err(e) => {
            progress.failed.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
    };
    let window = match window.wait_for(Option::is_some).await {
        Ok(window) => *window,
        Err(_) => None,
    };
    let Some(window) = window else {
        // The controller is gone: nothing to measure.
        return Ok(());
    };
    let run = async {
        let mut in_flight = InFlight::new(plan.pipeline);
        let mut parser = ReplyParser::new(plan.size);
        loop {
            let n = in_flight.refill(Instant::now(), window.end);
            if n > 0 {
                send(&mut stream, &frames.batch[..n * frames.len]).await?;
            }
            if in_flight.is_empty() {
                return Ok(());
            }
            let replies = loop {
                let replies = reader.take_replies(&mut parser)?;
                if let Some(ping) = parser.pong.take() {
                    send(&mut stream, &client_frame(OpCode::Pong, &ping, frames.key)).await?;
                }
                if replies > 0 {
                    break replies;
                }
                reader.read_some(&mut stream).await?;
            };
            let done = Instant::now();
            progress
                .replies
                .fetch_add(replies as u64, Ordering::Relaxed);
            in_flight.complete(replies, done, &window, &mut stats.borrow_mut())?;
        }
    };
    // Past the window's end, only the last replies may still be awaited.
    let give_up = tokio::time::Instant::from_std(window.end + FINISH_GRACE);
    match tokio::time::timeout_at(give_up, run).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(BenchError::UnexpectedReply(
                "no reply by the end of the run".into(),
            ));
        }
    }
    close(stream, &frames.close).await;
    Ok(())
}

/// The messages one connection has in flight, by send time, oldest first.
#[derive(Debug)]
struct InFlight {
    sent: VecDeque<Instant>,
    /// The most in flight at once (`--pipeline`).
    depth: usize,
}

impl InFlight {
    fn new(depth: usize) -> Self {
        InFlight {
            sent: VecDeque::with_capacity(depth),
            depth,
        }
    }

    /// Tops up to `depth` messages sent at `now`, unless the window is over;
    /// returns how many to send.
    fn refill(&mut self, now: Instant, end: Instant) -> usize {
        if now >= end {
            return 0;
        }
        let n = self.depth - self.sent.len();
        self.sent.extend((0..n).map(|_| now));
        n
    }

    fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }

    /// `replies` came back whole at `done`: the oldest messages, since an
    /// echo keeps the order. Those completed within the window count, each
    /// with its latency from its own send time.
    fn complete(
        &mut self,
        replies: usize,
        done: Instant,
        window: &Window,
        stats: &mut Stats,
    ) -> Result<(), BenchError> {
        if replies > self.sent.len() {
            return Err(BenchError::UnexpectedReply(format!(
                "{replies} replies with {} messages in flight",
                self.sent.len()
            )));
        }
        let counted = done >= window.start && done < window.end;
        for sent in self.sent.drain(..replies) {
            if counted {
                stats.msgs += 1;
                stats.latency.saturating_record(nanos(done - sent));
            }
        }
        Ok(())
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn run_idle(plan: &Plan) -> Result<Report, BenchError> {
    let progress = Arc::new(Progress::default());
    let (done_tx, done_rx) = watch::channel(false);
    let rss_before = plan.server_pid.map(read_proc_rss).transpose()?;
    let bar = progress_bar(plan, plan.conns as u64, "opening");
    let key = rand_key();
    let close = Arc::new(build_close(key));
    let workers: Vec<_> = shares(plan.conns, plan.threads)
        .map(|share| {
            let plan = plan.clone();
            let progress = Arc::clone(&progress);
            let done_rx = done_rx.clone();
            let close = Arc::clone(&close);
            std::thread::spawn(move || idle_thread(&plan, share, &progress, done_rx, &close, key))
        })
        .collect();
    drop(done_rx);
    progress.wait_until_all_tried(plan.conns, &bar);
    bar.set_message("settling");
    std::thread::sleep(plan.settle);
    let rss_after = plan.server_pid.map(read_proc_rss).transpose()?;
    let _ = done_tx.send(true);
    bar.set_message("closing");
    for worker in workers {
        let _ = worker.join();
    }
    bar.finish_and_clear();
    let opened = progress.opened.load(Ordering::Relaxed);
    let errors = progress.failed.load(Ordering::Relaxed);
    let result = IdleResult {
        conns: plan.conns,
        opened,
        rss_before,
        rss_after,
        errors,
        first_error: progress.first_error(),
    };
    Ok(Report {
        json: result.json().to_string(),
        summary: result.summary(),
        ok: opened > 0,
    })
}

fn idle_thread(
    plan: &Plan,
    conns: usize,
    progress: &Arc<Progress>,
    done: watch::Receiver<bool>,
    close_frame: &Arc<Vec<u8>>,
    key: [u8; 4],
) {
    let Some(runtime) = progress.runtime_for(conns) else {
        return;
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let next = Rc::new(std::cell::Cell::new(0usize));
        let mut openers = Vec::new();
        for _ in 0..OPENERS.min(conns) {
            let next = Rc::clone(&next);
            let plan = plan.clone();
            let progress = Arc::clone(progress);
            let done = done.clone();
            let close_frame = Arc::clone(close_frame);
            openers.push(tokio::task::spawn_local(async move {
                let mut holders = Vec::new();
                while next.get() < conns {
                    next.set(next.get() + 1);
                    let mut reader = Reader::new(4096);
                    match open(&plan, &mut reader).await {
                        Ok(stream) => {
                            progress.opened.fetch_add(1, Ordering::Relaxed);
                            let held = Held {
                                stream,
                                reader,
                                key,
                            };
                            let progress = Arc::clone(&progress);
                            let done = done.clone();
                            let close_frame = Arc::clone(&close_frame);
                            holders.push(tokio::task::spawn_local(async move {
                                held.hold(&progress, done, &close_frame).await;
                            }));
                        }
                        Err(e) => {
                            progress.note_error(&e);
                            progress.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                holders
            }));
        }
        let mut holders = Vec::with_capacity(conns);
        for opener in openers {
            holders.extend(opener.await.unwrap_or_default());
        }
        for holder in holders {
            let _ = holder.await;
        }
    });
}

/// One idle connection, held open until the controller is done with it.
struct Held {
    stream: Conn,
    reader: Reader,
    key: [u8; 4],
}

impl Held {
    /// Answers the server's Pings (keepalive) until `done`, then closes.
    async fn hold(
        mut self,
        progress: &Progress,
        mut done: watch::Receiver<bool>,
        close_frame: &[u8],
    ) {
        loop {
            let read = tokio::select! {
                biased;
                _ = done.wait_for(|done| *done) => break,
                read = self.reader.read_some(&mut self.stream) => read,
            };
            let answered = match read {
                Ok(()) => self.reader.answer_pings(&mut self.stream, self.key).await,
                Err(e) => Err(e),
            };
            if let Err(e) = answered {
                progress.note_error(&e);
                progress.failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        close(self.stream, close_frame).await;
    }
}

/// Splits `conns` connections over `threads` threads, as evenly as can be.
fn shares(conns: usize, threads: usize) -> impl Iterator<Item = usize> {
    let threads = threads.clamp(1, conns.max(1));
    (0..threads).map(move |i| conns / threads + usize::from(i < conns % threads))
}

/// Sleeps until `deadline`, calling `tick` every 100 ms.
fn sleep_until(deadline: Instant, mut tick: impl FnMut()) {
    loop {
        tick();
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(100)));
    }
}

/// A random masking key for the run (the one place randomness is needed).
fn rand_key() -> [u8; 4] {
    // The handshake key generator is a CSPRNG; borrow four of its bytes.
    let key = duplex_proto::handshake::generate_key();
    let b = key.as_bytes();
    [b[0], b[1], b[2], b[3]]
}

fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// A progress bar on stderr, hidden with `--json` or when stderr is not a
/// terminal.
fn progress_bar(plan: &Plan, len: u64, what: &'static str) -> ProgressBar {
    if plan.json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(bar_style("{spinner} {prefix} [{bar:30}] {pos}/{len} {msg}"));
    bar.set_prefix(what);
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// What a run prints.
struct Report {
    json: String,
    summary: String,
    /// Whether anything was measured at all (the exit status).
    ok: bool,
}

struct EchoResult<'a> {
    conns: usize,
    opened: u64,
    size: usize,
    text: bool,
    threads: usize,
    pipeline: usize,
    secs: f64,
    warmup: f64,
    msgs: u64,
    errors: u64,
    first_error: Option<String>,
    latency: &'a Histogram<u64>,
    server_cpu_us_per_msg: Option<f64>,
}

impl EchoResult<'_> {
    fn msgs_per_sec(&self) -> f64 {
        self.msgs as f64 / self.secs
    }

    fn mib_per_sec(&self) -> f64 {
        self.msgs_per_sec() * self.size as f64 / f64::from(1 << 20)
    }

    /// A latency quantile in µs; `None` with no sample.
    fn quantile_us(&self, q: f64) -> Option<f64> {
        (!self.latency.is_empty()).then(|| self.latency.value_at_quantile(q) as f64 / 1000.0)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "mode": "echo",
            "conns": self.conns,
            "size": self.size,
            "secs": self.secs,
            "msgs": self.msgs,
            "msgs_per_sec": self.msgs_per_sec(),
            "mib_per_sec": self.mib_per_sec(),
            "p50_us": self.quantile_us(0.5),
            "p99_us": self.quantile_us(0.99),
            "p999_us": self.quantile_us(0.999),
            "errors": self.errors,
            "first_error": self.first_error,
            "server_cpu_us_per_msg": self.server_cpu_us_per_msg,
            "threads": self.threads,
            "pipeline": self.pipeline,
        })
    }

    fn summary(&self) -> String {
        let us = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} µs"));
        let kind = if self.text { "text" } else { "binary" };
        let mut s = format!(
            "echo: {} connections ({} opened), {} B {kind} messages, {} s measured after {} s warm-up\n",
            self.conns, self.opened, self.size, self.secs, self.warmup
        );
        s += &format!(
            "  load       {} thread(s), {} message(s) in flight per connection\n",
            self.threads, self.pipeline
        );
        s += &format!(
            "  messages   {} ({:.0} msgs/s, {:.2} MiB/s)\n",
            self.msgs,
            self.msgs_per_sec(),
            self.mib_per_sec()
        );
        s += &format!(
            "  latency    p50 {}  p99 {}  p99.9 {}\n",
            us(self.quantile_us(0.5)),
            us(self.quantile_us(0.99)),
            us(self.quantile_us(0.999))
        );
        if let Some(cpu) = self.server_cpu_us_per_msg {
            s += &format!("  server CPU {cpu:.2} µs per message\n");
        }
        s += &errors_line(self.errors, self.first_error.as_deref());
        s
    }
}

struct IdleResult {
    conns: usize,
    opened: u64,
    rss_before: Option<u64>,
    rss_after: Option<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl IdleResult {
    fn bytes_per_conn(&self) -> Option<f64> {
        match (self.rss_before, self.rss_after) {
            (Some(a), Some(b)) if self.opened > 0 => {
                Some((b as f64 - a as f64) / self.opened as f64)
            }
            _ => None,
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "mode": "idle",
            "conns": self.conns,
            "rss_before": self.rss_before,
            "rss_after": self.rss_after,
            "bytes_per_conn": self.bytes_per_conn(),
            "errors": self.errors,
            "first_error": self.first_error,
        })
    }

    fn summary(&self) -> String {
        let mut s = format!(
            "idle: {} connections requested, {} open\n",
            self.conns, self.opened
        );
        if let (Some(a), Some(b), Some(per)) =
            (self.rss_before, self.rss_after, self.bytes_per_conn())
        {
            s += &format!("  server RSS {a} B before, {b} B after: {per:.0} B per connection\n");
        }
        s += &errors_line(self.errors, self.first_error.as_deref());
        s
    }
}

fn errors_line(errors: u64, first: Option<&str>) -> String {
    match first {
        Some(first) if errors > 0 => format!("  errors     {errors} (first: {first})\n"),
        _ => format!("  errors     {errors}\n"),
    }
}

/// The server's CPU time so far (user + system), in microseconds, from
/// `/proc/PID/stat`.
fn read_proc_cpu(pid: u32) -> Result<u64, BenchError> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| BenchError::Proc {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let ticks = parse_stat_cpu_ticks(&text).ok_or_else(|| BenchError::Proc {
        path,
        reason: "unexpected format".into(),
    })?;
    Ok(ticks.saturating_mul(1_000_000) / clock_ticks_per_sec())
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted
/// from the last `)`.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3, so utime (14) is the 12th from here.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf only reads a system constant; it has no preconditions
    // and touches no memory of ours. Tested by `clock_ticks_are_positive`.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// The server's resident set size in bytes, from `/proc/PID/status`.
fn read_proc_rss(pid: u32) -> Result<u64, BenchError> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| BenchError::Proc {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    parse_status_rss(&text).ok_or_else(|| BenchError::Proc {
        path,
        reason: "no VmRSS line".into(),
    })
}

/// `VmRSS:   1234 kB` → bytes.
fn parse_status_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => Some(value * 1024),
        Some(_) => None,
    }
}

/// Raises the soft limit on open files to the hard limit, and says so on
/// stderr if that is still fewer than `needed`.
fn raise_fd_limit(needed: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the call to fill.
    // Tested by `fd_limit_can_be_read_and_raised`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        eprintln!("duplex bench: cannot read the open-file limit; --conns may fail");
        return;
    }
    // An unlimited hard limit still stops at the kernel's fs.nr_open.
    let target = if limit.rlim_max == libc::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20)
    } else {
        limit.rlim_max
    };
    if limit.rlim_cur < target {
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit that only the call reads.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = target;
        }
    }
    let current = limit.rlim_cur;
    tracing::debug!(soft = current, hard = limit.rlim_max, "open-file limit");
    if current < needed {
        eprintln!(
            "duplex bench: the open-file limit is {current} (hard limit {}), but {needed} are \
             needed; connections past the limit will fail (raise it with `ulimit -n`)",
            limit.rlim_max
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<Plan, String> {
        let cli = Cli::try_parse_from(["bench"].iter().chain(args)).map_err(|e| e.to_string())?;
        validate(&cli.args).map_err(|e| e.to_string())
    }

    #[test]
    fn the_compare_script_flags_are_accepted() {
        let plan = parse(&[
            "ws://127.0.0.1:9000/",
            "--mode",
            "echo",
            "--conns",
            "100",
            "--size",
            "1024",
            "--secs",
            "2",
            "--warmup",
            "1",
            "--binary",
            "--server-pid",
            "1",
            "--json",
        ])
        .unwrap();
        assert_eq!(plan.mode, Mode::Echo);
        assert_eq!((plan.conns, plan.size, plan.text), (100, 1024, false));
        assert_eq!(plan.secs, Duration::from_secs(2));
        assert_eq!(plan.warmup, Duration::from_secs(1));
        assert_eq!(plan.server_pid, Some(1));
        assert!(plan.json);
        let plan = parse(&["ws://[::1]:9000/", "--mode", "idle", "--conns", "10000"]).unwrap();
        assert_eq!(plan.mode, Mode::Idle);
    }

    #[test]
    fn bad_flags_are_refused_with_a_clear_message() {
        let err = parse(&["ws://127.0.0.1:1/", "--conns", "0"]).unwrap_err();
        assert!(err.contains("--conns"), "{err}");
        let err = parse(&["ws://127.0.0.1:1/", "--secs", "0"]).unwrap_err();
        assert!(err.contains("--secs"), "{err}");
        let err = parse(&["ws://127.0.0.1:1/", "--secs=-1"]).unwrap_err();
        assert!(err.contains("--secs"), "{err}");
        let err = parse(&["ws://127.0.0.1:1/", "--warmup", "NaN"]).unwrap_err();
        assert!(err.contains("--warmup"), "{err}");
        let err = parse(&["ws://127.0.0.1:1/", "--size", "67108865"]).unwrap_err();
        assert!(err.contains("--size") && err.contains("64 MiB"), "{err}");
        assert!(parse(&["ws://127.0.0.1:1/", "--size", "67108864"]).is_ok());
        let err = parse(&["ws://127.0.0.1:1/", "--threads", "0"]).unwrap_err();
        assert!(err.contains("--threads"), "{err}");
        assert!(parse(&["wss://127.0.0.1:1/"]).unwrap().tls.is_none());
        let err = parse(&["ws://127.0.0.1:1/", "--ca", "ca.pem"]).unwrap_err();
        assert!(err.contains("--ca") && err.contains("wss://"), "{err}");
        let err = parse(&["ftp://127.0.0.1:1/"]).unwrap_err();
        assert!(err.contains("ws://"), "{err}");
        let err = parse(&["127.0.0.1:1"]).unwrap_err();
        assert!(err.contains("ws://"), "{err}");
        assert!(parse(&["ws://127.0.0.1:1/", "--binary", "--text"]).is_err());
        assert_eq!(
            parse(&["ws://127.0.0.1:1/", "--warmup", "0"])
                .unwrap()
                .warmup,
            Duration::ZERO
        );
    }

    #[test]
    fn pipelines_are_bounded_by_the_bytes_in_flight() {
        let plan = parse(&["ws://127.0.0.1:1/", "--pipeline", "8", "--size", "1024"]).unwrap();
        assert_eq!(plan.pipeline, 8);
        assert_eq!(parse(&["ws://127.0.0.1:1/"]).unwrap().pipeline, 1);
        // 20 B frames are 26 bytes on the wire: 2,520 of them fit in 64 KiB.
        assert!(parse(&["ws://127.0.0.1:1/", "--pipeline", "2520"]).is_ok());
        let err = parse(&["ws://127.0.0.1:1/", "--pipeline", "2521"]).unwrap_err();
        assert!(
            err.contains("--pipeline") && err.contains("64 KiB"),
            "{err}"
        );
        let err = parse(&["ws://127.0.0.1:1/", "--pipeline", "2", "--size", "1048576"]);
        assert!(err.unwrap_err().contains("in flight"));
        // One message in flight is always allowed, whatever its size.
        assert!(parse(&["ws://127.0.0.1:1/", "--pipeline", "1", "--size", "1048576"]).is_ok());
        let err = parse(&["ws://127.0.0.1:1/", "--pipeline", "0"]).unwrap_err();
        assert!(err.contains("--pipeline"), "{err}");
        let err = parse(&["ws://127.0.0.1:1/", "--mode", "idle", "--pipeline", "2"]);
        assert!(err.unwrap_err().contains("echo"));
    }

    #[test]
    fn threads_never_outnumber_connections() {
        let plan = parse(&["ws://127.0.0.1:1/", "--conns", "3", "--threads", "8"]).unwrap();
        assert_eq!(plan.threads, 3);
        assert_eq!(shares(10, 3).collect::<Vec<_>>(), [4, 3, 3]);
        assert_eq!(shares(2, 2).collect::<Vec<_>>(), [1, 1]);
        assert_eq!(shares(10_000, 1).sum::<usize>(), 10_000);
    }

    /// The pre-built frame is what a server's parser sees: one masked frame
    /// whose unmasked payload is the intended bytes.
    #[test]
    fn frames_are_masked_client_frames() {
        for (text, size) in [(false, 0), (false, 20), (true, 1024), (false, 70_000)] {
            let key = [1, 2, 3, 4];
            let frame = build_frame(text, size, key);
            let (header, len) = FrameHeader::parse(&frame).unwrap().unwrap();
            assert!(header.fin);
            assert_eq!(header.mask, Some(key));
            assert_eq!(header.payload_len, size as u64);
            let expect = if text { OpCode::Text } else { OpCode::Binary };
            assert_eq!(header.opcode, expect);
            assert_eq!(frame.len(), len + size);
            let mut payload = frame[len..].to_vec();
            apply_mask(&mut payload, key, 0);
            assert!(payload.iter().all(|b| (b' '..=b'~').contains(b)));
            assert!(std::str::from_utf8(&payload).is_ok());
        }
        let close = build_close([9, 9, 9, 9]);
        let (header, len) = FrameHeader::parse(&close).unwrap().unwrap();
        assert_eq!(header.opcode, OpCode::Close);
        let mut body = close[len..].to_vec();
        apply_mask(&mut body, [9, 9, 9, 9], 0);
        assert_eq!(body, [0x03, 0xe8]);
    }

    fn server_frame(b0: u8, payload_len: usize) -> Vec<u8> {
        // The length form from the encoder; FIN, RSV and opcode from `b0`.
        let header = FrameHeader::new(OpCode::Binary, payload_len, None);
        let mut buf = [0; duplex_proto::MAX_HEADER_LEN];
        let n = header.encode(&mut buf);
        buf[0] = b0;
        let mut out = buf[..n].to_vec();
        out.resize(n + payload_len, 0xab);
        out
    }

    /// Feeds `bytes` in pieces of `chunk`, as reads would deliver them.
    fn feed_in_chunks(
        parser: &mut ReplyParser,
        bytes: &[u8],
        chunk: usize,
    ) -> Result<usize, BenchError> {
        let mut pending: Vec<u8> = Vec::new();
        let mut total = 0;
        for piece in bytes.chunks(chunk) {
            pending.extend_from_slice(piece);
            let fed = parser.feed(&pending)?;
            pending.drain(..fed.consumed);
            total += fed.consumed;
            if fed.done {
                return Ok(total);
            }
        }
        Err(BenchError::Closed)
    }

    #[test]
    fn replies_are_skipped_in_any_chunking() {
        let mut reply = server_frame(0x82, 70_000);
        reply.extend(server_frame(0x82, 5)); // the next reply
        for chunk in [1, 2, 3, 7, 100, 65_536, 1 << 20] {
            let mut parser = ReplyParser::new(70_000);
            let used = feed_in_chunks(&mut parser, &reply, chunk).unwrap();
            assert_eq!(used, 70_000 + 10, "chunk {chunk}");
        }
    }

    /// Pipelined replies arrive several to a read, or split across reads:
    /// every whole one is counted once, a partial one waits for its rest.
    #[test]
    fn buffered_replies_are_counted_in_any_chunking() {
        let mut wire = Vec::new();
        for _ in 0..3 {
            wire.extend(server_frame(0x82, 20));
        }
        wire.extend(server_frame(0x89, 2)); // a Ping between replies
        wire.extend(server_frame(0x02, 10)); // a fragmented fourth reply
        wire.extend(server_frame(0x80, 10));
        for chunk in [1, 3, 22, 23, 50, wire.len()] {
            let mut reader = Reader::new(0);
            let mut parser = ReplyParser::new(20);
            let mut counts = Vec::new();
            for piece in wire.chunks(chunk) {
                reader.make_room();
                reader.buf[reader.end..reader.end + piece.len()].copy_from_slice(piece);
                reader.end += piece.len();
                counts.push(reader.take_replies(&mut parser).unwrap());
            }
            assert_eq!(counts.iter().sum::<usize>(), 4, "chunk {chunk}: {counts:?}");
            assert_eq!(reader.start, reader.end, "chunk {chunk}");
            assert_eq!(parser.pong.as_deref(), Some(&[0xab, 0xab][..]));
        }
        // All at once: four replies from one buffer.
        let mut reader = Reader::new(0);
        reader.buf[..wire.len()].copy_from_slice(&wire);
        reader.end = wire.len();
        assert_eq!(reader.take_replies(&mut ReplyParser::new(20)).unwrap(), 4);
        // A reply of the wrong size is still an error mid-batch.
        let mut reader = Reader::new(0);
        let bad = [server_frame(0x82, 20), server_frame(0x82, 19)].concat();
        reader.buf[..bad.len()].copy_from_slice(&bad);
        reader.end = bad.len();
        let err = reader.take_replies(&mut ReplyParser::new(20));
        assert!(matches!(err, Err(BenchError::UnexpectedReply(_))));
    }

    /// With several messages in flight, each reply's latency runs from its own
    /// send time; only replies completed inside the window count.
    #[test]
    fn pipelined_latency_is_measured_per_message() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let window = Window {
            start: ms(10),
            end: ms(100),
        };
        let mut stats = Stats::new();
        let mut in_flight = InFlight::new(4);
        // Before the window: four sent at 0, two back at 5 (warm-up, not counted).
        assert_eq!(in_flight.refill(t0, window.end), 4);
        assert_eq!(in_flight.refill(t0, window.end), 0);
        in_flight.complete(2, ms(5), &window, &mut stats).unwrap();
        assert_eq!(stats.msgs, 0);
        // Two more sent at 5; at 12 three come back: the two of t0 (12 ms)
        // and the first of 5 (7 ms).
        assert_eq!(in_flight.refill(ms(5), window.end), 2);
        in_flight.complete(3, ms(12), &window, &mut stats).unwrap();
        assert_eq!(stats.msgs, 3);
        assert_eq!(stats.latency.count_at(12_000_000), 2);
        assert_eq!(stats.latency.count_at(7_000_000), 1);
        // Past the end: nothing new is sent; the last replies are drained but
        // not counted.
        assert_eq!(in_flight.refill(ms(12), window.end), 3);
        assert_eq!(in_flight.refill(ms(100), window.end), 0);
        in_flight.complete(4, ms(101), &window, &mut stats).unwrap();
        assert!(in_flight.is_empty());
        assert_eq!(stats.msgs, 3);
        assert_eq!(stats.latency.len(), 3);
        // A reply nobody asked for is an error, not a miscount.
        let err = in_flight.complete(1, ms(102), &window, &mut stats);
        assert!(matches!(err, Err(BenchError::UnexpectedReply(_))));
    }

    #[test]
    fn fragmented_replies_and_pings_are_followed() {
        let mut reply = server_frame(0x01, 10);
        reply.extend(server_frame(0x89, 3)); // a ping between fragments
        reply.extend(server_frame(0x00, 10));
        reply.extend(server_frame(0x80, 4));
        let mut parser = ReplyParser::new(24);
        let fed = parser.feed(&reply).unwrap();
        assert_eq!(
            fed,
            Fed {
                consumed: reply.len(),
                done: true
            }
        );
        // The Ping's payload is owed a Pong.
        assert_eq!(parser.pong, Some(server_frame(0x89, 3)[2..].to_vec()));
        // In any chunking: a Ping is only taken once all of it is there.
        for chunk in [1, 2, 3, 5] {
            let mut parser = ReplyParser::new(24);
            assert_eq!(
                feed_in_chunks(&mut parser, &reply, chunk).unwrap(),
                reply.len()
            );
            assert_eq!(parser.pong.as_deref(), Some(&server_frame(0x89, 3)[2..]));
        }
    }

    #[test]
    fn pongs_are_masked_control_frames() {
        let key = [1, 2, 3, 4];
        let pong = client_frame(OpCode::Pong, b"abc", key);
        let (header, len) = FrameHeader::parse(&pong).unwrap().unwrap();
        assert_eq!(
            (header.opcode, header.fin, header.mask),
            (OpCode::Pong, true, Some(key))
        );
        let mut payload = pong[len..].to_vec();
        apply_mask(&mut payload, key, 0);
        assert_eq!(payload, b"abc");
    }

    #[test]
    fn wrong_replies_are_errors() {
        let wrong_len = ReplyParser::new(5).feed(&server_frame(0x82, 4));
        assert!(matches!(wrong_len, Err(BenchError::UnexpectedReply(_))));
        let close = ReplyParser::new(5).feed(&server_frame(0x88, 2));
        assert!(matches!(close, Err(BenchError::Closed)));
        let mut masked = server_frame(0x82, 0);
        masked[1] |= 0x80;
        masked.extend_from_slice(&[0; 4]);
        assert!(matches!(
            ReplyParser::new(0).feed(&masked),
            Err(BenchError::Protocol(ProtocolError::MaskedFrame))
        ));
        let orphan = ReplyParser::new(1).feed(&server_frame(0x80, 1));
        assert!(matches!(orphan, Err(BenchError::Protocol(_))));
        let rsv = ReplyParser::new(1).feed(&server_frame(0xc2, 1));
        assert!(matches!(
            rsv,
            Err(BenchError::Protocol(ProtocolError::ReservedBits))
        ));
    }

    #[test]
    fn proc_files_are_parsed() {
        let stat = "4242 (my (odd) server) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 1 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(175));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        let status = "Name:\tduplex\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t1\n";
        assert_eq!(parse_status_rss(status), Some(5120 * 1024));
        assert_eq!(parse_status_rss("Name: x\n"), None);
        // Our own process, for real.
        let me = std::process::id();
        assert!(read_proc_rss(me).unwrap() > 0);
        read_proc_cpu(me).unwrap();
        assert!(read_proc_cpu(u32::MAX).is_err());
    }

    #[test]
    fn clock_ticks_are_positive() {
        assert!(clock_ticks_per_sec() > 0);
    }

    #[test]
    fn fd_limit_can_be_read_and_raised() {
        raise_fd_limit(16);
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in `raise_fd_limit`.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert!(limit.rlim_cur >= 16);
        if limit.rlim_max != libc::RLIM_INFINITY {
            assert_eq!(limit.rlim_cur, limit.rlim_max);
        }
    }

    #[test]
    fn json_matches_the_compare_contract() {
        let mut hist = Stats::new().latency;
        for us in 1..=1000u64 {
            hist.record(us * 1000).unwrap();
        }
        let echo = EchoResult {
            conns: 100,
            opened: 100,
            size: 1024,
            text: false,
            threads: 2,
            pipeline: 4,
            secs: 2.0,
            warmup: 1.0,
            msgs: 2048,
            errors: 0,
            first_error: None,
            latency: &hist,
            server_cpu_us_per_msg: None,
        }
        .json();
        let keys: Vec<_> = echo.as_object().unwrap().keys().cloned().collect();
        let mut expect = [
            "mode",
            "conns",
            "size",
            "secs",
            "msgs",
            "msgs_per_sec",
            "mib_per_sec",
            "p50_us",
            "p99_us",
            "p999_us",
            "errors",
            "first_error",
            "server_cpu_us_per_msg",
            "threads",
            "pipeline",
        ];
        expect.sort_unstable();
        assert_eq!(keys, expect);
        assert_eq!(echo["mode"], "echo");
        assert_eq!(
            (&echo["threads"], &echo["pipeline"]),
            (&2.into(), &4.into())
        );
        assert_eq!(echo["msgs_per_sec"], 1024.0);
        assert_eq!(echo["mib_per_sec"], 1.0);
        assert!(echo["server_cpu_us_per_msg"].is_null());
        let p50 = echo["p50_us"].as_f64().unwrap();
        assert!((499.0..=501.0).contains(&p50), "{p50}");

        let idle = IdleResult {
            conns: 10,
            opened: 10,
            rss_before: Some(1000),
            rss_after: Some(51_000),
            errors: 2,
            first_error: Some("timed out connecting".into()),
        };
        let summary = idle.summary();
        assert!(
            summary.contains("errors     2 (first: timed out connecting)"),
            "{summary}"
        );
        let idle = idle.json();
        assert_eq!(idle["bytes_per_conn"], 5000.0);
        assert_eq!(idle["mode"], "idle");
        assert_eq!(idle["first_error"], "timed out connecting");
        assert_eq!(idle.as_object().unwrap().len(), 7);
    }
}
