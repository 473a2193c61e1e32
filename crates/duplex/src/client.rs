//! The client side: URL parsing, the TCP connection, the opening handshake
//! (RFC 6455 §4.1) and extension negotiation.

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use duplex_proto::extensions::deflate::Deflate;
use duplex_proto::handshake::client::ClientRequest;
use duplex_proto::handshake::write_request;
use duplex_proto::{Connection, Role};

use crate::websocket::Negotiated;
use crate::{Config, Error, WebSocket};

/// `new WebSocket(url)`: connects to a `ws://` URL with the default
/// [`Config::client`] and completes the opening handshake.
///
/// ```no_run
/// # async fn run() -> Result<(), duplex::Error> {
/// let mut ws = duplex::connect("ws://127.0.0.1:8080/").await?;
/// ws.send("hello").await?;
/// if let Some(reply) = ws.recv().await? {
///     println!("{reply:?}");
/// }
/// ws.close(1000, "done").await?;
/// # Ok(()) }
/// ```
pub async fn connect(url: &str) -> Result<WebSocket<TcpStream>, Error> {
    ClientBuilder::new(url).connect().await
}

/// A client connection being set up: `new WebSocket(url, protocols)` with
/// headers and limits.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: String,
    config: Config,
    headers: HeaderMap,
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
        }
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

    /// Connects over TCP and completes the handshake.
    pub async fn connect(self) -> Result<WebSocket<TcpStream>, Error> {
        let target = Target::parse(&self.url)?;
        if target.tls {
            return Err(Error::Url(format!(
                "{}: wss:// needs TLS, which this build does not include",
                self.url
            )));
        }
        let timeout = self.config.handshake_timeout;
        let stream = tokio::time::timeout(
            timeout,
            TcpStream::connect((target.host.as_str(), target.port)),
        )
        .await
        .map_err(|_| Error::HandshakeTimeout)??;
        stream.set_nodelay(self.config.nodelay)?;
        self.handshake(stream, target).await
    }

    /// Completes the handshake over a stream the caller connected (TLS, a
    /// Unix socket, a proxy tunnel...).
    pub async fn connect_on<S>(self, stream: S) -> Result<WebSocket<S>, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
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
        let request = ClientRequest {
            uri: target.uri.clone(),
            protocols: config.protocols.clone(),
            extensions: offer,
            headers: self.headers,
        };
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
        let answer = handshake.negotiated(&response);
        let protocol = answer.protocol;
        let extension_values: Vec<&str> = answer.extensions.iter().map(String::as_str).collect();
        let deflate = match &config.deflate {
            Some(deflate_config) => deflate_config
                .client_accept(&extension_values)
                .map_err(|e| Error::Extension(e.to_string()))?
                .map(|params| {
                    Deflate::new(
                        Role::Client,
                        params,
                        deflate_config.compression_level,
                        deflate_config.threshold,
                    )
                }),
            None if !extension_values.is_empty() => {
                return Err(Error::Extension(format!(
                    "the server answered extensions {extension_values:?} that were not offered"
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
        Ok(WebSocket::from_parts(
            stream,
            conn,
            &config,
            negotiated,
            &buf[consumed..],
        ))
    }
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
