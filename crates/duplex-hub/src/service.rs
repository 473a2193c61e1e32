//! The routes of the push service and their answers ([`HubService`]); what
//! a subscriber's WebSocket does is the `session` module's, what a `POST`
//! does is the `publish` module's.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use duplex_ws::{Config, ConnectionInfo, ServerHandle, Upgrade, is_upgrade_request};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::Full;

use crate::auth::{self, ApiKey, Claims, TokenError, TokenVerifier};
use crate::backplane::BackplaneState;
use crate::expiry::Expiry;
use crate::hub::{Hub, HubError, Requester};
use crate::name::TopicName;
use crate::refusal::text;
use crate::session::{self, raw};
use crate::{client_js, metrics, publish, refusal, v1};

/// The path prefix of topics.
const TOPICS: &str = "/topics/";
/// The path of duplex.v1 connections.
const V1_PATH: &str = "/topics";

type BoxError = Box<dyn StdError + Send + Sync>;

/// The future of a [`HubService`] answer.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>>;

/// The push service of a [`Hub`]: topic WebSockets, `POST` publishing,
/// `/metrics` and `/healthz`. Cheap to clone; clones share the hub.
///
/// One HTTP service, for hyper (duplex's
/// [`Server::serve_service`](duplex_ws::Server::serve_service) or any hyper 1
/// server) and for tower (an axum `Router` mounts it with `nest_service` or
/// `route_service`).
///
/// Paths are relative to where the service is mounted (axum's
/// `nest_service` strips its prefix):
///
/// | request | answer |
/// |---|---|
/// | WebSocket on `/topics/{name}` (an HTTP/1.1 `GET` Upgrade or an HTTP/2 extended CONNECT) | 101 (200 over HTTP/2): subscribed; every message it sends is published. 400 for a bad topic name or too many topics, the handshake's status (400, 426) for a bad handshake, 503 past the server's limit |
/// | WebSocket on `/topics` with the subprotocol `duplex.v1` | 101 (200): a duplex.v1 connection (`docs/protocol.md`, `session/v1/`); 400 without the subprotocol |
/// | `POST /topics/{name}` | 200 `{"topic":…,"epoch":…,"offset":N,"delivered":N}`; 400 bad topic or non-UTF-8 text; 413 above the body limit; 503 while Redis is unreachable |
/// | `GET /metrics` | 200, Prometheus text: the hub's counters and, under duplex's server, the server's |
/// | `GET /healthz` | 200 `{"status":"ok","backplane":"connected","engine":"redis+cluster","masters":[{"address":"127.0.0.1:7000","up":true},…]}` (the engine: `redis`, `redis+sentinel`, `redis+cluster`, `nats`; the servers that take writes, each shard's master on a cluster) or `{"status":"ok","backplane":"none"}`; 503 while the backplane is unreachable (on a cluster: any master), or the server is shutting down |
/// | `GET /duplex.js` | 200, the browser client of duplex.v1 (`crates/duplex-hub/js`), `text/javascript`; 304 for `If-None-Match` with its ETag |
/// | another method on these paths | 405 with `Allow` |
/// | any other path | 404 |
///
/// Who may do what ([`auth`]): with [`HubService::tokens`],
/// every WebSocket needs a token (401 without a valid one, 403 for a topic
/// outside its `subscribe` claim; a message outside its `publish` claim
/// closes the connection with 1008, and so does the token's expiry); with
/// [`HubService::api_key`], `POST /topics/{name}` and `GET /metrics` need
/// `Authorization: Bearer KEY` (401). `GET /healthz` is always open.
/// Without them, anyone may connect, subscribe, publish and read the
/// metrics.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use duplex_hub::{Hub, HubConfig, HubService};
///
/// let service = HubService::new(Hub::new(HubConfig::default()));
/// duplex_ws::Server::bind("127.0.0.1:8080")
///     .await?
///     .serve_service(service)
///     .await
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct HubService {
    hub: Hub,
    /// What answers the paths that are not the hub's (404 without one).
    fallback: Option<Fallback>,
    config: Arc<Config>,
    /// `config` with the duplex.v1 subprotocol.
    v1_config: Arc<Config>,
    max_body_size: Option<usize>,
    backplane: Option<BackplaneState>,
    tokens: Option<TokenVerifier>,
    api_key: Option<ApiKey>,
    /// With tokens: `POST` needs neither a token nor the API key.
    open_post: bool,
}

