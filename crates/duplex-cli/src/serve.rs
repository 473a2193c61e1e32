//! `duplex serve`: flags, wiring and printing. The server is duplex's
//! [`Server`] running the push service with the page and the echo as its
//! fallback ([`routes`]): the echo on every path but the push
//! service's (`/topics/{name}`, `/topics` for duplex.v1, `/metrics`,
//! `/healthz`; with `--redis` or `--nats`, topics, their offsets and their
//! history are shared by every server on that Redis or NATS), the test page
//! at `GET /`. `--max-connections` bounds the WebSockets (503 past it) and the
//! other TCP connections. SIGTERM or Ctrl-C shuts the server down, which
//! closes every WebSocket with 1001.
//!
//! With `--tls-cert` and `--tls-key` it serves `wss://` and the page over
//! `https://`. The files are read before the port opens, so a bad one stops
//! the start with its path and the reason. SIGHUP reads them again: new
//! connections get the new certificate, open ones keep theirs, and a bad
//! file leaves the current one in place. `--handshake-timeout` bounds the
//! TLS handshake and the HTTP request together.
//!
//! With a token key (`--token-secret`, `--token-secret-file`,
//! `DUPLEX_TOKEN_SECRET`, or `--token-public-key`) every WebSocket, topic or
//! echo, needs a token, and with `--api-key` so do `POST /topics/{name}` and
//! `GET /metrics` (see [`duplex_hub::auth`] for the codes). What stays open
//! to anyone is said in one line on stderr at start.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use duplex_hub::backplane::{Backplane, RedisOptions};
use duplex_hub::{Hub, HubConfig, HubService};
use duplex_ws::tls::TlsAcceptor;
use duplex_ws::{Config, OriginPolicy, Server};

