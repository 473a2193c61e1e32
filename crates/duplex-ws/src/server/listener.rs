//! [`Server`]: the accept loop, TLS, the connection limits, the handshake
//! timeout, and one HTTP path for every request (hyper, HTTP/1.1 and
//! HTTP/2) that ends in the application's service or handler.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body::Body;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::time::Instant;

use duplex_proto::handshake::HandshakeError;
use duplex_proto::handshake::server::reject;

use super::activity::Activity;
use super::handle::{ConnectionInfo, ServerHandle};
use super::origin::OriginPolicy;
use super::peers::{DEFAULT_CONNECTION_RATE, DEFAULT_MAX_CONNECTIONS_PER_IP, PeerLimits, PeerSlot};
use super::proxy::{IpNet, TrustedProxies, read_proxy_header};
use super::ratelog::RateLimitedLog;
use super::stream::ServerStream;
use super::upgrade::{Upgrade, UpgradeError, is_upgrade_request};
use crate::{Config, WebSocket};

/// The default for [`Server::max_connections`]: far above what one process
/// serves in practice, and low enough that a flood of connections cannot
/// exhaust the file descriptors a server raised its limit to.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;

type BoxError = Box<dyn StdError + Send + Sync>;

/// A WebSocket server: a listener, a [`Config`], optionally TLS, limits,
/// and a [`ServerHandle`] to shut it down.
///
/// Every connection goes through hyper, so that a WebSocket can arrive as
/// an HTTP/1.1 Upgrade (on a fresh connection or a kept-alive one) or as an
/// HTTP/2 extended CONNECT (RFC 8441, several on one connection), and is
/// counted, timed and shut down the same way.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// let server = duplex_ws::Server::bind("127.0.0.1:8080").await?;
/// let handle = server.handle();
/// tokio::spawn(async move {
///     let _ = tokio::signal::ctrl_c().await;
///     handle.shutdown(); // every WebSocket gets 1001
/// });
/// server
///     .serve(|mut ws| async move {
///         while let Ok(Some(message)) = ws.recv().await {
///             if ws.send(message).await.is_err() {
///                 break;
///             }
///         }
///     })
///     .await
/// # }
/// ```
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    config: Config,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsAcceptor>,
    http2: bool,
    origins: OriginPolicy,
    shutdown_timeout: Option<Duration>,
    handle: ServerHandle,
    max_connections_per_ip: usize,
    connection_rate: Option<(u32, u32)>,
    limit_loopback: bool,
    http2_limits: Http2Limits,
    trusted_proxies: Vec<IpNet>,
    proxy_protocol: bool,
}

/// How much one HTTP/2 connection may hold, and for how long while idle.
#[derive(Debug, Clone, Copy)]
struct Http2Limits {
    max_streams: u32,
    idle_timeout: Duration,
}

/// The default for [`Server::max_streams_per_connection`]: 100, what RFC
/// 9113 §6.5.2 asks a peer to allow at least. A browser puts every
/// WebSocket to a site on one connection; past this it opens another,
/// which the per-address limit counts like any.
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 100;