/// A handler for the requests that are not the hub's.
#[derive(Clone)]
struct Fallback(Arc<dyn Fn(Request<()>) -> ResponseFuture + Send + Sync>);

impl std::fmt::Debug for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fallback")
    }
}

impl HubService {
    /// The service of `hub`, accepting topic WebSockets with
    /// [`Config::server`].
    pub fn new(hub: Hub) -> HubService {
        HubService {
            fallback: None,
            config: Arc::new(Config::server()),
            v1_config: Arc::new(v1_config(Config::server(), hub.config())),
            max_body_size: None,
            backplane: None,
            tokens: None,
            api_key: None,
            open_post: false,
            hub,
        }
    }

    /// Answers every request that is not the hub's (`/topics`,
    /// `/topics/{name}`, `/metrics`, `/healthz`, `/duplex.js`) with
    /// `handler`, as axum's `Router::fallback` does, instead of 404: so an
    /// application serves its own pages and WebSockets beside the hub with
    /// one service and no route table of its own. The handler gets the
    /// request's head (method, URI, headers and extensions, so
    /// [`duplex_ws::Upgrade::new`] takes a WebSocket from it), not its body.
    ///
    /// ```no_run
    /// # async fn run() -> std::io::Result<()> {
    /// use duplex_hub::{Hub, HubConfig, HubService};
    /// use duplex_ws::{Config, Upgrade};
    ///
    /// let service = HubService::new(Hub::new(HubConfig::default())).fallback(
    ///     |mut request: http::Request<()>| async move {
    ///         match Upgrade::new(&mut request, &Config::server()) {
    ///             Ok(upgrade) => upgrade.on_upgrade(|mut ws| async move {
    ///                 while let Some(duplex_ws::Event::Message(m)) = ws.next().await {
    ///                     let _ = ws.send(m).await;
    ///                 }
    ///             }),
    ///             Err(e) => e.to_response(),
    ///         }
    ///     },
    /// );
    /// duplex_ws::Server::bind("127.0.0.1:8080")
    ///     .await?
    ///     .serve_service(service)
    ///     .await
    /// # }
    /// ```
    pub fn fallback<F, Fut>(mut self, handler: F) -> HubService
    where
        F: Fn(Request<()>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        self.fallback = Some(Fallback(Arc::new(move |request| {
            let answer = handler(request);
            Box::pin(async move { Ok(answer.await) })
        })));
        self
    }

    /// The limits, timeouts and extensions of topic WebSockets. With
    /// permessage-deflate, the server resets its compressor after each
    /// message (`server_no_context_takeover` is set here), so that a message
    /// published to many subscribers is compressed once for all
    /// ([`duplex_ws::Broadcast`]) and an idle subscriber holds no compressor.
    pub fn config(mut self, mut config: Config) -> HubService {
        if let Some(deflate) = &mut config.deflate {
            deflate.server_no_context_takeover = true;
        }
        self.v1_config = Arc::new(v1_config(config.clone(), self.hub.config()));
        self.config = Arc::new(config);
        self
    }

    /// The largest `POST` body, in bytes (413 above it). Default: the
    /// config's `max_message_size`, what a WebSocket may publish.
    pub fn max_body_size(mut self, bytes: usize) -> HubService {
        self.max_body_size = Some(bytes);
        self
    }

    /// Reports `state` in `/healthz`: 503 while the backplane cannot reach
    /// Redis ([`Backplane::state`](crate::backplane::Backplane::state)).
    pub fn backplane(mut self, state: BackplaneState) -> HubService {
        self.backplane = Some(state);
        self
    }

