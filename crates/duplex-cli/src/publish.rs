//! `duplex publish URL TOPIC [MESSAGE]...`: publishes messages to a topic of
//! a `duplex serve` (every subscriber of the topic gets them, on every
//! server sharing its Redis). It connects a WebSocket to `/topics/TOPIC`,
//! sends the messages (the arguments, or else each stdin line) as text, and
//! closes with 1000.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use duplex::{ClientBuilder, Config, Event, Message};
use tokio::io::AsyncBufReadExt;

/// Arguments of `duplex publish`.
///
/// Exit status: 0 when every message was sent and the connection closed
/// cleanly, 1 when it ended otherwise, 2 when it could not connect.
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The server: ws://, wss://, http:// or https://, host and port (a
    /// path is replaced by /topics/TOPIC).
    url: String,
    /// The topic: 1-128 characters of A-Z a-z 0-9 - _ . :
    topic: String,
    /// Messages to publish; without any, each line of stdin is one.
    messages: Vec<String>,
    /// A PEM file of CA certificates to trust for wss://, besides the
    /// platform's roots.
    #[arg(long = "ca", value_name = "FILE")]
    ca: Vec<PathBuf>,
}

pub(crate) fn run(args: PublishArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    duplex_hub::validate_topic(&args.topic)?;
    let url = topic_url(&args.url, &args.topic)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(publish(args, url))
}

/// `ws[s]://host:port/topics/TOPIC` from the server URL given.
fn topic_url(server: &str, topic: &str) -> Result<String, String> {
    let uri: duplex::http::Uri = server
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
    Ok(format!("{scheme}://{authority}/topics/{topic}"))
}

async fn publish(args: PublishArgs, url: String) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let builder = ClientBuilder::new(url.clone()).config(Config::client());
    let builder = crate::connect::trust(builder, &args.ca)?;
    let mut ws = builder
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let mut sent = 0u64;
    if args.messages.is_empty() {
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = stdin.next_line().await? {
            ws.send(Message::text(line)).await?;
            sent += 1;
        }
    } else {
        for message in args.messages {
            ws.send(Message::text(message)).await?;
            sent += 1;
        }
    }
    ws.close(1000, "").await?;
    // Our own messages come back (a publisher is a subscriber too); skip
    // them, and wait for the closing handshake.
    while let Some(event) = ws.next().await {
        if let Event::Close {
            code, was_clean, ..
        } = event
        {
            eprintln!("published {sent} message(s) to {}", args.topic);
            return Ok(if code == 1000 && was_clean {
                ExitCode::SUCCESS
            } else {
                eprintln!("closed: code {code}, clean: {was_clean}");
                ExitCode::FAILURE
            });
        }
    }
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_urls() {
        let cases = [
            ("ws://127.0.0.1:8080", "ws://127.0.0.1:8080/topics/news"),
            ("ws://127.0.0.1:8080/x?y", "ws://127.0.0.1:8080/topics/news"),
            ("http://localhost:1/", "ws://localhost:1/topics/news"),
            ("https://[::1]:9/", "wss://[::1]:9/topics/news"),
            ("wss://example.test", "wss://example.test/topics/news"),
        ];
        for (server, url) in cases {
            assert_eq!(topic_url(server, "news").unwrap(), url);
        }
        assert!(topic_url("ftp://x/", "news").is_err());
        assert!(topic_url("/just/a/path", "news").is_err());
    }
}
