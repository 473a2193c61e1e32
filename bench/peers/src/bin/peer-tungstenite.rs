//! Echo server on `tokio-tungstenite`, single-threaded. See the crate docs of
//! `bench-peers` for the contract every peer keeps.
//!
//! tungstenite answers pings and close frames by itself: the reply is queued and
//! flushed by the next read, which this loop always makes.

use bench_peers::MAX_MESSAGE;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

async fn handle(stream: TcpStream) {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            return;
        }
    }
}

fn main() {
    bench_peers::serve(handle)
}
