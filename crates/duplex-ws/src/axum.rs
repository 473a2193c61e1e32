//! [`WebSocketUpgrade`]: an extractor for axum 0.8 handlers that upgrades
//! to a duplex [`WebSocket`], with a [`Config`] (limits,
//! permessage-deflate, subprotocols), over HTTP/1.1 and HTTP/2.
//!
//! It has the shape of axum's own `WebSocketUpgrade`:
//!
//! ```no_run
//! use axum::{Router, response::Response, routing::any};
//! use duplex_ws::axum::WebSocketUpgrade;
//!
//! async fn echo(upgrade: WebSocketUpgrade) -> Response {
//!     upgrade.on_upgrade(|mut ws| async move {
//!         while let Ok(Some(message)) = ws.recv().await {
//!             if ws.send(message).await.is_err() {
//!                 break;
//!             }
//!         }
//!     })
//! }
//!
//! // `any`, not `get`: over HTTP/2 a WebSocket arrives as a CONNECT.
//! let app: Router = Router::new().route("/echo", any(echo));
//! ```
//!
//! Served by axum's `serve`, HTTP/2 needs its `http2` feature (axum turns on
//! RFC 8441's extended CONNECT with it). Served by duplex's own
//! [`Server`](crate::Server) (through `TowerToHyperService`), every upgrade
//! is also counted against the server's limit and closed with 1001 at
//! shutdown.

use std::future::Future;

use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use http::Request;
use http::request::Parts;
use hyper::upgrade::OnUpgrade;

use duplex_proto::handshake::server::{validate_connect_request, validate_request};

use crate::server::{ServerHandle, ServerStream, Upgrade, UpgradeError};
use crate::{Config, WebSocket};

/// A WebSocket handshake request, extracted from an axum request; finish it
/// with [`on_upgrade`](Self::on_upgrade). A request that is not a valid
/// handshake is answered by the rejection ([`UpgradeError`]) with its status
/// (426 for a plain `GET`, 400 for a malformed handshake).
#[derive(Debug)]
pub struct WebSocketUpgrade {
    head: Request<()>,
    on_upgrade: Option<OnUpgrade>,
    config: Config,
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = UpgradeError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, UpgradeError> {
        // The head, without the body, for the handshake to read later; the
        // parts stay whole for the extractors that follow.
        let mut head = Request::new(());
        *head.method_mut() = parts.method.clone();
        *head.uri_mut() = parts.uri.clone();
        *head.version_mut() = parts.version;
        *head.headers_mut() = parts.headers.clone();
        if let Some(protocol) = parts.extensions.get::<hyper::ext::Protocol>() {
            head.extensions_mut().insert(protocol.clone());
        }
        if let Some(handle) = parts.extensions.get::<ServerHandle>() {
            head.extensions_mut().insert(handle.clone());
        }
        // Checked now so that a request that is no handshake never reaches
        // the handler; `on_upgrade` checks again with the final config.
        if head.method() == http::Method::CONNECT {
            let protocol = head.extensions().get::<hyper::ext::Protocol>();
            validate_connect_request(&head, protocol.map(hyper::ext::Protocol::as_str))?;
        } else {
            validate_request(&head)?;
        }
        let on_upgrade = parts.extensions.remove::<OnUpgrade>();
        if on_upgrade.is_none() {
            return Err(UpgradeError::NotUpgradable);
        }
        Ok(WebSocketUpgrade {
            head,
            on_upgrade,
            config: Config::server(),
        })
    }
}

impl WebSocketUpgrade {
    /// The connection's limits, timeouts, subprotocols and extensions
    /// (default [`Config::server`]: no permessage-deflate).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The subprotocols the client offered, in its order.
    pub fn offered_protocols(&self) -> impl Iterator<Item = &str> {
        self.head
            .headers()
            .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
    }

    /// The answer to return from the handler (101 over HTTP/1.1, 200 over
    /// HTTP/2); once it is sent, `handler` runs with the WebSocket in a task
    /// of its own. 503 instead when duplex's server is at its limit.
    pub fn on_upgrade<H, F>(self, handler: H) -> Response
    where
        H: FnOnce(WebSocket<ServerStream>) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        match Upgrade::from_head(&self.head, self.on_upgrade, &self.config) {
            Ok(upgrade) => upgrade.on_upgrade(handler),
            Err(e) => e.into_response(),
        }
    }
}

impl IntoResponse for UpgradeError {
    fn into_response(self) -> Response {
        self.to_response::<String>()
            .map(axum_core::body::Body::from)
    }
}
