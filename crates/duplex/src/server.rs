//! The server side: reading the Upgrade request, validating it (RFC 6455
//! §4.2), choosing a subprotocol and extensions, answering, and a small
//! `serve` loop that runs one task per connection.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use duplex_proto::extensions::deflate::Deflate;
use duplex_proto::extensions::parse_header;
use duplex_proto::handshake::server::{
    parse_request, reject, response, select_protocol, validate_request,
};
use duplex_proto::handshake::{HandshakeError, write_response};
use duplex_proto::{Connection, Role};

use crate::websocket::Negotiated;
use crate::{Config, Error, WebSocket};

/// Accepts a WebSocket connection on `stream` with [`Config::server`].
pub async fn accept<S>(stream: S) -> Result<WebSocket<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    accept_with(stream, &Config::server()).await
}

/// Accepts a WebSocket connection on `stream` with `config`.
pub async fn accept_with<S>(stream: S, config: &Config) -> Result<WebSocket<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let pending = PendingRequest::read(stream, config).await?;
    pending.accept(config).await
}

/// An HTTP request read from a new connection, not answered yet.
///
/// Lets a server look at the request (path, `Origin`, cookies) before it
/// accepts or rejects, or hand a plain HTTP request to an HTTP server.
#[derive(Debug)]
pub struct PendingRequest<S> {
    stream: S,
    request: Request<()>,
    /// Every byte read: the head, then possibly the first frames.
    raw: Vec<u8>,
    head_len: usize,
}

impl<S> PendingRequest<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Reads one HTTP request head from `stream`, within the configured
    /// size and time limits. A malformed request is answered with its HTTP
    /// status and the error is returned.
    pub async fn read(stream: S, config: &Config) -> Result<Self, Error> {
        let limit = config.max_handshake_size;
        match tokio::time::timeout(config.handshake_timeout, read_head(stream, limit)).await {
            Ok(result) => result,
            Err(_) => Err(Error::HandshakeTimeout),
        }
    }

    /// The request.
    pub fn request(&self) -> &Request<()> {
        &self.request
    }

    /// Whether the request asks for a WebSocket upgrade at all (an
    /// `Upgrade: websocket` header); otherwise it is plain HTTP.
    pub fn is_upgrade(&self) -> bool {
        self.request
            .headers()
            .get_all(http::header::UPGRADE)
            .iter()
            .any(|v| {
                v.to_str()
                    .is_ok_and(|v| v.eq_ignore_ascii_case("websocket"))
            })
    }

    /// Completes the handshake: validates the request, picks a subprotocol
    /// from `config.protocols` and negotiates permessage-deflate if
    /// `config.deflate` is set. An invalid request is answered with 400
    /// (426 for a wrong version) and the error returned.
    pub async fn accept(mut self, config: &Config) -> Result<WebSocket<S>, Error> {
        let (answer, accepted) = match negotiate(&self.request, config) {
            Ok(negotiated) => negotiated,
            Err(e) => {
                self.send_rejection(&e).await;
                return Err(e.into());
            }
        };
        let mut head = Vec::with_capacity(256);
        write_response(&answer, &mut head);
        self.stream.write_all(&head).await?;
        self.stream.flush().await?;
        let leftover = self.raw.split_off(self.head_len);
        Ok(accepted.into_websocket_with(self.stream, &leftover))
    }

    /// Answers with `response` (e.g. 403 for a bad `Origin`) and closes.
    pub async fn reject(mut self, response: Response<String>) -> Result<(), Error> {
        let mut head = Vec::new();
        write_response(&response, &mut head);
        head.extend_from_slice(response.body().as_bytes());
        self.stream.write_all(&head).await?;
        self.stream.shutdown().await?;
        Ok(())
    }

    async fn send_rejection(&mut self, e: &HandshakeError) {
        tracing::info!(error = %e, status = %e.status(), "rejecting handshake");
        send_rejection(&mut self.stream, e).await;
    }

    /// The stream and every byte read from it (the request head and
    /// anything after), for handing a plain HTTP request to an HTTP server.
    pub fn into_parts(self) -> (S, Vec<u8>) {
        (self.stream, self.raw)
    }
}

/// A handshake the server agreed to: what the 101 response promised,
/// waiting for the upgraded stream.
#[derive(Debug)]
pub struct Accepted {
    conn: Connection,
    negotiated: Negotiated,
    config: Config,
}

