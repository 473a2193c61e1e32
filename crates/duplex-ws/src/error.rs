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
    Http2(#[from] Http2Error),
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

/// Why WebSocket over HTTP/2 could not be set up.
#[cfg(feature = "hyper")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Http2Error {
    /// The TLS server did not agree to HTTP/2 in ALPN (RFC 9113 §3.2): it
    /// refused `h2` or selected nothing.
    #[error(
        "{host} does not speak HTTP/2 over TLS: {}",
        match .selected {
            Some(protocol) => format!("ALPN selected {protocol:?}, not \"h2\""),
            None => "ALPN \"h2\" was not selected".to_owned(),
        }
    )]
    NotNegotiated {
        /// The host connected to.
        host: String,
        /// The ALPN protocol the server selected, if any.
        selected: Option<String>,
    },
    /// The server's first frame is not SETTINGS: it does not speak HTTP/2
    /// on this port (with prior knowledge, for `ws://`).
    #[error("{host} does not speak HTTP/2: its first bytes are not an HTTP/2 SETTINGS frame")]
    NotHttp2 {
        /// The host connected to.
        host: String,
    },
    /// The server's SETTINGS did not enable extended CONNECT
    /// (SETTINGS_ENABLE_CONNECT_PROTOCOL, RFC 8441 §3): it takes no
    /// WebSocket over HTTP/2.
    #[error(
        "{host} does not accept WebSockets over HTTP/2: its SETTINGS do not enable extended \
         CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL, RFC 8441)"
    )]
    ExtendedConnectDisabled {
        /// The host connected to.
        host: String,
    },
    /// The connection closed before the server's SETTINGS arrived.
    #[error("{host} closed the connection before sending its HTTP/2 SETTINGS")]
    ClosedBeforeSettings {
        /// The host connected to.
        host: String,
    },
    /// The URL is not on the origin (scheme, host and port) of the HTTP/2
    /// connection it was asked of.
    #[error("{url} is not on this HTTP/2 connection, which is to {origin}")]
    OtherOrigin {
        /// The URL asked for.
        url: String,
        /// The connection's origin.
        origin: String,
    },
    /// WebSocket over HTTP/2 needs duplex to open the connection:
    /// [`ClientBuilder::connect_on`](crate::ClientBuilder::connect_on) speaks HTTP/1.1 only.
    #[error("WebSocket over HTTP/2 needs connect(), not connect_on() on a caller's stream")]
    CallerStream,
    /// HTTP/2 itself failed (a protocol error, a reset stream, a closed
    /// connection).
    #[error("HTTP/2: {0}")]
    Hyper(#[from] hyper::Error),
}
