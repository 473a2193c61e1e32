//! Echo server on `fastwebsockets`, single-threaded. See the crate docs of
//! `bench-peers` for the contract every peer keeps.
//!
//! The opening handshake is the shared raw one (`bench_peers::raw_handshake`) rather
//! than the `upgrade` feature, so the WebSocket sits directly on the `TcpStream` instead
//! of hyper's boxed `Upgraded` IO: the fastest way to run fastwebsockets. Pings and
//! close frames are answered by the library (`auto_pong`, `auto_close`), and fragments
//! are reassembled by its `FragmentCollector`.

use bench_peers::MAX_MESSAGE;
use fastwebsockets::{FragmentCollector, OpCode, Role, WebSocket};
use tokio::net::TcpStream;

async fn handle(mut stream: TcpStream) {
    match bench_peers::raw_handshake(&mut stream).await {
        // A client must wait for the 101 before sending frames (RFC 6455 §4.1).
        Ok(rest) if rest.is_empty() => {}
        _ => return,
    }
    let mut ws = WebSocket::after_handshake(stream, Role::Server);
    ws.set_auto_close(true);
    ws.set_auto_pong(true);
    ws.set_max_message_size(MAX_MESSAGE);
    let mut ws = FragmentCollector::new(ws);
    while let Ok(frame) = ws.read_frame().await {
        let go_on = match frame.opcode {
            // auto_close has already answered it.
            OpCode::Close => false,
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await.is_ok(),
            _ => true,
        };
        if !go_on {
            return;
        }
    }
}

fn main() {
    bench_peers::serve(handle)
}
