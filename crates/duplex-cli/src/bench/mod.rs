//! `duplex bench`: load generators that cost the client little, so that
//! what they measure is the server. Three loads, each a subcommand with its
//! own flags:
//!
//! - [`echo`]: messages echoed, one or `--pipeline K` in flight per
//!   connection: throughput, latency, the server's CPU time per message;
//! - [`idle`]: connections opened and held: the server's memory per
//!   connection;
//! - [`fanout`]: subscribers on topics and a publisher: deliveries a second,
//!   publish-to-delivery latency, lost and duplicated messages, the
//!   server's CPU time per delivery.
//!
//! They share one raw WebSocket client ([`client`]), one `/proc` sampler of
//! the server ([`proc`]) and one way to print a report ([`report`]); echo
//! and idle spread their connections over threads of single-threaded
//! runtimes ([`progress`]), fan-out runs on one.

mod client;
mod echo;
mod error;
mod fanout;
mod fd_limit;
mod flags;
mod idle;
mod proc;
mod progress;
mod report;

use std::process::ExitCode;

use clap::{Args, Subcommand};

/// Arguments of `duplex bench`.
#[derive(Debug, Clone, Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    load: Load,
}

/// The loads `duplex bench` can put on a server.
#[derive(Debug, Clone, Subcommand)]
enum Load {
    /// Each connection echoes one message at a time (or --pipeline K):
    /// throughput, latency, server CPU per message.
    Echo(echo::EchoArgs),
    /// Open the connections and hold them: server memory per connection.
    Idle(idle::IdleArgs),
    /// Subscribers on topics and a publisher: deliveries a second, publish
    /// to delivery latency, lost and duplicated messages.
    Fanout(fanout::FanoutArgs),
}

pub(crate) fn run(args: BenchArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let (report, output) = match &args.load {
        Load::Echo(a) => (echo::run(a)?, &a.output),
        Load::Idle(a) => (idle::run(a)?, &a.output),
        Load::Fanout(a) => (fanout::run(a)?, &a.output),
    };
    Ok(output.print(&report)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    /// Each load is a subcommand; a load's flags are refused by the others.
    #[test]
    fn loads_are_subcommands_with_their_own_flags() {
        let parse = |args: &[&str]| Cli::try_parse_from(["bench"].iter().chain(args));
        for ok in [
            &["echo", "ws://127.0.0.1:1/", "--pipeline", "2"][..],
            &["idle", "ws://127.0.0.1:1/", "--deflate"],
            &["fanout", "ws://127.0.0.1:1/", "--subscribers", "2"],
        ] {
            assert!(parse(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            &["ws://127.0.0.1:1/"][..],
            &["echo", "ws://127.0.0.1:1/", "--deflate"],
            &["idle", "ws://127.0.0.1:1/", "--pipeline", "2"],
            &["fanout", "ws://127.0.0.1:1/", "--conns", "2"],
            &["fanout", "ws://127.0.0.1:1/", "--http2"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
