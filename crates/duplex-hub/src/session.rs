//! A topic subscriber's WebSocket: messages published to the topic go out,
//! messages it sends are published to the topic. What the hub's queues,
//! slow consumers and send timeout mean for one connection lives here, and
//! so does what its token allows once it is connected.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, ready};

use duplex_ws::{CloseCode, Event, Fanout, ServerStream, TrySend, WebSocket};
use futures_util::task::AtomicWaker;
use futures_util::{Sink, Stream};

use crate::auth::PUBLISH_NOT_ALLOWED;
use crate::expiry::Expiry;
use crate::hub::{Delivery, Hub, RecvError, Subscription, WriteThrough};

/// The close code of a raw subscriber whose topic lost messages for good
/// (Redis lost them, or trimmed them before this node could fetch them):
/// it has no offsets to be told of the gap by, so it is closed, and a
/// client that reconnects knows to read the state it missed elsewhere.
/// In the private range (RFC 6455 §7.4.2), as no registered code says it.
pub(crate) const MESSAGES_LOST: u16 = 4001;

/// The slow-consumer rule, for raw and duplex.v1 subscribers alike: one a
/// whole queue behind is closed with 1008 "slow consumer" rather than let
/// the publisher wait or memory grow.
pub(crate) const SLOW_CONSUMER: (CloseCode, &str) = (CloseCode::POLICY_VIOLATION, "slow consumer");