/// The default for [`Server::idle_timeout`]: 60 s, about what nginx and
/// browsers keep an idle HTTP/2 connection (75 s, 5 min); a client that
/// opens one and sends nothing, or a header block it never finishes,
/// holds it no longer.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl Server {
    /// Listens on `addr` (port 0 for any free port).
    pub async fn bind(addr: impl ToSocketAddrs) -> std::io::Result<Server> {
        Ok(Server::from_listener(TcpListener::bind(addr).await?))
    }

    /// Serves on a listener the caller bound.
    pub fn from_listener(listener: TcpListener) -> Server {
        Server {
            listener,
            config: Config::server(),
            #[cfg(feature = "tls")]
            tls: None,
            http2: true,
            origins: OriginPolicy::new(),
            shutdown_timeout: None,
            handle: ServerHandle::new(DEFAULT_MAX_CONNECTIONS),
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            connection_rate: Some(DEFAULT_CONNECTION_RATE),
            limit_loopback: false,
            http2_limits: Http2Limits {
                max_streams: DEFAULT_MAX_STREAMS_PER_CONNECTION,
                idle_timeout: DEFAULT_IDLE_TIMEOUT,
            },
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
        }
    }

    /// The load balancers and reverse proxies whose word on who their
    /// clients are is taken (default none): from a peer in one of `nets`,
    /// the client is the one `X-Forwarded-For` names (the rightmost address
    /// in it not in `nets`), or with [`proxy_protocol`](Self::proxy_protocol)
    /// the one its PROXY header names. That address is then the one the
    /// per-address limits count (a WebSocket at its upgrade, as a
    /// connection of its own: 429 past them), the logs show and
    /// [`ConnectionInfo::peer_addr`] holds; the proxy's own connections are
    /// not counted. Anyone else's `X-Forwarded-For` is ignored.
    pub fn trusted_proxies(mut self, nets: impl IntoIterator<Item = IpNet>) -> Server {
        self.trusted_proxies = nets.into_iter().collect();
        self
    }

    /// Whether the trusted proxies open each connection with a PROXY
    /// protocol header, v1 or v2 (default no): HAProxy's `send-proxy`, an
    /// AWS NLB's proxy protocol v2. A trusted proxy's connection without
    /// one is closed; other peers' connections are never read for one.
    pub fn proxy_protocol(mut self, on: bool) -> Server {
        self.proxy_protocol = on;
        self
    }

    /// The limits, timeouts and extensions of every connection (default
    /// [`Config::server`]). `handshake_timeout` bounds the TLS handshake and
    /// the HTTP request head together.
    pub fn config(mut self, config: Config) -> Server {
        self.config = config;
        self
    }

    /// Serves `wss://` (and `https://`) with `acceptor`. With HTTP/2 on,
    /// its ALPN offers `h2` before `http/1.1`
    /// ([`TlsAcceptor::offer_http2`](crate::tls::TlsAcceptor::offer_http2)).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, acceptor: crate::tls::TlsAcceptor) -> Server {
        self.tls = Some(acceptor);
        self
    }

    /// Whether to speak HTTP/2 (default on): by ALPN over TLS, by the
    /// connection preface over plain TCP (prior knowledge, as `curl
    /// --http2-prior-knowledge` does). WebSockets then also arrive as
    /// extended CONNECT streams (RFC 8441), several on one connection.
    pub fn http2(mut self, on: bool) -> Server {
        self.http2 = on;
        self
    }

    /// Which web pages may open WebSockets and send requests with side
    /// effects (default [`OriginPolicy::new`]: the server's own origin,
    /// clients that send none, and, on loopback, loopback pages). On
    /// loopback, a `Host` that is not a loopback name is refused whatever
    /// the policy (DNS rebinding). Refusals are 403 and 421, logged at a
    /// rate.
    pub fn origins(mut self, policy: OriginPolicy) -> Server {
        self.origins = policy;
        self
    }

    /// The most WebSockets open at once, however they were upgraded (each
    /// HTTP/2 stream counts); one more is refused with 503 before it is
    /// upgraded. The same number bounds the TCP connections that are not a
    /// WebSocket of their own (HTTP requests, handshakes in progress, HTTP/2
    /// connections); past it new connections are closed at once. Default
    /// [`DEFAULT_MAX_CONNECTIONS`].
    pub fn max_connections(self, max: usize) -> Server {
        self.handle.set_max_websockets(max.max(1));
        self
    }

    /// The most TCP connections one peer address may hold open (an IPv6
    /// peer counts by its /64); a new one past it is closed at once, before
    /// any byte is read (nothing is answered: a refusal costs the server as
    /// little as it can), and logged at most once a second. WebSockets
    /// upgraded on a connection count as it does. Default
    /// [`DEFAULT_MAX_CONNECTIONS_PER_IP`](crate::server::DEFAULT_MAX_CONNECTIONS_PER_IP),
    /// 256. Loopback peers are exempt unless [`limit_loopback`](Self::limit_loopback).
    pub fn max_connections_per_ip(mut self, max: usize) -> Server {
        self.max_connections_per_ip = max.max(1);
        self
    }

    /// How fast one peer address may open connections: `per_second` on
    /// average, `burst` at once (a token bucket); past it new connections
    /// are closed at once, as past
    /// [`max_connections_per_ip`](Self::max_connections_per_ip).
    /// `per_second` 0 turns it off. Default
    /// [`DEFAULT_CONNECTION_RATE`](crate::server::DEFAULT_CONNECTION_RATE),
    /// 100 a second in bursts of 200. The addresses remembered with no
    /// connection open are capped
    /// ([`MAX_IDLE_PEERS`](crate::server::MAX_IDLE_PEERS)).
    pub fn connection_rate(mut self, per_second: u32, burst: u32) -> Server {
        self.connection_rate = Some((per_second, burst));
        self
    }

    /// Whether loopback peers are held to the per-address limits too
    /// (default no). On a public server a loopback peer is the operator's
    /// own tooling or a reverse proxy on the same host, whose connections
    /// carry all its clients (it limits them itself); and a local benchmark
    /// opens 10,000 connections from 127.0.0.1. Remote peers, the ones
    /// the limits are for, never arrive from a loopback address.
    pub fn limit_loopback(mut self, on: bool) -> Server {
        self.limit_loopback = on;
        self
    }

    /// The most bytes that partly received messages may hold across all
    /// of this server's WebSockets, counted after decompression; the
    /// connection whose message would go past it is failed with 1013 (try
    /// again later; see [`Config::message_budget`]). Default
    /// [`DEFAULT_MESSAGE_BUDGET`](crate::DEFAULT_MESSAGE_BUDGET), 256 MiB:
    /// `max_message_size` bounds one message, not ten thousand peers that
    /// each start one and stall; this bounds their sum, and still holds
    /// four messages of the largest default size at once. A WebSocket whose
    /// [`Config::message_budget`] names a budget uses that one instead.
    pub fn message_budget(self, bytes: usize) -> Server {
        self.handle.message_budget().set_limit(bytes);
        self
    }

    /// The most streams one HTTP/2 connection may have open at once
    /// (SETTINGS_MAX_CONCURRENT_STREAMS): its WebSockets and requests
    /// together. Default [`DEFAULT_MAX_STREAMS_PER_CONNECTION`], 100. Each
    /// WebSocket over HTTP/2 also counts against the per-address limits as
    /// a connection does ([`max_connections_per_ip`](Self::max_connections_per_ip),
    /// [`connection_rate`](Self::connection_rate); 429 past them).
    pub fn max_streams_per_connection(mut self, streams: u32) -> Server {
        self.http2_limits.max_streams = streams.max(1);
        self
    }

    /// How long an HTTP/2 connection may go with no request in progress
    /// and no WebSocket open before it is closed (GOAWAY). Default
    /// [`DEFAULT_IDLE_TIMEOUT`], 60 s. Its first request must come within
    /// the handshake timeout, as over HTTP/1.1.
    pub fn idle_timeout(mut self, timeout: Duration) -> Server {
        self.http2_limits.idle_timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// How long a shutdown waits for connections to close before dropping
    /// them. Default: the close timeout and one second more, so that a
    /// peer that answers the 1001 in time closes cleanly.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Server {
        self.shutdown_timeout = Some(timeout);
        self
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle to shut the server down and read its counters.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Accepts every WebSocket, on any path, with the server's config, and
    /// runs `handler` on each in a task of its own. A plain HTTP request is
    /// answered 426 Upgrade Required. Returns once the server has shut down
    /// ([`ServerHandle::shutdown`]).
    // The hook's refusal is a whole response, built once per refused
    // request: its size is no cost on any path that matters.
    #[allow(clippy::result_large_err)]
    pub async fn serve<H, F>(self, handler: H) -> std::io::Result<()>
    where
        H: Fn(WebSocket<ServerStream>) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let config = self.config.clone();
        // The hook's refusal is a whole response by design (see
        // `serve_with`); this hook never refuses.
        #[allow(clippy::result_large_err)]
        self.serve_with(move |_, _| Ok(config.clone()), handler)
            .await
    }

    /// As [`serve`](Self::serve), with a hook that sees each upgrade
    /// request first (its path, headers and the peer's address) and either
    /// accepts it with a [`Config`] or refuses it with a response (a 403
    /// for a foreign `Origin`, a 404 for an unknown path).
    ///
    /// ```no_run
    /// # async fn run() -> std::io::Result<()> {
    /// use duplex_ws::{Config, Server};
    /// use http::{Response, StatusCode};
    ///
    /// Server::bind("127.0.0.1:8080")
    ///     .await?
    ///     .serve_with(
    ///         |request, _conn| match request.uri.path() {
    ///             "/chat" => Ok(Config::server()),
    ///             _ => Err(Response::builder()
    ///                 .status(StatusCode::NOT_FOUND)
    ///                 .body("no WebSocket here\n".to_owned())
    ///                 .unwrap()),
    ///         },
    ///         |mut ws| async move {
    ///             let _ = ws.send("welcome").await;
    ///         },
    ///     )
    ///     .await
    /// # }
    /// ```
    pub async fn serve_with<A, H, F>(self, accept: A, handler: H) -> std::io::Result<()>
    where
        A: Fn(&Parts, &ConnectionInfo) -> Result<Config, Response<String>> + Send + Sync + 'static,
        H: Fn(WebSocket<ServerStream>) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let service = HookService(Arc::new(Hook { accept, handler }));
        self.serve_service(service).await
    }

    /// Serves every request with a hyper `service`, which upgrades the
    /// requests it wants with [`Upgrade`] and answers the others (a page, a
    /// health check, a push service's `POST`). Each request carries the
    /// [`ServerHandle`] and a [`ConnectionInfo`] in its extensions.
    ///
    /// An axum `Router` or any tower service serves here through
    /// `hyper_util::service::TowerToHyperService`.
    pub async fn serve_service<S, B>(self, service: S) -> std::io::Result<()>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError> + Send + 'static,
        B: Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let Server {
            listener,
            config,
            #[cfg(feature = "tls")]
            tls,
            http2,
            origins,
            shutdown_timeout,
            handle,
            max_connections_per_ip,
            connection_rate,
            limit_loopback,
            http2_limits,
            trusted_proxies,
            proxy_protocol,
        } = self;
        let proxies = Arc::new(TrustedProxies::new(trusted_proxies));
        let peers = Arc::new(PeerLimits::new(
            max_connections_per_ip,
            connection_rate,
            limit_loopback,
        ));
        let peer_refusals = Arc::new(RateLimitedLog::default());
        #[cfg(feature = "tls")]
        if http2 && let Some(tls) = &tls {
            tls.offer_http2();
        }
        let local_addr = listener.local_addr()?;
        let config = Arc::new(config);
        let refusals = RateLimitedLog::default();
        let origins = Arc::new(Refusals {
            policy: origins,
            log: RateLimitedLog::default(),
        });
        let mut graceful = handle.graceful();
        loop {
            let (stream, peer_addr) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: keep serving
                        // the connections there are.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
                () = &mut graceful => break,
            };
            if handle.stats().connections >= handle.max_websockets() {
                let max = handle.max_websockets();
                let what =
                    format!("closing a new connection: the connection limit ({max}) is reached");
                refusals.warn(peer_addr, &what);
                continue;
            }
            // A trusted proxy's connection is counted as its client's once
            // the proxy has said who that is (its PROXY header, or each
            // request's X-Forwarded-For); the proxy itself is not limited.
            let from_proxy = proxies.trusts(peer_addr.ip());
            let peer = if from_proxy {
                None
            } else {
                match peers.admit(peer_addr.ip()) {
                    Ok(guard) => guard.map(|guard| PeerSlot::new(guard, false)),
                    Err(refusal) => {
                        peer_refusals.warn(peer_addr, &refusal);
                        continue;
                    }
                }
            };
            let connection = Connection {
                peer,
                peers: Arc::clone(&peers),
                forwarding: (from_proxy && !proxy_protocol).then(|| Arc::clone(&proxies)),
                origins: Arc::clone(&origins),
                info: ConnectionInfo {
                    peer_addr,
                    proxy_addr: None,
                    local_addr,
                    #[cfg(feature = "tls")]
                    tls: tls.is_some(),
                    #[cfg(not(feature = "tls"))]
                    tls: false,
                },
                config: Arc::clone(&config),
                http2,
                http2_limits,
                handle: handle.clone(),
            };
            let service = service.clone();
            #[cfg(feature = "tls")]
            let tls = tls.clone();
            let proxy_header = from_proxy && proxy_protocol;
            let peer_refusals = Arc::clone(&peer_refusals);
            handle.spawn(async move {
                let mut connection = connection;
                let mut stream = stream;
                let _counted = connection.handle.connection();
                if let Err(e) = stream.set_nodelay(connection.config.nodelay) {
                    tracing::debug!(error = %e, "set_nodelay failed");
                }
                let deadline = Instant::now() + connection.config.handshake_timeout;
                if proxy_header {
                    let read = tokio::time::timeout_at(deadline, read_proxy_header(&mut stream));
                    let client = match read.await {
                        Ok(Ok(client)) => client,
                        Ok(Err(e)) => {
                            return tracing::debug!(proxy = %peer_addr, error = %e, "closing a proxy's connection");
                        }
                        Err(_) => {
                            return tracing::debug!(proxy = %peer_addr, "no PROXY header in time");
                        }
                    };
                    if let Some(client) = client {
                        connection.info.proxy_addr = Some(peer_addr);
                        connection.info.peer_addr = client;
                        match connection.peers.admit(client.ip()) {
                            Ok(guard) => {
                                connection.peer = guard.map(|guard| PeerSlot::new(guard, false));
                            }
                            Err(refusal) => return peer_refusals.warn(client, &refusal),
                        }
                    }
                }
                #[cfg(feature = "tls")]
                if let Some(tls) = tls {
                    Box::pin(connection.serve_tls(stream, &tls, deadline, service)).await;
                    return;
                }
                connection.serve_tcp(stream, deadline, service).await;
            });
        }
        drop(listener);
        tracing::info!(
            websockets = handle.stats().websockets,
            "shutting down: closing every WebSocket with 1001"
        );
        let timeout = shutdown_timeout.unwrap_or(config.close_timeout + Duration::from_secs(1));
        handle.drain(timeout).await;
        Ok(())
    }
}

