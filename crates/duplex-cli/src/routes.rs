//! What each request to `duplex serve` gets: the push service
//! ([`HubService`], which owns its routes: `/topics` for duplex.v1,
//! `/topics/…`, `/metrics`, `/healthz`, `/duplex.js`), and as its fallback
//! the test page at `GET /`, the echo for a WebSocket on any other path,
//! 404 for other paths and 405 for other methods. When the hub checks tokens, so
//! does the echo ([`HubService::authenticate`]): 401 without a valid one,
//! and 1008 "token expired" when it expires while connected.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use duplex_hub::Expiry;
use duplex_hub::HubService;
use duplex_ws::{Config, Event, ServerStream, Upgrade, WebSocket, is_upgrade_request};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;

/// The page, embedded in the binary.
const INDEX_HTML: &str = include_str!("page/index.html");

/// The service `duplex serve` runs: `hub`, with the page and the echo
/// (with `echo`) as its fallback for every path that is not the hub's.
pub(crate) fn routes(hub: HubService, echo: Config) -> HubService {
    let echo = Arc::new(echo);
    let tokens = hub.clone();
    hub.fallback(move |request| std::future::ready(other(&tokens, &echo, request)))
}

/// A request that is not the hub's: a WebSocket echoes, `GET /` is the
/// page, other paths 404 and other methods 405.
fn other(hub: &HubService, echo: &Config, mut request: Request<()>) -> Response<Full<Bytes>> {
    if is_upgrade_request(&request) {
        let claims = match hub.authenticate(&request) {
            Ok(claims) => claims,
            Err(e) => return e.to_response(),
        };
        return match Upgrade::new(&mut request, echo) {
            // Without tokens, the echo pays for no timer.
            Ok(upgrade) => match claims {
                None => upgrade.on_upgrade(echo_all),
                Some(claims) => {
                    let expiry = Expiry::of(Some(&claims));
                    upgrade.on_upgrade(move |ws| echo_until(ws, expiry))
                }
            },
            Err(e) => {
                tracing::info!(error = %e, status = %e.status(), "refusing a handshake");
                e.to_response()
            }
        };
    }
    match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/") => Response::builder()
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(Full::new(Bytes::from_static(INDEX_HTML.as_bytes())))
            .expect("static response"),
        (&Method::GET | &Method::HEAD, _) => text(StatusCode::NOT_FOUND, "not found\n"),
        _ => {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            response
        }
    }
}

/// Echoes every message until the connection closes (the server core
/// closes it with 1001 when it shuts down).
///
/// Not an `async fn`: that would keep the argument twice in the future (as
/// an argument, then as a local), and this future lives as long as the
/// connection, so its size is memory per idle connection.
#[allow(clippy::manual_async_fn)]
fn echo_all(mut ws: WebSocket<ServerStream>) -> impl Future<Output = ()> + Send {
    async move {
        while let Some(event) = ws.next().await {
            match event {
                Event::Message(message) => {
                    // Queued, not written yet: `next` writes every reply to
                    // one read in a single write once no message is left to
                    // parse. Fails only once a Close was sent or received;
                    // the Close event follows.
                    let _ = ws.feed(message).await;
                }
                Event::Error(e) => tracing::info!(error = %e, "connection failed"),
                Event::Open | Event::Close { .. } => {}
            }
        }
    }
}

/// The echo of a connection that came with a token, under the hub's
/// token-expiry rule ([`Expiry`]).
async fn echo_until(mut ws: WebSocket<ServerStream>, mut expiry: Expiry) {
    loop {
        tokio::select! {
            event = ws.next() => match event {
                Some(Event::Message(message)) => {
                    let _ = ws.feed(message).await;
                }
                Some(Event::Error(e)) => tracing::info!(error = %e, "connection failed"),
                Some(Event::Open | Event::Close { .. }) => {}
                None => break,
            },
            () = expiry.fired() => {
                let _ = Expiry::close(&mut ws).await;
            }
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static response")
}
