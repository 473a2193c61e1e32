//! One subscriber's bounded queue (a raw topic WebSocket's, or a duplex.v1
//! connection's for all its topics): offering to it never waits, a full
//! one marks its subscriber lagged, and presence goes only to one with
//! room to spare.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

use super::delivery::Queued;

/// The queue of one subscriber (a raw topic WebSocket) or of one duplex.v1
/// connection (all its topics).
#[derive(Debug, Clone)]
pub(crate) struct Inbox {
    tx: mpsc::Sender<Queued>,
    pub(super) lagged: Arc<AtomicBool>,
    /// Set, before the queue closes, when a raw subscriber was removed
    /// over a gap.
    pub(super) lost: Arc<AtomicBool>,
}

impl Inbox {
    /// A queue of `capacity` items and its receiving end.
    pub(crate) fn new(capacity: usize) -> (Inbox, mpsc::Receiver<Queued>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let inbox = Inbox {
            tx,
            lagged: Arc::new(AtomicBool::new(false)),
            lost: Arc::new(AtomicBool::new(false)),
        };
        (inbox, rx)
    }

    /// Whether nothing is queued (every permit is back).
    pub(super) fn is_empty(&self) -> bool {
        self.tx.capacity() == self.tx.max_capacity()
    }

    /// Whether the queue overflowed.
    pub(crate) fn lagged(&self) -> bool {
        self.lagged.load(Ordering::Acquire)
    }

    /// Queues `item`; `false` when it no longer fits (the subscriber lags)
    /// or nobody receives any more.
    pub(super) fn offer(&self, item: Queued) -> Result<(), Offer> {
        match self.tx.try_send(item) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                // The receiver sees it at its next item: the queue is full.
                self.lagged.store(true, Ordering::Release);
                Err(Offer::Full)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Offer::Closed),
        }
    }
}

pub(super) enum Offer {
    Full,
    Closed,
}

impl Inbox {
    /// Whether the queue is less than half full: join/leave events are
    /// queued only then, so that another client's churn can neither fill a
    /// watcher's queue (and have it dropped as slow) nor take the room its
    /// messages need.
    pub(super) fn has_room_for_presence(&self) -> bool {
        self.tx.capacity() > self.tx.max_capacity() / 2
    }
}
