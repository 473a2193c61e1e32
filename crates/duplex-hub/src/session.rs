//! A topic subscriber's WebSocket: messages published to the topic go out,
//! messages it sends are published to the topic. What the hub's queues,
//! slow consumers and send timeout mean for one connection lives here.

use duplex::{CloseCode, Event, ServerStream, WebSocket};

use crate::hub::{Hub, RecvError, Subscription};

/// Runs a subscriber's connection: messages published to the topic go
/// out, and messages it sends are published to the topic (everyone
/// subscribed gets them, the sender included). Ends on close (the server
/// core closes it with 1001 when it shuts down), when the subscriber falls
/// behind by a whole queue (1008, "slow consumer"), or, dropped without a
/// closing handshake, when one batch takes longer than the hub's
/// `send_timeout` to write (a peer that stopped reading).
pub(crate) async fn run(mut ws: WebSocket<ServerStream>, mut subscription: Subscription, hub: Hub) {
    let _open = Open::new(&hub);
    let topic = subscription.topic().to_owned();
    let mut closing = false;
    loop {
        tokio::select! {
            event = ws.next() => match event {
                Some(Event::Message(message)) => {
                    // Published, then delivered through the subscription
                    // like everyone's: one order for every subscriber.
                    let _ = hub.publish(&topic, message);
                }
                Some(Event::Error(e)) => tracing::info!(error = %e, "connection failed"),
                Some(Event::Open | Event::Close { .. }) => {}
                None => break,
            },
            received = subscription.recv(), if !closing => match received {
                Ok(broadcast) => {
                    let timeout = hub.config().send_timeout;
                    // What else is queued goes out in the same write (a
                    // queue's worth at most). Each message is compressed
                    // once for every subscriber that can share it. Fails
                    // only once the connection is closing; its Close event
                    // follows from `next`.
                    let batch = async {
                        ws.feed_broadcast(&broadcast).await?;
                        for _ in 1..hub.config().queue {
                            let Some(next) = subscription.try_recv() else { break };
                            ws.feed_broadcast(&next).await?;
                        }
                        ws.flush().await
                    };
                    if tokio::time::timeout(timeout, batch).await.is_err() {
                        tracing::info!(topic, ?timeout, "dropping a subscriber that stopped reading");
                        hub.metrics().lagged_closed();
                        return;
                    }
                }
                Err(RecvError::Lagged(queue)) => {
                    tracing::info!(topic, queue, "closing a slow subscriber");
                    closing = true;
                    let _ = ws.close_with(CloseCode::POLICY_VIOLATION, "slow consumer").await;
                }
                Err(RecvError::Closed) => {
                    closing = true;
                    let _ = ws.close_with(CloseCode::GOING_AWAY, "").await;
                }
            },
        }
    }
}

/// Counts an open topic connection in `/metrics` for as long as it lives.
struct Open(Hub);

impl Open {
    fn new(hub: &Hub) -> Open {
        hub.metrics().connection_opened();
        Open(hub.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.metrics().connection_closed();
    }
}
