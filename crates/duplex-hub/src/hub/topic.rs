//! One topic's state behind its own lock (subscribers, offsets, retained
//! history, presence members, the epoch) and the map of topics, locked only
//! to find, add or remove one; plus the expiry heap's entries.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

// Tokio's clock, so that tests may move time.
use tokio::time::Instant;

use super::delivery::{Delivery, Gap, Member, Queued, Retained};
use super::inbox::{Inbox, Offer};
use super::position::new_epoch;
use super::requester::Requester;
use super::write_through::{self, WriteThrough};
use crate::since::Since;

/// One topic behind its own lock.
pub(super) type Slot = Mutex<Topic>;

/// The map of topics, and how many each client made that exist.
#[derive(Debug, Default)]
pub(super) struct Topics {
    pub(super) map: HashMap<Arc<str>, Arc<Slot>>,
    pub(super) made_by: HashMap<Requester, usize>,
}

/// When a topic's oldest retained message expires (or expired by then:
/// the message may have gone since, for count or bytes; the sweep looks).
/// A topic is in the heap once at most (`Topic::scheduled`); an entry
/// whose topic went is dropped when it comes up.
#[derive(Debug)]
pub(super) struct Due {
    pub(super) at: Instant,
    pub(super) slot: std::sync::Weak<Slot>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Due) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Due) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    fn cmp(&self, other: &Due) -> std::cmp::Ordering {
        self.at
            .cmp(&other.at)
            .then_with(|| self.slot.as_ptr().cmp(&other.slot.as_ptr()))
    }
}

#[derive(Debug)]
pub(super) struct Topic {
    pub(super) name: Arc<str>,
    pub(super) subscribers: HashMap<u64, Subscriber>,
    /// The epoch: assigned here without a backplane; with one, the epoch
    /// of the last message delivered (to notice a lost one).
    pub(super) epoch: Arc<str>,
    /// The newest offset: assigned, or last delivered.
    pub(super) last: u64,
    /// Retained messages, oldest first (without a backplane).
    pub(super) history: VecDeque<Retained>,
    /// Local duplex.v1 subscriptions, for presence.
    pub(super) members: HashMap<u64, Member>,
    /// With a backplane: `epoch` and `last` are Redis's (a delivery came,
    /// or a duplex.v1 subscription read where Redis stands), so that a
    /// message that does not follow them is a gap.
    pub(super) synced: bool,
    /// Out of the map: whoever found it before must look again.
    pub(super) removed: bool,
    /// In the expiry heap.
    pub(super) scheduled: bool,
    /// Who made it, counted against its quota while it exists.
    pub(super) made_by: Option<Requester>,
}

#[derive(Debug)]
pub(super) struct Subscriber {
    pub(super) inbox: Inbox,
    /// Whether it wants join/leave events.
    pub(super) presence: bool,
    /// A duplex.v1 subscription, which is told of gaps; a raw one is
    /// removed over one.
    pub(super) v1: bool,
    /// A raw subscriber's WebSocket, which publishers write into while
    /// nothing is queued for it here.
    pub(super) direct: Option<Arc<dyn WriteThrough>>,
}

impl Topic {
    pub(super) fn new(name: Arc<str>) -> Topic {
        Topic {
            name,
            subscribers: HashMap::new(),
            epoch: new_epoch(),
            last: 0,
            history: VecDeque::new(),
            members: HashMap::new(),
            synced: false,
            removed: false,
            scheduled: false,
            made_by: None,
        }
    }

    /// Drops retained messages older than `ttl`.
    pub(super) fn expire(&mut self, now: Instant, ttl: Duration) {
        while let Some(front) = self.history.front() {
            if now.duration_since(front.at) < ttl {
                break;
            }
            self.pop_oldest();
        }
    }

    pub(super) fn pop_oldest(&mut self) {
        if let Some(oldest) = self.history.pop_front() {
            oldest.delivery.release();
        }
    }

    pub(super) fn is_idle(&self) -> bool {
        self.subscribers.is_empty() && self.history.is_empty()
    }

