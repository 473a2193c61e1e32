//! What a subscriber's queue carries: a [`Delivery`] (a message where it
//! stands in its topic's order, shared by every subscriber and encoded
//! once per form), presence events, gaps, and what a topic retains of a
//! delivery for resuming subscribers (charged to the history's bytes as
//! it holds them).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use duplex_ws::{Broadcast, Message};

// Tokio's clock, so that tests may move time.
use tokio::time::Instant;

/// A message of a topic as its subscribers get it: where it stands in the
/// topic's order, and the message, shared by every subscriber (and
/// compressed once for all of them).
#[derive(Debug)]
pub struct Delivery {
    pub(super) topic: Arc<str>,
    pub(super) epoch: Arc<str>,
    pub(super) offset: u64,
    broadcast: Broadcast,
    /// The message in a subscriber protocol's envelope (for duplex.v1, its
    /// `message` frame), made once for every subscriber that speaks it.
    wrapped: OnceLock<Broadcast>,
    /// The same envelope carrying a delta from the topic's message before
    /// (for subscriptions that asked for deltas), made once; `None` when
    /// it would not be smaller than `wrapped`.
    delta: OnceLock<Option<Broadcast>>,
    /// While the hub retains it: the hub's count of retained bytes, and
    /// what this delivery added to it for its frames (`RELEASED` once
    /// it is no longer retained).
    retained: OnceLock<Arc<AtomicUsize>>,
    frame_charged: AtomicUsize,
}

/// `Delivery::frame_charged` once the delivery left the history.
const RELEASED: usize = usize::MAX;

/// What keeping a message in the history costs besides its payload: the
/// delivery, its place in the history, the allocations' own headers.
pub(super) const RETAINED_OVERHEAD: usize = std::mem::size_of::<Delivery>()
    + std::mem::size_of::<Retained>()
    + 2 * std::mem::size_of::<usize>()
    + 64;

impl Delivery {
    pub(crate) fn new(topic: Arc<str>, epoch: Arc<str>, offset: u64, message: Message) -> Delivery {
        Delivery {
            topic,
            epoch,
            offset,
            broadcast: Broadcast::new(message),
            wrapped: OnceLock::new(),
            delta: OnceLock::new(),
            retained: OnceLock::new(),
            frame_charged: AtomicUsize::new(0),
        }
    }

    /// What it holds while retained: its payload, its wrapped and delta
    /// forms once made, and [`RETAINED_OVERHEAD`].
    pub(crate) fn held(&self) -> usize {
        let frame = match self.frame_charged.load(Ordering::Acquire) {
            RELEASED => 0,
            n => n,
        };
        self.bytes() + frame + RETAINED_OVERHEAD
    }

    /// Counts it in `bytes`, the hub's retained bytes, until
    /// [`release`](Self::release).
    pub(super) fn retain(&self, bytes: &Arc<AtomicUsize>) {
        if self.retained.set(Arc::clone(bytes)).is_ok() {
            bytes.fetch_add(self.held(), Ordering::Relaxed);
        }
    }

