//! [`Subscription`], a raw subscriber's end of its queue, and
//! `Membership`, a place in a topic that is given up when dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use tokio::sync::mpsc;

use super::Hub;
use super::delivery::{Delivery, Queued};
use super::write_through::WriteThrough;
use crate::error::RecvError;

/// A place in a topic; leaving is dropping it.
#[derive(Debug)]
pub(crate) struct Membership {
    pub(super) hub: Hub,
    pub(super) topic: Arc<str>,
    pub(super) id: u64,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.hub.leave(&self.topic, self.id);
    }
}

/// One subscriber's membership of a topic; leaving is dropping it.
#[derive(Debug)]
pub struct Subscription {
    pub(super) membership: Membership,
    pub(super) rx: mpsc::Receiver<Queued>,
    /// Set, before the queue closes, when it overflowed.
    pub(super) lagged: Arc<AtomicBool>,
    /// Set, before the queue closes, over a gap.
    pub(super) lost: Arc<AtomicBool>,
}

impl Subscription {
    /// The topic.
    pub fn topic(&self) -> &str {
        &self.membership.topic
    }

    /// The next message published to the topic, shared with every other
    /// subscriber: send its [`broadcast`](Delivery::broadcast) with
    /// [`WebSocket::send_broadcast`](duplex_ws::WebSocket::send_broadcast).
    pub async fn recv(&mut self) -> Result<Arc<Delivery>, RecvError> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`recv`](Self::recv) for code that polls.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Arc<Delivery>, RecvError>> {
        // Only the queue is waited on (no `Notify` registered and dropped
        // for every message): the subscriber's removal closes it, and what
        // was queued before comes first.
        loop {
            match ready!(self.rx.poll_recv(cx)) {
                Some(Queued::Message(delivery)) => return Poll::Ready(Ok(delivery)),
                // Raw subscribers do not watch presence, nor get gaps.
                Some(Queued::Presence(_) | Queued::Gap(_)) => {}
                None if self.lost.load(Ordering::Acquire) => {
                    return Poll::Ready(Err(RecvError::Lost));
                }
                None if self.lagged.load(Ordering::Acquire) => {
                    return Poll::Ready(Err(RecvError::Lagged(
                        self.membership.hub.inner.config.queue,
                    )));
                }
                None => return Poll::Ready(Err(RecvError::Closed)),
            }
        }
    }

    /// Lets the topic's publishers write to `direct` themselves while it
    /// is idle (see [`WriteThrough`]).
    pub(crate) fn attach(&self, direct: &Arc<dyn WriteThrough>) {
        let id = self.membership.id;
        self.membership
            .hub
            .with_existing(&self.membership.topic, |topic| {
                if let Some(subscriber) = topic.subscribers.get_mut(&id) {
                    subscriber.direct = Some(Arc::clone(direct));
                }
            });
    }

    /// A message already queued, without waiting, to send what piled up in
    /// one write. `None` when nothing is queued, or when the subscription
    /// ended ([`recv`](Self::recv) says why).
    pub fn try_recv(&mut self) -> Option<Arc<Delivery>> {
        loop {
            match self.rx.try_recv().ok()? {
                Queued::Message(delivery) => return Some(delivery),
                Queued::Presence(_) | Queued::Gap(_) => {}
            }
        }
    }
}
