//! An echo server on duplex's server core: every message comes back.
//! Ctrl-C shuts it down, closing every WebSocket with 1001.
//!
//! ```text
//! cargo run -p duplex-ws --example echo_server -- 127.0.0.1:9000
//! ```

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".into());
    let server = duplex_ws::Server::bind(addr).await?;
    println!("listening on ws://{}", server.local_addr()?);
    let handle = server.handle();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        handle.shutdown();
    });
    server
        .serve(|mut ws| async move {
            while let Ok(Some(message)) = ws.recv().await {
                if ws.send(message).await.is_err() {
                    break;
                }
            }
        })
        .await
}
