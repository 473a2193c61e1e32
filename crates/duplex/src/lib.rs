//! duplex is a WebSocket (RFC 6455) client and server on tokio, with
//! permessage-deflate (RFC 7692) and the browser's WebSocket API.
//!
//! The protocol itself lives in [`duplex_proto`], a sans-I/O state machine;
//! this crate owns sockets and time: reading and writing, back-pressure,
//! timeouts and the opening handshake over a real stream, and TLS for
//! `wss://` on rustls (feature `tls`, on by default; see [`tls`]).
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
//! use duplex::{Event, Message};
//!
//! # async fn run() -> Result<(), duplex::Error> {
//! let mut ws = duplex::connect("ws://localhost:8080").await?;
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

mod client;
mod config;
mod error;
mod server;
mod stream;
#[cfg(feature = "tls")]
pub mod tls;
mod websocket;

pub use client::{ClientBuilder, Http2Connection, Http2Error, Http2Stream, connect};
pub use config::Config;
pub use error::Error;
pub use server::{Accepted, PendingRequest, accept, accept_with, negotiate, serve, serve_listener};
pub use stream::MaybeTlsStream;
#[cfg(feature = "tls")]
pub use tls::{TlsAcceptor, TlsError};
pub use websocket::{Event, ReadyState, WebSocket, WebSocketReader, WebSocketWriter};

pub use duplex_proto::extensions::deflate::DeflateConfig;
pub use duplex_proto::{Broadcast, CloseCode, CloseFrame, Message, Role, Utf8Bytes};
pub use http;
