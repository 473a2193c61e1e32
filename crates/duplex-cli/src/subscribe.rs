//! `duplex subscribe URL TOPIC [--since OFFSET] [--delta]`: follows a topic of a
//! `duplex serve` over duplex.v1 and prints each message as one line,
//! `OFFSET<TAB>TEXT` (a binary message as standard base64). It reconnects
//! by itself when the connection drops and resumes after the last offset it
//! printed ([`duplex_hub::client`]); when messages were lost for good (the
//! server's history no longer reached back), it says so on stderr and goes
//! on.

use std::io::Write;
use std::process::ExitCode;

use base64::Engine;
use clap::Args;
use duplex_hub::Since;
use duplex_hub::client::Event;
use duplex_ws::Message;

/// Arguments of `duplex subscribe`.
///
/// Exit status: 1 when the subscription ended (the server refused to go
/// on), 2 when it could not connect or subscribe; it runs until killed
/// otherwise.
#[derive(Debug, Args)]
pub(crate) struct SubscribeArgs {
    /// The server: ws://, wss://, http:// or https://, host and port (a
    /// path is replaced by /topics).
    url: String,
    /// The topic: 1-128 characters of A-Z a-z 0-9 - _ . :
    topic: duplex_hub::TopicName,
    /// Start after this offset: the messages retained after it come first
    /// (0: all retained). Without it, only new messages.
    #[arg(long, value_name = "OFFSET")]
    since: Option<u64>,
    /// Ask for text messages as Fossil deltas from the one before (the
    /// same lines are printed; a state that changes a little per message
    /// costs the change on the wire).
    #[arg(long)]
    delta: bool,
    #[command(flatten)]
    connection: crate::publish::ConnectionArgs,
}

pub(crate) fn run(args: SubscribeArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(subscribe(args))
}

async fn subscribe(args: SubscribeArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let options = duplex_hub::client::Options::default().delta(args.delta);
    let client = args.connection.connect(&args.url, options).await?;
    let since = args.since.map(|offset| Since {
        epoch: None,
        offset,
    });
    let mut subscription = client
        .subscribe(&args.topic, since, false)
        .await
        .map_err(|e| format!("cannot subscribe to {}: {e}", args.topic))?;
    let mut stdout = std::io::stdout().lock();
    while let Some(event) = subscription.next().await {
        match event {
            Event::Message { offset, message } => {
                match message {
                    Message::Text(text) => writeln!(stdout, "{offset}\t{}", text.as_str())?,
                    Message::Binary(bytes) => writeln!(
                        stdout,
                        "{offset}\t{}",
                        base64::engine::general_purpose::STANDARD.encode(&bytes)
                    )?,
                }
                stdout.flush()?;
            }
            Event::Subscribed {
                recovered: Some(false),
                offset,
                ..
            } => eprintln!(
                "duplex: {}: messages were lost (the server's history no longer reaches back); \
                 going on from offset {offset}",
                args.topic
            ),
            _ => {}
        }
    }
    eprintln!("duplex: the subscription to {} ended", args.topic);
    Ok(ExitCode::FAILURE)
}
