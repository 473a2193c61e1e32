//! Plain HTTP on the WebSocket port, through hyper: the test page at
//! `GET /`, `GET /metrics`, `POST /topics/{name}` (see [`crate::topics`]),
//! 404 for other paths, 405 for other methods. An Upgrade request on a
//! kept-alive HTTP connection is accepted through hyper's upgrade.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::serve::Shared;
use crate::shutdown::Shutdown;
use crate::topics::{self, text};
use bytes::Bytes;
use duplex::PendingRequest;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The page, embedded in the binary.
const INDEX_HTML: &str = include_str!("page/index.html");

/// Serves a connection whose first request was not an Upgrade, over TCP or
/// TLS.
pub(crate) async fn serve_http<S>(
    pending: PendingRequest<S>,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (stream, raw) = pending.into_parts();
    // hyper parses the request again from the start: replay what was read.
    let io = TokioIo::new(Replay {
        prefix: Bytes::from(raw),
        inner: stream,
    });
    let service_shutdown = shutdown.clone();
    let service = service_fn(move |request| {
        let shared = Arc::clone(&shared);
        let shutdown = service_shutdown.clone();
        async move { Ok::<_, Infallible>(respond(request, shared, shutdown).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(30))
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.fired() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

async fn respond(
    request: Request<Incoming>,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) -> Response<Full<Bytes>> {
    let is_upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if is_upgrade {
        return upgrade(request, &shared, shutdown);
    }
    let path = request.uri().path().to_owned();
    if let Some(topic) = topics::topic_of(&path) {
        let max = shared.config.max_message_size;
        return topics::publish(request, topic, &shared.hub, max).await;
    }
    match (request.method(), path.as_str()) {
        (&Method::GET | &Method::HEAD, "/") => Response::builder()
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(Full::new(Bytes::from_static(INDEX_HTML.as_bytes())))
            .expect("static response"),
        (&Method::GET | &Method::HEAD, "/metrics") => topics::metrics(&shared.hub),
        (&Method::GET | &Method::HEAD, _) => text(StatusCode::NOT_FOUND, "not found\n"),
        _ => {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response
                .headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            response
        }
    }
}

fn upgrade(
    mut request: Request<Incoming>,
    shared: &Arc<Shared>,
    shutdown: Shutdown,
) -> Response<Full<Bytes>> {
    let subscription = match shared.subscription_for(request.uri().path()) {
        Ok(subscription) => subscription,
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
    };
    match duplex::negotiate(&request, shared.config_for(request.uri().path())) {
        Ok((answer, accepted)) => {
            let on_upgrade = hyper::upgrade::on(&mut request);
            let hub = shared.hub.clone();
            tokio::spawn(async move {
                match on_upgrade.await {
                    Ok(upgraded) => {
                        let ws = accepted.into_websocket(TokioIo::new(upgraded));
                        crate::serve::connection(ws, subscription, &hub, shutdown.fired()).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                }
            });
            answer.map(|()| Full::new(Bytes::new()))
        }
        Err(e) => {
            tracing::info!(error = %e, "rejecting handshake");
            let mut response = text(e.status(), &format!("{e}\n"));
            if e.status() == StatusCode::UPGRADE_REQUIRED {
                response.headers_mut().insert(
                    header::SEC_WEBSOCKET_VERSION,
                    header::HeaderValue::from_static("13"),
                );
            }
            response
        }
    }
}

/// A stream that first yields bytes already read from it.
struct Replay<S> {
    prefix: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let chunk = self.prefix.split_to(n);
            buf.put_slice(&chunk);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
