//! WebSocket over HTTP/2, the client side (RFC 8441, "Bootstrapping
//! WebSockets with HTTP/2").
//!
//! A WebSocket is one stream of an HTTP/2 connection: the client sends an
//! extended CONNECT (`:method` CONNECT, `:protocol` websocket; RFC 8441 §4)
//! built by [`ClientRequest::build_http2`], the server answers 200, and the
//! stream's DATA frames carry the WebSocket frames, still masked by the
//! client (the roles of RFC 6455 are unchanged). HTTP/2 flow control is the
//! back-pressure: writes go through the stream, which takes bytes as the
//! peer's window allows.
//!
//! - **Connection**: `wss://` is TLS with ALPN `h2` alone (RFC 9113 §3.2); a
//!   server that refuses it, or selects nothing, fails with
//!   [`Http2Error::NotNegotiated`] rather than falling back to HTTP/1.1.
//!   `ws://` is HTTP/2 over cleartext with prior knowledge (h2c, RFC 9113
//!   §3.3). hyper drives the connection in a task of its own, which ends
//!   once no [`Http2Connection`] handle and no WebSocket on it is left.
//! - **SETTINGS_ENABLE_CONNECT_PROTOCOL** (RFC 8441 §3): a client may send
//!   an extended CONNECT only after the server's SETTINGS enabled it.
//!   hyper's `is_extended_connect_protocol_enabled` turns true only once the
//!   connection task has acknowledged those SETTINGS, and nothing in hyper
//!   waits for them, so duplex reads the first frame of the server's
//!   preface itself as it passes under hyper (it must be SETTINGS, RFC 9113
//!   §3.4) and decides on it: enabled, [`Http2Error::ExtendedConnectDisabled`],
//!   or [`Http2Error::NotHttp2`] for a server that answers something else
//!   (an HTTP/1.1 server on a `ws://` port). A server that enables the
//!   setting only in a later SETTINGS frame is refused; servers send it in
//!   their preface.
//! - **Several WebSockets on one connection**: [`Http2Connection::connect`]
//!   opens the connection, and [`Http2Connection::websocket`] opens each
//!   WebSocket as a stream of it. [`ClientBuilder::connect`] with
//!   [`ClientBuilder::http2`] does both for one WebSocket.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use duplex_proto::handshake::HandshakeError;
use duplex_proto::handshake::client::{CONNECT_PROTOCOL, ClientRequest};

use super::{ClientBuilder, Target};
use crate::error::Http2Error;
use crate::stream::Http2Stream;
use crate::{Error, MaybeTlsStream, WebSocket};

/// An HTTP/2 connection on which WebSockets open as streams (RFC 8441 §4).
///
/// Clones share the connection. It stays open while a clone or a WebSocket
/// on it is left; hyper drives it in a task of its own.
///
/// ```no_run
/// # async fn run() -> Result<(), duplex_ws::Error> {
/// use duplex_ws::{ClientBuilder, Http2Connection};
///
/// let h2 = Http2Connection::connect(&ClientBuilder::new("wss://example.com/")).await?;
/// let mut chat = h2.websocket(ClientBuilder::new("wss://example.com/chat")).await?;
/// let mut news = h2.websocket(ClientBuilder::new("wss://example.com/news")).await?;
/// chat.send("hello").await?;
/// # let _ = news.recv().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Http2Connection {
    send: SendRequest<Empty<Bytes>>,
    /// `ws://host:port` or `wss://host:port`: what the URLs of its
    /// WebSockets must start with.
    origin: Origin,
    tls: bool,
}

/// The scheme, host and port of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    tls: bool,
    host: String,
    port: u16,
}

