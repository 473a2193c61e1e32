//! The client side: URL parsing, the TCP connection, TLS for `wss://`, the
//! opening handshake (RFC 6455 §4.1) and extension negotiation.
//!
//! One budget, [`Config::handshake_timeout`], covers the whole of opening a
//! connection: TCP connect, the TLS handshake and the HTTP Upgrade (or, over
//! HTTP/2, the extended CONNECT's answer), as a browser's connection attempt
//! is one thing that succeeds or fails.
//!
//! WebSocket over HTTP/2 (RFC 8441, [`ClientBuilder::http2`]) is in
//! [`http2`].

#[cfg(feature = "hyper")]
mod http2;

#[cfg(feature = "hyper")]
pub use http2::Http2Connection;

#[cfg(feature = "hyper")]
use crate::error::Http2Error;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use duplex_proto::extensions::deflate::Deflate;
use duplex_proto::handshake::client::ClientRequest;
use duplex_proto::handshake::client::Negotiated as Answer;
use duplex_proto::handshake::{HandshakeError, write_request};
use duplex_proto::{Connection, Role};

use crate::websocket::Negotiated;
use crate::{Config, Error, MaybeTlsStream, WebSocket};

/// `new WebSocket(url)`: connects to a `ws://` or `wss://` URL with the
/// default [`Config::client`] and completes the opening handshake. `wss://`
/// trusts the platform's root certificates (see [`crate::tls`]).
///
/// ```no_run
/// # async fn run() -> Result<(), duplex_ws::Error> {
/// let mut ws = duplex_ws::connect("ws://127.0.0.1:8080/").await?;
/// ws.send("hello").await?;
/// if let Some(reply) = ws.recv().await? {
///     println!("{reply:?}");
/// }
/// ws.close(1000, "done").await?;
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<WebSocket<MaybeTlsStream<TcpStream>>, Error> {
    ClientBuilder::new(url).connect().await
}

/// A client connection being set up: `new WebSocket(url, protocols)` with
/// headers and limits.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: String,
    config: Config,
    headers: HeaderMap,
    #[cfg(feature = "tls")]
    tls: TlsOptions,
    #[cfg(feature = "hyper")]
    http2: bool,
}

/// How a `wss://` connection is verified.
#[cfg(feature = "tls")]
#[derive(Debug, Clone, Default)]
struct TlsOptions {
    /// The caller's own rustls config, used as it is.
    config: Option<std::sync::Arc<crate::tls::rustls::ClientConfig>>,
    /// Roots trusted besides the platform's.
    extra_roots: Vec<crate::tls::rustls::pki_types::CertificateDer<'static>>,
}

/// A parsed `ws://` / `wss://` URL.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) uri: Uri,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: bool,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Target, Error> {
        let parsed = url::Url::parse(url).map_err(|e| Error::Url(format!("{url}: {e}")))?;
        let tls = match parsed.scheme() {
            "ws" | "http" => false,
            "wss" | "https" => true,
            other => {
                return Err(Error::Url(format!(
                    "{url}: scheme {other:?} is not ws:// or wss://"
                )));
            }
        };
        if parsed.fragment().is_some() {
            // The browser throws a SyntaxError for fragments (WHATWG).
            return Err(Error::Url(format!(
                "{url}: a WebSocket URL has no #fragment"
            )));
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| Error::Url(format!("{url}: no host")))?
            .to_owned();
        let port = parsed
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        let scheme = if tls { "wss" } else { "ws" };
        let mut path = parsed.path().to_owned();
        if let Some(q) = parsed.query() {
            path.push('?');
            path.push_str(q);
        }
        let authority = match parsed.port() {
            Some(p) => format!("{}:{p}", host_for_authority(&host)),
            None => host_for_authority(&host),
        };
        let uri = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|e| Error::Url(format!("{url}: {e}")))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Target {
            uri,
            host,
            port,
            tls,
        })
    }
}