    /// Queues `item` for its subscribers (presence events only for those
    /// that asked); returns how many got it and how many were dropped.
    ///
    /// A message goes straight into the output of each subscriber a
    /// session attached (see [`WriteThrough`]) that has nothing queued
    /// here, and a flush pass writes those outputs once the publisher is
    /// done: a subscriber's task is not woken for it, and the messages of
    /// every publish that comes before the pass share one write to each
    /// subscriber (corking, as uWebSockets does), so that under load fewer
    /// writes carry more messages. The pass is shared between the
    /// runtime's workers. Order holds: a subscriber's queue is
    /// empty whenever a publisher writes into its output, and its task
    /// moves what is queued into its output under the same lock.
    pub(super) fn fan_out(&mut self, item: &Queued) -> (usize, u64) {
        let presence = matches!(item, Queued::Presence(_));
        if let Queued::Gap(_) = item {
            return self.fan_out_gap(item);
        }
        let mut corked = Vec::new();
        let mut delivered = 0;
        let mut lagged = 0;
        self.subscribers.retain(|_, subscriber| {
            if presence && !subscriber.presence {
                return true;
            }
            if presence && !subscriber.inbox.has_room_for_presence() {
                // Shed, never lagged (counted by `presence_event`).
                return true;
            }
            if let (Queued::Message(delivery), Some(direct)) = (item, &subscriber.direct)
                && subscriber.inbox.is_empty()
                && let Some(first) = direct.try_cork(delivery)
            {
                if first {
                    corked.push(Arc::clone(direct));
                }
                delivered += 1;
                return true;
            }
            match subscriber.inbox.offer(item.clone()) {
                Ok(()) => {
                    delivered += 1;
                    true
                }
                Err(Offer::Full) => {
                    lagged += 1;
                    false
                }
                Err(Offer::Closed) => false,
            }
        });
        if !corked.is_empty() {
            write_through::corked().add(corked);
        }
        (delivered, lagged)
    }
}

impl Topic {
    /// Tells every duplex.v1 subscriber of a gap, and removes every raw
    /// one (its `recv` says [`RecvError::Lost`]).
    fn fan_out_gap(&mut self, gap: &Queued) -> (usize, u64) {
        let mut lagged = 0;
        self.subscribers.retain(|_, subscriber| {
            if !subscriber.v1 {
                subscriber.inbox.lost.store(true, Ordering::Release);
                return false;
            }
            match subscriber.inbox.offer(gap.clone()) {
                Ok(()) => true,
                Err(Offer::Full) => {
                    lagged += 1;
                    false
                }
                Err(Offer::Closed) => false,
            }
        });
        (0, lagged)
    }

    /// Before `delivery` from the backplane: whether it does not follow
    /// what this node delivered last, which is then a gap that filling
    /// from the stream could not close; what follows comes after the
    /// offset before it.
    pub(super) fn gap_before(&self, delivery: &Delivery) -> Option<Gap> {
        let known = self.synced;
        let skipped = *self.epoch != *delivery.epoch || delivery.offset > self.last + 1;
        (known && skipped).then(|| Gap {
            topic: Arc::clone(&self.name),
            epoch: Arc::clone(&delivery.epoch),
            offset: delivery.offset - 1,
        })
    }
}

/// How a subscriber joins a topic ([`Hub::join`]).
pub(super) struct Joining<'a> {
    /// As a duplex.v1 subscription that presence shows.
    pub(super) member: Option<Member>,
    /// Where it resumes from (without a backplane: the history it gets).
    pub(super) since: Option<&'a Since>,
    /// Whether it wants join/leave events.
    pub(super) watch: bool,
    /// A duplex.v1 subscription (told of gaps) rather than a raw one.
    pub(super) v1: bool,
    /// Who it counts against for the topics it makes.
    pub(super) requester: Option<&'a Requester>,
}

impl<'a> Joining<'a> {
    pub(super) fn v1(
        member: Option<Member>,
        since: Option<&'a Since>,
        watch: bool,
        requester: Option<&'a Requester>,
    ) -> Joining<'a> {
        Joining {
            member,
            since,
            watch,
            v1: true,
            requester,
        }
    }
}

pub(super) fn lock(slot: &Slot) -> MutexGuard<'_, Topic> {
    // A topic is consistent whatever panicked while holding it.
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}
