//! A chat room in an axum 0.8 application: every message one member sends,
//! every member gets. The WebSocket comes from duplex's extractor, so the
//! room has duplex's limits and permessage-deflate, over HTTP/1.1 and,
//! through axum's HTTP/2, RFC 8441.
//!
//! ```text
//! cargo run -p duplex-ws --features axum --example axum_chat -- 127.0.0.1:9000
//! ```

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::any;
use duplex_ws::axum::WebSocketUpgrade;
use duplex_ws::{Config, DeflateConfig, Event, Message};
use tokio::sync::broadcast;

type Room = broadcast::Sender<Message>;

async fn chat(upgrade: WebSocketUpgrade, State(room): State<Room>) -> Response {
    let mut config = Config::server();
    config.deflate = Some(DeflateConfig::default());
    config.max_message_size = 64 << 10;
    upgrade.config(config).on_upgrade(move |mut ws| async move {
        let mut inbox = room.subscribe();
        loop {
            tokio::select! {
                event = ws.next() => match event {
                    Some(Event::Message(message)) => { let _ = room.send(message); }
                    Some(_) => {}
                    None => break,
                },
                Ok(message) = inbox.recv() => {
                    if ws.send(message).await.is_err() {
                        break;
                    }
                }
            }
        }
    })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".into());
    let (room, _) = broadcast::channel(256);
    // `any`, not `get`: over HTTP/2 a WebSocket is a CONNECT request.
    let app = Router::new().route("/chat", any(chat)).with_state(room);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on ws://{}/chat", listener.local_addr()?);
    axum::serve(listener, app).await
}
