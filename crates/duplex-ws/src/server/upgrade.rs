//! [`Upgrade`]: a WebSocket handshake inside any hyper 1 service, over
//! HTTP/1.1 (GET with `Upgrade: websocket`, answered 101) or HTTP/2
//! (extended CONNECT with `:protocol websocket`, RFC 8441, answered 200).
//!
//! The service validates the request and picks the answer with
//! [`Upgrade::new`], returns the response [`Upgrade::on_upgrade`] gives, and
//! hyper hands the stream over once that response is sent. Inside duplex's
//! own [`Server`](crate::Server) the request carries a
//! [`ServerHandle`](crate::ServerHandle), and the upgrade is counted against
//! the server's WebSocket limit (503 past it), runs as one of its tasks, and
//! is closed with 1001 when the server shuts down; under another server
//! (axum's `serve`, a hand-made hyper loop) it is a plain spawned task.

use std::future::Future;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;

use duplex_proto::handshake::HandshakeError;
use duplex_proto::handshake::server::{reject, validate_connect_request, validate_request};

use super::accept::{Accepted, negotiate_info};
use super::activity::{Activity, Busy};
use super::handle::{ServerHandle, WebSocketSlot};
use super::peers::PeerSlot;
use super::stream::ServerStream;
use crate::{Config, WebSocket};

/// Why an upgrade request was refused, with the HTTP status to answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradeError {
    /// The request is not a valid WebSocket handshake (400, 405, 426...).
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The server has as many WebSockets open as it may (503).
    #[error("too many WebSocket connections: the server allows {0}")]
    TooManyConnections(usize),
    /// The server is shutting down (503).
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The HTTP server passed no upgrade handle with the request (hyper's
    /// HTTP/1.1 connection was not served `with_upgrades`, or HTTP/2 without
    /// `enable_connect_protocol`), so the stream cannot be taken over (500).
    #[error("this HTTP server does not hand over upgraded connections")]
    NotUpgradable,
    /// Over HTTP/2, the client's address has as many WebSockets and
    /// connections open as it may, or opens them too fast (429): each
    /// WebSocket on a connection counts as a connection would.
    #[error("{0}")]
    PeerLimit(String),
}

impl UpgradeError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            UpgradeError::Handshake(e) => e.status(),
            UpgradeError::TooManyConnections(_) | UpgradeError::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            UpgradeError::NotUpgradable => StatusCode::INTERNAL_SERVER_ERROR,
            UpgradeError::PeerLimit(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The answer: the status and one line of plain text saying why (for a
    /// handshake error, with the headers its status calls for, such as
    /// `Sec-WebSocket-Version` on a 426).
    pub fn to_response<B: From<String>>(&self) -> Response<B> {
        match self {
            UpgradeError::Handshake(e) => reject(e).map(B::from),
            other => {
                let mut response = super::refusal(other.status(), other);
                if other.status() == StatusCode::SERVICE_UNAVAILABLE {
                    // RFC 9110 §10.2.3: when to try again.
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                }
                response
            }
        }
    }
}

/// Whether `request` asks for a WebSocket: an HTTP/1.1 `Upgrade:
/// websocket`, or an HTTP/2 CONNECT (whose `:protocol` [`Upgrade::new`]
/// checks).
pub fn is_upgrade_request<B>(request: &Request<B>) -> bool {
    if request.method() == Method::CONNECT {
        return request.extensions().get::<hyper::ext::Protocol>().is_some();
    }
    request.headers().get_all(header::UPGRADE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
        })
    })
}

/// A WebSocket handshake accepted inside a hyper service, waiting for the
/// response to go out.
///
/// ```no_run
/// use duplex_ws::{Config, Upgrade};
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use hyper::body::{Bytes, Incoming};
///
/// async fn service(mut request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
///     match Upgrade::new(&mut request, &Config::server()) {
///         Ok(upgrade) => Ok(upgrade.on_upgrade(|mut ws| async move {
///             while let Ok(Some(message)) = ws.recv().await {
///                 if ws.send(message).await.is_err() {
///                     break;
///                 }
///             }
///         })),
///         Err(e) => Ok(e.to_response::<String>().map(Full::from)),
///     }
/// }
/// ```
#[derive(Debug)]
pub struct Upgrade {
    accepted: Accepted,
    response: Response<()>,
    on_upgrade: OnUpgrade,
    slot: Option<WebSocketSlot>,
    /// The connection's count against its peer's limit, kept while the
    /// WebSocket lives (an HTTP/1.1 connection's task ends at the upgrade);
    /// over HTTP/2, a count of the WebSocket's own.
    peer: Option<PeerSlot>,
    /// Over HTTP/2: the WebSocket keeps its connection from being idle.
    busy: Option<Busy>,
}

impl Upgrade {
    /// Validates `request` as a WebSocket handshake over HTTP/1.1 or
    /// HTTP/2 and negotiates it with `config`: the subprotocol from
    /// `config.protocols` (the server's order wins), permessage-deflate if
    /// `config.deflate` is set and the client offered it.
    pub fn new<B>(request: &mut Request<B>, config: &Config) -> Result<Upgrade, UpgradeError> {
        let on_upgrade = request.extensions_mut().remove::<OnUpgrade>();
        Upgrade::from_head(request, on_upgrade, config)
    }