    /// Every WebSocket needs a token that `verifier` accepts, and may
    /// subscribe and publish only where its claims say
    /// ([`auth`] has the answers and close codes).
    pub fn tokens(mut self, verifier: TokenVerifier) -> HubService {
        self.tokens = Some(verifier);
        self
    }

    /// `POST /topics/{name}` and `GET /metrics` need `Authorization:
    /// Bearer KEY` (401 otherwise), or with [`tokens`](HubService::tokens)
    /// a token that allows them.
    pub fn api_key(mut self, key: ApiKey) -> HubService {
        self.api_key = Some(key);
        self
    }

    /// With [`tokens`](HubService::tokens) and no API key, `POST
    /// /topics/{name}` is refused unless it carries a token whose
    /// `publish` claim covers the topic, since otherwise anyone could
    /// publish by HTTP where a WebSocket needs a claim; `open_post(true)`
    /// lets any `POST` through (the application checks them in front).
    pub fn open_post(mut self, open: bool) -> HubService {
        self.open_post = open;
        self
    }

    /// The token check of a WebSocket upgrade, for routes of the
    /// application's own that sit beside the service (the echo of `duplex
    /// serve`): `Ok(None)` without [`tokens`](HubService::tokens), the
    /// token's claims if it is valid, else why not (answer with
    /// [`TokenError::to_response`], a 401).
    pub fn authenticate<B>(&self, request: &Request<B>) -> Result<Option<Claims>, TokenError> {
        let Some(verifier) = &self.tokens else {
            return Ok(None);
        };
        match verifier.verify_request(request) {
            Ok(claims) => Ok(Some(claims)),
            Err(e) => {
                tracing::info!(error = %e, "refusing a WebSocket: no valid token");
                Err(e)
            }
        }
    }

    /// Who may `POST` to `topic` (or, with `topic` `None`, read
    /// `/metrics`): `None` to go on, or the 401 or 403 to answer with.
    ///
    /// The API key, where there is one, always does. With tokens, so does
    /// a token whose `publish` claim covers the topic (for `/metrics`: is
    /// `*`). With neither, the request is open, and so is a `POST` with
    /// tokens but no API key under [`open_post`](HubService::open_post).
    fn refused_post<B>(
        &self,
        request: &Request<B>,
        topic: Option<&str>,
    ) -> Option<Response<Full<Bytes>>> {
        let key_refusal = match &self.api_key {
            Some(key) => match key.check(request) {
                Ok(()) => return None,
                Err(refusal) => Some(refusal),
            },
            None => None,
        };
        let path = request.uri().path();
        let Some(verifier) = &self.tokens else {
            let refusal = key_refusal?;
            tracing::info!(error = %refusal, path, "refusing a request: API key");
            return Some(refusal.to_response());
        };
        if key_refusal.is_none() && self.open_post && topic.is_some() {
            return None;
        }
        match verifier.verify_request(request) {
            Ok(claims) => {
                let allowed = match topic {
                    Some(topic) => claims.may_publish(topic),
                    None => claims.may_publish_everywhere(),
                };
                if allowed {
                    return None;
                }
                tracing::info!(
                    path,
                    subject = claims.subject(),
                    "refusing a request outside the token's publish claim"
                );
                Some(refusal::forbidden_publish(topic))
            }
            // A key that was wrong is said as such; otherwise the token's
            // own reason.
            Err(e)
                if key_refusal == Some(auth::ApiKeyError::Wrong)
                    || (key_refusal.is_some() && e == TokenError::Missing) =>
            {
                let refusal = key_refusal.expect("checked");
                tracing::info!(error = %refusal, path, "refusing a request: API key");
                Some(refusal.to_response())
            }
            Err(e) => {
                tracing::info!(error = %e, path, "refusing a request: no API key or valid token");
                Some(e.to_response())
            }
        }
    }