/// The origin policy, and the log of what it refuses.
struct Refusals {
    policy: OriginPolicy,
    log: RateLimitedLog,
}

/// Drives a hyper connection to its end; once `graceful` fires, asks it to
/// finish (an idle HTTP/1.1 connection closes, HTTP/2 sends GOAWAY and
/// finishes its streams) and drives it on. A macro: hyper's HTTP/1.1
/// connection with upgrades and its HTTP/2 connection share no trait for
/// `graceful_shutdown`.
macro_rules! serve_until_shutdown {
    ($connection:expr, $graceful:expr) => {{
        let connection = $connection;
        tokio::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => result,
            () = &mut $graceful => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        }
    }};
}

/// What one TCP connection's task knows.
struct Connection {
    /// Counts the connection against its peer's limit while it lives.
    peer: Option<PeerSlot>,
    /// The per-address limits, for a client a proxy names per request.
    peers: Arc<PeerLimits>,
    /// A trusted proxy's connection whose requests name their client in
    /// `X-Forwarded-For`.
    forwarding: Option<Arc<TrustedProxies>>,
    origins: Arc<Refusals>,
    info: ConnectionInfo,
    config: Arc<Config>,
    http2: bool,
    http2_limits: Http2Limits,
    handle: ServerHandle,
}

