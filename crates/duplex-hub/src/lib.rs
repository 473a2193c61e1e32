//! The push-server layer: named topics that WebSocket clients subscribe to,
//! publishing to every subscriber of a topic, and an optional backplane
//! (Redis, Sentinel, Redis Cluster or NATS JetStream) so that several
//! `duplex serve` processes act as one.
//!
//! - [`Hub`] owns the topics (`hub/`): [`Hub::subscribe`] gives a
//!   [`Subscription`] with a bounded queue of its own; [`Hub::publish`]
//!   queues a message for every subscriber of the topic. A subscriber whose
//!   queue is full is dropped from the topic ([`RecvError::Lagged`]) rather
//!   than let the publisher wait or memory grow: the server closes that
//!   connection (1008, "slow consumer"). The service's raw WebSocket
//!   subscribers skip the queue while nothing waits in it: the publisher
//!   puts the message into their output itself and one flush pass per
//!   topic, shared between the runtime's workers, writes what every publish
//!   before it corked there, as uWebSockets' corked publish does
//!   (`hub/write_through.rs`).
//! - [`backplane`] keeps offsets, history and presence in the store the
//!   hub's `Store` trait names (one Redis, Sentinel, a Redis Cluster, NATS
//!   JetStream), so that every node gives the same offsets and a client
//!   resumes on any node.
//! - [`Metrics`] counts what happens, for `GET /metrics` in the Prometheus
//!   text format.
//! - [`HubService`] serves all of it over HTTP (`service.rs`): a WebSocket on
//!   `/topics/{name}` subscribes and publishes, `POST /topics/{name}`
//!   publishes, `GET /metrics`, `GET /healthz`, and `GET /duplex.js` serves
//!   the browser client. It is a hyper and a tower
//!   `Service`, for [`duplex_ws::Server::serve_service`] or an axum `Router`.
//!
//! - [`v1`] holds the frames of duplex.v1, the topic subprotocol
//!   (`docs/protocol.md`), which `/topics` serves; [`client`] is a Rust
//!   client for it that resumes after reconnecting.
//!
//! Everything but the client and the frames is the `server` feature (on by
//! default). A program that only connects to a duplex server depends on
//! `duplex-hub = { version = "0.1", default-features = false }`: the
//! client, [`v1`], [`TopicName`] and [`Since`], without Redis, NATS, JWT or
//! hyper.
//!
//! - [`auth`] says who may connect, subscribe and publish: JWTs with
//!   per-topic claims for WebSockets, an API key for `POST` and `/metrics`.
//!
//! Messages are [`duplex_ws::Message`]s: a payload is reference-counted, so a
//! message published to ten thousand subscribers is stored once.

// Without the server feature the docs name server items where they
// matter, and those links render as plain text; every link is checked with
// all features on (the test command's doc step).
#![cfg_attr(not(feature = "server"), allow(rustdoc::broken_intra_doc_links))]

#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod backplane;
pub mod client;
#[cfg(feature = "server")]
mod client_js;
pub mod delta;
mod error;
#[cfg(feature = "server")]
mod expiry;
#[cfg(feature = "server")]
mod hub;
#[cfg(feature = "server")]
mod metrics;
mod name;
#[cfg(feature = "server")]
mod publish;
#[cfg(feature = "server")]
mod refusal;
#[cfg(feature = "server")]
mod service;
#[cfg(feature = "server")]
mod session;
mod since;
pub mod v1;

pub use error::{HubError, RecvError};
pub use name::{MAX_TOPIC_LEN, TopicName};
pub use since::Since;

#[cfg(feature = "server")]
pub use expiry::{Expiry, TOKEN_EXPIRED};
#[cfg(feature = "server")]
pub use hub::{Delivery, Hub, HubConfig, Member, Published, Requester, Subscription};
#[cfg(feature = "server")]
pub use metrics::{Metrics, Snapshot, render_server};
#[cfg(feature = "server")]
pub use service::{HubService, ResponseFuture};