impl Origin {
    fn of(target: &Target) -> Self {
        Origin {
            tls: target.tls,
            host: target.host.to_ascii_lowercase(),
            port: target.port,
        }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "wss" } else { "ws" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl Http2Connection {
    /// Opens an HTTP/2 connection to the origin of `builder`'s URL (TCP,
    /// then TLS with ALPN `h2` for `wss://`, with `builder`'s TLS options)
    /// and waits for the server's SETTINGS, all within the builder's
    /// [`Config::handshake_timeout`](crate::Config::handshake_timeout).
    /// Fails if the server does not enable extended CONNECT.
    pub async fn connect(builder: &ClientBuilder) -> Result<Self, Error> {
        let target = Target::parse(&builder.url)?;
        tokio::time::timeout(
            builder.config.handshake_timeout,
            Self::connect_to(builder, &target),
        )
        .await
        .map_err(|_| Error::HandshakeTimeout)?
    }

    pub(super) async fn connect_to(
        builder: &ClientBuilder,
        target: &Target,
    ) -> Result<Self, Error> {
        let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
        tcp.set_nodelay(builder.config.nodelay)?;
        let stream = if target.tls {
            secure(builder, &target.host, tcp).await?
        } else {
            MaybeTlsStream::Plain(tcp)
        };
        let (tx, rx) = oneshot::channel();
        let io = TokioIo::new(WatchPreface {
            inner: stream,
            watch: Some((PrefaceReader::default(), tx)),
        });
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake::<_, Empty<Bytes>>(io)
            .await
            .map_err(Http2Error::Hyper)?;
        let host = target.host.clone();
        tokio::spawn(async move {
            match conn.await {
                Ok(()) => tracing::debug!(host, "HTTP/2 connection closed"),
                Err(e) => tracing::debug!(host, error = %e, "HTTP/2 connection failed"),
            }
        });
        let host = target.host.clone();
        match rx.await {
            Ok(Preface::Settings {
                enable_connect_protocol: true,
            }) => {}
            Ok(Preface::Settings {
                enable_connect_protocol: false,
            }) => return Err(Http2Error::ExtendedConnectDisabled { host }.into()),
            Ok(Preface::NotSettings) => return Err(Http2Error::NotHttp2 { host }.into()),
            Err(_) => return Err(Http2Error::ClosedBeforeSettings { host }.into()),
        }
        tracing::debug!(host = %target.host, port = target.port, tls = target.tls,
            "HTTP/2 connection open, extended CONNECT enabled");
        Ok(Http2Connection {
            send,
            origin: Origin::of(target),
            tls: target.tls,
        })
    }

    /// Opens a WebSocket on a new stream of this connection: the extended
    /// CONNECT for `builder`'s URL, with its subprotocols, headers and
    /// [`Config`](crate::Config) (deflate offer, limits), within its
    /// handshake timeout. The URL must be on the connection's origin; the
    /// builder's TLS options play no part, the connection's TLS being set
    /// up already.
    pub async fn websocket(
        &self,
        builder: ClientBuilder,
    ) -> Result<WebSocket<MaybeTlsStream<TcpStream>>, Error> {
        let target = Target::parse(&builder.url)?;
        if Origin::of(&target) != self.origin {
            return Err(Http2Error::OtherOrigin {
                url: builder.url,
                origin: self.origin.to_string(),
            }
            .into());
        }
        let timeout = builder.config.handshake_timeout;
        tokio::time::timeout(timeout, self.open(builder, target))
            .await
            .map_err(|_| Error::HandshakeTimeout)?
    }

    /// The extended CONNECT and its answer (RFC 8441 §5).
    pub(super) async fn open(
        &self,
        builder: ClientBuilder,
        target: Target,
    ) -> Result<WebSocket<MaybeTlsStream<TcpStream>>, Error> {
        let config = builder.config;
        let mut request = ClientRequest::new(target.uri.clone());
        request.protocols = config.protocols.clone();
        request.extensions = config.deflate.as_ref().map(|d| d.client_offer());
        request.headers = builder.headers;
        let (request, handshake) = request.build_http2()?;
        let (response, stream) = self.send_connect(request).await?;
        handshake.validate_response(&response)?;
        let (conn, negotiated) =
            super::open_connection(&config, &target, handshake.negotiated(&response))?;
        let stream = stream.ok_or(HandshakeError::ConnectStatus(response.status().as_u16()))?;
        Ok(WebSocket::from_parts(
            stream,
            conn,
            &config,
            negotiated,
            &[],
        ))
    }

    /// Sends an extended CONNECT (`:protocol websocket`) built by
    /// [`ClientRequest::build_http2`] and returns the server's answer and,
    /// if it is 200, the stream: for a caller that speaks the WebSocket
    /// protocol itself, such as a load generator. The answer is not
    /// validated; [`ClientHandshake::validate_response`] does that.
    ///
    /// [`ClientHandshake::validate_response`]: duplex_proto::handshake::ClientHandshake::validate_response
    pub async fn send_connect(
        &self,
        request: http::Request<()>,
    ) -> Result<(http::Response<()>, Option<MaybeTlsStream<TcpStream>>), Error> {
        let mut request = request.map(|()| Empty::<Bytes>::new());
        request
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static(CONNECT_PROTOCOL));
        let mut send = self.send.clone();
        send.ready().await.map_err(Http2Error::Hyper)?;
        let response = send
            .send_request(request)
            .await
            .map_err(Http2Error::Hyper)?;
        let (head, body) = response.into_parts();
        if head.status != http::StatusCode::OK {
            return Ok((http::Response::from_parts(head, ()), None));
        }
        let mut response = http::Response::from_parts(head, body);
        let upgraded = hyper::upgrade::on(&mut response)
            .await
            .map_err(Http2Error::Hyper)?;
        let stream = Http2Stream::new(TokioIo::new(upgraded), self.tls);
        Ok((
            response.map(|_| ()),
            Some(MaybeTlsStream::Http2(Box::new(stream))),
        ))
    }
}

/// TLS with ALPN `h2` alone, and a check that the server selected it.
#[cfg(feature = "tls")]
async fn secure(
    builder: &ClientBuilder,
    host: &str,
    tcp: TcpStream,
) -> Result<MaybeTlsStream<TcpStream>, Error> {
    use crate::tls::{TlsError, rustls};

    let config = match &builder.tls.config {
        // The caller's config, as it is but for ALPN.
        Some(config) => {
            let mut config = rustls::ClientConfig::clone(config);
            config.alpn_protocols = vec![crate::tls::ALPN_H2.to_vec()];
            std::sync::Arc::new(config)
        }
        None => crate::tls::http2_client_config(&builder.tls.extra_roots)?,
    };
    let not_negotiated = |selected: Option<&[u8]>| Http2Error::NotNegotiated {
        host: host.to_owned(),
        selected: selected.map(|p| String::from_utf8_lossy(p).into_owned()),
    };
    let tls = match crate::tls::connect(config, host, tcp).await {
        Ok(tls) => tls,
        // A server that has ALPN but not h2 refuses the handshake
        // (RFC 7301 §3.2).
        Err(TlsError::Handshake(rustls::Error::AlertReceived(
            rustls::AlertDescription::NoApplicationProtocol,
        ))) => return Err(not_negotiated(None).into()),
        Err(e) => return Err(e.into()),
    };
    match tls.get_ref().1.alpn_protocol() {
        Some(crate::tls::ALPN_H2) => Ok(MaybeTlsStream::Tls(Box::new(tls))),
        other => Err(not_negotiated(other).into()),
    }
}

#[cfg(not(feature = "tls"))]
async fn secure(
    builder: &ClientBuilder,
    _host: &str,
    _tcp: TcpStream,
) -> Result<MaybeTlsStream<TcpStream>, Error> {
    Err(Error::Url(format!(
        "{}: wss:// needs the `tls` feature of duplex",
        builder.url
    )))
}

// ------------------------------------------------ the server's preface

/// What the first frame of the server's connection preface says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Preface {
    /// A SETTINGS frame, which did or did not set
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL to 1.
    Settings { enable_connect_protocol: bool },
    /// Something else: not an HTTP/2 server.
    NotSettings,
}

