//! A topic subscriber's WebSocket: messages published to the topic go out,
//! messages it sends are published to the topic. What the hub's queues,
//! slow consumers and send timeout mean for one connection lives here, and
//! so does what its token allows once it is connected.

use std::pin::Pin;

use duplex::{CloseCode, Event, ServerStream, WebSocket};
use tokio::time::Sleep;

use crate::auth::{PUBLISH_NOT_ALLOWED, TOKEN_EXPIRED};
use crate::hub::{Hub, RecvError, Subscription};

/// What a connection's token lets it do on its topic, decided at the
/// upgrade: `None` when the service checks no tokens.
pub(crate) struct Rights {
    /// Whether its messages may be published.
    pub(crate) publish: bool,
    /// Fires when the token expires. Boxed: a subscriber without a token
    /// should not pay for a timer in its future.
    pub(crate) expiry: Pin<Box<Sleep>>,
}

/// Runs a subscriber's connection: messages published to the topic go
/// out, and messages it sends are published to the topic (everyone
/// subscribed gets them, the sender included). Ends on close (the server
/// core closes it with 1001 when it shuts down), when the subscriber falls
/// behind by a whole queue (1008, "slow consumer"), or, dropped without a
/// closing handshake, when one batch takes longer than the hub's
/// `send_timeout` to write (a peer that stopped reading). With `rights`, a
/// message it may not publish closes it with 1008 "publish not allowed"
/// (unpublished), and its token's expiry with 1008 "token expired".
pub(crate) async fn run(
    mut ws: WebSocket<ServerStream>,
    mut subscription: Subscription,
    hub: Hub,
    mut rights: Option<Rights>,
) {
    let _open = Open::new(&hub);
    let topic = subscription.topic().to_owned();
    let mut closing = false;
    loop {
        tokio::select! {
            event = ws.next() => match event {
                // Nothing more is published once the close has begun.
                Some(Event::Message(_)) if closing => {}
                Some(Event::Message(_)) if rights.as_ref().is_some_and(|r| !r.publish) => {
                    tracing::info!(topic, "closing a subscriber that may not publish");
                    closing = true;
                    let _ = ws.close_with(CloseCode::POLICY_VIOLATION, PUBLISH_NOT_ALLOWED).await;
                }
                Some(Event::Message(message)) => {
                    // Published, then delivered through the subscription
                    // like everyone's: one order for every subscriber.
                    // Awaited (Redis assigns the offset), so that one
                    // connection's messages keep their order.
                    if let Err(e) = hub.publish(&topic, message).await {
                        tracing::info!(topic, error = %e, "a subscriber's message was not published");
                    }
                }
                Some(Event::Error(e)) => tracing::info!(error = %e, "connection failed"),
                Some(Event::Open | Event::Close { .. }) => {}
                None => break,
            },
            received = subscription.recv(), if !closing => match received {
                Ok(delivery) => {
                    let timeout = hub.config().send_timeout;
                    // What else is queued goes out in the same write (a
                    // queue's worth at most). Each message is compressed
                    // once for every subscriber that can share it. Fails
                    // only once the connection is closing; its Close event
                    // follows from `next`.
                    let batch = async {
                        ws.feed_broadcast(delivery.broadcast()).await?;
                        for _ in 1..hub.config().queue {
                            let Some(next) = subscription.try_recv() else { break };
                            ws.feed_broadcast(next.broadcast()).await?;
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
            () = expired(&mut rights), if !closing => {
                tracing::info!(topic, "closing a subscriber whose token expired");
                closing = true;
                let _ = ws.close_with(CloseCode::POLICY_VIOLATION, TOKEN_EXPIRED).await;
            }
        }
    }
}

/// Counts an open topic connection in `/metrics` for as long as it lives.
pub(crate) struct Open(Hub);

impl Open {
    pub(crate) fn new(hub: &Hub) -> Open {
        hub.metrics().connection_opened();
        Open(hub.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.metrics().connection_closed();
    }
}

/// When the token of `rights` expires; never without one.
async fn expired(rights: &mut Option<Rights>) {
    match rights {
        Some(rights) => rights.expiry.as_mut().await,
        None => std::future::pending().await,
    }
}
