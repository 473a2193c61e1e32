//! `duplex serve`: echo on every path but `/topics/{name}` (publish and
//! subscribe, see [`crate::topics`]; with `--redis`, shared by every server
//! on that Redis), the test page at `GET /`, counters at `GET /metrics`, a
//! bounded number of connections, and a graceful shutdown that closes every
//! connection with 1001 on SIGTERM or Ctrl-C.
//!
//! With `--tls-cert` and `--tls-key` it serves `wss://` and the page over
//! `https://`. The files are read before the port opens, so a bad one stops
//! the start with its path and the reason. SIGHUP reads them again: new
//! connections get the new certificate, open ones keep theirs, and a bad
//! file leaves the current one in place. `--handshake-timeout` bounds the
//! TLS handshake and the HTTP request together.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::shutdown::{Fired, Shutdown};
use clap::Args;
use duplex::{CloseCode, Config, Event, PendingRequest, TlsAcceptor, WebSocket};
use duplex_hub::{Hub, HubConfig};
use futures_util::future::Either;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::limits::LimitArgs;
use crate::{page, topics};

/// Arguments of `duplex serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (use port 0 for any free port).
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    bind: String,
    /// Worker threads; 1 runs everything on the main thread. Default: one
    /// per core.
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Most connections open at once; more are refused.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    max_connections: usize,
    /// PEM certificate chain, leaf first: serve wss:// and https:// (with
    /// --tls-key). SIGHUP reloads it.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert: RSA, ECDSA or Ed25519, as PKCS#8,
    /// PKCS#1 or SEC1.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Redis URL (redis://host:port/db): share topics with every `duplex
    /// serve` on the same Redis. Checked at start.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Messages queued for one topic subscriber; one that falls further
    /// behind is closed with 1008 ("slow consumer").
    #[arg(long, default_value_t = HubConfig::default().queue, value_name = "N")]
    topic_queue: usize,
    /// Topics with subscribers, at most; more subscriptions are refused.
    #[arg(long, default_value_t = HubConfig::default().max_topics, value_name = "N")]
    max_topics: usize,
    /// Seconds one message may take to write to a topic subscriber before
    /// its connection is dropped (it stopped reading).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    topic_send_timeout: f64,
    #[command(flatten)]
    limits: LimitArgs,
}

/// What every connection of a server shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    /// `config` for `/topics/…`: with permessage-deflate, the server resets
    /// its compressor after each message (`server_no_context_takeover`), so
    /// that a message published to many subscribers is compressed once for
    /// all ([`duplex::Broadcast`]) and an idle subscriber holds no
    /// compressor.
    pub(crate) topic_config: Config,
    pub(crate) hub: Hub,
}

impl Shared {
    fn new(config: Config, hub: Hub) -> Shared {
        let mut topic_config = config.clone();
        if let Some(deflate) = &mut topic_config.deflate {
            deflate.server_no_context_takeover = true;
        }
        Shared {
            config,
            topic_config,
            hub,
        }
    }

    /// The subscription a WebSocket on `path` gets: `None` off `/topics/`,
    /// an error for a bad topic name or too many topics.
    pub(crate) fn subscription_for(
        &self,
        path: &str,
    ) -> Result<Option<duplex_hub::Subscription>, duplex_hub::HubError> {
        topics::topic_of(path)
            .map(|topic| self.hub.subscribe(topic))
            .transpose()
    }

    /// The configuration to accept a WebSocket on `path` with.
    pub(crate) fn config_for(&self, path: &str) -> &Config {
        if topics::topic_of(path).is_some() {
            &self.topic_config
        } else {
            &self.config
        }
    }
}

/// The certificate files and the acceptor they feed, when serving TLS.
#[derive(Debug, Clone)]
struct Tls {
    acceptor: TlsAcceptor,
    cert: PathBuf,
    key: PathBuf,
}

impl Tls {
    /// Reads the files again (off the runtime threads) and logs the outcome;
    /// on error the current certificate stays.
    async fn reload(&self) {
        let tls = self.clone();
        let result =
            tokio::task::spawn_blocking(move || tls.acceptor.reload_pem_files(&tls.cert, &tls.key))
                .await;
        match result {
            Ok(Ok(())) => tracing::info!(
                cert = %self.cert.display(),
                key = %self.key.display(),
                "SIGHUP: reloaded the TLS certificate; new connections use it"
            ),
            Ok(Err(e)) => tracing::error!(
                error = %e,
                "SIGHUP: TLS certificate not reloaded, keeping the current one"
            ),
            Err(e) => tracing::error!(error = %e, "SIGHUP: TLS reload task failed"),
        }
    }
}

