//! A raw topic WebSocket (`/topics/{name}` without a subprotocol): the
//! topic's messages go out as they are, and what the subscriber sends is
//! published to the topic (everyone subscribed gets it, the sender
//! included). The topic's publishers put messages into its output
//! themselves while nothing is queued for it (`Direct`), and the topic's
//! flush pass writes them, so this task wakes only for what the pass could
//! not finish, what queued up while it was busy, and the subscriber's own
//! frames.

use std::sync::Arc;

use duplex_ws::{CloseCode, Message, ServerStream, WebSocket};

use super::{Direct, Protocol, SLOW_CONSUMER, Step, Timeout};
use crate::auth::PUBLISH_NOT_ALLOWED;
use crate::expiry::Expiry;
use crate::hub::{Hub, RecvError, Subscription, WriteThrough};

/// The close code of a raw subscriber whose topic lost messages for good
/// (its store lost them, or trimmed them before this node could fetch
/// them): it has no offsets to be told of the gap by, so it is closed, and
/// a client that reconnects knows to read the state it missed elsewhere.
/// In the private range (RFC 6455 §7.4.2), as no registered code says it.
pub(crate) const MESSAGES_LOST: (CloseCode, &str) = (CloseCode(4001), "messages lost");

/// The rule for a subscriber whose token does not let it publish: its
/// first message closes it with 1008 (unpublished).
const MAY_NOT_PUBLISH: (CloseCode, &str) = (CloseCode::POLICY_VIOLATION, PUBLISH_NOT_ALLOWED);

/// What a connection's token lets it do on its topic, decided at the
/// upgrade: `None` when the service checks no tokens.
pub(crate) struct Rights {
    /// Whether its messages may be published.
    pub(crate) publish: bool,
    /// When the token expires.
    pub(crate) expiry: Expiry,
}

/// Runs a raw subscriber's connection (see the module doc and
/// [`serve`](super::serve) for when it ends).
pub(crate) async fn run(
    ws: WebSocket<ServerStream>,
    subscription: Subscription,
    hub: Hub,
    rights: Option<Rights>,
) {
    let (publish, expiry) = match rights {
        Some(Rights { publish, expiry }) => (publish, expiry),
        None => (true, Expiry::never()),
    };
    let socket = Arc::new(Direct::new(ws));
    subscription.attach(&(Arc::clone(&socket) as Arc<dyn WriteThrough>));
    let raw = Raw {
        queue: hub.config().queue,
        hub: hub.clone(),
        subscription,
        publish,
    };
    super::serve(&socket, raw, hub, expiry).await;
}

struct Raw {
    hub: Hub,
    subscription: Subscription,
    queue: usize,
    publish: bool,
}

impl std::fmt::Display for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "topic {}", self.subscription.topic())
    }
}

impl Protocol for Raw {
    type Input = Result<(), RecvError>;

    async fn next(&mut self, socket: &Direct) -> Self::Input {
        socket.take(&mut self.subscription, self.queue).await
    }

    async fn input(&mut self, _: &Direct, _: Timeout, taken: Self::Input) -> Step {
        match taken {
            // What was queued is in the connection's output, each message
            // compressed once for every subscriber that can share it.
            Ok(()) => Step::Write,
            Err(RecvError::Lagged(_)) => Step::close(SLOW_CONSUMER, "a whole queue behind"),
            Err(RecvError::Lost) => Step::close(MESSAGES_LOST, "messages of its topic were lost"),
            Err(RecvError::Closed) => Step::close((CloseCode::GOING_AWAY, ""), "the hub closed"),
        }
    }

    async fn message(&mut self, _: &Direct, _: Timeout, message: Message) -> Step {
        if !self.publish {
            return Step::close(MAY_NOT_PUBLISH, "its token does not let it publish");
        }
        // Published, then delivered through the subscription like
        // everyone's: one order for every subscriber. Awaited (the store
        // assigns the offset), so that one connection's messages keep
        // their order.
        let topic = self.subscription.topic();
        if let Err(e) = self.hub.publish(topic, message).await {
            tracing::info!(topic, error = %e, "a subscriber's message was not published");
        }
        Step::Write
    }
}
