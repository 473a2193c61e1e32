//! Errors of the I/O layer: the socket, the handshake, the protocol, and
//! misuse of the API.

use duplex_proto::extensions::ExtensionError;
use duplex_proto::handshake::HandshakeError;
use duplex_proto::{CloseCode, ProtocolError, SendError};

/// Anything that can go wrong with a WebSocket connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The URL is not a usable `ws://` or `wss://` URL.
    #[error("invalid URL: {0}")]
    Url(String),
    /// The opening handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The server's answer to our extension offer is not one we can accept
    /// (RFC 7692 §7.1.1: an unknown parameter, a window we did not allow...).
    #[error("extension negotiation failed: {0}")]
    Extension(#[from] ExtensionError),
    /// TLS failed: a certificate was rejected (expired, wrong host, unknown
    /// issuer…), the peer does not speak TLS, or a certificate file is bad.
    #[cfg(feature = "tls")]
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// WebSocket over HTTP/2 could not be set up: the server does not
    /// speak HTTP/2 or does not enable extended CONNECT (RFC 8441), or
    /// HTTP/2 failed.
    #[error(transparent)]
    #[cfg(feature = "hyper")]
    Http2(#[from] crate::client::Http2Error),
    /// The opening handshake took longer than the configured timeout.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// The peer broke the protocol; the connection was failed with the
    /// matching close code.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// A send that cannot be made (connection closing, bad close code...).
    #[error("cannot send: {0}")]
    Send(#[from] SendError),
    /// `close()` with a code an application may not use (browser rule:
    /// 1000 or 3000–4999).
    #[error("close code {0} is not 1000 or in 3000-4999")]
    InvalidCloseCode(CloseCode),
    /// `close()` with a reason over 123 bytes of UTF-8.
    #[error("close reason of {0} bytes is longer than 123")]
    CloseReasonTooLong(usize),
    /// A keepalive Ping had no Pong within the configured timeout: the
    /// peer is gone or stuck. The connection was failed with 1011.
    #[error("keepalive ping timed out: no pong within {0:?}")]
    KeepaliveTimeout(std::time::Duration),
    /// The peer took no byte of what we had to send for this long: it
    /// stopped reading. The connection was dropped (reported as 1006).
    #[error("write timed out: the peer took nothing for {0:?}")]
    WriteTimeout(std::time::Duration),
    /// The peer took longer than the fragment timeout to finish a data
    /// message it had begun. The connection was failed with 1008.
    #[error("message timed out: not finished within {0:?}")]
    MessageTimeout(std::time::Duration),
    /// The peer's partly received message needed more of the shared
    /// message budget than was left. The connection was failed with 1013.
    #[error("message budget of {limit} bytes exhausted: {held} bytes of a message held")]
    MessageBudget {
        /// The budget's limit.
        limit: usize,
        /// What this connection's message needed.
        held: usize,
    },
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
}