    /// No longer retained: what it added is taken off again.
    pub(super) fn release(&self) {
        let Some(bytes) = self.retained.get() else {
            return;
        };
        // A frame made from now on is not counted; one made before is.
        let frame = match self.frame_charged.swap(RELEASED, Ordering::AcqRel) {
            RELEASED => return,
            n => n,
        };
        bytes.fetch_sub(self.bytes() + frame + RETAINED_OVERHEAD, Ordering::Relaxed);
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The epoch its offset belongs to.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Its offset in the topic: one more than the message before it.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The message.
    pub fn message(&self) -> &Message {
        self.broadcast.message()
    }

    /// The message, to send with
    /// [`WebSocket::send_broadcast`](duplex_ws::WebSocket::send_broadcast).
    pub fn broadcast(&self) -> &Broadcast {
        &self.broadcast
    }

    /// The message in a subscriber protocol's envelope, which `wrap` makes
    /// the first time a subscriber asks; every later one shares it. The hub
    /// knows no envelope: the duplex.v1 session passes its `message` frame.
    /// One envelope per delivery: a hub serves one such protocol.
    pub(crate) fn wrapped(&self, wrap: impl FnOnce(&Delivery) -> Message) -> &Broadcast {
        let mut made = 0;
        let frame = self.wrapped.get_or_init(|| {
            let message = wrap(self);
            made = message.len();
            Broadcast::new(message)
        });
        self.charge(made);
        frame
    }

    /// The envelope with a delta from `base` instead of the payload, which
    /// `make` makes the first time a delta subscriber asks (`None` when a
    /// delta would not be smaller); every later one shares it. `base` is
    /// the topic's message before, at offset − 1 of the same epoch, which
    /// is the same message for every subscriber that asks.
    pub(crate) fn delta(
        &self,
        base: &Delivery,
        make: impl FnOnce(&Delivery, &Delivery) -> Option<Message>,
    ) -> Option<&Broadcast> {
        debug_assert!(base.offset + 1 == self.offset && base.epoch == self.epoch);
        let mut made = 0;
        let frame = self.delta.get_or_init(|| {
            let message = make(base, self)?;
            made = message.len();
            Some(Broadcast::new(message))
        });
        self.charge(made);
        frame.as_ref()
    }

    /// Retained, it holds a frame made for it as long as the history holds
    /// it: `made` bytes more are counted, unless it is no longer retained.
    fn charge(&self, made: usize) {
        let Some(bytes) = self.retained.get().filter(|_| made > 0) else {
            return;
        };
        let charged = self
            .frame_charged
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n != RELEASED).then_some(n + made)
            });
        if charged.is_ok() {
            bytes.fetch_add(made, Ordering::Relaxed);
        }
    }

    fn bytes(&self) -> usize {
        match self.message() {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
        }
    }
}

/// `message` in an allocation of its own size, for the history: a payload
/// that arrived as a slice of a larger buffer (hyper's read buffer for a
/// POST body, a connection's receive buffer for a WebSocket message)
/// would keep the whole buffer alive for as long as it is retained, and
/// the history's byte limit, which counts payloads, would not hold.
pub(crate) fn compacted(message: Message) -> Message {
    match message {
        Message::Text(t) => Message::Text(t.as_str().to_owned().into()),
        Message::Binary(b) => Message::Binary(bytes::Bytes::copy_from_slice(&b)),
    }
}

/// A duplex.v1 subscription as presence shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// The connection's id.
    pub client: Arc<str>,
    /// Its token's `sub`, if it came with one.
    pub user: Option<Arc<str>>,
}

/// A member joining or leaving a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PresenceEvent {
    pub(crate) topic: Arc<str>,
    pub(crate) joined: bool,
    pub(crate) member: Member,
}

/// Messages of a topic were lost for good (Redis lost them, or trimmed
/// them before this node could fill a gap): what follows comes after
/// `offset` of `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Gap {
    pub(crate) topic: Arc<str>,
    pub(crate) epoch: Arc<str>,
    pub(crate) offset: u64,
}

/// What a subscriber's queue carries.
#[derive(Debug, Clone)]
pub(crate) enum Queued {
    Message(Arc<Delivery>),
    Presence(Arc<PresenceEvent>),
    /// For duplex.v1 subscribers only: raw ones, which cannot be told, are
    /// closed instead ([`RecvError::Lost`]).
    Gap(Arc<Gap>),
}

/// A message a topic retains for resuming subscribers, and when it came.
#[derive(Debug)]
pub(super) struct Retained {
    pub(super) delivery: Arc<Delivery>,
    pub(super) at: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compacted_payload_no_longer_holds_the_buffer_it_came_in() {
        let sliced = || bytes::Bytes::from(vec![b'x'; 64 << 10]).slice(..100);
        // A slice, the buffer's only handle left, still holds all of it.
        let held = sliced().try_into_mut().expect("its only handle");
        assert_eq!((held.len(), held.capacity()), (100, 64 << 10));
        let Message::Binary(own) = compacted(Message::Binary(sliced())) else {
            unreachable!()
        };
        let own = own.try_into_mut().expect("its only handle");
        assert_eq!((&own[..], own.capacity()), (&[b'x'; 100][..], 100));
        assert_eq!(compacted(Message::from("héllo")), Message::from("héllo"));
    }
}
