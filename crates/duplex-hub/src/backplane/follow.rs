//! Following a topic across nodes when pub/sub is not reliable: what a
//! node does with each message that reaches it, and after it lost the
//! link to the store.
//!
//! Pub/sub is at-most-once. A node that receives offset N+2 after N fills
//! N+1 from the store's history before delivering N+2; what the history no
//! longer holds the hub reports as a gap (`recovered: false`) when the
//! next message comes. After a lost link (the store restarted, failed
//! over, or the network dropped), what was published meanwhile reached no
//! node: [`catch_up`] re-reads every live topic, delivers what it missed,
//! and tells subscribers where offsets were lost or started again (and
//! then delivers what the new epoch holds). The
//! engines share this; each gives its history as a [`History`].

use std::sync::Arc;

use duplex_ws::Message;

use crate::hub::{Delivery, Hub, HubError};

/// Stream entries read with one command: a resume or a gap of any length
/// costs memory for this many at a time.
pub(crate) const PAGE: usize = 100;

/// Where a node fills a gap from: the store's history of a topic (or, in
/// the tests, one that loses and fails as a test says).
pub(crate) trait History {
    /// The retained messages `from..=to` of `topic` in `epoch`, oldest
    /// first, [`PAGE`] at most.
    async fn range(
        &self,
        topic: &str,
        epoch: &Arc<str>,
        from: u64,
        to: u64,
    ) -> Result<Vec<Arc<Delivery>>, HubError>;

    /// Where `topic` stands now: its epoch (`None` if the store lost the
    /// topic) and last offset, after starting its offsets again if the
    /// store holds fewer than the `last` this node delivered in `epoch`
    /// (so that none is given out twice).
    async fn standing(
        &self,
        topic: &str,
        epoch: &Arc<str>,
        last: u64,
    ) -> Result<Option<(Arc<str>, u64)>, HubError>;
}

/// A message from pub/sub: first what it skipped, from `history`, then
/// the message; the hub drops what it delivered already and reports as a
/// gap what neither brought.
pub(crate) async fn receive(
    history: &impl History,
    hub: &Hub,
    topic: &str,
    epoch: Arc<str>,
    offset: u64,
    message: Message,
) {
    if let Some((seen, last)) = hub.expected(topic)
        && seen == epoch
        && offset > last + 1
    {
        // What cannot be read now, the hub reports as a gap below.
        let _ = fill(history, hub, topic, &epoch, last + 1, offset - 1).await;
    }
    hub.deliver(Arc::new(Delivery::new(
        topic.into(),
        epoch,
        offset,
        message,
    )));
}

/// Delivers `from..=to` of the stream, a page at a time; what the stream
/// no longer holds the hub reports as a gap when the next message comes.
/// Fails if the store could not be read (then the rest was not
/// delivered).
async fn fill(
    history: &impl History,
    hub: &Hub,
    topic: &str,
    epoch: &Arc<str>,
    from: u64,
    to: u64,
) -> Result<(), HubError> {
    tracing::info!(topic, from, to, "filling a gap in pub/sub from the stream");
    let mut from = from;
    while from <= to {
        match history.range(topic, epoch, from, to).await {
            Ok(missed) => {
                let Some(last) = missed.last().map(|d| d.offset()) else {
                    return Ok(());
                };
                for delivery in missed {
                    hub.deliver(delivery);
                }
                from = last + 1;
            }
            Err(e) => {
                tracing::warn!(topic, error = %e, "cannot fill a gap from the stream now");
                return Err(e);
            }
        }
    }
    Ok(())
}

/// After the link to the store was lost and made again: for every topic
/// with local subscribers, delivers what the history holds after this
/// node's last delivery, and tells the subscribers of a gap where it does
/// not (trimmed or expired meanwhile), where the store lost the topic (a
/// new epoch comes with its next publish), or where it went back in time
/// (restarted from an older snapshot, or a replica that missed the last
/// writes took over: its offsets start again).
pub(crate) async fn catch_up(history: &impl History, hub: &Hub) {
    for topic in hub.subscribed_topics() {
        catch_up_topic(history, hub, &topic).await;
    }
}

