//! The conformance client for the Autobahn TestSuite's fuzzing server
//! (run by `kosoku -m fuzzingserver`): it asks how many cases there are,
//! runs each one by echoing every message back, and asks for the report.
//!
//! ```text
//! cargo run --release -p duplex-ws --example autobahn_client -- ws://127.0.0.1:9001 duplex
//! ```

use duplex_ws::{ClientBuilder, Config, Event};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let base = args.next().unwrap_or_else(|| "ws://127.0.0.1:9001".into());
    let agent = args.next().unwrap_or_else(|| "duplex".into());
    let base = base.trim_end_matches('/');

    let count = case_count(base).await?;
    eprintln!("{count} cases");
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        if let Err(e) = run_case(&url).await {
            eprintln!("case {case}: {e}");
        }
    }
    // kosoku completes this handshake then drops the connection without a
    // Close frame: an abnormal closure is expected.
    let url = format!("{base}/updateReports?agent={agent}");
    let mut ws = duplex_ws::connect(&url).await?;
    while ws.next().await.is_some() {}
    eprintln!("reports updated");
    Ok(())
}

async fn case_count(base: &str) -> Result<u32, Box<dyn std::error::Error>> {
    let mut ws = duplex_ws::connect(&format!("{base}/getCaseCount")).await?;
    let message = ws.recv().await?.ok_or("no case count")?;
    while ws.next().await.is_some() {}
    let text = std::str::from_utf8(message.as_bytes())?;
    Ok(text.trim().parse()?)
}

async fn run_case(url: &str) -> Result<(), duplex_ws::Error> {
    let mut config = Config::client();
    // The cases send messages up to 16 MiB (9.*).
    config.max_message_size = 64 << 20;
    // The cases check every frame they receive: a keepalive Ping is not
    // among those they expect, and ends a case that runs past the interval
    // (the slow 12.* ones do) as failed.
    config.ping_interval = None;
    let mut ws = ClientBuilder::new(url).config(config).connect().await?;
    while let Some(event) = ws.next().await {
        if let Event::Message(message) = event {
            // Fails only once the closing handshake started.
            let _ = ws.send(message).await;
        }
    }
    Ok(())
}