pub(crate) fn run(args: ServeArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let threads = match args.threads {
        Some(0) => return Err("--threads must be at least 1".into()),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut config = Config::server();
    args.limits.apply(&mut config)?;
    if args.max_connections == 0 {
        return Err("--max-connections must be at least 1".into());
    }
    if args.topic_queue == 0 || args.max_topics == 0 {
        return Err("--topic-queue and --max-topics must be at least 1".into());
    }
    let send_timeout = crate::limits::seconds("--topic-send-timeout", args.topic_send_timeout)?;
    let hub = Hub::new(HubConfig {
        queue: args.topic_queue,
        max_topics: args.max_topics,
        send_timeout,
    });
    // Held for the server's life: dropping it stops the relaying.
    let _backplane = match &args.redis {
        Some(url) => Some(
            duplex_hub::backplane::Backplane::redis(&hub, url)
                .await
                .map_err(|e| format!("cannot use --redis: {e}"))?,
        ),
        None => None,
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Tls {
            acceptor: TlsAcceptor::from_pem_files(cert, key)
                .map_err(|e| format!("cannot serve TLS: {e}"))?,
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let listener = TcpListener::bind(&args.bind)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.bind))?;
    let addr = listener.local_addr()?;
    // Scripts wait for this exact line to know the port.
    let mut stdout = std::io::stdout();
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    writeln!(stdout, "listening on {scheme}://{addr}")?;
    stdout.flush()?;
    tracing::info!(%addr, deflate = config.deflate.is_some(), tls = tls.is_some(), "serving");

    let shared = Arc::new(Shared::new(config, hub));
    let shutdown = Shutdown::new();
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(args.max_connections));
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut hangup = hangup_signal(tls.is_some())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    tracing::warn!(%peer, max = args.max_connections, "refusing connection: --max-connections reached");
                    continue;
                };
                let shared = Arc::clone(&shared);
                let shutdown = shutdown.clone();
                let acceptor = tls.as_ref().map(|tls| tls.acceptor.clone());
                tracker.spawn(async move {
                    if let Err(e) = stream.set_nodelay(shared.config.nodelay) {
                        tracing::debug!(error = %e, "set_nodelay failed");
                    }
                    // One budget for the TLS handshake and the HTTP request.
                    let deadline = Instant::now() + shared.config.handshake_timeout;
                    match acceptor {
                        None => handle(stream, &shared, shutdown, deadline).await,
                        Some(acceptor) => {
                            Box::pin(handle_tls(stream, &acceptor, &shared, shutdown, deadline)).await
                        }
                    }
                    drop(slot);
                });
            }
            Some(()) = next_hangup(&mut hangup) => {
                if let Some(tls) = &tls {
                    tls.reload().await;
                }
            }
            () = &mut signal => break,
        }
    }
    tracing::info!(
        open = tracker.len(),
        "shutting down: closing connections with 1001"
    );
    shutdown.fire();
    tracker.close();
    let grace = shared.config.close_timeout + std::time::Duration::from_secs(1);
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("connections still open after the close timeout; exiting anyway");
    }
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<std::convert::Infallible>;

/// SIGHUP, when there is a certificate to reload; otherwise SIGHUP keeps
/// its default action.
fn hangup_signal(tls: bool) -> std::io::Result<Hangup> {
    #[cfg(unix)]
    if tls {
        use tokio::signal::unix::{SignalKind, signal};
        return signal(SignalKind::hangup()).map(Some);
    }
    let _ = tls;
    Ok(None)
}

/// The next SIGHUP, or never.
async fn next_hangup(hangup: &mut Hangup) -> Option<()> {
    match hangup {
        #[cfg(unix)]
        Some(signal) => signal.recv().await,
        #[cfg(not(unix))]
        Some(never) => match *never {},
        None => std::future::pending().await,
    }
}