fn host_for_authority(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

impl ClientBuilder {
    /// A client for `url` with [`Config::client`].
    pub fn new(url: impl Into<String>) -> Self {
        ClientBuilder {
            url: url.into(),
            config: Config::client(),
            headers: HeaderMap::new(),
            #[cfg(feature = "tls")]
            tls: TlsOptions::default(),
            #[cfg(feature = "hyper")]
            http2: false,
        }
    }

    #[cfg(feature = "hyper")]
    /// Opens the WebSocket over HTTP/2 (RFC 8441) instead of HTTP/1.1:
    /// `wss://` with TLS ALPN `h2` alone, `ws://` as HTTP/2 with prior
    /// knowledge (h2c); then an extended CONNECT, answered with 200, on a
    /// stream of that connection. Fails with a typed [`Http2Error`] if the
    /// server does not select `h2` or does not enable extended CONNECT;
    /// there is no fallback to HTTP/1.1. Off by default.
    ///
    /// Subprotocols, headers, permessage-deflate, limits and timeouts work
    /// as over HTTP/1.1. The WebSocket's stream is
    /// [`MaybeTlsStream::Http2`]. To open several WebSockets on one
    /// HTTP/2 connection, use [`Http2Connection`].
    pub fn http2(mut self, enable: bool) -> Self {
        self.http2 = enable;
        self
    }

    /// Replaces the configuration (limits, timeouts, deflate, protocols).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Subprotocols to offer, most preferred first.
    pub fn protocols<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.config.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a request header (e.g. `Origin`, `Authorization`).
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// Trusts `certificate` (DER) as a root for `wss://`, besides the
    /// platform's roots: a private CA, or a self-signed server certificate.
    /// Ignored when [`tls_config`](Self::tls_config) is set.
    #[cfg(feature = "tls")]
    pub fn add_root_certificate(
        mut self,
        certificate: crate::tls::rustls::pki_types::CertificateDer<'static>,
    ) -> Self {
        self.tls.extra_roots.push(certificate);
        self
    }

    /// Uses this rustls config for `wss://`, as it is: its roots, client
    /// certificate and ALPN (set `alpn_protocols` to `http/1.1` to match
    /// the default). With [`http2`](Self::http2), its ALPN is replaced by
    /// `h2`.
    #[cfg(feature = "tls")]
    pub fn tls_config(mut self, config: std::sync::Arc<crate::tls::rustls::ClientConfig>) -> Self {
        self.tls.config = Some(config);
        self
    }

    /// Connects over TCP (and TLS for `wss://`) and completes the
    /// handshake, all within [`Config::handshake_timeout`]; over HTTP/2 if
    /// [`http2`](Self::http2) is set.
    pub async fn connect(self) -> Result<WebSocket<MaybeTlsStream<TcpStream>>, Error> {
        let target = Target::parse(&self.url)?;
        #[cfg(not(feature = "tls"))]
        if target.tls {
            return Err(Error::Url(format!(
                "{}: wss:// needs the `tls` feature of duplex",
                self.url
            )));
        }
        let timeout = self.config.handshake_timeout;
        tokio::time::timeout(timeout, self.connect_inner(target))
            .await
            .map_err(|_| Error::HandshakeTimeout)?
    }

    async fn connect_inner(
        self,
        target: Target,
    ) -> Result<WebSocket<MaybeTlsStream<TcpStream>>, Error> {
        #[cfg(feature = "hyper")]
        if self.http2 {
            let connection = Http2Connection::connect_to(&self, &target).await?;
            // The connection lives on with the WebSocket's stream.
            return connection.open(self, target).await;
        }
        let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
        tcp.set_nodelay(self.config.nodelay)?;
        let stream = if target.tls {
            self.secure(&target.host, tcp).await?
        } else {
            MaybeTlsStream::Plain(tcp)
        };
        self.handshake_inner(stream, target).await
    }

    /// The client half of the TLS handshake, for `host`.
    #[cfg(feature = "tls")]
    async fn secure(&self, host: &str, tcp: TcpStream) -> Result<MaybeTlsStream<TcpStream>, Error> {
        let config = match &self.tls.config {
            Some(config) => std::sync::Arc::clone(config),
            None => crate::tls::client_config(&self.tls.extra_roots)?,
        };
        let tls = crate::tls::connect(config, host, tcp).await?;
        Ok(MaybeTlsStream::Tls(Box::new(tls)))
    }

    #[cfg(not(feature = "tls"))]
    async fn secure(
        &self,
        _host: &str,
        _tcp: TcpStream,
    ) -> Result<MaybeTlsStream<TcpStream>, Error> {
        Err(Error::Url(format!(
            "{}: wss:// needs the `tls` feature of duplex",
            self.url
        )))
    }

    /// Completes the handshake over a stream the caller connected (TLS, a
    /// Unix socket, a proxy tunnel...). HTTP/1.1 only: with
    /// [`http2`](Self::http2) set, fails with [`Http2Error::CallerStream`].
    pub async fn connect_on<S>(self, stream: S) -> Result<WebSocket<S>, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        #[cfg(feature = "hyper")]
        if self.http2 {
            return Err(Http2Error::CallerStream.into());
        }
        let target = Target::parse(&self.url)?;
        self.handshake(stream, target).await
    }

    async fn handshake<S>(self, stream: S, target: Target) -> Result<WebSocket<S>, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let timeout = self.config.handshake_timeout;
        tokio::time::timeout(timeout, self.handshake_inner(stream, target))
            .await
            .map_err(|_| Error::HandshakeTimeout)?
    }

    async fn handshake_inner<S>(self, mut stream: S, target: Target) -> Result<WebSocket<S>, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let config = self.config;
        let offer = config.deflate.as_ref().map(|d| d.client_offer());
        let mut request = ClientRequest::new(target.uri.clone());
        request.protocols = config.protocols.clone();
        request.extensions = offer;
        request.headers = self.headers;
        let (request, handshake) = request.build()?;
        let mut head = Vec::with_capacity(256);
        write_request(&request, &mut head);
        stream.write_all(&head).await?;
        stream.flush().await?;

        let mut buf = Vec::with_capacity(1024);
        let (response, consumed) = loop {
            if let Some(parsed) = handshake.parse_response(&buf, config.max_handshake_size)? {
                break parsed;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed during the opening handshake",
                )));
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let (conn, negotiated) =
            open_connection(&config, &target, handshake.negotiated(&response))?;
        Ok(WebSocket::from_parts(
            stream,
            conn,
            &config,
            negotiated,
            &buf[consumed..],
        ))
    }
}

