//! The one raw WebSocket client every load generator of `duplex bench` uses.
//!
//! It does not use the `WebSocket` type, so that it costs the client little
//! and what a run measures is the server. [`Dialer::open`] does the opening
//! handshake with [`duplex_proto::handshake`] over a raw `TcpStream` (over
//! rustls for `wss://`, or as an extended CONNECT on an HTTP/2 connection of
//! its own with `--http2`), offering no extension unless asked (so that
//! every server is compared on plain RFC 6455). After it, the server's
//! frames are read from a [`Buffer`] in one of two ways:
//!
//! - [`ReplyParser`] follows headers only and skips payloads (never copied
//!   or unmasked): the echo load, where only the size of a reply matters;
//! - [`Messages`] hands over whole messages, reassembled and bounded: the
//!   fan-out subscribers, which read a stamp in each, and idle connections,
//!   which expect nothing but Pings.
//!
//! Client frames are built once and masked with one key per run
//! ([`rand_key`]). That breaks RFC 6455 §5.3's "unpredictable" rule, which
//! protects proxies from cache poisoning; a server cannot tell, and on
//! loopback there is no proxy.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use duplex_proto::handshake::{ClientRequest, write_request};
use duplex_proto::{CloseCode, CloseFrame, FrameHeader, OpCode, ProtocolError, apply_mask};
use duplex_ws::MaybeTlsStream;
use duplex_ws::tls::rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::BenchError;

/// The most a handshake response head may take.
pub(super) const MAX_RESPONSE_HEAD: usize = 16 << 10;
/// Connecting and the opening handshake, at most.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After the run: how long a connection may take to finish its last reply
/// and close.
pub(super) const FINISH_GRACE: Duration = Duration::from_secs(3);

/// One connection's stream: plain TCP, or TLS over it for wss://.
pub(super) type Conn = MaybeTlsStream<TcpStream>;

/// Where the echo and idle loads connect, and how.
#[derive(Debug, Clone, Args)]
pub(crate) struct Endpoint {
    /// The ws:// or wss:// URL of the server to load. With wss:// every
    /// connection speaks TLS (rustls), which is what it measures: the cost
    /// of TLS against the same server over ws://.
    url: String,
    /// A PEM file of extra root certificates to trust for wss://, besides
    /// the platform's.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Open each WebSocket over HTTP/2 (RFC 8441): one HTTP/2 connection
    /// per WebSocket (ALPN h2 for wss://, prior knowledge for ws://), so
    /// that the run compares with HTTP/1.1 connection for connection.
    #[arg(long)]
    http2: bool,
}

/// How a wss:// run connects.
#[derive(Debug, Clone)]
struct Tls {
    config: Arc<ClientConfig>,
    host: String,
}

/// Opens WebSockets to one URL.
#[derive(Debug, Clone)]
pub(super) struct Dialer {
    pub(super) uri: http::Uri,
    pub(super) addr: SocketAddr,
    tls: Option<Tls>,
    http2: bool,
    deflate: bool,
    protocol: Option<&'static str>,
}

impl Dialer {
    /// Checks the endpoint's flags, resolves its host and, for wss://,
    /// readies TLS (the platform's roots plus `--ca`).
    pub(super) fn new(endpoint: &Endpoint) -> Result<Self, BenchError> {
        let usage = |s: String| Err(BenchError::Usage(s));
        let uri = parse_url(&endpoint.url)?;
        match uri.scheme_str() {
            Some("ws" | "http" | "wss" | "https") => {}
            _ => return usage(format!("{}: expected a ws:// or wss:// URL", endpoint.url)),
        }
        let tls = is_tls(&uri);
        if endpoint.ca.is_some() && !tls {
            return usage(format!("--ca: {} is not a wss:// URL", endpoint.url));
        }
        let addr = resolve(&uri)?;
        let tls = if tls {
            let roots = match &endpoint.ca {
                Some(path) => duplex_ws::tls::load_certificates(path)?,
                None => Vec::new(),
            };
            Some(Tls {
                config: duplex_ws::tls::client_config(&roots)?,
                host: uri.host().unwrap_or_default().to_owned(),
            })
        } else {
            None
        };
        Ok(Dialer {
            uri,
            addr,
            tls,
            http2: endpoint.http2,
            deflate: false,
            protocol: None,
        })
    }