impl Connection {
    #[cfg(feature = "tls")]
    async fn serve_tls<S, B>(
        self,
        stream: TcpStream,
        acceptor: &crate::tls::TlsAcceptor,
        deadline: Instant,
        service: S,
    ) where
        S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError> + Send + 'static,
        B: Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let peer = self.info.peer_addr;
        let tls = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
        };
        let h2 = self.http2 && tls.get_ref().1.alpn_protocol() == Some(b"h2");
        self.serve_http(tls, h2, service).await;
    }

    async fn serve_tcp<S, B>(self, stream: TcpStream, deadline: Instant, service: S)
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError> + Send + 'static,
        B: Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let h2 = if self.http2 {
            match tokio::time::timeout_at(deadline, starts_with_h2_preface(&stream)).await {
                Ok(Some(h2)) => h2,
                Ok(None) => return,
                Err(_) => {
                    return tracing::debug!(peer = %self.info.peer_addr, "no request in time");
                }
            }
        } else {
            false
        };
        self.serve_http(stream, h2, service).await;
    }

    /// Serves HTTP on `io` until the connection ends, is upgraded (HTTP/1.1),
    /// or the server shuts down (then gracefully: an idle HTTP/1.1
    /// connection closes, HTTP/2 gets a GOAWAY and finishes its streams).
    async fn serve_http<I, S, B>(self, io: I, h2: bool, service: S)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Service<Request<Incoming>, Response = Response<B>> + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError> + Send + 'static,
        B: Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mut graceful = self.handle.graceful();
        let activity = h2.then(Activity::default);
        let service = WithContext {
            inner: service,
            peer: self.peer.clone(),
            peers: Arc::clone(&self.peers),
            forwarding: self.forwarding.clone(),
            info: self.info,
            handle: self.handle.clone(),
            origins: Arc::clone(&self.origins),
            activity: activity.clone(),
        };
        let config = &self.config;
        let result = if let Some(activity) = activity {
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .enable_connect_protocol()
                .max_concurrent_streams(self.http2_limits.max_streams)
                .max_header_list_size(u32::try_from(config.max_handshake_size).unwrap_or(u32::MAX));
            let connection = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(connection);
            // The first request within the handshake timeout, then never
            // idle for longer than the idle timeout.
            let idle = async {
                let mut wait = config.handshake_timeout;
                loop {
                    tokio::time::sleep(wait).await;
                    if activity.idle_since_last_look() {
                        return;
                    }
                    wait = self.http2_limits.idle_timeout;
                }
            };
            tokio::select! {
                result = connection.as_mut() => result,
                () = &mut graceful => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
                () = idle => {
                    tracing::debug!(peer = %self.info.peer_addr, "closing an idle HTTP/2 connection");
                    connection.as_mut().graceful_shutdown();
                    // GOAWAY, then a PING the peer should answer: one that
                    // does not holds the connection no longer than it had
                    // for its first request.
                    tokio::time::timeout(config.handshake_timeout, connection)
                        .await
                        .unwrap_or(Ok(()))
                }
            }
        } else {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(config.handshake_timeout)
                // hyper's floor is 8 KiB; a head over the limit gets 431.
                .max_buf_size(config.max_handshake_size.max(8192));
            let connection = builder
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            serve_until_shutdown!(connection, graceful)
        };
        if let Err(e) = result {
            tracing::debug!(peer = %self.info.peer_addr, error = %e, "HTTP connection ended with an error");
        }
    }
}