/// The client's protocol state once the server answered, over HTTP/1.1 or
/// HTTP/2: permessage-deflate accepted or refused against the offer (an
/// answer to no offer is an error), and what the browser API reports.
fn open_connection(
    config: &Config,
    target: &Target,
    answer: Answer,
) -> Result<(Connection, Negotiated), Error> {
    let protocol = answer.protocol;
    let extension_values: Vec<&str> = answer.extensions.iter().map(String::as_str).collect();
    let deflate = match &config.deflate {
        Some(deflate_config) => deflate_config
            .client_accept(&extension_values)
            .map_err(Error::Extension)?
            .map(|params| {
                Deflate::new(
                    Role::Client,
                    params,
                    deflate_config.compression_level,
                    deflate_config.threshold,
                )
                .keep_zlib_state(deflate_config.keep_zlib_state)
            }),
        None if !extension_values.is_empty() => {
            return Err(Error::Handshake(HandshakeError::UnexpectedExtensions(
                extension_values.join(", "),
            )));
        }
        None => None,
    };
    let extensions = (!extension_values.is_empty()).then(|| extension_values.join(", "));
    let negotiated = Negotiated {
        url: target.uri.to_string(),
        protocol,
        extensions,
    };
    tracing::debug!(url = %negotiated.url, protocol = ?negotiated.protocol,
        extensions = ?negotiated.extensions, "connected");
    let conn = Connection::new(Role::Client, config.limits()).with_deflate(deflate);
    Ok((conn, negotiated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ws_urls() {
        let t = Target::parse("ws://localhost:8080").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.tls), ("localhost", 8080, false));
        assert_eq!(t.uri.path(), "/");
        let t = Target::parse("wss://example.com/chat?room=1").unwrap();
        assert_eq!((t.port, t.tls), (443, true));
        assert_eq!(t.uri.path_and_query().unwrap().as_str(), "/chat?room=1");
        let t = Target::parse("ws://[::1]:9001/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9001));
        assert_eq!(Target::parse("ws://h").unwrap().port, 80);
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in ["ftp://x/", "ws://x/#frag", "not a url", "ws://"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
