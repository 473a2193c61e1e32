//! A topic WebSocket shared by its session and the topic's publishers
//! ([`Direct`]): the one place that locks it, for the session's reads,
//! batches, flushes and close, and for a publisher's corked write.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Poll, ready};

use duplex_ws::{Broadcast, CloseCode, Event, Fanout, Message, ServerStream, TrySend, WebSocket};
use futures_util::task::AtomicWaker;
use futures_util::{Sink, Stream};

use crate::hub::{Delivery, RecvError, Subscription, WriteThrough};

/// A topic subscriber's WebSocket, shared by its session task and the
/// topic's publishers.
///
/// A publisher that finds nothing queued for it in the hub puts the
/// message into its output itself, and the topic's flush pass writes it
/// (see the hub's `write_through`): fanning a message out to ten thousand
/// subscribers then costs ten thousand writes, not ten thousand task
/// wake-ups, polls and writes, and messages published before the pass
/// share its write. Otherwise the message goes through the subscriber's
/// queue. Order holds because both happen under the lock: the session
/// takes from the queue and puts into the output in one step, and a
/// publisher writes into the output only while the queue is empty.
///
/// The lock is never held across an await: only inside one poll of the
/// session, or one non-blocking step of a publisher or the pass (which
/// only tries it).
#[derive(Debug)]
pub(crate) struct Direct {
    ws: Mutex<WebSocket<ServerStream>>,
    /// The session task, for a pass whose write the socket did not take
    /// whole: the task writes the rest.
    task: AtomicWaker,
    /// The output holds messages a publisher put there, and the socket is
    /// in its topic's next flush pass.
    corked: AtomicBool,
    /// A pass left bytes unwritten: the task is to flush them, under the
    /// send timeout (and a TLS stream may hold what its write accepted
    /// until it is flushed).
    unflushed: AtomicBool,
}

impl Direct {
    pub(super) fn new(ws: WebSocket<ServerStream>) -> Direct {
        Direct {
            ws: Mutex::new(ws),
            task: AtomicWaker::new(),
            corked: AtomicBool::new(false),
            unflushed: AtomicBool::new(false),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, WebSocket<ServerStream>> {
        // A panic under the lock leaves a WebSocket whose state is still
        // its own (every step keeps it consistent): go on with it.
        self.ws.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection's next event; writes what is queued on the way.
    pub(super) async fn next(&self) -> Option<Event> {
        std::future::poll_fn(|cx| {
            self.task.register(cx.waker());
            Pin::new(&mut *self.lock()).poll_next(cx)
        })
        .await
    }

    /// Takes the next queued delivery and what else is queued behind it
    /// (a queue's worth at most) into the connection's output, under one
    /// hold of the lock. Once the connection is closing they are dropped.
    /// Returns at once, taking nothing, when a flush pass left bytes: the
    /// session then writes them as it writes its own, under the send
    /// timeout, so that a subscriber that stopped reading is dropped
    /// whoever filled its output.
    pub(super) async fn take(
        &self,
        subscription: &mut Subscription,
        queue: usize,
    ) -> Result<(), RecvError> {
        std::future::poll_fn(|cx| {
            if self.unflushed.swap(false, Ordering::AcqRel) {
                return Poll::Ready(Ok(()));
            }
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

    /// Puts `message` into the connection's output once there is room.
    pub(super) async fn feed(&self, message: Message) -> Result<(), duplex_ws::Error> {
        let mut message = Some(message);
        std::future::poll_fn(|cx| {
            let mut ws = self.lock();
            ready!(Pin::new(&mut *ws).poll_ready(cx))?;
            let message = message.take().expect("polled after it completed");
            Poll::Ready(Pin::new(&mut *ws).start_send(message))
        })
        .await
    }

    /// [`feed`](Self::feed) for a message shared by many connections.
    pub(super) async fn feed_broadcast(
        &self,
        broadcast: &Broadcast,
    ) -> Result<(), duplex_ws::Error> {
        std::future::poll_fn(|cx| {
            let mut ws = self.lock();
            ready!(Pin::new(&mut *ws).poll_ready(cx))?;
            Poll::Ready(ws.start_send_broadcast(broadcast))
        })
        .await
    }

    /// Writes everything queued.
    pub(super) async fn flush(&self) -> Result<(), duplex_ws::Error> {
        std::future::poll_fn(|cx| Pin::new(&mut *self.lock()).poll_flush(cx)).await
    }

    /// Starts the closing handshake; `next` finishes it.
    pub(super) async fn close(&self, code: CloseCode, reason: &str) {
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
    fn try_cork(&self, delivery: &Delivery) -> Option<bool> {
        // Held by its task or the pass for one step: queue this one.
        let mut ws = self.ws.try_lock().ok()?;
        if !ws.try_queue_broadcast(delivery.broadcast()) {
            return None;
        }
        Some(!self.corked.swap(true, Ordering::AcqRel))
    }

    fn write_corked(&self) {
        let mut ws = self.lock();
        self.corked.store(false, Ordering::Release);
        if ws.try_write_queued() == TrySend::Partly {
            drop(ws);
            self.unflushed.store(true, Ordering::Release);
            self.task.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use std::sync::Arc;

    use duplex_ws::{Config, Message, Role};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::{Hub, HubConfig};

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
        // No session task runs: only the publisher and the pass can have
        // written it.
        hub.publish("t", Message::from("first")).await.unwrap();
        assert_eq!(message(&mut client).await, Message::from("first"));
        assert_eq!(direct.lock().buffered_amount(), 0);
    }

    #[tokio::test]
    async fn publishes_before_the_flush_pass_share_its_write() {
        let hub = Hub::new(HubConfig::default());
        let (server, mut client) = pair().await;
        let subscription = hub.subscribe("t").unwrap();
        let direct = Arc::new(Direct::new(server));
        subscription.attach(&(Arc::clone(&direct) as Arc<dyn WriteThrough>));
        for m in ["a", "b", "c"] {
            hub.publish("t", Message::from(m)).await.unwrap();
        }
        // Corked, not written: the pass has not come round.
        assert_eq!(direct.lock().buffered_amount(), 9);
        for m in ["a", "b", "c"] {
            assert_eq!(message(&mut client).await, Message::from(m));
        }
        assert_eq!(direct.lock().buffered_amount(), 0);
    }

    #[tokio::test]
    // The publish under the held socket only tries its lock: no deadlock.
    #[allow(clippy::await_holding_lock)]
    async fn a_busy_subscriber_gets_its_messages_through_the_queue_in_order() {
        let hub = Hub::new(HubConfig::default());
        let (server, mut client) = pair().await;
        let mut subscription = hub.subscribe("t").unwrap();
        let direct = Arc::new(Direct::new(server));
        subscription.attach(&(Arc::clone(&direct) as Arc<dyn WriteThrough>));
        hub.publish("t", Message::from("corked")).await.unwrap();
        {
            // Its task holds the socket: the publisher queues.
            let _held = direct.lock();
            hub.publish("t", Message::from("queued")).await.unwrap();
        }
        // Something waits in its queue: the next is queued behind it,
        // though the socket is free now.
        hub.publish("t", Message::from("behind")).await.unwrap();
        assert_eq!(message(&mut client).await, Message::from("corked"));
        direct.take(&mut subscription, 16).await.unwrap();
        direct.flush().await.unwrap();
        assert_eq!(message(&mut client).await, Message::from("queued"));
        assert_eq!(message(&mut client).await, Message::from("behind"));
        assert!(subscription.try_recv().is_none());
    }
}
