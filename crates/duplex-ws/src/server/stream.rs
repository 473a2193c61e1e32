//! [`ServerStream`]: the one stream type under every WebSocket the server
//! core accepts, however it arrived.
//!
//! hyper parses every request, then hands an upgraded connection over as a
//! type-erased `Upgraded`. Over HTTP/1.1 that is the connection itself, so
//! it is taken back out ([`hyper::upgrade::Upgraded::downcast`]) and the
//! WebSocket reads and writes the TCP or TLS stream directly, with no
//! virtual call per read; only an HTTP/2 stream, which is multiplexed by
//! hyper's connection task, stays behind `Upgraded`. The variants that
//! carry large state are boxed, so that an idle plain connection pays only
//! for a tag.

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The stream of a WebSocket accepted by the server core
/// ([`Server`](crate::Server), [`Upgrade`](crate::Upgrade)).
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerStream {
    /// A `ws://` connection over HTTP/1.1.
    Tcp(TcpStream),
    /// A `wss://` connection over HTTP/1.1.
    #[cfg(feature = "tls")]
    Tls(Box<crate::tls::ServerTlsStream<TcpStream>>),
    /// Anything else hyper upgraded: a WebSocket on an HTTP/2 stream
    /// (RFC 8441), or an HTTP/1.1 connection of a server other than
    /// duplex's own (axum's `serve`, say).
    Upgraded(Box<TokioIo<Upgraded>>),
}

impl ServerStream {
    /// The stream under an upgrade, and the bytes hyper read past the
    /// request head (the first frames, if the client sent them eagerly).
    pub(crate) fn from_upgraded(upgraded: Upgraded) -> (ServerStream, Bytes) {
        let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => return (ServerStream::Tcp(parts.io.into_inner()), parts.read_buf),
            Err(upgraded) => upgraded,
        };
        #[cfg(feature = "tls")]
        let upgraded = match upgraded.downcast::<TokioIo<crate::tls::ServerTlsStream<TcpStream>>>()
        {
            Ok(parts) => {
                let tls = Box::new(parts.io.into_inner());
                return (ServerStream::Tls(tls), parts.read_buf);
            }
            Err(upgraded) => upgraded,
        };
        (
            ServerStream::Upgraded(Box::new(TokioIo::new(upgraded))),
            Bytes::new(),
        )
    }

    /// Whether this is a WebSocket over an HTTP/2 stream or another
    /// server's upgrade, not a connection of its own.
    pub fn is_upgraded(&self) -> bool {
        matches!(self, ServerStream::Upgraded(_))
    }
}

crate::stream::delegate_async_io! {
    impl for ServerStream {
        Tcp,
        #[cfg(feature = "tls")]
        Tls,
        Upgraded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_connection_costs_no_more_than_a_tag_and_a_pointer() {
        let plain = std::mem::size_of::<TcpStream>();
        assert!(std::mem::size_of::<ServerStream>() <= plain + 8);
    }
}