    /// A plain ws:// dialer (HTTP/1.1, no TLS) for `url`, whose scheme the
    /// caller has checked.
    pub(super) fn plain(uri: http::Uri) -> Result<Self, BenchError> {
        let addr = resolve(&uri)?;
        Ok(Dialer {
            uri,
            addr,
            tls: None,
            http2: false,
            deflate: false,
            protocol: None,
        })
    }

    /// Asks for the subprotocol `protocol` in the handshake.
    pub(super) fn protocol(mut self, protocol: Option<&'static str>) -> Self {
        self.protocol = protocol;
        self
    }

    /// Offers permessage-deflate in the handshake.
    pub(super) fn deflate(mut self, on: bool) -> Self {
        self.deflate = on;
        self
    }

    #[cfg(test)]
    pub(super) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Connects and does the opening handshake, within 10 s. Bytes after the
    /// response head stay in `buffer`.
    pub(super) async fn open(&self, buffer: &mut Buffer) -> Result<Conn, BenchError> {
        let work = async {
            if self.http2 {
                return self.open_http2().await;
            }
            let tcp = TcpStream::connect(self.addr).await?;
            tcp.set_nodelay(true)?;
            let mut stream = match &self.tls {
                None => MaybeTlsStream::Plain(tcp),
                Some(tls) => {
                    let tls =
                        duplex_ws::tls::connect(Arc::clone(&tls.config), &tls.host, tcp).await?;
                    MaybeTlsStream::Tls(Box::new(tls))
                }
            };
            let (request, handshake) = self.request().build()?;
            let mut head = Vec::with_capacity(256);
            write_request(&request, &mut head);
            send(&mut stream, &head).await?;
            loop {
                if let Some((_, len)) =
                    handshake.parse_response(buffer.unread(), MAX_RESPONSE_HEAD)?
                {
                    buffer.consume(len);
                    return Ok(stream);
                }
                buffer.read_some(&mut stream).await?;
            }
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, work)
            .await
            .map_err(|_| BenchError::Timeout)?
    }

    fn request(&self) -> ClientRequest {
        let mut request = ClientRequest::new(self.uri.clone());
        if let Some(protocol) = self.protocol {
            request = request.protocol(protocol);
        }
        if self.deflate {
            request.extensions(duplex_ws::DeflateConfig::default().client_offer())
        } else {
            request
        }
    }

    /// An HTTP/2 connection of its own and one extended CONNECT on it; the
    /// WebSocket protocol on the stream is then the same as over HTTP/1.1.
    async fn open_http2(&self) -> Result<Conn, BenchError> {
        let mut builder = duplex_ws::ClientBuilder::new(self.uri.to_string()).http2(true);
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(Arc::clone(&tls.config));
        }
        let connection = duplex_ws::Http2Connection::connect(&builder).await?;
        let (request, handshake) = self.request().build_http2()?;
        let (response, stream) = connection.send_connect(request).await?;
        handshake.validate_response(&response)?;
        stream.ok_or(BenchError::Closed)
    }
}

pub(super) fn parse_url(url: &str) -> Result<http::Uri, BenchError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| BenchError::Usage(format!("{url}: not a URL: {e}")))?;
    if uri.host().is_none() {
        return Err(BenchError::Usage(format!("{url}: the URL has no host")));
    }
    Ok(uri)
}

fn is_tls(uri: &http::Uri) -> bool {
    matches!(uri.scheme_str(), Some("wss" | "https"))
}

/// The first address of the URL's host.
pub(super) fn resolve(uri: &http::Uri) -> Result<SocketAddr, BenchError> {
    let host = uri.host().unwrap_or_default();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = uri.port_u16().unwrap_or(if is_tls(uri) { 443 } else { 80 });
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| BenchError::Usage(format!("{host}: no address")))
}

