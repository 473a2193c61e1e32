//! Why a run of `duplex bench`, or one of its connections, failed.

use duplex_proto::ProtocolError;
use duplex_proto::handshake::HandshakeError;

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
