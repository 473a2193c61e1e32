//! The server side, whose items the crate root exports (its doors are
//! listed there too):
//!
//! - **A server of its own**: [`Server`] (or [`serve`], its one-line form)
//!   listens on `ws://` or `wss://`, speaks HTTP/1.1 and HTTP/2, counts
//!   every WebSocket against one limit, bounds the handshake in time, and
//!   shuts down with 1001 through its [`ServerHandle`]. Give it a handler
//!   for every WebSocket ([`Server::serve`]), a hook that accepts or refuses
//!   each upgrade first ([`Server::serve_with`]), or a whole hyper service
//!   that also answers plain HTTP ([`Server::serve_service`]).
//! - **Inside an HTTP server you already run**: [`Upgrade`] in a hyper 1
//!   service, or `WebSocketUpgrade` in an axum handler (feature `axum`).
//!   Both speak HTTP/1.1 and HTTP/2 (RFC 8441) when the server does.
//! - **A stream you accepted yourself** (a test, a custom transport):
//!   [`accept`] or [`accept_with`] read the Upgrade request from it and
//!   answer; [`WebSocket::from_raw`](crate::WebSocket::from_raw) wraps a
//!   stream whose handshake happened elsewhere.

mod accept;
#[cfg(feature = "hyper")]
mod activity;
#[cfg(feature = "hyper")]
mod handle;
#[cfg(feature = "hyper")]
mod listener;
#[cfg(feature = "hyper")]
mod origin;
#[cfg(feature = "hyper")]
mod peers;
#[cfg(feature = "hyper")]
mod proxy;
#[cfg(feature = "hyper")]
mod ratelog;
#[cfg(feature = "hyper")]
mod stream;
#[cfg(feature = "hyper")]
mod upgrade;

pub use accept::{accept, accept_with};
#[cfg(feature = "hyper")]
pub use handle::{ConnectionInfo, ServerHandle, ServerStats};
#[cfg(feature = "hyper")]
pub use listener::{
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_STREAMS_PER_CONNECTION, Server,
};
#[cfg(feature = "hyper")]
pub use origin::{InvalidHost, InvalidOrigin, OriginPolicy, OriginRefusal};
#[cfg(feature = "hyper")]
pub use peers::{DEFAULT_CONNECTION_RATE, DEFAULT_MAX_CONNECTIONS_PER_IP, MAX_IDLE_PEERS};
#[cfg(feature = "hyper")]
pub use proxy::IpNet;
#[cfg(feature = "hyper")]
pub use stream::ServerStream;
#[cfg(feature = "hyper")]
pub use upgrade::{Upgrade, UpgradeError, is_upgrade_request};

#[cfg(feature = "hyper")]
use std::future::Future;

/// A refusal the server core answers itself: `status` and one line of
/// plain text saying why. A refused client has no business keeping the
/// connection, so it is closed after the answer (HTTP/2 drops that header
/// by itself).
#[cfg(feature = "hyper")]
pub(crate) fn refusal<B: From<String>>(
    status: http::StatusCode,
    why: &dyn std::fmt::Display,
) -> http::Response<B> {
    use http::header::{self, HeaderValue};
    let mut response = http::Response::new(B::from(format!("{why}\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Runs a WebSocket server on `addr` with `config`: every WebSocket, on any
/// path, goes to `handler` in a task of its own. The one-line form of
/// [`Server`]; it runs until the process ends.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// duplex_ws::serve("127.0.0.1:8080", duplex_ws::Config::server(), |mut ws| async move {
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
#[cfg(feature = "hyper")]
pub async fn serve<A, H, F>(addr: A, config: crate::Config, handler: H) -> std::io::Result<()>
where
    A: tokio::net::ToSocketAddrs,
    H: Fn(crate::WebSocket<ServerStream>) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    Server::bind(addr)
        .await?
        .config(config)
        .serve(handler)
        .await
}