    /// [`new`](Self::new) on a request head whose upgrade handle was taken
    /// out already (an axum extractor sees the request in parts).
    pub(crate) fn from_head<B>(
        request: &Request<B>,
        on_upgrade: Option<OnUpgrade>,
        config: &Config,
    ) -> Result<Upgrade, UpgradeError> {
        let http2 = request.method() == Method::CONNECT;
        let info = if http2 {
            let protocol = request.extensions().get::<hyper::ext::Protocol>();
            validate_connect_request(request, protocol.map(hyper::ext::Protocol::as_str))?
        } else {
            validate_request(request)?
        };
        let on_upgrade = on_upgrade.ok_or(UpgradeError::NotUpgradable)?;
        let slot = match request.extensions().get::<ServerHandle>() {
            None => None,
            Some(handle) => Some(handle.try_websocket(http2).ok_or_else(|| {
                if handle.is_shutting_down() {
                    UpgradeError::ShuttingDown
                } else {
                    UpgradeError::TooManyConnections(handle.max_websockets())
                }
            })?),
        };
        let peer = match request.extensions().get::<PeerSlot>() {
            Some(connection) if http2 && !connection.per_request => Some(
                connection
                    .another()
                    .map_err(|refusal| UpgradeError::PeerLimit(refusal.to_string()))?,
            ),
            connection => connection.cloned(),
        };
        let busy = request.extensions().get::<Activity>().map(Activity::begin);
        let (response, accepted) = negotiate_info(&info, request.uri(), config);
        Ok(Upgrade {
            accepted,
            response,
            on_upgrade,
            slot,
            peer,
            busy,
        })
    }

    /// The subprotocol the answer names, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.accepted.protocol()
    }

    /// The answer to return from the service (101 over HTTP/1.1, 200 over
    /// HTTP/2). Once hyper has sent it, `handler` runs in a task of its own
    /// with the WebSocket. If the client goes away first, `handler` never
    /// runs.
    pub fn on_upgrade<H, F, B>(self, handler: H) -> Response<B>
    where
        H: FnOnce(WebSocket<ServerStream>) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
        B: Default,
    {
        let Upgrade {
            accepted,
            response,
            on_upgrade,
            slot,
            peer,
            busy,
        } = self;
        let handle = slot.as_ref().map(|slot| slot.handle().clone());
        let shutdown = handle.as_ref().map(ServerHandle::graceful);
        let budget = handle.as_ref().map(|h| h.message_budget().clone());
        // Boxed for as long as the upgrade is pending: captured as it is, it
        // would take its size in the task for the whole connection.
        let accepted = Box::new(accepted);
        let task = async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => {
                    tracing::debug!(error = %e, "the upgrade did not happen");
                    return;
                }
            };
            // Made outside this future and moved straight into the
            // handler's: a local borrowed here would keep a copy of the
            // WebSocket in this future, beside the handler's own, for the
            // life of the connection.
            let ws = websocket(upgraded, accepted, shutdown, budget);
            handler(ws).await;
            // Counted until the handler is done with the WebSocket.
            drop((slot, peer, busy));
        };
        match handle {
            Some(handle) => handle.spawn(task),
            None => {
                tokio::spawn(task);
            }
        }
        response.map(|()| B::default())
    }
}

/// The WebSocket on an upgraded stream, tied to the server's shutdown and
/// message budget.
fn websocket(
    upgraded: hyper::upgrade::Upgraded,
    accepted: Box<Accepted>,
    shutdown: Option<crate::signal::Fired>,
    budget: Option<crate::MessageBudget>,
) -> WebSocket<ServerStream> {
    // `leftover` is a view of hyper's read buffer, dropped here: kept
    // across the handler it would hold that buffer (8 KiB) for the life of
    // the connection. And `accepted` is unboxed here, so that its box is
    // freed now, not when the task ends.
    let (stream, leftover) = ServerStream::from_upgraded(upgraded);
    let mut ws = (*accepted).into_websocket_with(stream, &leftover);
    if let Some(shutdown) = shutdown {
        ws.close_on(shutdown);
    }
    if let Some(budget) = &budget {
        ws.share_budget(budget);
    }
    ws
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::get("/chat").header("host", "example.com");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    const UPGRADE: [(&str, &str); 4] = [
        ("upgrade", "websocket"),
        ("connection", "Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn upgrade_requests_are_recognised_by_either_form() {
        assert!(is_upgrade_request(&get(&UPGRADE)));
        assert!(is_upgrade_request(&get(&[("upgrade", "h2c, WebSocket")])));
        assert!(!is_upgrade_request(&get(&[])));
        let mut connect = Request::connect("https://example.com/chat")
            .version(http::Version::HTTP_2)
            .body(())
            .unwrap();
        assert!(!is_upgrade_request(&connect), "a plain CONNECT is a tunnel");
        connect
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        assert!(is_upgrade_request(&connect));
    }

    #[test]
    fn a_request_without_an_upgrade_handle_cannot_be_taken_over() {
        let mut request = get(&UPGRADE);
        let err = Upgrade::new(&mut request, &Config::server()).unwrap_err();
        assert!(matches!(err, UpgradeError::NotUpgradable), "{err}");
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn a_bad_handshake_keeps_its_status_and_headers() {
        let mut request = get(&[("upgrade", "websocket"), ("connection", "upgrade")]);
        let err = Upgrade::new(&mut request, &Config::server()).unwrap_err();
        let response: Response<String> = err.to_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(
            response.body().contains("Sec-WebSocket-Version"),
            "{}",
            response.body()
        );
    }

    #[test]
    fn refusals_for_capacity_are_503_with_retry_after() {
        let response: Response<String> = UpgradeError::TooManyConnections(4).to_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert!(response.body().contains("allows 4"));
    }
}