/// The TLS handshake, then the connection as over plain TCP.
async fn handle_tls(
    stream: TcpStream,
    acceptor: &TlsAcceptor,
    shared: &Arc<Shared>,
    shutdown: Shutdown,
    deadline: Instant,
) {
    let peer = stream.peer_addr().ok();
    let tls = tokio::select! {
        tls = tokio::time::timeout_at(deadline, acceptor.accept(stream)) => tls,
        () = shutdown.fired() => return,
    };
    match tls {
        Ok(Ok(tls)) => handle(tls, shared, shutdown, deadline).await,
        Ok(Err(e)) => tracing::debug!(?peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(?peer, "TLS handshake timed out"),
    }
}

async fn handle<S>(stream: S, shared: &Arc<Shared>, shutdown: Shutdown, deadline: Instant)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let pending = tokio::select! {
        pending = Box::pin(tokio::time::timeout_at(deadline, PendingRequest::read(stream, &shared.config))) => {
            pending.unwrap_or(Err(duplex::Error::HandshakeTimeout))
        }
        () = shutdown.fired() => return,
    };
    let pending = match pending {
        Ok(pending) => pending,
        Err(e) => {
            tracing::debug!(error = %e, "no request");
            return;
        }
    };
    if !pending.is_upgrade() {
        Box::pin(page::serve_http(pending, Arc::clone(shared), shutdown)).await;
        return;
    }
    let path = pending.request().uri().path().to_owned();
    let subscription = match shared.subscription_for(&path) {
        Ok(subscription) => subscription,
        Err(e) => {
            tracing::info!(error = %e, "refusing a subscription");
            let body = format!("{e}\n");
            let response = http::Response::builder()
                .status(http::StatusCode::BAD_REQUEST)
                .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .header(http::header::CONTENT_LENGTH, body.len())
                .body(body)
                .expect("static response");
            let _ = pending.reject(response).await;
            return;
        }
    };
    let ws = match Box::pin(pending.accept(shared.config_for(&path))).await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(error = %e, "handshake failed");
            return;
        }
    };
    connection(ws, subscription, &shared.hub, shutdown.fired()).await;
}

/// Runs an accepted connection: a topic session (boxed: rarer, and larger)
/// or the echo. Not an `async fn`, for the reason given on [`echo`].
pub(crate) fn connection<S>(
    ws: WebSocket<S>,
    subscription: Option<duplex_hub::Subscription>,
    hub: &Hub,
    shutdown: Fired,
) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let open = Open::new(hub);
    match subscription {
        Some(subscription) => {
            Either::Left(Box::pin(topics::session(ws, subscription, open, shutdown)))
        }
        None => Either::Right(echo(ws, shutdown, open)),
    }
}

/// Counts an open WebSocket connection in `/metrics` for as long as it
/// lives, and gives the connection its hub.
#[derive(Debug)]
pub(crate) struct Open(Hub);

impl Open {
    fn new(hub: &Hub) -> Open {
        hub.metrics().connection_opened();
        Open(hub.clone())
    }

    pub(crate) fn hub(&self) -> &Hub {
        &self.0
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.metrics().connection_closed();
    }
}

/// Echoes every message until the connection closes; on shutdown, closes
/// with 1001 and waits for the closing handshake.
///
/// Not an `async fn`: that would keep the arguments twice in the future (as
/// arguments, then as locals), and this future lives as long as the
/// connection, so its size is memory per idle connection.
#[allow(clippy::manual_async_fn)]
fn echo<S>(mut ws: WebSocket<S>, mut shutdown: Fired, open: Open) -> impl Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    async move {
        let _open = open;
        let mut closing = false;
        loop {
            let event = tokio::select! {
                // Messages first; the shutdown is seen whenever none is ready.
                biased;
                event = ws.next() => event,
                () = &mut shutdown, if !closing => {
                    closing = true;
                    let _ = ws.close_with(CloseCode::GOING_AWAY, "server shutting down").await;
                    continue;
                }
            };
            match event {
                Some(Event::Message(message)) => {
                    // Queued, not written yet: `next` writes every reply to one
                    // read in a single write once no message is left to parse.
                    // Fails only once a Close was sent or received; the Close
                    // event follows.
                    let _ = ws.feed(message).await;
                }
                Some(Event::Error(e)) => tracing::info!(error = %e, "connection failed"),
                Some(Event::Open | Event::Close { .. }) => {}
                None => break,
            }
        }
    }
}
