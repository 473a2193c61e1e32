//! The handshake on a stream the caller accepted itself ([`accept`],
//! [`accept_with`]): read the Upgrade request, validate it (RFC 6455 §4.2),
//! choose a subprotocol and extensions, answer. [`negotiate`] is the part
//! every door shares, the server core's hyper path included.

use http::{Request, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use duplex_proto::extensions::deflate::Deflate;
use duplex_proto::extensions::parse_header;
use duplex_proto::handshake::server::{
    RequestInfo, parse_request, reject, response, select_protocol, validate_request,
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
#[derive(Debug)]
pub(crate) struct PendingRequest<S> {
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
    pub(crate) async fn read(stream: S, config: &Config) -> Result<Self, Error> {
        let limit = config.max_handshake_size;
        match tokio::time::timeout(config.handshake_timeout, read_head(stream, limit)).await {
            Ok(result) => result,
            Err(_) => Err(Error::HandshakeTimeout),
        }
    }

    /// Completes the handshake: validates the request, picks a subprotocol
    /// from `config.protocols` and negotiates permessage-deflate if
    /// `config.deflate` is set. An invalid request is answered with 400
    /// (426 for a wrong version) and the error returned.
    pub(crate) async fn accept(mut self, config: &Config) -> Result<WebSocket<S>, Error> {
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

    async fn send_rejection(&mut self, e: &HandshakeError) {
        tracing::info!(error = %e, status = %e.status(), "rejecting handshake");
        send_rejection(&mut self.stream, e).await;
    }
}

/// A handshake the server agreed to: what the 101 (or, over HTTP/2, 200)
/// response promised, waiting for the upgraded stream.
#[derive(Debug)]
pub(crate) struct Accepted {
    conn: Connection,
    negotiated: Negotiated,
    config: Config,
}

impl Accepted {
    /// The subprotocol the response names, if any.
    #[cfg(feature = "hyper")]
    pub(crate) fn protocol(&self) -> Option<&str> {
        self.negotiated.protocol.as_deref()
    }

    /// The WebSocket on the upgraded stream; `leftover` holds bytes read
    /// past the request head, the first frames.
    pub(crate) fn into_websocket_with<S>(self, stream: S, leftover: &[u8]) -> WebSocket<S>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        WebSocket::from_parts(stream, self.conn, &self.config, self.negotiated, leftover)
    }
}

/// Validates an HTTP/1.1 Upgrade request and decides the answer: the 101
/// response to send, and what to do with the stream once it is handed over.
/// Errors carry their HTTP status ([`HandshakeError::status`]).
pub(crate) fn negotiate<B>(
    request: &Request<B>,
    config: &Config,
) -> Result<(Response<()>, Accepted), HandshakeError> {
    let info = validate_request(request)?;
    Ok(negotiate_info(&info, request.uri(), config))
}

/// The answer to a valid request, over either HTTP version: the subprotocol
/// in the server's order of preference, permessage-deflate if configured
/// and offered (a malformed offer is declined, not fatal: RFC 7692 §5).
pub(crate) fn negotiate_info(
    info: &RequestInfo,
    uri: &http::Uri,
    config: &Config,
) -> (Response<()>, Accepted) {
    let protocol = select_protocol(&info.protocols, &config.protocols);
    let mut deflate = None;
    let mut extensions = None;
    if let Some(deflate_config) = &config.deflate {
        let values: Vec<&str> = info.extensions.iter().map(String::as_str).collect();
        match parse_header(&values) {
            Ok(offers) => {
                if let Some((params, answer)) = deflate_config.server_accept(&offers) {
                    deflate = Some(
                        Deflate::new(
                            Role::Server,
                            params,
                            deflate_config.compression_level,
                            deflate_config.threshold,
                        )
                        .keep_zlib_state(deflate_config.keep_zlib_state),
                    );
                    extensions = Some(answer);
                }
            }
            Err(e) => tracing::debug!(error = %e, "declining malformed extension offer"),
        }
    }
    let answer = response(info, protocol.as_deref(), extensions.as_deref());
    let negotiated = Negotiated {
        url: uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        protocol,
        extensions,
    };
    let conn = Connection::new(Role::Server, config.limits()).with_deflate(deflate);
    (
        answer,
        Accepted {
            conn,
            negotiated,
            config: config.clone(),
        },
    )
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
