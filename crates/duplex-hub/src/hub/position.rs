//! Where a message is in its topic (an epoch and an offset), and the resume
//! rule: what a subscriber that comes back from a [`Since`] gets, and
//! whether that is everything it missed.

use std::sync::Arc;

use super::delivery::Delivery;
use crate::since::Since;

/// A new epoch name: 64 random bits in hex.
pub(crate) fn new_epoch() -> Arc<str> {
    format!("{:016x}", rand::random::<u64>()).into()
}

/// The answer to a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Published {
    /// The topic's epoch.
    pub epoch: Arc<str>,
    /// The message's offset in it.
    pub offset: u64,
    /// Local subscribers it was (or, with a backplane, is being) queued for.
    pub delivered: usize,
}

/// What a subscriber starts from.
#[derive(Debug, Clone)]
pub(crate) struct Opened {
    /// The topic's epoch.
    pub(crate) epoch: Arc<str>,
    /// The topic's newest offset when the subscription began.
    pub(crate) offset: u64,
    /// With a [`Since`]: whether `history` has every message after it.
    pub(crate) recovered: Option<bool>,
    /// Retained messages after the [`Since`], oldest first.
    pub(crate) history: Vec<Arc<Delivery>>,
}

impl Opened {
    /// Decides what a subscriber resuming from `since` gets, given the
    /// topic's `epoch`, its newest offset `last` and the retained messages
    /// after `since.offset` (oldest first).
    pub(crate) fn resume(
        epoch: Arc<str>,
        last: u64,
        since: Option<&Since>,
        retained: Vec<Arc<Delivery>>,
    ) -> Opened {
        let Some(since) = since else {
            return Opened {
                epoch,
                offset: last,
                recovered: None,
                history: Vec::new(),
            };
        };
        let same_epoch = since.epoch.as_deref().is_none_or(|e| e == &*epoch);
        if !same_epoch || since.offset > last {
            // Offsets started again, or the client comes from the future:
            // nothing it holds can be continued, and nothing after it is
            // retained.
            return Opened {
                epoch,
                offset: last,
                recovered: Some(false),
                history: Vec::new(),
            };
        }
        let history: Vec<_> = retained
            .into_iter()
            .filter(|d| d.offset > since.offset)
            .collect();
        let recovered = since.offset == last
            || history
                .first()
                .is_some_and(|d| d.offset == since.offset + 1);
        Opened {
            epoch,
            offset: last,
            recovered: Some(recovered),
            history,
        }
    }
}
