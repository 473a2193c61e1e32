//! duplex's push service inside an axum 0.8 application: the app keeps its
//! own routes, and `/push` is the hub (topics by WebSocket and `POST`,
//! `/push/metrics`, `/push/healthz`), served by axum's own `serve`.
//!
//! ```text
//! cargo run -p duplex-hub --example axum_push -- 127.0.0.1:9000
//! duplex connect ws://127.0.0.1:9000/push/topics/news       # a subscriber
//! curl -d 'hello' http://127.0.0.1:9000/push/topics/news      # a publisher
//! ```

use axum::Router;
use axum::routing::get;
use duplex_hub::{Hub, HubConfig, HubService};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9000".into());
    let hub = Hub::new(HubConfig::default());
    let app = Router::new()
        .route(
            "/",
            get(|| async { "an axum app with duplex's push service at /push\n" }),
        )
        .nest_service("/push", HubService::new(hub));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
