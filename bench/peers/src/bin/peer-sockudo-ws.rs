//! Echo server on `sockudo-ws` (the WebSocket crate of Sockudo; features `simd` and
//! `tokio-runtime`, no permessage-deflate since the load generator offers none). See
//! the crate docs of `bench-peers` for the contract every peer keeps.
//!
//! The opening handshake is the shared raw one (`bench_peers::raw_handshake`), as
//! sockudo-ws's own `simple_echo` example does its own by hand; the stream then runs on
//! the `TcpStream` directly through the library's high-level `WebSocketStream`
//! (`Stream` + `Sink`), which answers pings and close frames by itself and reassembles
//! fragments. The library's defaults stay as they are (write corking, keepalive pings,
//! 120 s idle timeout) except the size limits.

use bench_peers::MAX_MESSAGE;
use futures_util::{SinkExt, StreamExt};
use sockudo_ws::{Config, Message, WebSocketStream};
use tokio::net::TcpStream;

async fn handle(mut stream: TcpStream) {
    match bench_peers::raw_handshake(&mut stream).await {
        // A client must wait for the 101 before sending frames (RFC 6455 §4.1).
        Ok(rest) if rest.is_empty() => {}
        _ => return,
    }
    let config = Config::builder().max_payload_length(MAX_MESSAGE).build();
    let mut ws = WebSocketStream::server(stream, config);
    while let Some(Ok(msg)) = ws.next().await {
        let go_on = match msg {
            Message::Text(_) | Message::Binary(_) => ws.send(msg).await.is_ok(),
            // The library has answered it.
            Message::Close(_) => false,
            Message::Ping(_) | Message::Pong(_) => true,
        };
        if !go_on {
            return;
        }
    }
}

fn main() {
    // quanta calibrates its clock on first use (up to 200 ms): not inside the runtime.
    sockudo_ws::init_clock();
    bench_peers::serve(handle)
}
