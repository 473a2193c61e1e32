//! A client with the browser's four events: sends "hello" on open, prints
//! what comes back, and closes.
//!
//! ```text
//! cargo run -p duplex-ws --example client -- ws://127.0.0.1:9000/
//! ```

use duplex_ws::{Event, Message};

#[tokio::main]
async fn main() -> Result<(), duplex_ws::Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://localhost:8080".into());
    let mut ws = duplex_ws::connect(&url).await?;
    while let Some(event) = ws.next().await {
        match event {
            Event::Open => ws.send("hello").await?,
            Event::Message(Message::Text(text)) => {
                println!("{text}");
                ws.close(1000, "bye").await?;
            }
            Event::Message(Message::Binary(bytes)) => println!("{} bytes", bytes.len()),
            Event::Error(e) => eprintln!("error: {e}"),
            Event::Close {
                code,
                reason,
                was_clean,
            } => {
                println!("closed: {code} {reason:?} clean={was_clean}")
            }
        }
    }
    Ok(())
}