/// Reads the first frame of the server's preface, byte by byte as they pass
/// (it is a few dozen bytes, read once per connection).
#[derive(Debug, Default)]
struct PrefaceReader {
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    /// Payload bytes of the SETTINGS frame not read yet.
    remaining: usize,
    entry: [u8; SETTING_LEN],
    entry_len: usize,
    enable_connect_protocol: bool,
}

/// RFC 9113 §4.1: length (24 bits), type, flags, stream identifier (32 bits).
const FRAME_HEADER_LEN: usize = 9;
/// RFC 9113 §6.5.1: identifier (16 bits), value (32 bits).
const SETTING_LEN: usize = 6;
/// RFC 9113 §6.5.
const FRAME_SETTINGS: u8 = 0x4;
/// RFC 9113 §6.5: the ACK flag.
const FLAG_ACK: u8 = 0x1;
/// RFC 8441 §3.
const SETTINGS_ENABLE_CONNECT_PROTOCOL: u16 = 0x8;

impl PrefaceReader {
    /// Feeds bytes read from the server; the verdict once the first frame
    /// is complete (bytes after it are not looked at).
    fn feed(&mut self, data: &[u8]) -> Option<Preface> {
        data.iter().find_map(|&b| self.push(b))
    }

    fn push(&mut self, b: u8) -> Option<Preface> {
        if self.header_len < FRAME_HEADER_LEN {
            self.header[self.header_len] = b;
            self.header_len += 1;
            if self.header_len < FRAME_HEADER_LEN {
                return None;
            }
            let h = self.header;
            let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            // RFC 9113 §3.4: the server's preface is a SETTINGS frame, on
            // stream 0, not an ACK, a multiple of 6 bytes long (§6.5).
            if h[3] != FRAME_SETTINGS
                || h[4] & FLAG_ACK != 0
                || stream != 0
                || !len.is_multiple_of(SETTING_LEN)
            {
                return Some(Preface::NotSettings);
            }
            self.remaining = len;
            return self.done();
        }
        self.entry[self.entry_len] = b;
        self.entry_len += 1;
        self.remaining -= 1;
        if self.entry_len == SETTING_LEN {
            self.entry_len = 0;
            let e = self.entry;
            if u16::from_be_bytes([e[0], e[1]]) == SETTINGS_ENABLE_CONNECT_PROTOCOL {
                // The last value of a setting in a frame wins (§6.5).
                self.enable_connect_protocol = u32::from_be_bytes([e[2], e[3], e[4], e[5]]) == 1;
            }
        }
        self.done()
    }