    /// The hub.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    fn respond<B>(&self, mut request: Request<B>) -> ResponseFuture
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let path = request.uri().path();
        if path == V1_PATH {
            if request.method() == Method::GET || is_upgrade_request(&request) {
                return ready(self.connect_v1(&mut request));
            }
            return ready(method_not_allowed("GET"));
        }
        if let Some(topic) = path.strip_prefix(TOPICS) {
            let topic = topic.to_owned();
            let method = request.method();
            // Over HTTP/2 a WebSocket is a CONNECT; a plain GET is answered
            // by the handshake's own refusal (426).
            if method == Method::GET || is_upgrade_request(&request) {
                return self.subscribe(&mut request, &topic);
            }
            if method == Method::POST {
                if let Some(refusal) = self.refused_post(&request, Some(&topic)) {
                    return ready(refusal);
                }
                let hub = self.hub.clone();
                let max = self.body_limit();
                let claims = self
                    .tokens
                    .as_ref()
                    .and_then(|v| v.verify_request(&request).ok());
                let requester = requester(&request, claims.as_ref());
                return Box::pin(async move {
                    Ok(publish::publish(request, &topic, &hub, max, requester).await)
                });
            }
            return ready(method_not_allowed("GET, POST"));
        }
        let readable = matches!(*request.method(), Method::GET | Method::HEAD);
        let ours = matches!(path, "/metrics" | "/healthz" | client_js::PATH);
        if let (false, Some(fallback)) = (ours, &self.fallback) {
            return (fallback.0)(request.map(|_| ()));
        }
        let response = match path {
            "/metrics" if readable => match self.refused_post(&request, None) {
                Some(refusal) => refusal,
                None => self.metrics(&request),
            },
            "/healthz" if readable => self.health(&request),
            client_js::PATH if readable => client_js::response(request.headers()),
            "/metrics" | "/healthz" | client_js::PATH => method_not_allowed("GET, HEAD"),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        };
        ready(response)
    }

    fn body_limit(&self) -> usize {
        self.max_body_size.unwrap_or(self.config.max_message_size)
    }

    /// A WebSocket on `/topics/{topic}`: the handshake, then the session.
    fn subscribe<B>(&self, request: &mut Request<B>, topic: &str) -> ResponseFuture {
        let topic = &match TopicName::new(topic) {
            Ok(topic) => topic,
            Err(e) => {
                tracing::info!(error = %e, "refusing a subscription");
                return ready(text(StatusCode::BAD_REQUEST, &format!("{e}\n")));
            }
        };
        let claims = match self.authenticate(request) {
            Ok(claims) => claims,
            Err(e) => return ready(e.to_response()),
        };
        if let Some(claims) = &claims
            && !claims.may_subscribe(topic)
        {
            tracing::info!(
                %topic,
                subject = claims.subject(),
                "refusing a subscription outside the token's claims"
            );
            return ready(refusal::forbidden_topic(topic));
        }
        let upgrade = match Upgrade::new(request, &self.config) {
            Ok(upgrade) => upgrade,
            Err(e) => {
                tracing::info!(error = %e, status = %e.status(), "refusing a handshake");
                return ready(e.to_response());
            }
        };
        // After the handshake is accepted, so that a refused one leaves no
        // trace in the hub; dropping `upgrade` frees its place.
        let (subscription, following) = match self
            .hub
            .subscribe_unfollowed(topic, requester(request, claims.as_ref()).as_ref())
        {
            Ok(subscribed) => subscribed,
            Err(e) => {
                tracing::info!(error = %e, "refusing a subscription");
                let status = match e {
                    HubError::TooManyTopics(_) | HubError::TooManyTopicsForClient(_) => {
                        StatusCode::TOO_MANY_REQUESTS
                    }
                    _ => StatusCode::BAD_REQUEST,
                };
                return ready(text(status, &format!("{e}\n")));
            }
        };
        let hub = self.hub.clone();
        let rights = claims.map(|claims| raw::Rights {
            publish: claims.may_publish(topic),
            expiry: Expiry::of(Some(&claims)),
        });
        let Some(following) = following else {
            return ready(upgrade.on_upgrade(move |ws| raw::run(ws, subscription, hub, rights)));
        };
        // With a backplane, the handshake is answered once this node
        // receives the topic: what is published after the 101 reaches the
        // subscriber.
        Box::pin(async move {
            if let Err(e) = following.await {
                tracing::info!(error = %e, "refusing a subscription: the backplane cannot deliver it");
                return Ok(text(StatusCode::SERVICE_UNAVAILABLE, &format!("{e}\n")));
            }
            Ok(upgrade.on_upgrade(move |ws| raw::run(ws, subscription, hub, rights)))
        })
    }

    /// A WebSocket on `/topics` with duplex.v1: the handshake, then the
    /// session; the token's claims are checked per operation there.
    fn connect_v1<B>(&self, request: &mut Request<B>) -> Response<Full<Bytes>> {
        let claims = match self.authenticate(request) {
            Ok(claims) => claims,
            Err(e) => return e.to_response(),
        };
        let upgrade = match Upgrade::new(request, &self.v1_config) {
            Ok(upgrade) => upgrade,
            Err(e) => {
                tracing::info!(error = %e, status = %e.status(), "refusing a handshake");
                return e.to_response();
            }
        };
        if upgrade.protocol() != Some(v1::PROTOCOL) {
            tracing::info!("refusing a WebSocket on /topics without duplex.v1");
            return text(
                StatusCode::BAD_REQUEST,
                "a WebSocket on /topics needs the subprotocol duplex.v1\n",
            );
        }
        let hub = self.hub.clone();
        let requester = requester(request, claims.as_ref());
        let token = claims.map(|claims| session::v1::Token {
            expiry: Expiry::of(Some(&claims)),
            claims,
        });
        upgrade.on_upgrade(move |ws| session::v1::run(ws, hub, token, requester))
    }

    /// `GET /metrics`: the hub's counters, and the server's when the
    /// request came through duplex's server core.
    fn metrics<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        let mut body = self.hub.metrics().render();
        if let Some(server) = request.extensions().get::<ServerHandle>() {
            body.push_str(&metrics::render_server(server));
        }
        Response::builder()
            .header(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )
            .body(Full::new(Bytes::from(body)))
            .expect("static response")
    }

    /// `GET /healthz`: whether this node can serve its topics as one of
    /// many.
    fn health<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        let backplane = match &self.backplane {
            None => "none",
            Some(state) if state.is_connected() => "connected",
            Some(_) => "disconnected",
        };
        let shutting_down = request
            .extensions()
            .get::<ServerHandle>()
            .is_some_and(ServerHandle::is_shutting_down);
        let (status, word) = if shutting_down {
            (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
        } else if backplane == "disconnected" {
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        } else {
            (StatusCode::OK, "ok")
        };
        let body = match &self.backplane {
            None => format!("{{\"status\":\"{word}\",\"backplane\":\"none\"}}\n"),
            Some(state) => {
                let masters: Vec<serde_json::Value> = state
                    .masters()
                    .iter()
                    .map(|m| serde_json::json!({"address": m.address, "up": m.up}))
                    .collect();
                format!(
                    "{{\"status\":\"{word}\",\"backplane\":\"{backplane}\",\"engine\":\"{}\",\"masters\":{}}}\n",
                    state.engine(),
                    serde_json::Value::from(masters)
                )
            }
        };
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CACHE_CONTROL, "no-store")
            .body(Full::new(Bytes::from(body)))
            .expect("static response")
    }
}

