//! Echo server on `tokio-websockets` (features `server` and `ring`, whose SHA-1 is the
//! fastest it offers; (un)masking uses SSE2/AVX2/AVX-512, chosen at run time),
//! single-threaded. See the crate docs of `bench-peers` for the contract every peer
//! keeps.
//!
//! tokio-websockets answers pings and close frames by itself.

use bench_peers::MAX_MESSAGE;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_websockets::{Config, Limits, ServerBuilder};

async fn handle(stream: TcpStream) {
    let Ok((_request, mut ws)) = ServerBuilder::new()
        .config(Config::default().frame_size(MAX_MESSAGE))
        .limits(Limits::default().max_payload_len(Some(MAX_MESSAGE)))
        .accept(stream)
        .await
    else {
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
