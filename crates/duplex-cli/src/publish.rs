//! `duplex publish URL TOPIC [MESSAGE]...`: publishes messages to a topic of
//! a `duplex serve` (every subscriber of the topic gets them, on every
//! server sharing its Redis) over duplex.v1, and prints the offset each was
//! given, one per line. The messages are the arguments, or else each stdin
//! line, as text.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use duplex_hub::client::{Client, Options};
use duplex_ws::{ClientBuilder, Config};
use http::{HeaderValue, header};
use tokio::io::AsyncBufReadExt;

/// How `publish` and `subscribe` reach the server.
#[derive(Debug, Args)]
pub(crate) struct ConnectionArgs {
    /// A PEM file of CA certificates to trust for wss://, besides the
    /// platform's roots.
    #[arg(long = "ca", value_name = "FILE")]
    ca: Vec<PathBuf>,
    /// A token for a server that checks them (sent as `Authorization:
    /// Bearer`); `duplex token` makes one.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
}

impl ConnectionArgs {
    /// A duplex.v1 client of the server at `server`.
    pub(crate) async fn connect(
        &self,
        server: &str,
        options: Options,
    ) -> Result<Client, Box<dyn std::error::Error>> {
        let url = v1_url(server)?;
        let mut builder = ClientBuilder::new(url.clone()).config(Config::client());
        builder = crate::connect::trust(builder, &self.ca)?;
        if let Some(token) = &self.token {
            let value = HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(|_| "--token: not a valid header value")?;
            builder = builder.header(header::AUTHORIZATION, value);
        }
        Client::connect_with(builder, options)
            .await
            .map_err(|e| format!("cannot connect to {url}: {e}").into())
    }
}

/// Arguments of `duplex publish`.
///
/// Exit status: 0 when every message was published, 1 when one was not
/// (the error is on stderr), 2 when it could not connect.
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The server: ws://, wss://, http:// or https://, host and port (a
    /// path is replaced by /topics).
    url: String,
    /// The topic: 1-128 characters of A-Z a-z 0-9 - _ . :
    topic: duplex_hub::TopicName,
    /// Messages to publish; without any, each line of stdin is one.
    messages: Vec<String>,
    #[command(flatten)]
    connection: ConnectionArgs,
}

pub(crate) fn run(args: PublishArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(publish(args))
}

/// `ws[s]://host:port/topics`, the duplex.v1 endpoint, from the server URL
/// given.
pub(crate) fn v1_url(server: &str) -> Result<String, String> {
    let uri: duplex_ws::http::Uri = server
        .parse()
        .map_err(|e| format!("{server}: not a URL: {e}"))?;
    let scheme = match uri.scheme_str() {
        Some("ws" | "http") => "ws",
        Some("wss" | "https") => "wss",
        _ => {
            return Err(format!(
                "{server}: expected a ws://, wss://, http:// or https:// URL"
            ));
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{server}: the URL has no host"))?;
    Ok(format!("{scheme}://{authority}/topics"))
}

async fn publish(args: PublishArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let client = args
        .connection
        .connect(&args.url, Options::default())
        .await?;
    let mut sent = 0u64;
    let topic = &args.topic;
    let one = async |text: String| -> Result<(), String> {
        let published = client
            .publish(topic, text)
            .await
            .map_err(|e| format!("not published to {topic}: {e}"))?;
        println!("{}", published.offset);
        Ok(())
    };
    let outcome = if args.messages.is_empty() {
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut outcome = Ok(());
        while let Some(line) = stdin.next_line().await? {
            outcome = one(line).await;
            if outcome.is_err() {
                break;
            }
            sent += 1;
        }
        outcome
    } else {
        let mut outcome = Ok(());
        for message in args.messages.clone() {
            outcome = one(message).await;
            if outcome.is_err() {
                break;
            }
            sent += 1;
        }
        outcome
    };
    eprintln!("published {sent} message(s) to {topic}");
    match outcome {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("duplex: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_urls() {
        let cases = [
            ("ws://127.0.0.1:8080", "ws://127.0.0.1:8080/topics"),
            ("ws://127.0.0.1:8080/x?y", "ws://127.0.0.1:8080/topics"),
            ("http://localhost:1/", "ws://localhost:1/topics"),
            ("https://[::1]:9/", "wss://[::1]:9/topics"),
            ("wss://example.test", "wss://example.test/topics"),
        ];
        for (server, url) in cases {
            assert_eq!(v1_url(server).unwrap(), url);
        }
        assert!(v1_url("ftp://x/").is_err());
        assert!(v1_url("/just/a/path").is_err());
    }
}
