//! What the subscribers and the publisher of a fan-out run share, on one
//! thread: what was published and acknowledged, what each delivery was
//! (once, twice, misrouted, bogus), and its latency.

use std::collections::HashMap;
use std::time::Instant;

use hdrhistogram::Histogram;
use tokio::sync::oneshot;

use super::stamp::{SeqSet, Stamp};
use crate::bench::error::BenchError;

/// A publish waiting for its deliveries (rate max).
pub(super) struct Pending {
    pub(super) remaining: u64,
    pub(super) done: Option<oneshot::Sender<()>>,
}

/// What every task of the run shares (one thread: `Rc<RefCell<_>>`).
pub(super) struct Shared {
    pub(super) origin: Instant,
    /// Per topic: subscribers, sequence numbers handed out, acknowledged.
    pub(super) subscribers: Vec<u64>,
    pub(super) published: Vec<u64>,
    pub(super) acked: Vec<SeqSet>,
    /// Publishes whose POST failed, and the first reason.
    pub(super) publish_errors: u64,
    pub(super) first_publish_error: Option<String>,
    /// Unique deliveries so far (every publish, warm-up included).
    pub(super) received: u64,
    pub(super) duplicated: u64,
    pub(super) misrouted: u64,
    pub(super) bogus: u64,
    /// Subscribers whose connection failed, and the first reason.
    pub(super) failed: u64,
    pub(super) first_error: Option<String>,
    /// Subscribers connected and subscribed.
    pub(super) ready: u64,
    /// Publish times (ns since origin) whose latency is recorded.
    pub(super) window_ns: (u64, u64),
    pub(super) latency_us: Histogram<u64>,
    pub(super) pending: HashMap<(u32, u64), Pending>,
    /// The most publishes ever pending at once (with `--rate max`): what
    /// `--in-flight` bounds, counted from the deliveries, not the permits.
    pub(super) max_pending: usize,
    /// POSTs not yet answered.
    pub(super) posts: u64,
}

impl Shared {
    pub(super) fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub(super) fn note_failure(&mut self, e: &BenchError) {
        tracing::debug!(error = %e, "subscriber failed");
        self.failed += 1;
        self.first_error.get_or_insert_with(|| e.to_string());
    }

    /// Books one message a subscriber of `topic` got.
    pub(super) fn deliver(&mut self, topic: u32, seen: &mut SeqSet, message: &[u8]) {
        let Some(stamp) = Stamp::find(message) else {
            self.bogus += 1;
            return;
        };
        if stamp.topic != topic {
            self.misrouted += 1;
            return;
        }
        if stamp.seq >= self.published[topic as usize] {
            self.bogus += 1;
            return;
        }
        if !seen.insert(stamp.seq) {
            self.duplicated += 1;
            return;
        }
        self.received += 1;
        let now = self.now_ns();
        if (self.window_ns.0..self.window_ns.1).contains(&stamp.ts_ns) {
            let us = now.saturating_sub(stamp.ts_ns) / 1000;
            self.latency_us.saturating_record(us.max(1));
        }
        if let Some(p) = self.pending.get_mut(&(topic, stamp.seq)) {
            p.remaining = p.remaining.saturating_sub(1);
            if p.remaining == 0
                && let Some(p) = self.pending.remove(&(topic, stamp.seq))
                && let Some(done) = p.done
            {
                let _ = done.send(());
            }
        }
    }

    /// Deliveries the acknowledged publishes owe.
    pub(super) fn expected(&self) -> u64 {
        self.acked
            .iter()
            .zip(&self.subscribers)
            .map(|(acked, subs)| acked.len * subs)
            .sum()
    }
}

pub(super) fn acked_total(shared: &Shared) -> u64 {
    shared.acked.iter().map(|a| a.len).sum()
}

/// Delivery accounting of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Tally {
    /// Publishes sent, and those the server acknowledged.
    pub(super) published: u64,
    pub(super) acked: u64,
    pub(super) publish_errors: u64,
    /// Deliveries the acknowledged publishes owed, and those that arrived.
    pub(super) expected: u64,
    pub(super) unique_acked: u64,
    pub(super) duplicated: u64,
    pub(super) misrouted: u64,
    pub(super) bogus: u64,
    /// Subscribers whose connection failed during the run.
    pub(super) dropped: u64,
}

impl Tally {
    pub(super) fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.unique_acked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_are_booked_once_and_checked() {
        let mut shared = Shared {
            origin: Instant::now(),
            subscribers: vec![2, 2],
            published: vec![3, 1],
            acked: vec![SeqSet::default(); 2],
            publish_errors: 0,
            first_publish_error: None,
            received: 0,
            duplicated: 0,
            misrouted: 0,
            bogus: 0,
            failed: 0,
            first_error: None,
            ready: 0,
            window_ns: (0, u64::MAX),
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
            pending: HashMap::new(),
            max_pending: 0,
            posts: 0,
        };
        for seq in 0..3 {
            shared.acked[0].insert(seq);
        }
        shared.acked[1].insert(0);
        let (tx, mut rx) = oneshot::channel();
        shared.pending.insert(
            (0, 1),
            Pending {
                remaining: 1,
                done: Some(tx),
            },
        );
        let msg = |topic, seq| {
            Stamp {
                topic,
                seq,
                ts_ns: 0,
            }
            .encode(50)
        };
        let mut seen = SeqSet::default();
        shared.deliver(0, &mut seen, &msg(0, 0));
        shared.deliver(0, &mut seen, &msg(0, 1));
        shared.deliver(0, &mut seen, &msg(0, 1));
        shared.deliver(0, &mut seen, &msg(1, 0));
        shared.deliver(0, &mut seen, &msg(0, 7));
        shared.deliver(0, &mut seen, b"garbage");
        assert_eq!(shared.received, 2);
        assert_eq!(shared.duplicated, 1);
        assert_eq!(shared.misrouted, 1);
        assert_eq!(shared.bogus, 2);
        assert_eq!(shared.latency_us.len(), 2);
        assert!(rx.try_recv().is_ok(), "the publish completed");
        assert!(shared.pending.is_empty());
        // Topic 0: 3 publishes x 2 subscribers; topic 1: 1 x 2.
        assert_eq!(shared.expected(), 8);
        let tally = Tally {
            expected: shared.expected(),
            unique_acked: seen.common(&shared.acked[0]),
            ..Tally::default()
        };
        assert_eq!(tally.lost(), 6);
    }
}