/// [`catch_up`] for one topic: its shard's link was lost and made again.
pub(crate) async fn catch_up_topic(history: &impl History, hub: &Hub, topic: &str) {
    let Some((epoch, last)) = hub.expected(topic) else {
        return;
    };
    let (now_epoch, now_last) = match history.standing(topic, &epoch, last).await {
        Ok(Some(standing)) => standing,
        // The store lost the topic: offsets start again with the next
        // publish, whose new epoch tells every subscriber.
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(topic, error = %e, "cannot catch up a topic after reconnecting");
            return;
        }
    };
    if now_epoch != epoch {
        tracing::warn!(
            topic,
            "the store lost or reset the topic's offsets: telling subscribers"
        );
        // What the new epoch holds already (nodes published into it while
        // this one was cut off) comes after the gap, which its first
        // message reports; where there is none, or the history lacks its
        // end (or cannot be read now: a new epoch's next message does not
        // fill what came before it), the gap is reported here.
        if now_last > 0 {
            let _ = fill(history, hub, topic, &now_epoch, 1, now_last).await;
        }
        if hub
            .expected(topic)
            .is_none_or(|(e, l)| e != now_epoch || l < now_last)
        {
            hub.lost(topic, now_epoch, now_last);
        }
        return;
    }
    if now_last > last {
        if fill(history, hub, topic, &epoch, last + 1, now_last)
            .await
            .is_err()
        {
            // The store answers again but cannot be read yet (a failover
            // still settling): not lost. The next message of the epoch
            // fills `last + 1..` from the stream, and tells of a gap only
            // if the stream no longer has it.
            return;
        }
        if hub.expected(topic).is_some_and(|(_, l)| l < now_last) {
            // The history no longer holds the end of it.
            hub.lost(topic, epoch, now_last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{HubConfig, Inbox, Queued};

    /// A store that failed over to a replica which had not seen the last
    /// writes: the topic has a new epoch, and other nodes have published
    /// `1..=last` into it meanwhile.
    struct FailedOver {
        epoch: Arc<str>,
        last: u64,
    }

    impl History for FailedOver {
        async fn range(
            &self,
            topic: &str,
            epoch: &Arc<str>,
            from: u64,
            to: u64,
        ) -> Result<Vec<Arc<Delivery>>, HubError> {
            assert_eq!(epoch, &self.epoch, "only the new epoch is read");
            Ok((from..=to.min(self.last))
                .map(|offset| delivery(topic, epoch, offset))
                .collect())
        }

        async fn standing(
            &self,
            _topic: &str,
            _epoch: &Arc<str>,
            _last: u64,
        ) -> Result<Option<(Arc<str>, u64)>, HubError> {
            Ok(Some((Arc::clone(&self.epoch), self.last)))
        }
    }

    fn delivery(topic: &str, epoch: &Arc<str>, offset: u64) -> Arc<Delivery> {
        Arc::new(Delivery::new(
            topic.into(),
            Arc::clone(epoch),
            offset,
            Message::text(format!("{epoch}{offset}")),
        ))
    }

    #[tokio::test]
    async fn after_a_failover_that_lost_writes_the_gap_is_told_then_the_new_epoch_comes() {
        let hub = Hub::new(HubConfig::default());
        let (inbox, mut rx) = Inbox::new(100);
        let _open = hub
            .open(&"t".parse().unwrap(), &inbox, None, None, false, None)
            .await
            .unwrap();
        let old: Arc<str> = "old".into();
        for offset in 1..=3 {
            hub.deliver(delivery("t", &old, offset));
        }
        let store = FailedOver {
            epoch: "new".into(),
            last: 2,
        };
        catch_up(&store, &hub).await;
        let mut got = Vec::new();
        while let Ok(item) = rx.try_recv() {
            got.push(match item {
                Queued::Message(d) => format!("{}{}", d.epoch(), d.offset()),
                Queued::Gap(g) => format!("gap {}{}", g.epoch, g.offset),
                Queued::Presence(_) => continue,
            });
        }
        assert_eq!(got, ["old1", "old2", "old3", "gap new0", "new1", "new2"]);
        // And the next message follows on.
        assert_eq!(hub.expected("t"), Some(("new".into(), 2)));
    }

    /// A store that answers where a topic stands but cannot serve its
    /// history yet (a failover settling), then can.
    struct Settling {
        epoch: Arc<str>,
        last: u64,
        readable: std::sync::atomic::AtomicBool,
    }

    impl History for Settling {
        async fn range(
            &self,
            topic: &str,
            epoch: &Arc<str>,
            from: u64,
            to: u64,
        ) -> Result<Vec<Arc<Delivery>>, HubError> {
            if !self.readable.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(HubError::Unavailable);
            }
            Ok((from..=to.min(self.last))
                .map(|offset| delivery(topic, epoch, offset))
                .collect())
        }

        async fn standing(
            &self,
            _topic: &str,
            _epoch: &Arc<str>,
            _last: u64,
        ) -> Result<Option<(Arc<str>, u64)>, HubError> {
            Ok(Some((Arc::clone(&self.epoch), self.last)))
        }
    }

    /// Catching up in the same epoch from a store that cannot be read yet
    /// tells no gap: the next message fills from the stream, once it can.
    #[tokio::test]
    async fn a_store_not_readable_yet_is_no_gap_and_the_next_message_fills() {
        let hub = Hub::new(HubConfig::default());
        let (inbox, mut rx) = Inbox::new(100);
        let _open = hub
            .open(&"t".parse().unwrap(), &inbox, None, None, false, None)
            .await
            .unwrap();
        let epoch: Arc<str> = "e".into();
        hub.deliver(delivery("t", &epoch, 1));
        let store = Settling {
            epoch: Arc::clone(&epoch),
            last: 3,
            readable: false.into(),
        };
        catch_up(&store, &hub).await;
        store
            .readable
            .store(true, std::sync::atomic::Ordering::Relaxed);
        receive(
            &store,
            &hub,
            "t",
            Arc::clone(&epoch),
            4,
            Message::text("e4"),
        )
        .await;
        let mut got = Vec::new();
        while let Ok(item) = rx.try_recv() {
            got.push(match item {
                Queued::Message(d) => format!("{}{}", d.epoch(), d.offset()),
                Queued::Gap(g) => format!("gap {}{}", g.epoch, g.offset),
                Queued::Presence(_) => continue,
            });
        }
        assert_eq!(got, ["e1", "e2", "e3", "e4"]);
    }
}

#[cfg(test)]
mod lossy_pubsub {
    //! Every offset once, or an explicit gap: a node receiving one
    //! topic over a pub/sub that drops, repeats and delays messages,
    //! and filling from a stream that has lost its oldest and may fail,
    //! hands a duplex.v1 subscription each offset once and in order, or
    //! says where a run of them was lost, and says so only when the
    //! stream did not have them.

    use super::*;
    use crate::hub::{HubConfig, Inbox, Queued};
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// The topic's stream: offsets `1..=last`, of which those up to
    /// `trimmed` are gone; every `fail_every`th read fails.
    struct FakeStream {
        epoch: Arc<str>,
        trimmed: u64,
        fail_every: usize,
        reads: AtomicUsize,
        failed: AtomicBool,
    }

    impl History for FakeStream {
        async fn range(
            &self,
            topic: &str,
            epoch: &Arc<str>,
            from: u64,
            to: u64,
        ) -> Result<Vec<Arc<Delivery>>, HubError> {
            let read = self.reads.fetch_add(1, Ordering::Relaxed) + 1;
            if self.fail_every > 0 && read.is_multiple_of(self.fail_every) {
                self.failed.store(true, Ordering::Relaxed);
                return Err(HubError::Unavailable);
            }
            assert_eq!(epoch, &self.epoch);
            Ok((from.max(self.trimmed + 1)..=to)
                .take(PAGE)
                .map(|offset| delivery(topic, epoch, offset))
                .collect())
        }

        async fn standing(
            &self,
            _topic: &str,
            _epoch: &Arc<str>,
            _last: u64,
        ) -> Result<Option<(Arc<str>, u64)>, HubError> {
            unreachable!("only catch_up asks, and this test does not catch up")
        }
    }

    fn delivery(topic: &str, epoch: &Arc<str>, offset: u64) -> Arc<Delivery> {
        Arc::new(Delivery::new(
            topic.into(),
            Arc::clone(epoch),
            offset,
            Message::text(format!("m{offset}")),
        ))
    }

    #[derive(Debug, Clone, Copy)]
    enum Fate {
        Delivered,
        Dropped,
        Repeated,
        /// Arrives this many messages later.
        Delayed(usize),
    }

    fn fate() -> impl Strategy<Value = Fate> {
        prop_oneof![
            6 => Just(Fate::Delivered),
            2 => Just(Fate::Dropped),
            1 => Just(Fate::Repeated),
            1 => (1usize..5).prop_map(Fate::Delayed),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn every_offset_once_or_an_explicit_gap(
            fates in proptest::collection::vec(fate(), 1..150),
            trimmed in 0u64..120,
            fail_every in prop_oneof![Just(0usize), 1usize..5],
        ) {
            let n = fates.len() as u64 + 1;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let epoch: Arc<str> = "e".into();
            let stream = FakeStream {
                epoch: Arc::clone(&epoch),
                trimmed: trimmed.min(n),
                fail_every,
                reads: AtomicUsize::new(0),
                failed: AtomicBool::new(false),
            };
            // What pub/sub hands over: offset 1, then 2..=n as fated,
            // then n + 1 (the next message, which shows any gap).
            let mut wire: Vec<u64> = vec![1];
            let mut delayed: Vec<(usize, u64)> = Vec::new();
            for (i, fate) in fates.iter().enumerate() {
                let offset = i as u64 + 2;
                match fate {
                    Fate::Delivered => wire.push(offset),
                    Fate::Dropped => {}
                    Fate::Repeated => wire.extend([offset, offset]),
                    Fate::Delayed(k) => delayed.push((wire.len() + k, offset)),
                }
                delayed.retain(|&(at, offset)| {
                    if at <= wire.len() { wire.push(offset); false } else { true }
                });
            }
            wire.extend(delayed.iter().map(|&(_, offset)| offset));
            wire.push(n + 1);

            let hub = Hub::new(HubConfig::default().queue(10_000));
            let (inbox, mut rx) = Inbox::new(10_000);
            let (_membership, _) = runtime
                .block_on(hub.open(&"t".parse().unwrap(), &inbox, None, None, false, None))
                .unwrap();
            for &offset in &wire {
                runtime.block_on(receive(
                    &stream,
                    &hub,
                    "t",
                    Arc::clone(&epoch),
                    offset,
                    Message::text(format!("m{offset}")),
                ));
            }

            // What a duplex.v1 session makes of the queue.
            let (mut last, mut received, mut reported) = (0u64, Vec::new(), Vec::new());
            while let Ok(item) = rx.try_recv() {
                match item {
                    Queued::Message(d) if d.offset() <= last => {}
                    Queued::Message(d) => {
                        prop_assert_eq!(d.offset(), last + 1, "skipped without a gap");
                        prop_assert_eq!(d.message(), &Message::text(format!("m{}", d.offset())));
                        last = d.offset();
                        received.push(last);
                    }
                    Queued::Gap(gap) => {
                        prop_assert!(gap.offset > last, "a gap behind what came");
                        reported.extend(last + 1..=gap.offset);
                        last = gap.offset;
                    }
                    Queued::Presence(_) => {}
                }
            }
            // Every offset, received or inside a reported gap.
            let mut all: Vec<u64> = received.iter().chain(&reported).copied().collect();
            all.sort_unstable();
            prop_assert_eq!(all, (1..=n + 1).collect::<Vec<_>>());
            // Reported lost only what the stream could not give.
            if !stream.failed.load(Ordering::Relaxed) {
                for offset in &reported {
                    prop_assert!(
                        *offset <= stream.trimmed,
                        "{} reported lost, but the stream had it", offset
                    );
                }
            }
        }
    }
}