impl<B> hyper::service::Service<Request<B>> for HubService
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: Request<B>) -> ResponseFuture {
        self.respond(request)
    }
}

impl<B> tower_service::Service<Request<B>> for HubService
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> ResponseFuture {
        self.respond(request)
    }
}

/// Who a request is for the topics it makes: its token's user, else the
/// client's address as duplex's server core saw it (`None` for a loopback
/// client, as the server core's per-address limits exempt it: the
/// operator's own tools and a reverse proxy in front, whose clients are
/// many; and for a request that came through another server).
fn requester<B>(request: &Request<B>, claims: Option<&Claims>) -> Option<Requester> {
    if let Some(claims) = claims {
        return Some(Requester::user(claims.subject()));
    }
    let ip = request.extensions().get::<ConnectionInfo>()?.peer_addr.ip();
    (!ip.to_canonical().is_loopback()).then(|| Requester::address(ip))
}

/// `config` for duplex.v1 connections: the subprotocol offered, and
/// frames bounded by [`HubConfig::max_v1_frame_size`](crate::hub::HubConfig::max_v1_frame_size).
fn v1_config(mut config: Config, hub: &crate::hub::HubConfig) -> Config {
    config.protocols = vec![v1::PROTOCOL.to_owned()];
    config.max_message_size = config.max_message_size.min(hub.max_v1_frame_size.max(1));
    config.max_frame_size = config.max_frame_size.min(config.max_message_size);
    config
}

