//! [`MaybeTlsStream`]: one stream type for `ws://` and `wss://`, over
//! HTTP/1.1 or HTTP/2, so that [`connect`](crate::connect) returns one
//! concrete `WebSocket` type.
//!
//! The plain variant delegates straight to the inner stream (every method is
//! `#[inline]`), and the TLS and HTTP/2 variants are boxed: a plain
//! connection pays one branch per call and no memory for state it does not
//! use.

use tokio::io::{AsyncRead, AsyncWrite};

#[cfg(feature = "hyper")]
use std::io::IoSlice;
#[cfg(feature = "hyper")]
use std::pin::Pin;
#[cfg(feature = "hyper")]
use std::task::{Context, Poll};

#[cfg(feature = "hyper")]
use hyper_util::rt::TokioIo;
#[cfg(feature = "hyper")]
use tokio::io::ReadBuf;

/// A client stream that is either plain (`ws://`) or TLS (`wss://`), or a
/// stream of an HTTP/2 connection (either scheme, RFC 8441).
#[derive(Debug)]
#[non_exhaustive]
pub enum MaybeTlsStream<S> {
    /// A `ws://` connection: the stream as it is.
    Plain(S),
    /// A `wss://` connection: TLS on rustls over the stream.
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::client::TlsStream<S>>),
    /// A WebSocket on a stream of an HTTP/2 connection
    /// ([`ClientBuilder::http2`](crate::ClientBuilder::http2)); the
    /// connection itself, TLS or not, is driven by a task of its own.
    #[cfg(feature = "hyper")]
    Http2(Box<Http2Stream>),
}

impl<S> MaybeTlsStream<S> {
    /// Whether this is a TLS connection (for HTTP/2: whether the HTTP/2
    /// connection runs over TLS).
    pub fn is_tls(&self) -> bool {
        match self {
            MaybeTlsStream::Plain(_) => false,
            #[cfg(feature = "tls")]
            MaybeTlsStream::Tls(_) => true,
            #[cfg(feature = "hyper")]
            MaybeTlsStream::Http2(s) => s.is_tls(),
        }
    }

    /// Whether this is a stream of an HTTP/2 connection.
    pub fn is_http2(&self) -> bool {
        #[cfg(feature = "hyper")]
        if let MaybeTlsStream::Http2(_) = self {
            return true;
        }
        false
    }

    /// The underlying transport (the TCP stream under TLS); `None` for an
    /// HTTP/2 stream, whose transport belongs to the HTTP/2 connection.
    pub fn get_ref(&self) -> Option<&S> {
        match self {
            MaybeTlsStream::Plain(s) => Some(s),
            #[cfg(feature = "tls")]
            MaybeTlsStream::Tls(s) => Some(s.get_ref().0),
            #[cfg(feature = "hyper")]
            MaybeTlsStream::Http2(_) => None,
        }
    }

    /// The TLS session (negotiated protocol version, ALPN, the server's
    /// certificates), if this is a TLS connection of its own; `None` for an
    /// HTTP/2 stream, whose TLS session belongs to the HTTP/2 connection.
    #[cfg(feature = "tls")]
    pub fn tls_session(&self) -> Option<&tokio_rustls::rustls::ClientConnection> {
        match self {
            MaybeTlsStream::Tls(s) => Some(s.get_ref().1),
            _ => None,
        }
    }
}

/// `AsyncRead` and `AsyncWrite` for an enum of streams, each method one
/// `match` that forwards to the variant's stream (boxed variants through
/// `Box`'s own forwarding impls). Every method is `#[inline]`: a plain
/// connection pays a branch per call.
macro_rules! delegate_async_io {
    (
        impl $([$($generics:tt)*])? for $ty:ty $(where [$($bounds:tt)*])?
        { $( $(#[$attr:meta])* $variant:ident ),* $(,)? }
    ) => {
        impl $(<$($generics)*>)? tokio::io::AsyncRead for $ty $(where $($bounds)*)? {
            #[inline]
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                match self.get_mut() {
                    $( $(#[$attr])* Self::$variant(s) => std::pin::Pin::new(s).poll_read(cx, buf), )*
                }
            }
        }

        impl $(<$($generics)*>)? tokio::io::AsyncWrite for $ty $(where $($bounds)*)? {
            #[inline]
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                match self.get_mut() {
                    $( $(#[$attr])* Self::$variant(s) => std::pin::Pin::new(s).poll_write(cx, buf), )*
                }
            }

            #[inline]
            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                match self.get_mut() {
                    $( $(#[$attr])* Self::$variant(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs), )*
                }
            }

            #[inline]
            fn is_write_vectored(&self) -> bool {
                match self {
                    $( $(#[$attr])* Self::$variant(s) => s.is_write_vectored(), )*
                }
            }

            #[inline]
            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                match self.get_mut() {
                    $( $(#[$attr])* Self::$variant(s) => std::pin::Pin::new(s).poll_flush(cx), )*
                }
            }

            #[inline]
            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                match self.get_mut() {
                    $( $(#[$attr])* Self::$variant(s) => std::pin::Pin::new(s).poll_shutdown(cx), )*
                }
            }
        }
    };
}
#[cfg(feature = "hyper")]
pub(crate) use delegate_async_io;

delegate_async_io! {
    impl[S] for MaybeTlsStream<S> where [S: AsyncRead + AsyncWrite + Unpin] {
        Plain,
        #[cfg(feature = "tls")]
        Tls,
        #[cfg(feature = "hyper")]
        Http2,
    }
}

/// A WebSocket's stream of an HTTP/2 connection, inside
/// [`MaybeTlsStream::Http2`]: what hyper's upgrade hands over after the
/// server's 200.
#[cfg(feature = "hyper")]
#[derive(Debug)]
pub struct Http2Stream {
    io: TokioIo<hyper::upgrade::Upgraded>,
    tls: bool,
}

#[cfg(feature = "hyper")]
impl Http2Stream {
    pub(crate) fn new(io: TokioIo<hyper::upgrade::Upgraded>, tls: bool) -> Http2Stream {
        Http2Stream { io, tls }
    }

    /// Whether the HTTP/2 connection runs over TLS (`wss://`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }
}

#[cfg(feature = "hyper")]
impl AsyncRead for Http2Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

#[cfg(feature = "hyper")]
impl AsyncWrite for Http2Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn plain_delegates_reads_writes_and_shutdown() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut s = MaybeTlsStream::Plain(a);
        assert!(!s.is_tls());
        s.write_all(b"ping").await.unwrap();
        s.flush().await.unwrap();
        let mut got = [0u8; 4];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        b.write_all(b"pong").await.unwrap();
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
        s.shutdown().await.unwrap();
        assert_eq!(b.read(&mut got).await.unwrap(), 0, "EOF after shutdown");
    }

    #[test]
    fn plain_costs_no_more_than_a_tag_and_a_pointer() {
        // The TLS state is boxed: a plain connection does not carry it.
        let plain = std::mem::size_of::<tokio::net::TcpStream>();
        assert!(std::mem::size_of::<MaybeTlsStream<tokio::net::TcpStream>>() <= plain + 8);
    }
}