/// Whether a plain TCP connection opens with the HTTP/2 preface (RFC 9113
/// §3.4), looked at without taking the bytes; `None` if it closed first.
async fn starts_with_h2_preface(stream: &TcpStream) -> Option<bool> {
    // "PRI " starts no HTTP/1.1 request a WebSocket server answers.
    const PREFIX: &[u8; 4] = b"PRI ";
    let mut first = [0u8; 4];
    loop {
        let n = stream.peek(&mut first).await.ok()?;
        if n == 0 {
            return None;
        }
        if first[..n] != PREFIX[..n] {
            return Some(false);
        }
        if n == PREFIX.len() {
            return Some(true);
        }
        // A prefix of the preface so far: peek returns at once while bytes
        // are waiting, so give the rest a moment to arrive.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The application's service behind the origin policy, with the server's
/// context added to every request.
struct WithContext<S> {
    inner: S,
    peer: Option<PeerSlot>,
    peers: Arc<PeerLimits>,
    forwarding: Option<Arc<TrustedProxies>>,
    info: ConnectionInfo,
    handle: ServerHandle,
    origins: Arc<Refusals>,
    /// Over HTTP/2: what the connection has going on, for its idle timeout.
    activity: Option<Activity>,
}

/// The body of a response: the application's, or the server's own refusal.
type EitherBody<B> = http_body_util::Either<B, http_body_util::Full<bytes::Bytes>>;

impl<S, B> Service<Request<Incoming>> for WithContext<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<EitherBody<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let refuse = |response: Response<String>| {
            let response = response.map(|body| http_body_util::Either::Right(body.into()));
            Box::pin(std::future::ready(Ok(response))) as Self::Future
        };
        let mut info = self.info;
        let mut peer = self.peer.clone();
        if let Some(proxies) = &self.forwarding {
            match proxies.forwarded_for(request.headers()) {
                Ok(None) => {}
                Ok(Some(client)) => {
                    info.proxy_addr = Some(info.peer_addr);
                    info.peer_addr = SocketAddr::new(client, 0);
                    // A WebSocket through a proxy is counted as the
                    // connection its client opened to the proxy, and
                    // refused as one over HTTP/2 is.
                    if is_upgrade_request(&request) {
                        match self.peers.admit(client) {
                            Ok(guard) => peer = guard.map(|guard| PeerSlot::new(guard, true)),
                            Err(refusal) => {
                                self.origins.log.warn(info.peer_addr, &refusal);
                                let refusal = UpgradeError::PeerLimit(refusal.to_string());
                                return refuse(refusal.to_response());
                            }
                        }
                    }
                }
                Err(e) => {
                    self.origins.log.warn(info.peer_addr, &e);
                    return refuse(super::refusal(StatusCode::BAD_REQUEST, &e));
                }
            }
        }
        if let Err(refusal) = self
            .origins
            .policy
            .check(&request, info.local_addr, info.tls)
        {
            self.origins.log.warn(info.peer_addr, &refusal);
            return refuse(refusal.to_response());
        }
        let extensions = request.extensions_mut();
        extensions.insert(info);
        extensions.insert(self.handle.clone());
        if let Some(peer) = peer {
            extensions.insert(peer);
        }
        let busy = self.activity.as_ref().map(|activity| {
            extensions.insert(activity.clone());
            activity.begin()
        });
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            drop(busy);
            Ok(response.map(http_body_util::Either::Left))
        })
    }
}

