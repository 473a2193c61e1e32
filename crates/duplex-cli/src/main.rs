//! The `duplex` command: `serve`, `connect`, `publish`, `subscribe`, `token`
//! and `bench`. This
//! crate only parses flags and wires the library's layers together; no
//! protocol logic lives here.

mod auth;
mod bench;
mod connect;
mod limits;
mod publish;
mod routes;
mod serve;
mod subscribe;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A WebSocket server, client and benchmark.
#[derive(Debug, Parser)]
#[command(name = "duplex", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve WebSocket echo on every path, topics on /topics/NAME (publish
    /// and subscribe; shared over Redis or NATS with --redis or --nats),
    /// and a test page at GET /. Open to anyone unless given a token key (--token-secret,
    /// --token-public-key: every WebSocket needs a token, 401/403) and an
    /// --api-key (for POST /topics/NAME and GET /metrics).
    // Boxed: serve has many more flags than the other commands.
    Serve(Box<serve::ServeArgs>),
    /// Connect to a WebSocket server: stdin lines go out as text messages,
    /// received messages are printed.
    Connect(connect::ConnectArgs),
    /// Publish messages to a topic of a duplex server: every subscriber
    /// gets them. Prints the offset each was given.
    Publish(publish::PublishArgs),
    /// Follow a topic of a duplex server: one line per message, OFFSET TAB
    /// TEXT; reconnects and resumes after the last offset by itself.
    Subscribe(subscribe::SubscribeArgs),
    /// Print an HS256 token for a `duplex serve --token-secret`: who the
    /// client is (--sub), the topics it may subscribe to and publish on,
    /// and how long it is valid (--ttl).
    Token(token::TokenArgs),
    /// Load a WebSocket server and measure it: echo throughput, latency and
    /// CPU per message (echo), memory per idle connection (idle), or
    /// deliveries, latency and losses of a push server (fanout).
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Connect(args) => connect::run(args),
        Command::Publish(args) => publish::run(args),
        Command::Subscribe(args) => subscribe::run(args),
        Command::Token(args) => token::run(args),
        Command::Bench(args) => bench::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("duplex: {e}");
            ExitCode::from(2)
        }
    }
}