impl Accepted {
    /// The WebSocket on the upgraded stream (e.g. hyper's `Upgraded`).
    pub fn into_websocket<S>(self, stream: S) -> WebSocket<S>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.into_websocket_with(stream, &[])
    }

    fn into_websocket_with<S>(self, stream: S, leftover: &[u8]) -> WebSocket<S>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        WebSocket::from_parts(stream, self.conn, &self.config, self.negotiated, leftover)
    }
}

/// Validates an Upgrade request of any HTTP server (hyper, axum...) and
/// decides the answer: the 101 response to send, and what to do with the
/// stream once the server hands it over. Errors carry their HTTP status
/// ([`HandshakeError::status`]).
pub fn negotiate<B>(
    request: &Request<B>,
    config: &Config,
) -> Result<(Response<()>, Accepted), HandshakeError> {
    let info = validate_request(request)?;
    let protocol = select_protocol(&info.protocols, &config.protocols);
    let mut deflate = None;
    let mut extensions = None;
    if let Some(deflate_config) = &config.deflate {
        let values: Vec<&str> = info.extensions.iter().map(String::as_str).collect();
        // A malformed offer is declined, not fatal (RFC 7692 §5).
        match parse_header(&values) {
            Ok(offers) => {
                if let Some((params, answer)) = deflate_config.server_accept(&offers) {
                    deflate = Some(Deflate::new(
                        Role::Server,
                        params,
                        deflate_config.compression_level,
                        deflate_config.threshold,
                    ));
                    extensions = Some(answer);
                }
            }
            Err(e) => tracing::debug!(error = %e, "declining malformed extension offer"),
        }
    }
    let answer = response(&info, protocol.as_deref(), extensions.as_deref());
    let negotiated = Negotiated {
        url: request
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        protocol,
        extensions,
    };
    let conn = Connection::new(Role::Server, config.limits()).with_deflate(deflate);
    Ok((
        answer,
        Accepted {
            conn,
            negotiated,
            config: config.clone(),
        },
    ))
}

/// Answers a bad request with its HTTP status and closes. The peer may be
/// gone already; the handshake error is what matters, so write errors are
/// ignored.
async fn send_rejection<S>(stream: &mut S, e: &HandshakeError)
where
    S: AsyncWrite + Unpin,
{
    let answer = reject(e);
    let mut head = Vec::new();
    write_response(&answer, &mut head);
    head.extend_from_slice(answer.body().as_bytes());
    let _ = stream.write_all(&head).await;
    let _ = stream.shutdown().await;
}

async fn read_head<S>(mut stream: S, limit: usize) -> Result<PendingRequest<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(1024);
    loop {
        match parse_request(&buf, limit) {
            Ok(Some((request, head_len))) => {
                return Ok(PendingRequest {
                    stream,
                    request,
                    raw: buf,
                    head_len,
                });
            }
            Ok(None) => {}
            Err(e) => {
                tracing::info!(error = %e, status = %e.status(), "rejecting malformed request");
                send_rejection(&mut stream, &e).await;
                return Err(e.into());
            }
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before the request was complete",
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Runs a WebSocket server on `addr`: one task per connection, each
/// handed to `handler` once its handshake succeeds.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// duplex::serve("127.0.0.1:8080", duplex::Config::server(), |mut ws| async move {
///     // Echo every message until the peer closes.
///     while let Ok(Some(message)) = ws.recv().await {
///         if ws.send(message).await.is_err() {
///             break;
///         }
///     }
/// })
/// .await
/// # }
/// ```
pub async fn serve<A, H, F>(addr: A, config: Config, handler: H) -> std::io::Result<()>
where
    A: tokio::net::ToSocketAddrs,
    H: Fn(WebSocket<TcpStream>) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await?;
    serve_listener(listener, config, handler).await
}

/// [`serve`] on a listener the caller bound.
pub async fn serve_listener<H, F>(
    listener: TcpListener,
    config: Config,
    handler: H,
) -> std::io::Result<()>
where
    H: Fn(WebSocket<TcpStream>) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let config = Arc::new(config);
    let handler = Arc::new(handler);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: keep serving the connections we have.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let config = Arc::clone(&config);
        let handler = Arc::clone(&handler);
        tokio::spawn(async move {
            match handshake_tcp(stream, peer, &config).await {
                Ok(ws) => handler(ws).await,
                Err(e) => tracing::debug!(%peer, error = %e, "handshake failed"),
            }
        });
    }
}

async fn handshake_tcp(
    stream: TcpStream,
    peer: SocketAddr,
    config: &Config,
) -> Result<WebSocket<TcpStream>, Error> {
    stream.set_nodelay(config.nodelay)?;
    tracing::trace!(%peer, "new connection");
    accept_with(stream, config).await
}
