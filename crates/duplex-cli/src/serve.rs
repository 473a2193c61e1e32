//! `duplex serve`: echo on every path, the test page at `GET /`, a bounded
//! number of connections, and a graceful shutdown that closes every
//! connection with 1001 on SIGTERM or Ctrl-C.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use duplex::{CloseCode, Config, Event, PendingRequest, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::limits::LimitArgs;
use crate::page;

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
    #[command(flatten)]
    limits: LimitArgs,
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
    let listener = TcpListener::bind(&args.bind)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.bind))?;
    let addr = listener.local_addr()?;
    // Scripts wait for this exact line to know the port.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on ws://{addr}")?;
    stdout.flush()?;
    tracing::info!(%addr, deflate = config.deflate.is_some(), "serving");

    let config = Arc::new(config);
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(args.max_connections));
    let signal = shutdown_signal();
    tokio::pin!(signal);
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
                let config = Arc::clone(&config);
                let shutdown = shutdown.clone();
                tracker.spawn(async move {
                    handle(stream, &config, shutdown).await;
                    drop(slot);
                });
            }
            () = &mut signal => break,
        }
    }
    tracing::info!(
        open = tracker.len(),
        "shutting down: closing connections with 1001"
    );
    shutdown.cancel();
    tracker.close();
    let grace = config.close_timeout + std::time::Duration::from_secs(1);
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

async fn handle(stream: TcpStream, config: &Config, shutdown: CancellationToken) {
    if let Err(e) = stream.set_nodelay(config.nodelay) {
        tracing::debug!(error = %e, "set_nodelay failed");
    }
    let pending = tokio::select! {
        pending = PendingRequest::read(stream, config) => pending,
        () = shutdown.cancelled() => return,
    };
    let pending = match pending {
        Ok(pending) => pending,
        Err(e) => {
            tracing::debug!(error = %e, "no request");
            return;
        }
    };
    if !pending.is_upgrade() {
        page::serve_http(pending, config, shutdown).await;
        return;
    }
    match pending.accept(config).await {
        Ok(ws) => echo(ws, shutdown).await,
        Err(e) => tracing::debug!(error = %e, "handshake failed"),
    }
}

/// Echoes every message until the connection closes; on shutdown, closes
/// with 1001 and waits for the closing handshake.
pub(crate) async fn echo<S>(mut ws: WebSocket<S>, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut closing = false;
    loop {
        let event = tokio::select! {
            event = ws.next() => event,
            () = shutdown.cancelled(), if !closing => {
                closing = true;
                let _ = ws.close_with(CloseCode::GOING_AWAY, "server shutting down").await;
                continue;
            }
        };
        match event {
            Some(Event::Message(message)) => {
                // Fails only once a Close was sent or received; the Close
                // event follows.
                let _ = ws.send(message).await;
            }
            Some(Event::Error(e)) => tracing::info!(error = %e, "connection failed"),
            Some(Event::Open | Event::Close { .. }) => {}
            None => break,
        }
    }
}