use crate::auth::AuthArgs;
use crate::limits::LimitArgs;
use crate::routes::routes;

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
    /// Most WebSockets open at once, over HTTP/1.1 and HTTP/2; one more is
    /// refused with 503. It also bounds the other TCP connections (HTTP
    /// requests, handshakes in progress); past it new ones are closed.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    max_connections: usize,
    /// Most TCP connections one client address (an IPv6 /64) may hold
    /// open; past it new ones are closed at once. Loopback clients are
    /// exempt.
    #[arg(long, default_value_t = duplex_ws::DEFAULT_MAX_CONNECTIONS_PER_IP, value_name = "N")]
    max_connections_per_ip: usize,
    /// New connections a second one client address may open, in bursts of
    /// twice as many; past it they are closed at once; 0 turns it off.
    /// Loopback clients are exempt.
    #[arg(long, default_value_t = duplex_ws::DEFAULT_CONNECTION_RATE.0, value_name = "N")]
    connection_rate: u32,
    /// Streams one HTTP/2 connection may have open at once (its WebSockets
    /// and requests); each WebSocket also counts against
    /// --max-connections-per-ip and --connection-rate as a connection does.
    #[arg(long, default_value_t = duplex_ws::DEFAULT_MAX_STREAMS_PER_CONNECTION, value_name = "N")]
    max_streams_per_connection: u32,
    /// Seconds an HTTP/2 connection may go with no request and no
    /// WebSocket before it is closed.
    #[arg(long, default_value_t = duplex_ws::DEFAULT_IDLE_TIMEOUT.as_secs_f64(), value_name = "SECS")]
    idle_timeout: f64,
    /// A load balancer or reverse proxy (an address, or a network as
    /// 10.0.0.0/8) whose X-Forwarded-For names its client: that address is
    /// then the one the per-address limits count and the logs show (the
    /// rightmost one in the header that is not a trusted proxy). Repeatable.
    /// Anyone else's X-Forwarded-For is ignored.
    #[arg(long, value_name = "CIDR", value_parser = parse_net)]
    trusted_proxy: Vec<duplex_ws::IpNet>,
    /// The trusted proxies open each connection with a PROXY protocol
    /// header (v1 or v2: HAProxy's send-proxy, a cloud load balancer's
    /// proxy protocol), which names the client instead; their connections
    /// without one are closed.
    #[arg(long, requires = "trusted_proxy")]
    proxy_protocol: bool,
    /// Bytes that partly received messages may hold across all
    /// connections; the connection that needs more is failed with 1013.
    #[arg(long, default_value_t = duplex_ws::DEFAULT_MESSAGE_BUDGET, value_name = "BYTES")]
    message_budget: usize,
    /// Seconds a POST /topics/{name} may take to send its body (408 past
    /// it).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    body_timeout: f64,
    /// PEM certificate chain, leaf first: serve wss:// and https:// (with
    /// --tls-key). SIGHUP reloads it.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert: RSA, ECDSA or Ed25519, as PKCS#8,
    /// PKCS#1 or SEC1.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Redis URL: share topics with every `duplex serve` on the same
    /// Redis. redis://host:port/db, rediss://… (TLS),
    /// redis+sentinel://host:port[,host:port…]/master[/db] (follows
    /// failovers), or redis+cluster://host:port[,host:port…]/ (sharded
    /// pub/sub). Checked at start.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// PEM CA certificates to verify a rediss:// server with, instead of
    /// the system's roots.
    #[arg(long, value_name = "FILE", requires = "redis")]
    redis_ca: Option<PathBuf>,
    /// NATS URL (nats://host:port, JetStream on): share topics with every
    /// `duplex serve` on the same NATS, each topic a stream. Checked at
    /// start.
    #[arg(long, value_name = "URL", conflicts_with = "redis")]
    nats: Option<String>,
    /// Messages queued for one topic subscriber; one that falls further
    /// behind is closed with 1008 ("slow consumer").
    #[arg(long, default_value_t = HubConfig::default().queue, value_name = "N")]
    topic_queue: usize,
    /// Topics with subscribers, at most; more subscriptions are refused.
    #[arg(long, default_value_t = HubConfig::default().max_topics, value_name = "N")]
    max_topics: usize,
    /// Topics one client (a token's user, or an address; loopback ones
    /// exempt) may have made that exist at once; one more gets 429 or
    /// `too_many`.
    #[arg(long, default_value_t = HubConfig::default().max_topics_per_client, value_name = "N")]
    max_topics_per_client: usize,
    /// Messages each topic retains for clients that resume (duplex.v1
    /// `since`); 0 keeps none.
    #[arg(long, default_value_t = HubConfig::default().history_size, value_name = "N")]
    history_size: usize,
    /// Seconds a retained message is kept.
    #[arg(long, default_value_t = HubConfig::default().history_ttl.as_secs_f64(), value_name = "SECS")]
    history_ttl: f64,
    /// Bytes of retained messages over all topics, at most (without
    /// --redis; with it, Redis's maxmemory bounds them).
    #[arg(long, default_value_t = HubConfig::default().max_history_bytes, value_name = "BYTES")]
    max_history_bytes: usize,
    /// Topics one duplex.v1 connection may subscribe to at once.
    #[arg(long, default_value_t = HubConfig::default().max_subscriptions, value_name = "N")]
    max_subscriptions: usize,
    /// Subscribes and unsubscribes one duplex.v1 connection may make a
    /// second (bursts of twice as many plus --max-subscriptions); past it
    /// they get `too_many`.
    #[arg(long, default_value_t = HubConfig::default().subscribe_rate, value_name = "N")]
    subscribe_rate: u32,
    /// Bytes of one duplex.v1 frame from a client, after decompression;
    /// a larger one closes the connection with 1009 (publish more by POST).
    #[arg(long, default_value_t = HubConfig::default().max_v1_frame_size, value_name = "BYTES")]
    max_v1_frame_size: usize,
    /// Seconds one message may take to write to a topic subscriber before
    /// its connection is dropped (it stopped reading).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    topic_send_timeout: f64,
    /// A web origin whose pages may open WebSockets and POST (repeatable):
    /// exact (`https://app.example.com`), every subdomain
    /// (`https://*.example.com`), or `null` (pages opened from a file, but
    /// also any site's sandboxed iframes). Always allowed: the server's own
    /// origin and clients that send no Origin; on a loopback address also
    /// any loopback page.
    #[arg(long, value_name = "ORIGIN")]
    allowed_origin: Vec<String>,
    /// A name the server answers to in Host (repeatable): exact
    /// (push.example.com) or with a leading dot for it and its subdomains
    /// (.example.com). Once one is given, other names get 421 (DNS
    /// rebinding); loopback names always pass. On loopback without any,
    /// only loopback names pass.
    #[arg(long, value_name = "NAME")]
    allowed_host: Vec<String>,
    /// Let pages of any origin use the server (a public API with no
    /// cookies to protect).
    #[arg(long, conflicts_with = "allowed_origin")]
    any_origin: bool,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    limits: LimitArgs,
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
    if args.topic_queue == 0
        || args.max_topics == 0
        || args.max_subscriptions == 0
        || args.max_v1_frame_size == 0
    {
        return Err("--topic-queue, --max-topics, --max-subscriptions and \
             --max-v1-frame-size must be at least 1"
            .into());
    }
    // Read before the port opens: a bad key stops the start.
    let verifier = args.auth.verifier()?;
    let api_key = args.auth.api_key()?;
    let send_timeout = crate::limits::seconds("--topic-send-timeout", args.topic_send_timeout)?;
    let hub = Hub::new(
        HubConfig::default()
            .queue(args.topic_queue)
            .max_topics(args.max_topics)
            .send_timeout(send_timeout)
            .max_message_size(args.limits.max_message_size)
            .body_timeout(crate::limits::seconds("--body-timeout", args.body_timeout)?)
            .history_size(args.history_size)
            .history_ttl(crate::limits::seconds("--history-ttl", args.history_ttl)?)
            .max_history_bytes(args.max_history_bytes)
            .max_subscriptions(args.max_subscriptions)
            .max_v1_frame_size(args.max_v1_frame_size)
            .subscribe_rate(args.subscribe_rate)
            .max_topics_per_client(args.max_topics_per_client),
    );
    // Held for the server's life: dropping it stops the relaying.
    let backplane = if let Some(url) = &args.nats {
        Some(
            Backplane::nats(&hub, url)
                .await
                .map_err(|e| format!("cannot use --nats: {e}"))?,
        )
    } else if let Some(url) = &args.redis {
        let mut options = RedisOptions::default();
        if let Some(ca) = &args.redis_ca {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("cannot read --redis-ca {}: {e}", ca.display()))?;
            options = options.root_ca(pem);
        }
        Some(
            Backplane::redis_with(&hub, url, &options)
                .await
                .map_err(|e| format!("cannot use --redis: {e}"))?,
        )
    } else {
        None
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
    let mut origins = if args.any_origin {
        OriginPolicy::any()
    } else {
        OriginPolicy::new()
    };
    for origin in &args.allowed_origin {
        origins = origins
            .allow(origin)
            .map_err(|e| format!("--allowed-origin: {e}"))?;
    }
    for host in &args.allowed_host {
        origins = origins
            .allow_host(host)
            .map_err(|e| format!("--allowed-host: {e}"))?;
    }
    let mut server = Server::bind(&args.bind)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.bind))?
        .config(config.clone())
        .max_connections(args.max_connections)
        .max_connections_per_ip(args.max_connections_per_ip)
        .connection_rate(args.connection_rate, args.connection_rate.saturating_mul(2))
        .message_budget(args.message_budget)
        .max_streams_per_connection(args.max_streams_per_connection)
        .idle_timeout(crate::limits::seconds("--idle-timeout", args.idle_timeout)?)
        .trusted_proxies(args.trusted_proxy.iter().copied())
        .proxy_protocol(args.proxy_protocol)
        .origins(origins);
    if let Some(tls) = &tls {
        server = server.tls(tls.acceptor.clone());
    }
    let addr = server.local_addr()?;
    // Scripts wait for this exact line to know the port.
    let mut stdout = std::io::stdout();
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    writeln!(stdout, "listening on {scheme}://{addr}")?;
    stdout.flush()?;
    if addr.ip().is_loopback() && !args.any_origin {
        // The one convenience for development, said once.
        eprintln!(
            "duplex: on loopback, pages from any loopback origin may connect; \
             other origins (and file pages, `null`) need --allowed-origin"
        );
    }
    if !addr.ip().is_loopback() && args.allowed_host.is_empty() {
        eprintln!(
            "duplex: no --allowed-host: requests naming any host are served \
             (name this server's hosts to refuse DNS rebinding)"
        );
    }
    if let Some(line) =
        crate::auth::open_doors(verifier.is_some(), api_key.is_some(), args.auth.open_post)
    {
        eprintln!("{line}");
    }
    tracing::info!(
        %addr,
        deflate = config.deflate.is_some(),
        tls = tls.is_some(),
        tokens = verifier.as_ref().map(|v| v.algorithm().name()),
        api_key = api_key.is_some(),
        "serving"
    );

    let mut hub = HubService::new(hub).config(config.clone());
    if let Some(verifier) = verifier {
        hub = hub.tokens(verifier);
    }
    if let Some(api_key) = api_key {
        hub = hub.api_key(api_key);
    }
    hub = hub.open_post(args.auth.open_post);
    if let Some(backplane) = &backplane {
        hub = hub.backplane(backplane.state());
    }
    let handle = server.handle();
    let serving = server.serve_service(routes(hub, config));
    tokio::pin!(serving);
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut hangup = hangup_signal(tls.is_some())?;
    loop {
        tokio::select! {
            served = &mut serving => {
                served?;
                return Ok(ExitCode::SUCCESS);
            }
            // Every WebSocket gets 1001; `serving` ends once they are closed.
            () = &mut signal, if !handle.is_shutting_down() => handle.shutdown(),
            Some(()) = next_hangup(&mut hangup) => {
                if let Some(tls) = &tls {
                    tls.reload().await;
                }
            }
        }
    }
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

/// `--trusted-proxy`: a network, or one address (a /32 or /128).
fn parse_net(text: &str) -> Result<duplex_ws::IpNet, String> {
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Ok(ip.into());
    }
    text.parse().map_err(|_| {
        format!("{text:?} is neither an address nor a network (10.0.0.0/8, 2001:db8::/32)")
    })
}
