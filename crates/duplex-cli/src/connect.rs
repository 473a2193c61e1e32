//! `duplex connect URL`: an interactive client, like `python -m websockets`.
//! Each stdin line is sent as a text message; each message received is
//! printed as a line (binary as hex or base64).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine;
use clap::{Args, ValueEnum};
use duplex_ws::http::{HeaderName, HeaderValue};
use duplex_ws::{ClientBuilder, Config, Event, Message};
use tokio::io::AsyncBufReadExt;

use crate::limits::LimitArgs;

/// How binary messages are printed.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum BinaryFormat {
    /// Lowercase hex, no separators.
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// Arguments of `duplex connect`.
///
/// Exit status: 0 when the connection closed with 1000, 1 when it closed
/// with any other code or failed, 2 when it could not connect.
#[derive(Debug, Args)]
pub(crate) struct ConnectArgs {
    /// The ws:// or wss:// URL to connect to.
    url: String,
    /// A PEM file of CA certificates to trust for wss://, besides the
    /// platform's roots (repeatable).
    #[arg(long = "ca", value_name = "FILE")]
    ca: Vec<PathBuf>,
    /// How to print binary messages.
    #[arg(long, value_enum, default_value_t = BinaryFormat::Hex)]
    binary: BinaryFormat,
    /// A subprotocol to offer (repeat for several, most preferred first).
    #[arg(long = "protocol", value_name = "NAME")]
    protocols: Vec<String>,
    /// An extra request header, as "Name: value" (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<String>,
    /// After stdin ends, seconds to wait for the replies to what was sent
    /// before closing (it closes at once when as many messages came back as
    /// were sent).
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    linger: f64,
    /// Open the WebSocket over HTTP/2 (RFC 8441 extended CONNECT) instead
    /// of HTTP/1.1: wss:// negotiates h2 in TLS ALPN, ws:// speaks HTTP/2
    /// in clear text with prior knowledge (h2c). Fails if the server does
    /// not speak HTTP/2 or does not enable extended CONNECT; no fallback.
    #[arg(long)]
    http2: bool,
    #[command(flatten)]
    limits: LimitArgs,
}

pub(crate) fn run(args: ConnectArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(connect(args));
    // The stdin reader sits in a blocking read that nothing can interrupt;
    // don't wait for it.
    runtime.shutdown_background();
    result
}

/// Adds the certificates of every `--ca` file to the client's roots.
pub(crate) fn trust(mut builder: ClientBuilder, ca: &[PathBuf]) -> Result<ClientBuilder, String> {
    for path in ca {
        for root in duplex_ws::tls::load_certificates(path).map_err(|e| format!("--ca {e}"))? {
            builder = builder.add_root_certificate(root);
        }
    }
    Ok(builder)
}

async fn connect(args: ConnectArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut config = Config::client();
    args.limits.apply(&mut config)?;
    let linger = Duration::try_from_secs_f64(args.linger)
        .map_err(|_| format!("--linger {}: not a number of seconds", args.linger))?;
    let mut builder = ClientBuilder::new(args.url.clone())
        .config(config)
        .protocols(args.protocols.clone())
        .http2(args.http2);
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("--header {header:?}: expected \"Name: value\""))?;
        let name =
            HeaderName::try_from(name.trim()).map_err(|e| format!("--header {header:?}: {e}"))?;
        let value =
            HeaderValue::try_from(value.trim()).map_err(|e| format!("--header {header:?}: {e}"))?;
        builder = builder.header(name, value);
    }
    builder = trust(builder, &args.ca)?;
    let mut ws = builder
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", args.url))?;
    eprintln!(
        "connected to {} over HTTP/{} (protocol: {}, extensions: {})",
        ws.url(),
        if ws.get_ref().is_http2() { "2" } else { "1.1" },
        ws.protocol().unwrap_or("-"),
        ws.extensions().unwrap_or("-")
    );

    let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<String>(64);
    tokio::spawn(async move {
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = stdin.next_line().await {
            if lines_tx.send(line).await.is_err() {
                break;
            }
        }
    });

    let mut stdout = std::io::stdout().lock();
    let (mut sent, mut received) = (0u64, 0u64);
    let mut stdin_open = true;
    let mut close_at: Option<tokio::time::Instant> = None;
    let mut closing = false;
    loop {
        if !stdin_open
            && !closing
            && (received >= sent || close_at.is_some_and(|t| t <= tokio::time::Instant::now()))
        {
            closing = true;
            ws.close(1000, "").await?;
        }
        let deadline = close_at.filter(|_| !closing);
        tokio::select! {
            event = ws.next() => match event {
                Some(Event::Open) => {}
                Some(Event::Message(message)) => {
                    received += 1;
                    match message {
                        Message::Text(text) => writeln!(stdout, "{text}")?,
                        Message::Binary(bytes) => match args.binary {
                            BinaryFormat::Hex => {
                                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                                writeln!(stdout, "{hex}")?;
                            }
                            BinaryFormat::Base64 => writeln!(
                                stdout,
                                "{}",
                                base64::engine::general_purpose::STANDARD.encode(&bytes)
                            )?,
                        },
                    }
                    stdout.flush()?;
                }
                Some(Event::Error(e)) => eprintln!("error: {e}"),
                Some(Event::Close { code, reason, was_clean }) => {
                    eprintln!("closed: code {code}, reason {reason:?}, clean: {was_clean}");
                    return Ok(if code == 1000 && was_clean { ExitCode::SUCCESS } else { ExitCode::from(1) });
                }
                None => return Ok(ExitCode::from(1)),
            },
            line = lines.recv(), if stdin_open && !closing => match line {
                Some(line) => {
                    ws.send(line).await?;
                    sent += 1;
                }
                None => {
                    stdin_open = false;
                    close_at = Some(tokio::time::Instant::now() + linger);
                }
            },
            () = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {}
        }
    }
}