    fn done(&self) -> Option<Preface> {
        (self.remaining == 0).then_some(Preface::Settings {
            enable_connect_protocol: self.enable_connect_protocol,
        })
    }
}

/// The connection's transport, under hyper, reporting the first frame the
/// server sends; after that, a plain pass-through.
struct WatchPreface<S> {
    inner: S,
    watch: Option<(PrefaceReader, oneshot::Sender<Preface>)>,
}

impl<S: AsyncRead + Unpin> AsyncRead for WatchPreface<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let had_room = buf.remaining() > 0;
        let result = ready!(Pin::new(&mut this.inner).poll_read(cx, buf));
        if let Some((reader, _)) = &mut this.watch {
            let new = &buf.filled()[before..];
            let verdict = reader.feed(new);
            let eof = new.is_empty() && had_room;
            // A verdict, an error or the end of the stream: stop watching
            // (dropping the sender tells the waiting side the connection
            // closed first).
            if verdict.is_some() || result.is_err() || eof {
                let watch = this.watch.take();
                if let (Some(verdict), Some((_, tx))) = (verdict, watch) {
                    let _ = tx.send(verdict);
                }
            }
        }
        Poll::Ready(result)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WatchPreface<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame: header and payload.
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut out = vec![len[1], len[2], len[3], kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn setting(id: u16, value: u32) -> Vec<u8> {
        let mut out = id.to_be_bytes().to_vec();
        out.extend_from_slice(&value.to_be_bytes());
        out
    }

    fn settings(entries: &[(u16, u32)]) -> Vec<u8> {
        let payload: Vec<u8> = entries.iter().flat_map(|&(i, v)| setting(i, v)).collect();
        frame(FRAME_SETTINGS, 0, 0, &payload)
    }

    fn verdict(bytes: &[u8]) -> Option<Preface> {
        PrefaceReader::default().feed(bytes)
    }

    const ENABLED: Option<Preface> = Some(Preface::Settings {
        enable_connect_protocol: true,
    });
    const DISABLED: Option<Preface> = Some(Preface::Settings {
        enable_connect_protocol: false,
    });

    #[test]
    fn reads_enable_connect_protocol_from_the_first_settings() {
        // Max concurrent streams 100, initial window 1 MiB, extended CONNECT.
        let bytes = settings(&[(0x3, 100), (0x4, 1 << 20), (0x8, 1)]);
        assert_eq!(verdict(&bytes), ENABLED);
        assert_eq!(verdict(&settings(&[(0x3, 100)])), DISABLED);
        assert_eq!(verdict(&settings(&[(0x8, 0)])), DISABLED);
        // An empty SETTINGS frame is a valid preface (RFC 9113 §3.4).
        assert_eq!(verdict(&settings(&[])), DISABLED);
        // The last value of a repeated setting wins.
        assert_eq!(verdict(&settings(&[(0x8, 1), (0x8, 0)])), DISABLED);
        // Only the value 1 enables it.
        assert_eq!(verdict(&settings(&[(0x8, 2)])), DISABLED);
    }

    #[test]
    fn the_verdict_waits_for_the_whole_frame_in_any_split() {
        let mut bytes = settings(&[(0x3, 100), (0x8, 1)]);
        // A WINDOW_UPDATE after it does not matter.
        bytes.extend_from_slice(&frame(0x8, 0, 0, &[0, 0, 0x10, 0]));
        let end = FRAME_HEADER_LEN + 2 * SETTING_LEN;
        for split in 0..bytes.len() {
            let mut reader = PrefaceReader::default();
            let first = reader.feed(&bytes[..split]);
            if split < end {
                assert_eq!(first, None, "at {split}");
                assert_eq!(reader.feed(&bytes[split..]), ENABLED, "at {split}");
            } else {
                assert_eq!(first, ENABLED, "at {split}");
            }
        }
    }

    #[test]
    fn anything_but_a_settings_frame_is_not_http2() {
        // An HTTP/1.1 server's answer to the client's preface.
        assert_eq!(
            verdict(b"HTTP/1.1 400 Bad Request\r\n"),
            Some(Preface::NotSettings)
        );
        // A SETTINGS ACK, SETTINGS on a stream, a bad length, another frame.
        let not = Some(Preface::NotSettings);
        assert_eq!(verdict(&frame(FRAME_SETTINGS, FLAG_ACK, 0, &[])), not);
        assert_eq!(verdict(&frame(FRAME_SETTINGS, 0, 1, &setting(8, 1))), not);
        assert_eq!(verdict(&frame(FRAME_SETTINGS, 0, 0, &[0; 5])), not);
        assert_eq!(verdict(&frame(0x6, 0, 0, &[0; 8])), not);
        assert_eq!(verdict(&[0, 0]), None);
    }

    #[tokio::test]
    async fn the_watch_reports_then_passes_bytes_through() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (client, mut server) = tokio::io::duplex(1024);
        let (tx, mut rx) = oneshot::channel();
        let mut watched = WatchPreface {
            inner: client,
            watch: Some((PrefaceReader::default(), tx)),
        };
        let preface = settings(&[(0x8, 1)]);
        server.write_all(&preface[..4]).await.unwrap();
        let mut buf = vec![0u8; 64];
        let n = watched.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], &preface[..4]);
        assert!(rx.try_recv().is_err(), "no verdict before the frame ends");
        server.write_all(&preface[4..]).await.unwrap();
        server.write_all(b"after").await.unwrap();
        let mut rest = vec![0u8; preface.len() - 4 + 5];
        watched.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest[..preface.len() - 4], &preface[4..]);
        assert_eq!(&rest[preface.len() - 4..], b"after");
        assert_eq!(rx.await.ok(), ENABLED);
        assert!(watched.watch.is_none());

        // The end of the stream before a verdict drops the sender.
        let (client, server) = tokio::io::duplex(64);
        let (tx, rx) = oneshot::channel();
        let mut watched = WatchPreface {
            inner: client,
            watch: Some((PrefaceReader::default(), tx)),
        };
        drop(server);
        assert_eq!(watched.read(&mut buf).await.unwrap(), 0);
        assert!(rx.await.is_err());
    }
}
