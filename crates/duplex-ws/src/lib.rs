//! duplex is a WebSocket (RFC 6455) client and server on tokio, with
//! permessage-deflate (RFC 7692) and the browser's WebSocket API.
//!
//! The protocol itself lives in [`duplex_proto`], a sans-I/O state machine;
//! this crate owns sockets and time: reading and writing, back-pressure,
//! timeouts and the opening handshake over a real stream, TLS for `wss://`
//! on rustls (feature `tls`, on by default; see [`tls`]), and the server
//! core on hyper, over HTTP/1.1 and HTTP/2 (feature `hyper`, on by default).
//!
//! Which door to use for a server:
//!
//! | you have | use |
//! |---|---|
//! | nothing yet: a WebSocket server of its own | [`Server`] (or [`serve`]): listener, TLS with reload, one limit for every WebSocket, handshake timeout, a hook per upgrade, shutdown with 1001 through [`ServerHandle`] |
//! | an axum 0.8 application | [`axum::WebSocketUpgrade`](crate::axum) (feature `axum`) in a handler |
//! | a hyper 1 service | [`Upgrade`] on the request |
//! | a stream you accepted yourself | [`accept`] / [`accept_with`] |
//!
//! The last three also serve inside [`Server::serve_service`], where their
//! WebSockets count against the server's limit and close with 1001 when it
//! shuts down. Each speaks HTTP/2 (RFC 8441) wherever the HTTP server under
//! it does; [`Server`] does, by ALPN over TLS and by prior knowledge over
//! plain TCP.
//!
//! | browser | duplex |
//! |---|---|
//! | `new WebSocket(url, protocols)` | [`connect`], [`ClientBuilder`] |
//! | `readyState` | [`WebSocket::ready_state`] → [`ReadyState`] |
//! | `bufferedAmount` | [`WebSocket::buffered_amount`] |
//! | `protocol`, `extensions`, `url` | [`WebSocket::protocol`], [`WebSocket::extensions`], [`WebSocket::url`] |
//! | `send(data)` | [`WebSocket::send`] |
//! | `close(code, reason)` | [`WebSocket::close`] |
//! | `onopen` `onmessage` `onerror` `onclose` | [`Event`] from [`WebSocket::next`] |
//!
//! A client:
//!
//! ```no_run
//! use duplex_ws::{Event, Message};
//!
//! # async fn run() -> Result<(), duplex_ws::Error> {
//! let mut ws = duplex_ws::connect("ws://localhost:8080").await?;
//! while let Some(event) = ws.next().await {
//!     match event {
//!         Event::Open => ws.send("hello").await?,
//!         Event::Message(Message::Text(text)) => {
//!             println!("{text}");
//!             ws.close(1000, "bye").await?;
//!         }
//!         Event::Message(Message::Binary(bytes)) => println!("{} bytes", bytes.len()),
//!         Event::Error(e) => eprintln!("error: {e}"),
//!         Event::Close { code, reason, was_clean } => {
//!             println!("closed: {code} {reason:?} clean={was_clean}")
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs, unreachable_pub)]
// The docs name the server, TLS and axum items where they matter; with a
// feature off those items do not exist and the links render as plain
// text. Every link is checked with all features on (`cargo doc
// --workspace --all-features`, warnings denied, in the test command).
#![cfg_attr(
    not(all(feature = "hyper", feature = "tls", feature = "axum")),
    allow(rustdoc::broken_intra_doc_links)
)]

#[cfg(feature = "axum")]
pub mod axum;
mod budget;
mod client;
mod config;
mod error;
mod server;
#[cfg(feature = "hyper")]
mod signal;
mod stream;
#[cfg(feature = "tls")]
pub mod tls;
mod websocket;

pub use budget::{DEFAULT_MESSAGE_BUDGET, MessageBudget};
#[cfg(feature = "hyper")]
pub use client::Http2Connection;
pub use client::{ClientBuilder, connect};
pub use config::Config;
pub use error::Error;
#[cfg(feature = "hyper")]
pub use error::Http2Error;
#[cfg(feature = "hyper")]
pub use server::{
    ConnectionInfo, DEFAULT_CONNECTION_RATE, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_IP, DEFAULT_MAX_STREAMS_PER_CONNECTION, InvalidHost, InvalidOrigin,
    IpNet, MAX_IDLE_PEERS, OriginPolicy, OriginRefusal, Server, ServerHandle, ServerStats,
    ServerStream, Upgrade, UpgradeError, is_upgrade_request, serve,
};
pub use server::{accept, accept_with};
#[cfg(feature = "hyper")]
pub use stream::Http2Stream;
pub use stream::MaybeTlsStream;
pub use websocket::{
    Event, Fanout, ReadyState, TrySend, WebSocket, WebSocketReader, WebSocketWriter,
};

pub use duplex_proto::extensions::ExtensionError;
pub use duplex_proto::extensions::deflate::DeflateConfig;
pub use duplex_proto::handshake::HandshakeError;
pub use duplex_proto::{
    Broadcast, CloseCode, CloseFrame, Message, ProtocolError, Role, SendError, Utf8Bytes,
};
pub use http;