/// What a connection's token lets it do on its topic, decided at the
/// upgrade: `None` when the service checks no tokens.
pub(crate) struct Rights {
    /// Whether its messages may be published.
    pub(crate) publish: bool,
    /// When the token expires.
    pub(crate) expiry: Expiry,
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
///
/// The WebSocket is shared with the topic's publishers ([`Direct`]): while
/// it is idle they write to it themselves, and this task wakes only for
/// what they could not finish, what queued up while it was busy, and the
/// subscriber's own frames.
pub(crate) async fn run(
    ws: WebSocket<ServerStream>,
    mut subscription: Subscription,
    hub: Hub,
    rights: Option<Rights>,
) {
    let _open = Open::new(&hub);
    let (publish, mut expiry) = match rights {
        Some(Rights { publish, expiry }) => (publish, expiry),
        None => (true, Expiry::never()),
    };
    let topic = subscription.topic().to_owned();
    // Only over plain TCP: a TLS stream may keep bytes that a write
    // accepted until it is flushed, which only this task would do.
    let plain = matches!(ws.get_ref(), ServerStream::Tcp(_));
    let direct = Arc::new(Direct::new(ws));
    if plain {
        subscription.attach(&(Arc::clone(&direct) as Arc<dyn WriteThrough>));
    }
    let queue = hub.config().queue;
    let mut closing = false;
    loop {
        tokio::select! {
            // In this order, not at random: a wake-up then polls the
            // socket and the queue, and not the token's timer.
            biased;
            event = direct.next() => match event {
                // Nothing more is published once the close has begun.
                Some(Event::Message(_)) if closing => {}
                Some(Event::Message(_)) if !publish => {
                    tracing::info!(topic, "closing a subscriber that may not publish");
                    closing = true;
                    direct.close(CloseCode::POLICY_VIOLATION, PUBLISH_NOT_ALLOWED).await;
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
            received = direct.take(&mut subscription, queue), if !closing => match received {
                Ok(()) => {
                    // What was queued is in the connection's output, each
                    // message compressed once for every subscriber that can
                    // share it. A flush fails only once the connection is
                    // closing; its Close event follows from `next`.
                    let timeout = hub.config().send_timeout;
                    if !within(timeout, direct.flush()).await {
                        tracing::info!(topic, ?timeout, "dropping a subscriber that stopped reading");
                        hub.metrics().lagged_closed();
                        return;
                    }
                }
                Err(RecvError::Lagged(queue)) => {
                    tracing::info!(topic, queue, "closing a slow subscriber");
                    closing = true;
                    direct.close(SLOW_CONSUMER.0, SLOW_CONSUMER.1).await;
                }
                Err(RecvError::Lost) => {
                    tracing::info!(topic, "closing a subscriber: messages of its topic were lost");
                    closing = true;
                    direct.close(CloseCode(MESSAGES_LOST), "messages lost").await;
                }
                Err(RecvError::Closed) => {
                    closing = true;
                    direct.close(CloseCode::GOING_AWAY, "").await;
                }
            },
            () = expiry.fired(), if !closing => {
                tracing::info!(topic, "closing a subscriber whose token expired");
                closing = true;
                direct.close(Expiry::CODE, Expiry::REASON).await;
            }
        }
    }
}

/// A raw subscriber's WebSocket, shared by its session task and the
/// topic's publishers.
///
/// A publisher that finds it idle (nothing queued for it, nothing in its
/// output) writes the message to it at once, from the publishing task, as
/// uWebSockets' publish does: fanning a message out to ten thousand
/// subscribers then costs ten thousand writes, not ten thousand task
/// wake-ups, polls and writes. Otherwise the message goes through the
/// subscriber's queue as before. Order holds because both happen under the
/// lock: the session takes from the queue and puts into the output in one
/// step, and a publisher writes only while both are empty.
///
/// The lock is never held across an await: only inside one poll of the
/// session, or one non-blocking write of a publisher (which only tries it).
#[derive(Debug)]
pub(crate) struct Direct {
    ws: Mutex<WebSocket<ServerStream>>,
    /// The session task, for a publisher whose write the socket did not
    /// take whole: the task writes the rest.
    task: AtomicWaker,
}

impl Direct {
    fn new(ws: WebSocket<ServerStream>) -> Direct {
        Direct {
            ws: Mutex::new(ws),
            task: AtomicWaker::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, WebSocket<ServerStream>> {
        // A panic under the lock leaves a WebSocket whose state is still
        // its own (every step keeps it consistent): go on with it.
        self.ws.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection's next event; writes what is queued on the way.
    async fn next(&self) -> Option<Event> {
        std::future::poll_fn(|cx| {
            self.task.register(cx.waker());
            Pin::new(&mut *self.lock()).poll_next(cx)
        })
        .await
    }

    /// Takes the next queued delivery and what else is queued behind it
    /// (a queue's worth at most) into the connection's output, under one
    /// hold of the lock. Once the connection is closing they are dropped.
    async fn take(&self, subscription: &mut Subscription, queue: usize) -> Result<(), RecvError> {
        std::future::poll_fn(|cx| {
            let mut ws = self.lock();
            // Room first, so that nothing is taken that cannot be put.
            let open = ready!(Pin::new(&mut *ws).poll_ready(cx)).is_ok();
            let first = ready!(subscription.poll_recv(cx))?;
            if open {
                let _ = ws.start_send_broadcast(first.broadcast());
                for _ in 1..queue {
                    let Some(next) = subscription.try_recv() else {
                        break;
                    };
                    let _ = ws.start_send_broadcast(next.broadcast());
                }
            }
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// Writes everything queued.
    async fn flush(&self) -> Result<(), duplex_ws::Error> {
        std::future::poll_fn(|cx| Pin::new(&mut *self.lock()).poll_flush(cx)).await
    }

    /// Starts the closing handshake; `next` finishes it.
    async fn close(&self, code: CloseCode, reason: &str) {
        // Polled with a new `close_with` each time: once the Close is
        // queued, it returns at once, and `next` writes what is left.
        let _ = std::future::poll_fn(|cx| {
            let mut ws = self.lock();
            std::pin::pin!(ws.close_with(code, reason)).poll(cx)
        })
        .await;
    }
}

impl WriteThrough for Direct {
    /// From a publisher: sends `delivery` if the subscriber is idle.
    /// `false`: it was not, nothing was done, queue it.
    fn try_send(&self, delivery: &Delivery) -> bool {
        let Ok(mut ws) = self.ws.try_lock() else {
            return false;
        };
        match ws.try_send_broadcast(delivery.broadcast()) {
            TrySend::Sent => true,
            TrySend::Partly => {
                drop(ws);
                self.task.wake();
                true
            }
            TrySend::Busy => false,
        }
    }
}

/// Whether `write` finished within `timeout` (its own error means the
/// connection is closing; its Close event follows).
///
/// Nearly every write completes at once, into the socket's buffer: it is
/// polled once before a timer is armed, so that only a write that waits
/// pays for one. Arming a timer for every delivery (insert into and remove
/// from the runtime's timer wheel, under its lock) was a visible share of
/// the cost of fanning a message out to thousands of subscribers.
pub(crate) async fn within(
    timeout: std::time::Duration,
    write: impl Future<Output = Result<(), duplex_ws::Error>>,
) -> bool {
    let mut write = std::pin::pin!(write);
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    if first.is_ready() {
        return true;
    }
    tokio::time::timeout(timeout, write).await.is_ok()
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use duplex_ws::{Config, Message, Role};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::HubConfig;

    /// A server WebSocket over loopback TCP and the client at its other end.
    async fn pair() -> (WebSocket<ServerStream>, WebSocket<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let config = Config::default();
        let server = WebSocket::from_raw(
            ServerStream::Tcp(accepted.unwrap().0),
            Role::Server,
            &config,
        );
        (
            server,
            WebSocket::from_raw(client.unwrap(), Role::Client, &config),
        )
    }

    async fn message(client: &mut WebSocket<TcpStream>) -> Message {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), client.next()).await {
                Ok(Some(Event::Message(m))) => return m,
                Ok(Some(Event::Open)) => {}
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_publisher_writes_to_an_idle_subscriber_without_its_task() {
        let hub = Hub::new(HubConfig::default());
        let (server, mut client) = pair().await;
        let subscription = hub.subscribe("t").unwrap();
        let direct = Arc::new(Direct::new(server));
        subscription.attach(&(Arc::clone(&direct) as Arc<dyn WriteThrough>));
        // No session task runs: only the publisher can have written it.
        hub.publish("t", Message::from("first")).await.unwrap();
        assert_eq!(message(&mut client).await, Message::from("first"));
        assert_eq!(direct.lock().buffered_amount(), 0);
    }

    #[tokio::test]
    async fn a_busy_subscriber_gets_its_messages_through_the_queue_in_order() {
        let hub = Hub::new(HubConfig::default());
        let (server, mut client) = pair().await;
        let mut subscription = hub.subscribe("t").unwrap();
        let direct = Arc::new(Direct::new(server));
        subscription.attach(&(Arc::clone(&direct) as Arc<dyn WriteThrough>));
        // Something of its own waits in its output: publishers must queue.
        direct
            .lock()
            .start_send_broadcast(&duplex_ws::Broadcast::new(Message::from("own")))
            .unwrap();
        hub.publish("t", Message::from("queued")).await.unwrap();
        // Its own goes out; a publish while the queue holds one is queued
        // behind it, even though the output is empty now.
        direct.flush().await.unwrap();
        hub.publish("t", Message::from("behind")).await.unwrap();
        assert_eq!(message(&mut client).await, Message::from("own"));
        direct.take(&mut subscription, 16).await.unwrap();
        direct.flush().await.unwrap();
        assert_eq!(message(&mut client).await, Message::from("queued"));
        assert_eq!(message(&mut client).await, Message::from("behind"));
        assert!(subscription.try_recv().is_none());
    }
}