/// [`Server::serve_with`]'s hook and handler, as a service.
struct Hook<A, H> {
    accept: A,
    handler: H,
}

struct HookService<A, H>(Arc<Hook<A, H>>);

impl<A, H> Clone for HookService<A, H> {
    fn clone(&self) -> Self {
        HookService(Arc::clone(&self.0))
    }
}

impl<A, H, F> Service<Request<Incoming>> for HookService<A, H>
where
    A: Fn(&Parts, &ConnectionInfo) -> Result<Config, Response<String>> + Send + Sync + 'static,
    H: Fn(WebSocket<ServerStream>) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    type Response = Response<String>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<String>, Infallible>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        std::future::ready(Ok(self.respond(request)))
    }
}

impl<A, H, F> HookService<A, H>
where
    A: Fn(&Parts, &ConnectionInfo) -> Result<Config, Response<String>> + Send + Sync + 'static,
    H: Fn(WebSocket<ServerStream>) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    fn respond(&self, request: Request<Incoming>) -> Response<String> {
        if !is_upgrade_request(&request) {
            return reject(&HandshakeError::BadUpgrade);
        }
        let (parts, body) = request.into_parts();
        let Some(info) = parts.extensions.get::<ConnectionInfo>().copied() else {
            return reject(&HandshakeError::BadUpgrade);
        };
        let config = match (self.0.accept)(&parts, &info) {
            Ok(config) => config,
            Err(refusal) => {
                tracing::info!(peer = %info.peer_addr, status = %refusal.status(), "upgrade refused");
                return refusal;
            }
        };
        let mut request = Request::from_parts(parts, body);
        match Upgrade::new(&mut request, &config) {
            Ok(upgrade) => {
                let hook = Arc::clone(&self.0);
                upgrade.on_upgrade(move |ws| (hook.handler)(ws))
            }
            Err(e) => {
                tracing::info!(peer = %info.peer_addr, error = %e, "upgrade refused");
                e.to_response()
            }
        }
    }
}