/// Writes all of `bytes` and flushes (a no-op on plain TCP; with TLS, it
/// pushes the last record out).
pub(super) async fn send(stream: &mut Conn, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Sends a Close and waits (briefly) for the server's answer and the end of
/// the TCP connection, so that servers see a clean close.
pub(super) async fn close(mut stream: Conn, close_frame: &[u8]) {
    let work = async {
        send(&mut stream, close_frame).await?;
        let mut sink = [0u8; 512];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    // Either way the connection is over; the server's behaviour is its own.
    let _ = tokio::time::timeout(FINISH_GRACE, work).await;
}

/// A random masking key for the run (the one place randomness is needed).
pub(super) fn rand_key() -> [u8; 4] {
    // The handshake key generator is a CSPRNG; borrow four of its bytes.
    let key = duplex_proto::handshake::generate_key();
    let b = key.as_bytes();
    [b[0], b[1], b[2], b[3]]
}

/// Encodes one client frame: a single masked data frame of `size` bytes.
/// Built once; every send writes these bytes.
pub(super) fn build_frame(text: bool, size: usize, key: [u8; 4]) -> Vec<u8> {
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
pub(super) fn build_close(key: [u8; 4]) -> Vec<u8> {
    let body = CloseFrame::new(CloseCode::NORMAL, "").encode();
    client_frame(OpCode::Close, &body, key)
}

/// A masked client frame of one fragment (a Close, a Pong answering a Ping, a
/// subscribe request of the fan-out load).
pub(super) fn client_frame(opcode: OpCode, body: &[u8], key: [u8; 4]) -> Vec<u8> {
    let header = FrameHeader::new(opcode, body.len(), Some(key));
    let mut frame = Vec::with_capacity(header.len() + body.len());
    header.write(&mut frame);
    let start = frame.len();
    frame.extend_from_slice(body);
    apply_mask(&mut frame[start..], key, 0);
    frame
}

/// The header of the server frame at the start of `buf`, checked for what a
/// server must not send whatever the load: a mask, a reserved bit (no
/// extension was negotiated).
fn server_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, BenchError> {
    let Some((header, len)) = FrameHeader::parse(buf)? else {
        return Ok(None);
    };
    if header.mask.is_some() {
        return Err(ProtocolError::MaskedFrame.into());
    }
    if header.rsv1 || header.rsv2 || header.rsv3 {
        return Err(ProtocolError::ReservedBits.into());
    }
    Ok(Some((header, len)))
}

/// A connection's receive buffer: bytes in `buf[start..end]` are unread. It
/// grows only while one frame (or the response head) does not fit, and
/// never past `max`.
#[derive(Debug)]
pub(super) struct Buffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max: usize,
}

impl Buffer {
    /// A buffer of `capacity` bytes that may grow to `max` (both at least
    /// room for a handshake response head).
    pub(super) fn new(capacity: usize, max: usize) -> Self {
        let capacity = capacity.max(4096);
        Buffer {
            buf: vec![0; capacity],
            start: 0,
            end: 0,
            max: max.max(capacity).max(MAX_RESPONSE_HEAD),
        }
    }

    pub(super) fn unread(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.start += n;
    }

    /// Makes room at the end of the buffer for the next read: starts over
    /// when all is read, moves the unread bytes down only when the end is
    /// reached, grows only when they fill the whole buffer.
    fn make_room(&mut self) -> Result<(), BenchError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() < self.max {
                self.buf.resize((self.buf.len() * 2).min(self.max), 0);
            } else {
                return Err(BenchError::UnexpectedReply(format!(
                    "a frame or response head above {} bytes",
                    self.max
                )));
            }
        }
        Ok(())
    }

    /// Reads once; an end of stream is [`BenchError::Closed`].
    ///
    /// (No need to save the "would block" read that follows a reply: tokio
    /// forgets a socket's readiness by itself when a read does not fill the
    /// buffer, so the next read waits for epoll first.)
    pub(super) async fn read_some(&mut self, stream: &mut Conn) -> Result<(), BenchError> {
        self.make_room()?;
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
    pub(super) fn take_replies(&mut self, parser: &mut ReplyParser) -> Result<usize, BenchError> {
        let mut replies = 0;
        loop {
            let fed = parser.feed(self.unread())?;
            self.start += fed.consumed;
            if !fed.done {
                return Ok(replies);
            }
            replies += 1;
            parser.next_reply();
        }
    }

    /// As a read would: appends `bytes`.
    #[cfg(test)]
    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.make_room().unwrap();
        if self.buf.len() - self.end < bytes.len() {
            self.buf.resize(self.end + bytes.len(), 0);
        }
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// Follows the server's frames, header by header, skipping payloads, until
/// one whole data message has gone by. Pings are kept to be answered
/// (servers with keepalive, duplex's included, drop a peer that never
/// answers).
#[derive(Debug)]
pub(super) struct ReplyParser {
    /// The payload of the latest Ping, owed a Pong (§5.5.3: answering the
    /// latest is enough).
    pub(super) pong: Option<Vec<u8>>,
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
pub(super) struct Fed {
    /// Bytes of the buffer used up; the rest belongs to later frames.
    pub(super) consumed: usize,
    /// The whole reply went by.
    pub(super) done: bool,
}

impl ReplyParser {
    pub(super) fn new(expected: usize) -> Self {
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
    pub(super) fn feed(&mut self, buf: &[u8]) -> Result<Fed, BenchError> {
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
            let Some((header, len)) = server_header(&buf[pos..])? else {
                return Ok(Fed {
                    consumed: pos,
                    done: false,
                });
            };
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

/// What the server sent, frame by frame.
#[derive(Debug)]
pub(super) enum Event<'a> {
    /// A whole data message (text or binary; not checked as UTF-8).
    Message(&'a [u8]),
    /// A Ping, owed a Pong.
    Ping(&'a [u8]),
}

/// Whole messages out of a [`Buffer`], bounded by `max_message` (a longer
/// message is an error, not a reason to grow).
#[derive(Debug)]
pub(super) struct Messages {
    /// The fragments of a message so far.
    partial: Vec<u8>,
    in_message: bool,
    max_message: usize,
}

impl Messages {
    pub(super) fn new(max_message: usize) -> Self {
        Messages {
            partial: Vec::new(),
            in_message: false,
            max_message,
        }
    }

    /// A buffer for these messages: whole frames of them fit.
    pub(super) fn buffer(&self) -> Buffer {
        Buffer::new(4096, self.max_message + duplex_proto::MAX_HEADER_LEN)
    }

    /// Hands every complete message and Ping in `buffer` to `on`; stops at
    /// the first error `on` returns.
    pub(super) fn drain(
        &mut self,
        buffer: &mut Buffer,
        mut on: impl FnMut(Event<'_>) -> Result<(), BenchError>,
    ) -> Result<(), BenchError> {
        loop {
            let window = buffer.unread();
            let Some((header, len)) = server_header(window)? else {
                return Ok(());
            };
            // Control frames carry 125 bytes at most (checked by the parser).
            let payload_len = usize::try_from(header.payload_len)
                .ok()
                .filter(|&n| n <= self.max_message || header.opcode.is_control())
                .ok_or_else(|| {
                    BenchError::UnexpectedReply(format!(
                        "a frame of {} bytes, above {}",
                        header.payload_len, self.max_message
                    ))
                })?;
            if window.len() < len + payload_len {
                return Ok(());
            }
            let payload = &window[len..len + payload_len];
            match header.opcode {
                OpCode::Ping => on(Event::Ping(payload))?,
                OpCode::Pong => {}
                OpCode::Close => return Err(BenchError::Closed),
                OpCode::Text | OpCode::Binary if !self.in_message => {
                    if header.fin {
                        on(Event::Message(payload))?;
                    } else {
                        self.partial.clear();
                        self.partial.extend_from_slice(payload);
                        self.in_message = true;
                    }
                }
                OpCode::Continuation if self.in_message => {
                    if self.partial.len() + payload.len() > self.max_message {
                        return Err(BenchError::UnexpectedReply(format!(
                            "a message above {} bytes",
                            self.max_message
                        )));
                    }
                    self.partial.extend_from_slice(payload);
                    if header.fin {
                        self.in_message = false;
                        on(Event::Message(&self.partial))?;
                    }
                }
                OpCode::Continuation => {
                    return Err(ProtocolError::UnexpectedContinuation.into());
                }
                _ => return Err(ProtocolError::ExpectedContinuation.into()),
            }
            buffer.consume(len + payload_len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let mut buffer = Buffer::new(0, 0);
            let mut parser = ReplyParser::new(20);
            let mut counts = Vec::new();
            for piece in wire.chunks(chunk) {
                buffer.push(piece);
                counts.push(buffer.take_replies(&mut parser).unwrap());
            }
            assert_eq!(counts.iter().sum::<usize>(), 4, "chunk {chunk}: {counts:?}");
            assert!(buffer.is_empty(), "chunk {chunk}");
            assert_eq!(parser.pong.as_deref(), Some(&[0xab, 0xab][..]));
        }
        // All at once: four replies from one buffer.
        let mut buffer = Buffer::new(0, 0);
        buffer.push(&wire);
        assert_eq!(buffer.take_replies(&mut ReplyParser::new(20)).unwrap(), 4);
        // A reply of the wrong size is still an error mid-batch.
        let mut buffer = Buffer::new(0, 0);
        buffer.push(&[server_frame(0x82, 20), server_frame(0x82, 19)].concat());
        let err = buffer.take_replies(&mut ReplyParser::new(20));
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

    fn drain_all(messages: &mut Messages, buffer: &mut Buffer) -> Result<Vec<String>, BenchError> {
        let mut got = Vec::new();
        messages.drain(buffer, |e| {
            got.push(match e {
                Event::Message(m) => format!("m:{}", String::from_utf8_lossy(m)),
                Event::Ping(p) => format!("p:{}", String::from_utf8_lossy(p)),
            });
            Ok(())
        })?;
        Ok(got)
    }

    #[test]
    fn messages_are_reassembled_and_bounded() {
        let frame = |b0: u8, payload: &[u8]| {
            let mut f = vec![b0, payload.len() as u8];
            f.extend_from_slice(payload);
            f
        };
        let mut bytes = frame(0x01, b"he"); // text, not fin
        bytes.extend(frame(0x89, b"p")); // ping between fragments
        bytes.extend(frame(0x80, b"llo")); // last continuation
        bytes.extend(frame(0x82, b"bin"));
        // Any chunking gives the same events.
        for chunk in 1..=bytes.len() {
            let mut messages = Messages::new(16);
            let mut buffer = messages.buffer();
            let mut got = Vec::new();
            for piece in bytes.chunks(chunk) {
                buffer.push(piece);
                got.extend(drain_all(&mut messages, &mut buffer).unwrap());
            }
            assert_eq!(got, ["p:p", "m:hello", "m:bin"], "chunk {chunk}");
        }
        // A Ping passes a bound of 0 (control frames are bounded by the
        // protocol); a data frame above the bound, or a message grown past
        // it, does not.
        let mut messages = Messages::new(0);
        let mut buffer = messages.buffer();
        buffer.push(&frame(0x89, b"ping"));
        assert_eq!(drain_all(&mut messages, &mut buffer).unwrap(), ["p:ping"]);
        for (bound, wire) in [
            (4, frame(0x81, b"hello")),
            (4, [frame(0x01, b"hel"), frame(0x80, b"lo")].concat()),
            (16, vec![0x81, 0x81, 1, 2, 3, 4, 5]), // masked server frame
            (16, vec![0x80, 0]),                   // continuation out of a message
            (16, vec![0xc1, 0]),                   // RSV bits
        ] {
            let mut messages = Messages::new(bound);
            let mut buffer = messages.buffer();
            buffer.push(&wire);
            assert!(drain_all(&mut messages, &mut buffer).is_err(), "{wire:?}");
        }
        // What `on` refuses ends the drain with its error.
        let mut messages = Messages::new(16);
        let mut buffer = messages.buffer();
        buffer.push(&frame(0x82, b"x"));
        let refused = messages.drain(&mut buffer, |_| Err(BenchError::Closed));
        assert!(matches!(refused, Err(BenchError::Closed)));
    }

    /// The buffer grows only while one frame does not fit, up to its bound.
    #[test]
    fn buffers_grow_to_their_bound_and_no_further() {
        let mut buffer = Buffer::new(0, 20_000);
        let read = |buffer: &mut Buffer, n: usize| {
            buffer.make_room()?;
            let room = buffer.buf.len() - buffer.end;
            buffer.end += n.min(room);
            Ok::<usize, BenchError>(n.min(room))
        };
        let mut total = 0;
        while total < 19_000 {
            total += read(&mut buffer, 1000).unwrap();
        }
        assert!(buffer.buf.len() <= 20_000);
        while read(&mut buffer, 1000).is_ok() {}
        assert_eq!(buffer.buf.len(), 20_000);
        // Once read, the bytes make room again.
        buffer.consume(20_000);
        assert!(read(&mut buffer, 1000).is_ok());
    }
}