fn ready(response: Response<Full<Bytes>>) -> ResponseFuture {
    Box::pin(std::future::ready(Ok(response)))
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::HubConfig;
    use http_body_util::BodyExt;

    async fn call(
        service: &mut HubService,
        request: Request<Full<Bytes>>,
    ) -> (StatusCode, Response<Full<Bytes>>) {
        std::future::poll_fn(|cx| {
            tower_service::Service::<Request<Full<Bytes>>>::poll_ready(service, cx)
        })
        .await
        .unwrap();
        let response = tower_service::Service::call(service, request)
            .await
            .unwrap();
        (response.status(), response)
    }

    fn request(method: Method, path: &str) -> Request<Full<Bytes>> {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "example.com")
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    #[tokio::test]
    async fn routes_answer_as_a_tower_service() {
        let mut service = HubService::new(Hub::new(HubConfig::default()));
        let (status, _) = call(&mut service, request(Method::GET, "/nope")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, response) = call(&mut service, request(Method::DELETE, "/metrics")).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
        let (status, response) = call(&mut service, request(Method::PUT, "/topics/t")).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "GET, POST");
        // A plain GET on a topic is a handshake that is not one.
        let (status, _) = call(&mut service, request(Method::GET, "/topics/t")).await;
        assert_eq!(status, StatusCode::UPGRADE_REQUIRED);
        let (status, response) = call(&mut service, request(Method::GET, "/healthz")).await;
        assert_eq!(status, StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"{\"status\":\"ok\",\"backplane\":\"none\"}\n");
        let (status, _) = call(&mut service, request(Method::POST, "/topics/t")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(service.hub().metrics().snapshot().published, 1);
    }

    #[tokio::test]
    async fn the_fallback_answers_every_path_that_is_not_the_hub_s() {
        let mut service = HubService::new(Hub::new(HubConfig::default())).fallback(
            |request: Request<()>| async move {
                let body = format!("{} {}", request.method(), request.uri().path());
                Response::new(Full::new(Bytes::from(body)))
            },
        );
        for (method, path) in [
            (Method::GET, "/"),
            (Method::DELETE, "/nope"),
            (Method::GET, "/topic"),
            (Method::POST, "/metrics/x"),
        ] {
            let (status, response) = call(&mut service, request(method.clone(), path)).await;
            assert_eq!(status, StatusCode::OK, "{method} {path}");
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], format!("{method} {path}").as_bytes());
        }
        // The hub's own paths stay the hub's, its refusals too.
        let (status, _) = call(&mut service, request(Method::GET, "/healthz")).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = call(&mut service, request(Method::DELETE, "/metrics")).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let (status, _) = call(&mut service, request(Method::GET, "/topics/t")).await;
        assert_eq!(status, StatusCode::UPGRADE_REQUIRED);
        let (status, _) = call(&mut service, request(Method::GET, "/duplex.js")).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn serves_the_browser_client() {
        let mut service = HubService::new(Hub::new(HubConfig::default()));
        let (status, response) = call(&mut service, request(Method::GET, "/duplex.js")).await;
        assert_eq!(status, StatusCode::OK);
        let headers = response.headers().clone();
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let file = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/js/duplex.js")).unwrap();
        assert_eq!(&body[..], &file[..]);
        assert!(body.starts_with(b"// duplex.js"));

        let mut again = request(Method::GET, "/duplex.js");
        again
            .headers_mut()
            .insert(header::IF_NONE_MATCH, headers[header::ETAG].clone());
        let (status, response) = call(&mut service, again).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(
            response
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .is_empty()
        );
        let mut other = request(Method::GET, "/duplex.js");
        other.headers_mut().insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("W/\"0.0.0-x\""),
        );
        assert_eq!(call(&mut service, other).await.0, StatusCode::OK);

        let (status, response) = call(&mut service, request(Method::POST, "/duplex.js")).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
    }

    #[test]
    fn topic_connections_compress_once() {
        let mut config = Config::server();
        config.deflate = Some(duplex_ws::DeflateConfig::default());
        let service = HubService::new(Hub::new(HubConfig::default())).config(config);
        let deflate = service.config.deflate.as_ref().unwrap();
        assert!(deflate.server_no_context_takeover);
        assert_eq!(service.body_limit(), service.config.max_message_size);
        assert_eq!(service.max_body_size(7).body_limit(), 7);
    }

    fn bearer(method: Method, path: &str, credentials: &str) -> Request<Full<Bytes>> {
        let mut request = request(method, path);
        request.headers_mut().insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {credentials}")).unwrap(),
        );
        request
    }

    #[tokio::test]
    async fn with_tokens_a_post_needs_a_publish_claim_or_the_api_key() {
        const SECRET: &[u8] = b"a secret of thirty-two bytes....";
        let sign = |claims: Claims| crate::auth::sign_hs256(SECRET, &claims).unwrap();
        let hour = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        let news = sign(Claims::new("app", hour).publish(["news"]));
        let reader = sign(Claims::new("page", hour).subscribe(["*"]));
        let operator = sign(Claims::new("ops", hour).publish(["*"]));
        let tokens = || TokenVerifier::hs256(SECRET).unwrap();
        let mut service = HubService::new(Hub::new(HubConfig::default())).tokens(tokens());
        let status = |r: (StatusCode, _)| r.0;
        for (request, expected, why) in [
            (request(Method::POST, "/topics/news"), 401, "anonymous"),
            (
                bearer(Method::POST, "/topics/news", &news),
                200,
                "claim covers it",
            ),
            (
                bearer(Method::POST, "/topics/sport", &news),
                403,
                "claim does not",
            ),
            (
                bearer(Method::POST, "/topics/news", &reader),
                403,
                "subscribe only",
            ),
            (
                bearer(Method::POST, "/topics/news", "junk"),
                401,
                "not a token",
            ),
            (request(Method::GET, "/metrics"), 401, "anonymous metrics"),
            (
                bearer(Method::GET, "/metrics", &news),
                403,
                "metrics need *",
            ),
            (bearer(Method::GET, "/metrics", &operator), 200, "operator"),
        ] {
            assert_eq!(status(call(&mut service, request).await), expected, "{why}");
        }
        // The API key still does everything; a wrong one is said as such.
        let mut keyed = service.clone().api_key(ApiKey::new("the-key").unwrap());
        for (request, expected) in [
            (bearer(Method::POST, "/topics/sport", "the-key"), 200),
            (bearer(Method::GET, "/metrics", "the-key"), 200),
            (bearer(Method::POST, "/topics/news", &news), 200),
            (request(Method::POST, "/topics/news"), 401),
        ] {
            assert_eq!(status(call(&mut keyed, request).await), expected);
        }
        let (code, response) = call(&mut keyed, bearer(Method::POST, "/topics/x", "nope")).await;
        assert_eq!(code, 401);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"wrong API key\n");
        // Open on purpose: POST only.
        let mut open = HubService::new(Hub::new(HubConfig::default()))
            .tokens(tokens())
            .open_post(true);
        assert_eq!(
            status(call(&mut open, request(Method::POST, "/topics/t")).await),
            200
        );
        assert_eq!(
            status(call(&mut open, request(Method::GET, "/metrics")).await),
            401
        );
    }
}
