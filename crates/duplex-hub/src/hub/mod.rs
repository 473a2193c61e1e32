//! The hub: topics, their order and their history ([`Hub`], whose docs
//! say how it works), split by noun into the modules below.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use duplex_ws::Message;
// Tokio's clock, so that tests may move time.
use tokio::time::Instant;

use crate::metrics::Metrics;

mod config;
mod delivery;
mod inbox;
mod position;
mod requester;
mod store;
mod subscription;
mod topic;
mod write_through;

pub(crate) use crate::error::{HubError, RecvError};
pub(crate) use crate::name::TopicName;
pub(crate) use crate::since::Since;
pub use config::HubConfig;
use delivery::Retained;
pub use delivery::{Delivery, Member};
pub(crate) use delivery::{Gap, PresenceEvent, Queued};
pub(crate) use inbox::Inbox;
pub use position::Published;
pub(crate) use position::{Opened, new_epoch};
pub use requester::Requester;
pub(crate) use store::{Pending, Store};
pub(crate) use subscription::Membership;
pub use subscription::Subscription;
use topic::{Due, Joining, Slot, Subscriber, Topic, Topics, lock};
pub(crate) use write_through::WriteThrough;

/// The topics of one server. Cheap to clone: clones share the topics.
///
/// Topics, their order and their history: subscribe, publish, resume, and
/// what happens to a subscriber that cannot keep up.
///
/// Every message published to a topic gets an offset, 1, 2, 3… within the
/// topic's epoch (an opaque name for one run of offsets), and every
/// subscriber receives the topic's messages in offset order. Without a
/// backplane the hub assigns offsets itself and retains each topic's latest
/// messages, bounded by count ([`HubConfig::history_size`]), by age
/// ([`HubConfig::history_ttl`]) and, over all topics, by bytes
/// ([`HubConfig::max_history_bytes`]). With the Redis backplane
/// ([`backplane`](crate::backplane)) offsets and history live in Redis, and
/// a node delivers every message, its own too, when Redis hands it back, so
/// that every node sees one order.
///
/// Each subscriber has a bounded queue (a tokio `mpsc` channel of
/// [`HubConfig::queue`] items); a duplex.v1 connection has one for all its
/// topics. Publishing never waits: a message goes into every queue that has
/// room, and a subscriber whose queue is full is removed from the topic and
/// told so ([`RecvError::Lagged`]). A payload queued for many subscribers
/// and kept in the history is stored once (it is a `Bytes`).
///
/// A topic lives while it has subscribers or retained messages; both count
/// against [`HubConfig::max_topics`], and a topic left with neither goes at
/// once. Retained messages expire eagerly: a sweep once a second frees
/// what is past [`HubConfig::history_ttl`] (topics ordered by their oldest
/// message, at most 10,000 a sweep), whether or not anyone touches the
/// topic again. Each topic has a lock of its own, held while a publish
/// fills its queues; the map of topics is locked only to find, add or
/// remove one, so that what a message costs does not depend on how many
/// other topics exist.
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// A node starting to receive a topic from the backplane (see
/// [`Store::follow`]).
pub(crate) type Following = Pending<'static, Result<(), HubError>>;

/// A [`Hub`] that does not keep it alive: for an engine's tasks, which the
/// hub itself holds through its store.
#[derive(Debug, Clone)]
pub(crate) struct WeakHub {
    inner: std::sync::Weak<Inner>,
}

impl WeakHub {
    /// The hub, while anything else holds it.
    pub(crate) fn upgrade(&self) -> Option<Hub> {
        self.inner.upgrade().map(|inner| Hub { inner })
    }
}

/// Locks are taken in one order only, so that none waits on another in a
/// circle: a topic's, then `topics` or `expiry`, never the other way round
/// and never two topics at once. `topics` only finds a topic (and adds or
/// removes one): everything a message does happens under its own topic's
/// lock, so that a publish, a delivery or an expiry costs the same whether
/// one topic exists or a hundred thousand.
#[derive(Debug)]
struct Inner {
    config: HubConfig,
    topics: Mutex<Topics>,
    /// Bytes held by retained messages over all topics (see
    /// [`Delivery::held`]); shared with the deliveries, which add their
    /// duplex.v1 frame when they make it.
    history_bytes: Arc<AtomicUsize>,
    /// Topics with retained messages, by when their oldest expires.
    expiry: Mutex<BinaryHeap<Reverse<Due>>>,
    /// Set once the task that expires history is running.
    sweeper: OnceLock<()>,
    next_id: AtomicU64,
    metrics: Metrics,
    /// Set once a backplane is attached: offsets and history in Redis.
    store: OnceLock<Arc<dyn Store>>,
    /// This node's id on the backplane.
    node: [u8; 16],
}

/// How often retained messages are looked at for expiry, and how many
/// topics one look handles at most (the rest wait for the next): expiry
/// is eager, within a second of the TTL, and never one long pause.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
const SWEEP_TOPICS: usize = 10_000;

impl Hub {
    /// A hub with no topics.
    pub fn new(config: HubConfig) -> Hub {
        let config = HubConfig {
            queue: config.queue.max(1),
            max_topics: config.max_topics.max(1),
            max_subscriptions: config.max_subscriptions.max(1),
            max_topics_per_client: config.max_topics_per_client.max(1),
            history_ttl: config.history_ttl.max(Duration::from_millis(1)),
            ping_interval: config.ping_interval.max(Duration::from_millis(10)),
            ..config
        };
        Hub {
            inner: Arc::new(Inner {
                config,
                topics: Mutex::new(Topics::default()),
                history_bytes: Arc::new(AtomicUsize::new(0)),
                expiry: Mutex::new(BinaryHeap::new()),
                sweeper: OnceLock::new(),
                next_id: AtomicU64::new(0),
                metrics: Metrics::default(),
                store: OnceLock::new(),
                node: rand::random(),
            }),
        }
    }

    /// The hub's limits.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// The hub's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Subscribes to the live messages of `topic` (a `&str` is checked
    /// against the topic-name rule; a [`TopicName`] has been).
    pub fn subscribe(
        &self,
        topic: impl TryInto<TopicName, Error = HubError>,
    ) -> Result<Subscription, HubError> {
        self.subscribe_as(topic, None)
    }

    /// [`subscribe`](Self::subscribe) for `requester`, who may make only
    /// so many topics ([`HubConfig::max_topics_per_client`]).
    pub fn subscribe_as(
        &self,
        topic: impl TryInto<TopicName, Error = HubError>,
        requester: Option<&Requester>,
    ) -> Result<Subscription, HubError> {
        let (subscription, following) = self.subscribe_unfollowed(&topic.try_into()?, requester)?;
        if let (Some(following), Ok(runtime)) = (following, tokio::runtime::Handle::try_current()) {
            // No reply to wait for here: the messages come once the
            // backplane delivers the topic to this node.
            runtime.spawn(following);
        }
        Ok(subscription)
    }

    /// [`subscribe_as`](Self::subscribe_as), and, with a backplane, what
    /// to await before the subscriber gets every message published from
    /// then on (the service awaits it before it answers the handshake).
    pub(crate) fn subscribe_unfollowed(
        &self,
        topic: &TopicName,
        requester: Option<&Requester>,
    ) -> Result<(Subscription, Option<Following>), HubError> {
        let (inbox, rx) = Inbox::new(self.inner.config.queue);
        let joining = Joining {
            member: None,
            since: None,
            watch: false,
            v1: false,
            requester,
        };
        let (membership, _) = self.join(topic, &inbox, joining)?;
        let following = self
            .inner
            .store
            .get()
            .map(|store| Arc::clone(store).follow(Arc::clone(&membership.topic)));
        // The topic keeps the only sender: removing the subscriber (its
        // queue overflowed) closes the queue, so that `recv` needs no
        // second thing to wait on.
        let subscription = Subscription {
            membership,
            rx,
            lagged: Arc::clone(&inbox.lagged),
            lost: Arc::clone(&inbox.lost),
        };
        Ok((subscription, following))
    }

    /// Subscribes `inbox` to `topic`: with `member`, as a duplex.v1
    /// subscription that presence shows (and that receives join/leave
    /// events with `watch`). Returns what the subscriber starts from: with
    /// a backplane the offset and history come from Redis.
    pub(crate) async fn open(
        &self,
        topic: &TopicName,
        inbox: &Inbox,
        member: Option<Member>,
        since: Option<&Since>,
        watch: bool,
        requester: Option<&Requester>,
    ) -> Result<(Membership, Opened), HubError> {
        let Some(store) = self.inner.store.get() else {
            let (membership, opened) = self.join(
                topic,
                inbox,
                Joining::v1(member.clone(), since, watch, requester),
            )?;
            if let Some(member) = member {
                self.presence_event(topic, true, member);
            }
            return Ok((membership, opened));
        };
        // Subscribed first, read second: a message published in between
        // arrives twice (the session skips offsets it has sent), never not.
        let (membership, _) =
            self.join(topic, inbox, Joining::v1(None, since, watch, requester))?;
        Arc::clone(store)
            .follow(Arc::clone(&membership.topic))
            .await
            .inspect_err(|e| {
                tracing::info!(%topic, error = %e, "cannot receive a topic from the backplane");
            })?;
        let opened = store.open(topic, since).await.inspect_err(|e| {
            tracing::info!(%topic, error = %e, "cannot open a topic in Redis");
        })?;
        // Where Redis stands is where this node's deliveries go on from,
        // unless one came meanwhile: so that a message pub/sub loses
        // before this node's first delivery on the topic is noticed too.
        self.with_existing(topic, |entry| {
            if !entry.synced {
                entry.epoch = Arc::clone(&opened.epoch);
                entry.last = opened.offset;
                entry.synced = true;
            }
        });
        // A member only once subscribed, so that a failed subscription
        // shows no join and no leave.
        if let Some(member) = member {
            self.with_existing(topic, |entry| {
                entry.members.insert(membership.id, member.clone());
            });
            self.presence_event(topic, true, member.clone());
            store.joined(topic, &member).await;
        }
        Ok((membership, opened))
    }

    fn join(
        &self,
        topic: &str,
        inbox: &Inbox,
        joining: Joining<'_>,
    ) -> Result<(Membership, Opened), HubError> {
        let Joining {
            member,
            since,
            watch,
            v1,
            requester,
        } = joining;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let backplane = self.inner.store.get().is_some();
        let (name, opened) = self.with_topic(topic, requester, |entry| {
            entry.subscribers.insert(
                id,
                Subscriber {
                    inbox: inbox.clone(),
                    presence: watch,
                    v1,
                    direct: None,
                },
            );
            if let Some(member) = member {
                entry.members.insert(id, member);
            }
            let name = Arc::clone(&entry.name);
            let opened = if backplane {
                Opened::resume(Arc::clone(&entry.epoch), entry.last, None, Vec::new())
            } else {
                let retained = match since {
                    Some(s) => entry
                        .history
                        .iter()
                        .filter(|r| r.delivery.offset > s.offset)
                        .map(|r| Arc::clone(&r.delivery))
                        .collect(),
                    None => Vec::new(),
                };
                Opened::resume(Arc::clone(&entry.epoch), entry.last, since, retained)
            };
            (name, opened)
        })?;
        self.inner.metrics.subscribed();
        Ok((
            Membership {
                hub: self.clone(),
                topic: name,
                id,
            },
            opened,
        ))
    }

    fn map(&self) -> MutexGuard<'_, Topics> {
        // The map is consistent whatever panicked while holding it.
        self.inner
            .topics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on `topic` under its lock, the topic made first if it does
    /// not exist and the limit allows, its expired history dropped. A
    /// topic that `f` leaves with no subscriber and no retained message
    /// goes.
    fn with_topic<R>(
        &self,
        topic: &str,
        requester: Option<&Requester>,
        f: impl FnOnce(&mut Topic) -> R,
    ) -> Result<R, HubError> {
        self.start_sweeper();
        let mut f = Some(f);
        loop {
            let slot = {
                let mut topics = self.map();
                match topics.map.get(topic) {
                    Some(slot) => Arc::clone(slot),
                    None => {
                        let config = &self.inner.config;
                        if topics.map.len() >= config.max_topics {
                            return Err(HubError::TooManyTopics(config.max_topics));
                        }
                        let mut made = Topic::new(Arc::from(topic));
                        if let Some(requester) = requester {
                            let count = topics.made_by.entry(requester.clone()).or_default();
                            if *count >= config.max_topics_per_client {
                                return Err(HubError::TooManyTopicsForClient(
                                    config.max_topics_per_client,
                                ));
                            }
                            *count += 1;
                            made.made_by = Some(requester.clone());
                        }
                        let name = Arc::clone(&made.name);
                        let slot = Arc::new(Mutex::new(made));
                        topics.map.insert(name, Arc::clone(&slot));
                        self.inner.metrics.set_topics(topics.map.len());
                        slot
                    }
                }
            };
            let mut entry = lock(&slot);
            if entry.removed {
                continue;
            }
            entry.expire(Instant::now(), self.inner.config.history_ttl);
            if entry.is_idle() && entry.last > 0 {
                // Nobody holds it and its whole history expired: as if it
                // had been swept already, its offsets start again.
                let name = Arc::clone(&entry.name);
                let (scheduled, made_by) = (entry.scheduled, entry.made_by.take());
                *entry = Topic::new(name);
                entry.scheduled = scheduled;
                entry.made_by = made_by;
            }
            let f = f.take().expect("called once");
            let result = f(&mut entry);
            self.unlock(&slot, entry);
            return Ok(result);
        }
    }

    /// Runs `f` on `topic` under its lock if it exists.
    fn with_existing<R>(&self, topic: &str, f: impl FnOnce(&mut Topic) -> R) -> Option<R> {
        let mut f = Some(f);
        loop {
            let slot = Arc::clone(self.map().map.get(topic)?);
            let mut entry = lock(&slot);
            if entry.removed {
                continue;
            }
            let f = f.take().expect("called once");
            let result = f(&mut entry);
            self.unlock(&slot, entry);
            return Some(result);
        }
    }

    /// Runs `f` on the topic of `slot` under its lock, unless it went.
    fn with_slot<R>(&self, slot: &Arc<Slot>, f: impl FnOnce(&mut Topic) -> R) -> Option<R> {
        let mut entry = lock(slot);
        if entry.removed {
            return None;
        }
        let result = f(&mut entry);
        self.unlock(slot, entry);
        Some(result)
    }

    /// Lets go of a topic's lock; a topic left idle goes from the map.
    fn unlock(&self, slot: &Arc<Slot>, mut entry: MutexGuard<'_, Topic>) {
        if !entry.is_idle() || entry.removed {
            return;
        }
        entry.removed = true;
        let mut topics = self.map();
        if topics
            .map
            .get(&entry.name)
            .is_some_and(|s| Arc::ptr_eq(s, slot))
        {
            topics.map.remove(&entry.name);
        }
        if let Some(requester) = entry.made_by.take()
            && let Some(count) = topics.made_by.get_mut(&requester)
        {
            *count -= 1;
            if *count == 0 {
                topics.made_by.remove(&requester);
            }
        }
        self.inner.metrics.set_topics(topics.map.len());
    }

    /// Publishes `message` to every subscriber of `topic`, on every node
    /// with a backplane. Returns its offset; never waits but for Redis.
    /// A `&str` is checked against the topic-name rule; a [`TopicName`]
    /// has been.
    pub async fn publish(
        &self,
        topic: impl TryInto<TopicName, Error = HubError>,
        message: Message,
    ) -> Result<Published, HubError> {
        self.publish_as(topic, message, None).await
    }

    /// [`publish`](Self::publish) for `requester`, who may make only so
    /// many topics ([`HubConfig::max_topics_per_client`]).
    pub async fn publish_as(
        &self,
        topic: impl TryInto<TopicName, Error = HubError>,
        message: Message,
        requester: Option<&Requester>,
    ) -> Result<Published, HubError> {
        self.publish_checked(&topic.try_into()?, message, requester)
            .await
    }

    /// [`publish_as`](Self::publish_as) with a name checked already.
    pub(crate) async fn publish_checked(
        &self,
        topic: &TopicName,
        message: Message,
        requester: Option<&Requester>,
    ) -> Result<Published, HubError> {
        if message.len() > self.inner.config.max_message_size {
            return Err(HubError::TooLarge(self.inner.config.max_message_size));
        }
        if let Some(store) = self.inner.store.get()
            && message.len() > store.max_message_size()
        {
            // Past what Redis's pub/sub output buffers carry: Redis would
            // cut every node's subscription over it.
            return Err(HubError::TooLarge(store.max_message_size()));
        }
        let Some(store) = self.inner.store.get() else {
            self.inner.metrics.published();
            return self.publish_here(topic, message, requester);
        };
        let (epoch, offset) = store
            .publish(topic, &message)
            .await
            .inspect_err(|_| self.inner.metrics.backplane_dropped())?;
        self.inner.metrics.backplane_out();
        self.inner.metrics.published();
        Ok(Published {
            epoch,
            offset,
            delivered: self.subscriber_count(topic),
        })
    }

    /// Without a backplane: assigns the offset, retains, delivers.
    fn publish_here(
        &self,
        topic: &str,
        message: Message,
        requester: Option<&Requester>,
    ) -> Result<Published, HubError> {
        let config = &self.inner.config;
        let message = if config.history_size > 0 {
            delivery::compacted(message)
        } else {
            message
        };
        let (published, delivered, lagged) = self.with_topic(topic, requester, |entry| {
            entry.last += 1;
            let delivery = Arc::new(Delivery::new(
                Arc::clone(&entry.name),
                Arc::clone(&entry.epoch),
                entry.last,
                message,
            ));
            let published = Published {
                epoch: Arc::clone(&entry.epoch),
                offset: entry.last,
                delivered: 0,
            };
            if config.history_size > 0 {
                delivery.retain(&self.inner.history_bytes);
                entry.history.push_back(Retained {
                    delivery: Arc::clone(&delivery),
                    at: Instant::now(),
                });
                while entry.history.len() > config.history_size {
                    entry.pop_oldest();
                }
                // Whoever publishes pays first, but keeps its newest.
                while self.history_bytes() > config.max_history_bytes && entry.history.len() > 1 {
                    entry.pop_oldest();
                }
                self.schedule(entry);
            }
            let (delivered, lagged) = entry.fan_out(&Queued::Message(delivery));
            (published, delivered, lagged)
        })?;
        if self.history_bytes() > config.max_history_bytes {
            self.evict_others(topic);
        }
        self.counted(topic, delivered, lagged);
        Ok(Published {
            delivered,
            ..published
        })
    }

    /// Puts `topic` in the expiry heap if it retains messages and is not
    /// there yet. `topic` is locked: its slot is found through the map.
    fn schedule(&self, topic: &mut Topic) {
        if topic.scheduled {
            return;
        }
        let Some(oldest) = topic.history.front() else {
            return;
        };
        let Some(slot) = self.map().map.get(&topic.name).map(Arc::downgrade) else {
            return;
        };
        topic.scheduled = true;
        self.expiry().push(Reverse(Due {
            at: oldest.at + self.inner.config.history_ttl,
            slot,
        }));
    }

    fn expiry(&self) -> MutexGuard<'_, BinaryHeap<Reverse<Due>>> {
        self.inner
            .expiry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops the oldest retained messages of other topics than `keep`,
    /// the topic whose oldest message is oldest first, until the history
    /// fits [`HubConfig::max_history_bytes`].
    fn evict_others(&self, keep: &str) {
        let max = self.inner.config.max_history_bytes;
        let mut kept = Vec::new();
        while self.history_bytes() > max {
            let Some(Reverse(due)) = self.expiry().pop() else {
                break;
            };
            let Some(slot) = due.slot.upgrade() else {
                continue;
            };
            let evicted = self.with_slot(&slot, |entry| {
                if &*entry.name == keep {
                    return false;
                }
                entry.scheduled = false;
                while self.history_bytes() > max && !entry.history.is_empty() {
                    entry.pop_oldest();
                }
                self.schedule(entry);
                true
            });
            if evicted == Some(false) {
                kept.push(due);
            }
        }
        let mut expiry = self.expiry();
        for due in kept {
            expiry.push(Reverse(due));
        }
    }

    /// Expires the history of topics whose oldest message is past the TTL,
    /// at most [`SWEEP_TOPICS`] of them; a topic left idle goes.
    fn sweep(&self) {
        let now = Instant::now();
        for _ in 0..SWEEP_TOPICS {
            let due = {
                let mut expiry = self.expiry();
                match expiry.peek() {
                    Some(Reverse(due)) if due.at <= now => expiry.pop().map(|Reverse(d)| d),
                    _ => None,
                }
            };
            let Some(due) = due else { break };
            let Some(slot) = due.slot.upgrade() else {
                continue;
            };
            self.with_slot(&slot, |entry| {
                entry.scheduled = false;
                entry.expire(now, self.inner.config.history_ttl);
                self.schedule(entry);
            });
        }
    }

    /// Runs [`sweep`](Self::sweep) every [`SWEEP_EVERY`] on the runtime of
    /// the first caller, for as long as the hub lives.
    fn start_sweeper(&self) {
        if self.inner.sweeper.get().is_some() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.inner.sweeper.set(()).is_err() {
            return;
        }
        let hub = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = hub.upgrade() else { break };
                Hub { inner }.sweep();
            }
        });
    }

    /// Where a topic with local subscribers stands in Redis: the epoch and
    /// offset of the last message delivered from the backplane (or where
    /// Redis stood when a duplex.v1 subscription began), for the backplane
    /// to notice a lost one. `None` before either.
    pub(crate) fn expected(&self, topic: &str) -> Option<(Arc<str>, u64)> {
        self.with_existing(topic, |entry| {
            entry.synced.then(|| (Arc::clone(&entry.epoch), entry.last))
        })
        .flatten()
    }

    /// Delivers a message from the backplane to the local subscribers.
    pub(crate) fn deliver(&self, delivery: Arc<Delivery>) -> usize {
        let topic = Arc::clone(&delivery.topic);
        let (delivered, lagged) = self
            .with_existing(&topic, |entry| {
                if *entry.epoch == *delivery.epoch && delivery.offset <= entry.last {
                    // Already delivered (a gap filled from the stream).
                    return (0, 0);
                }
                let mut lagged = 0;
                if let Some(gap) = entry.gap_before(&delivery) {
                    tracing::info!(
                        topic = %gap.topic,
                        after = entry.last,
                        next = delivery.offset,
                        "messages lost for good: telling subscribers"
                    );
                    lagged += entry.fan_out(&Queued::Gap(Arc::new(gap))).1;
                }
                entry.epoch = Arc::clone(&delivery.epoch);
                entry.last = delivery.offset;
                entry.synced = true;
                let (delivered, more) = entry.fan_out(&Queued::Message(delivery));
                (delivered, lagged + more)
            })
            .unwrap_or((0, 0));
        self.counted(&topic, delivered, lagged);
        delivered
    }

    /// With a backplane, the retained messages of `topic` after `after`
    /// up to `upto` in `epoch`, a page at a time (empty when there are no
    /// more): the rest of a resume whose first page came with
    /// [`open`](Self::open). Without one, the whole history came then.
    pub(crate) async fn history_page(
        &self,
        topic: &str,
        epoch: &Arc<str>,
        after: u64,
        upto: u64,
    ) -> Result<Vec<Arc<Delivery>>, HubError> {
        match self.inner.store.get() {
            Some(store) if after < upto => store.range(topic, epoch, after + 1, upto).await,
            _ => Ok(Vec::new()),
        }
    }

    /// Tells the local subscribers of `topic` that messages up to `offset`
    /// of `epoch` were lost for good, where the backplane notices it
    /// without a message to deliver (Redis lost the topic's state): what
    /// follows comes after `offset`.
    pub(crate) fn lost(&self, topic: &str, epoch: Arc<str>, offset: u64) {
        let lagged = self
            .with_existing(topic, |entry| {
                let gap = Gap {
                    topic: Arc::clone(&entry.name),
                    epoch: Arc::clone(&epoch),
                    offset,
                };
                entry.epoch = epoch;
                entry.last = offset;
                entry.synced = true;
                entry.fan_out(&Queued::Gap(Arc::new(gap))).1
            })
            .unwrap_or(0);
        if lagged > 0 {
            self.inner.metrics.lagged(lagged);
        }
    }

    /// Queues a join or leave for the local subscribers that watch
    /// `topic`'s presence.
    pub(crate) fn presence_event(&self, topic: &str, joined: bool, member: Member) {
        let (watchers, queued) = self
            .with_existing(topic, |entry| {
                let watchers = entry.subscribers.values().filter(|s| s.presence).count();
                let event = Queued::Presence(Arc::new(PresenceEvent {
                    topic: Arc::clone(&entry.name),
                    joined,
                    member,
                }));
                (watchers, entry.fan_out(&event).0)
            })
            .unwrap_or((0, 0));
        if watchers > queued {
            self.inner.metrics.presence_shed((watchers - queued) as u64);
        }
    }

    fn counted(&self, topic: &str, delivered: usize, lagged: u64) {
        self.inner.metrics.delivered(delivered as u64);
        if lagged > 0 {
            tracing::info!(topic, lagged, "dropping slow subscribers");
            self.inner.metrics.lagged(lagged);
        }
    }

    /// The duplex.v1 subscriptions to `topic` on this node.
    pub(crate) fn local_members(&self, topic: &str) -> Vec<Member> {
        self.with_existing(topic, |t| t.members.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every topic now, to look at one at a time (never two locks at once).
    fn slots(&self) -> Vec<Arc<Slot>> {
        self.map().map.values().cloned().collect()
    }

    /// Every local duplex.v1 subscription, by topic (for the backplane's
    /// presence refresh).
    pub(crate) fn all_members(&self) -> Vec<(Arc<str>, Vec<Member>)> {
        self.slots()
            .iter()
            .filter_map(|slot| {
                let t = lock(slot);
                (!t.members.is_empty())
                    .then(|| (Arc::clone(&t.name), t.members.values().cloned().collect()))
            })
            .collect()
    }

    /// How many duplex.v1 subscriptions `topic` has, and up to `limit` of
    /// them: on every node with a backplane.
    pub(crate) async fn presence(
        &self,
        topic: &TopicName,
        limit: usize,
    ) -> Result<(usize, Vec<Member>), HubError> {
        match self.inner.store.get() {
            Some(store) => store.presence(topic, limit).await,
            None => {
                let members = self.local_members(topic);
                let count = members.len();
                Ok((count, members.into_iter().take(limit).collect()))
            }
        }
    }

    /// Topics with local subscribers now.
    pub(crate) fn subscribed_topics(&self) -> Vec<Arc<str>> {
        self.slots()
            .iter()
            .filter_map(|slot| {
                let t = lock(slot);
                (!t.subscribers.is_empty()).then(|| Arc::clone(&t.name))
            })
            .collect()
    }

    /// Topics with subscribers or retained messages now.
    pub fn topic_count(&self) -> usize {
        self.map().map.len()
    }

    /// Subscribers of `topic` now.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.with_existing(topic, |t| t.subscribers.len())
            .unwrap_or(0)
    }

    /// Bytes held by retained messages over all topics now (without a
    /// backplane): their payloads, their duplex.v1 frames once made, and
    /// what each costs to keep (its payload, frames and bookkeeping).
    pub fn history_bytes(&self) -> usize {
        self.inner.history_bytes.load(Ordering::Relaxed)
    }

    /// A new connection id, unique across nodes.
    pub(crate) fn client_id(&self) -> Arc<str> {
        let n = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let node = &self.inner.node;
        format!(
            "{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}-{n}",
            node[0], node[1], node[2], node[3], node[4], node[5]
        )
        .into()
    }

    pub(crate) fn downgrade(&self) -> WeakHub {
        WeakHub {
            inner: Arc::downgrade(&self.inner),
        }
    }

    pub(crate) fn node(&self) -> [u8; 16] {
        self.inner.node
    }

    pub(crate) fn attach(&self, store: Arc<dyn Store>) -> bool {
        self.inner.store.set(store).is_ok()
    }

    fn leave(&self, topic: &str, id: u64) {
        let mut left = None;
        self.with_existing(topic, |entry| {
            entry.subscribers.remove(&id);
            left = entry.members.remove(&id);
        });
        self.inner.metrics.unsubscribed();
        if let Some(store) = self.inner.store.get() {
            Arc::clone(store).unfollow(topic);
        }
        if let Some(member) = left {
            self.presence_event(topic, false, member.clone());
            if let Some(store) = self.inner.store.get() {
                Arc::clone(store).left(topic, member);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::delivery::RETAINED_OVERHEAD;
    use super::*;
    use tokio::sync::mpsc;

    fn hub(queue: usize) -> Hub {
        Hub::new(HubConfig {
            queue,
            ..HubConfig::default()
        })
    }

    #[tokio::test]
    async fn try_recv_takes_what_is_queued_without_waiting() {
        let hub = hub(8);
        let mut sub = hub.subscribe("t").unwrap();
        assert!(sub.try_recv().is_none());
        for text in ["a", "b", "c"] {
            hub.publish("t", Message::text(text)).await.unwrap();
        }
        assert_eq!(*sub.recv().await.unwrap().message(), Message::text("a"));
        assert_eq!(*sub.try_recv().unwrap().message(), Message::text("b"));
        assert_eq!(*sub.try_recv().unwrap().message(), Message::text("c"));
        assert!(sub.try_recv().is_none());
    }

    #[tokio::test]
    async fn every_subscriber_gets_the_same_broadcast() {
        let hub = hub(8);
        let mut a = hub.subscribe("t").unwrap();
        let mut b = hub.subscribe("t").unwrap();
        hub.publish("t", Message::text("once")).await.unwrap();
        let (a, b) = (a.recv().await.unwrap(), b.recv().await.unwrap());
        assert!(Arc::ptr_eq(&a, &b), "one Delivery, so one compression");
    }

    #[tokio::test]
    async fn every_subscriber_of_a_topic_gets_each_message_once() {
        let hub = hub(8);
        let mut a = hub.subscribe("news").unwrap();
        let mut b = hub.subscribe("news").unwrap();
        let mut other = hub.subscribe("sport").unwrap();
        assert_eq!(
            hub.publish("news", Message::text("one"))
                .await
                .unwrap()
                .delivered,
            2
        );
        assert_eq!(
            hub.publish("news", Message::binary(&b"two"[..]))
                .await
                .unwrap()
                .delivered,
            2
        );
        for sub in [&mut a, &mut b] {
            assert_eq!(*sub.recv().await.unwrap().message(), Message::text("one"));
            assert_eq!(
                *sub.recv().await.unwrap().message(),
                Message::binary(&b"two"[..])
            );
        }
        assert_eq!(
            hub.publish("sport", Message::text("goal"))
                .await
                .unwrap()
                .delivered,
            1
        );
        assert_eq!(
            *other.recv().await.unwrap().message(),
            Message::text("goal")
        );
        let snapshot = hub.metrics().snapshot();
        assert_eq!(snapshot.published, 3);
        assert_eq!(snapshot.delivered, 5);
    }

    #[tokio::test]
    async fn a_topic_lives_as_long_as_its_subscribers_or_its_history() {
        let hub = Hub::new(HubConfig::default().history_size(0));
        assert_eq!(
            hub.publish("empty", Message::text("x"))
                .await
                .unwrap()
                .delivered,
            0
        );
        assert_eq!(hub.topic_count(), 0);
        let a = hub.subscribe("t").unwrap();
        let b = hub.subscribe("t").unwrap();
        assert_eq!((hub.topic_count(), hub.subscriber_count("t")), (1, 2));
        drop(a);
        assert_eq!(hub.subscriber_count("t"), 1);
        drop(b);
        assert_eq!(hub.topic_count(), 0);
        assert_eq!(hub.metrics().snapshot().subscribers, 0);
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_dropped_and_told_why() {
        let hub = hub(2);
        let mut slow = hub.subscribe("t").unwrap();
        let mut fast = hub.subscribe("t").unwrap();
        for i in 0..2 {
            hub.publish("t", Message::text(format!("{i}")))
                .await
                .unwrap();
            fast.recv().await.unwrap();
        }
        // The third does not fit the slow subscriber's queue of two.
        assert_eq!(
            hub.publish("t", Message::text("2"))
                .await
                .unwrap()
                .delivered,
            1
        );
        assert_eq!(hub.subscriber_count("t"), 1);
        assert_eq!(*slow.recv().await.unwrap().message(), Message::text("0"));
        assert_eq!(*slow.recv().await.unwrap().message(), Message::text("1"));
        assert!(matches!(slow.recv().await, Err(RecvError::Lagged(2))));
        assert_eq!(*fast.recv().await.unwrap().message(), Message::text("2"));
        assert_eq!(hub.metrics().snapshot().lagged, 1);
    }

    #[tokio::test]
    async fn a_waiting_subscriber_gets_what_was_queued_then_lagged() {
        let hub = hub(2);
        let mut slow = hub.subscribe("t").unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let waiting = tokio::spawn(async move {
            loop {
                let received = slow.recv().await;
                let end = received.is_err();
                tx.send(received.map(|d| d.message().clone())).unwrap();
                if end {
                    break;
                }
            }
        });
        // The task now waits on its empty queue; three publishes without a
        // yield overflow it while it waits.
        tokio::task::yield_now().await;
        for i in 0..3 {
            hub.publish("t", Message::text(format!("{i}")))
                .await
                .unwrap();
        }
        assert_eq!(hub.subscriber_count("t"), 0);
        assert_eq!(rx.recv().await.unwrap(), Ok(Message::text("0")));
        assert_eq!(rx.recv().await.unwrap(), Ok(Message::text("1")));
        assert_eq!(rx.recv().await.unwrap(), Err(RecvError::Lagged(2)));
        waiting.await.unwrap();
    }

    #[tokio::test]
    async fn topic_names_are_checked() {
        let hub = hub(1);
        assert!(matches!(
            hub.subscribe("a/b"),
            Err(HubError::InvalidTopic(_))
        ));
        assert!(hub.publish("", Message::text("x")).await.is_err());
    }

    #[test]
    fn topics_are_limited() {
        let hub = Hub::new(HubConfig::default().queue(1).max_topics(2));
        let _a = hub.subscribe("a").unwrap();
        let _b = hub.subscribe("b").unwrap();
        let _b2 = hub.subscribe("b").unwrap();
        assert_eq!(hub.subscribe("c").unwrap_err(), HubError::TooManyTopics(2));
    }

    fn text(d: &Delivery) -> String {
        match d.message() {
            Message::Text(t) => t.as_str().to_owned(),
            Message::Binary(_) => panic!("binary"),
        }
    }

    async fn open(hub: &Hub, topic: &str, since: Option<Since>) -> (Membership, Opened) {
        let (inbox, _rx) = Inbox::new(16);
        hub.open(
            &topic.parse().unwrap(),
            &inbox,
            None,
            since.as_ref(),
            false,
            None,
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn offsets_count_up_from_one_per_topic() {
        let hub = hub(8);
        let mut sub = hub.subscribe("t").unwrap();
        let a = hub.publish("t", Message::text("a")).await.unwrap();
        let b = hub.publish("t", Message::text("b")).await.unwrap();
        let other = hub.publish("u", Message::text("x")).await.unwrap();
        assert_eq!((a.offset, b.offset, other.offset), (1, 2, 1));
        assert_eq!(a.epoch, b.epoch);
        assert_ne!(a.epoch, other.epoch);
        let first = sub.recv().await.unwrap();
        assert_eq!((first.offset(), first.epoch()), (1, &*a.epoch));
        assert_eq!(sub.recv().await.unwrap().offset(), 2);
    }

    #[tokio::test]
    async fn a_subscriber_resumes_from_the_history() {
        let hub = Hub::new(HubConfig::default().history_size(3));
        for i in 1..=5 {
            hub.publish("t", Message::text(format!("m{i}")))
                .await
                .unwrap();
        }
        let since = |epoch: Option<&str>, offset| {
            Some(Since {
                epoch: epoch.map(str::to_owned),
                offset,
            })
        };
        // Offsets 3, 4, 5 are retained.
        let (_m, opened) = open(&hub, "t", since(None, 2)).await;
        assert_eq!((opened.offset, opened.recovered), (5, Some(true)));
        let texts: Vec<_> = opened.history.iter().map(|d| text(d)).collect();
        assert_eq!(texts, ["m3", "m4", "m5"]);
        let epoch = opened.epoch.to_string();
        let (_m, opened) = open(&hub, "t", since(Some(&epoch), 4)).await;
        assert_eq!((opened.recovered, opened.history.len()), (Some(true), 1));
        let (_m, opened) = open(&hub, "t", since(Some(&epoch), 5)).await;
        assert_eq!((opened.recovered, opened.history.len()), (Some(true), 0));
        // 2 is gone: what is retained comes, but not recovered.
        let (_m, opened) = open(&hub, "t", since(None, 1)).await;
        assert_eq!((opened.recovered, opened.history.len()), (Some(false), 3));
        // Another epoch, or an offset from the future: nothing.
        let (_m, opened) = open(&hub, "t", since(Some("other"), 2)).await;
        assert_eq!((opened.recovered, opened.history.len()), (Some(false), 0));
        let (_m, opened) = open(&hub, "t", since(None, 9)).await;
        assert_eq!((opened.recovered, opened.history.len()), (Some(false), 0));
        // Without since: where the topic stands, no history.
        let (_m, opened) = open(&hub, "t", None).await;
        assert_eq!(
            (opened.offset, opened.recovered, opened.history.len()),
            (5, None, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn history_expires_with_age_and_then_the_epoch_changes() {
        let hub = Hub::new(HubConfig::default().history_ttl(Duration::from_secs(60)));
        let first = hub.publish("t", Message::text("old")).await.unwrap();
        tokio::time::advance(Duration::from_secs(30)).await;
        hub.publish("t", Message::text("new")).await.unwrap();
        assert_eq!(hub.topic_count(), 1, "kept for its history");
        tokio::time::advance(Duration::from_secs(40)).await;
        let (_m, opened) = open(
            &hub,
            "t",
            Some(Since {
                epoch: None,
                offset: 0,
            }),
        )
        .await;
        assert_eq!(opened.history.len(), 1, "the old one expired");
        assert_eq!(opened.recovered, Some(false));
        drop(_m);
        tokio::time::advance(Duration::from_secs(40)).await;
        let again = hub.publish("t", Message::text("again")).await.unwrap();
        assert_ne!(again.epoch, first.epoch, "a new run of offsets");
        assert_eq!(again.offset, 1);
    }

    #[tokio::test]
    async fn history_bytes_are_bounded_over_all_topics() {
        let one = 100 + RETAINED_OVERHEAD;
        let hub = Hub::new(HubConfig::default().max_history_bytes(10 * one));
        for i in 0..20 {
            hub.publish(&format!("t{i}"), Message::binary(vec![0u8; 100]))
                .await
                .unwrap();
            assert!(hub.history_bytes() <= 10 * one, "{}", hub.history_bytes());
        }
        assert_eq!(hub.history_bytes(), 10 * one);
        assert_eq!(hub.topic_count(), 10, "the oldest went, and their topics");
        // The topic being published keeps at least its newest message.
        hub.publish("big", Message::binary(vec![0u8; 9 * one]))
            .await
            .unwrap();
        assert!(hub.history_bytes() <= 10 * one + 9 * one);
        let (_m, opened) = open(
            &hub,
            "big",
            Some(Since {
                epoch: None,
                offset: 0,
            }),
        )
        .await;
        assert_eq!(opened.history.len(), 1);
    }

    #[tokio::test]
    async fn history_bytes_count_what_a_message_holds() {
        let hub = hub(8);
        hub.publish("t", Message::text("")).await.unwrap();
        assert_eq!(
            hub.history_bytes(),
            RETAINED_OVERHEAD,
            "an empty message costs"
        );
        // A duplex.v1 subscriber makes the message's frame: counted too,
        // while the history keeps it.
        let (inbox, mut rx) = Inbox::new(8);
        let (_m, _) = hub
            .open(&"t".parse().unwrap(), &inbox, None, None, false, None)
            .await
            .unwrap();
        hub.publish("t", Message::text("hello")).await.unwrap();
        let Ok(Queued::Message(delivery)) = rx.try_recv() else {
            panic!("queued")
        };
        let before = hub.history_bytes();
        let wrap = |_: &Delivery| Message::text("a wrapped message");
        let frame = delivery.wrapped(wrap).message().len();
        assert_eq!(hub.history_bytes(), before + frame);
        delivery.wrapped(|_| unreachable!("made once"));
        assert_eq!(hub.history_bytes(), before + frame, "counted once");
        // And so is its delta frame, for the subscribers that asked.
        let base = Delivery::new(
            Arc::clone(&delivery.topic),
            Arc::clone(&delivery.epoch),
            delivery.offset() - 1,
            Message::text(""),
        );
        let delta = |_: &Delivery, _: &Delivery| Some(Message::text("a delta"));
        let made = delivery.delta(&base, delta).unwrap().message().len();
        assert_eq!(hub.history_bytes(), before + frame + made);
        assert!(
            delivery
                .delta(&base, |_, _| unreachable!("made once"))
                .is_some()
        );
        assert_eq!(hub.history_bytes(), before + frame + made, "counted once");
        drop(delivery);
        let quiet = Hub::new(HubConfig::default().history_size(1));
        quiet.publish("t", Message::text("a")).await.unwrap();
        quiet.publish("t", Message::text("b")).await.unwrap();
        assert_eq!(
            quiet.history_bytes(),
            1 + RETAINED_OVERHEAD,
            "what left is given back"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn expired_history_goes_without_its_topic_being_touched() {
        let hub = Hub::new(HubConfig::default().history_ttl(Duration::from_secs(10)));
        for i in 0..1000 {
            hub.publish(&format!("t{i}"), Message::text("x"))
                .await
                .unwrap();
        }
        assert_eq!(hub.topic_count(), 1000);
        tokio::time::sleep(Duration::from_secs(5)).await;
        hub.publish("late", Message::text("x")).await.unwrap();
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(
            (hub.topic_count(), hub.history_bytes()),
            (1, 1 + RETAINED_OVERHEAD),
            "the first thousand expired, \"late\" not yet"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!((hub.topic_count(), hub.history_bytes()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn one_client_cannot_fill_the_topic_table() {
        let hub = Hub::new(
            HubConfig::default()
                .max_topics(10)
                .max_topics_per_client(3)
                .history_ttl(Duration::from_secs(10)),
        );
        let flood = Requester::address("2001:db8::1".parse().unwrap());
        let same_host = Requester::address("2001:db8::2".parse().unwrap());
        for i in 0..3 {
            hub.publish_as(&format!("f{i}"), Message::text("x"), Some(&flood))
                .await
                .unwrap();
        }
        for (topic, who) in [("f3", &flood), ("f4", &same_host)] {
            assert_eq!(
                hub.publish_as(topic, Message::text("x"), Some(who))
                    .await
                    .unwrap_err(),
                HubError::TooManyTopicsForClient(3),
                "one /64 is one client"
            );
        }
        // Others are not locked out; topics that exist cost nothing more.
        let other = Requester::user("alice");
        hub.publish_as("a", Message::text("x"), Some(&other))
            .await
            .unwrap();
        hub.publish_as("f0", Message::text("again"), Some(&flood))
            .await
            .unwrap();
        let _sub = hub.subscribe_as("a", Some(&flood)).unwrap();
        // Once the flood's topics expire, its quota is back.
        tokio::time::sleep(Duration::from_secs(12)).await;
        assert_eq!(hub.topic_count(), 1, "only the subscribed topic");
        hub.publish_as("f9", Message::text("x"), Some(&flood))
            .await
            .unwrap();
    }

    #[test]
    fn a_publish_touches_only_its_own_topic() {
        // With another topic's lock held, a publish still goes through: it
        // takes no lock but its own topic's (and the map's, briefly). Were
        // it to take the other's, it would wait here for ever.
        let hub = hub(8);
        hub.publish_here("busy", Message::text("x"), None).unwrap();
        let slot = Arc::clone(hub.map().map.get("busy").unwrap());
        let held = lock(&slot);
        hub.publish_here("free", Message::text("y"), None).unwrap();
        drop(held);
    }

    #[tokio::test]
    async fn topics_kept_for_their_history_count_against_the_limit() {
        let hub = Hub::new(HubConfig::default().max_topics(2));
        hub.publish("a", Message::text("x")).await.unwrap();
        hub.publish("b", Message::text("x")).await.unwrap();
        assert_eq!(
            hub.publish("c", Message::text("x")).await.unwrap_err(),
            HubError::TooManyTopics(2)
        );
        assert_eq!(hub.subscribe("c").unwrap_err(), HubError::TooManyTopics(2));
    }

    #[tokio::test]
    async fn presence_counts_v1_subscriptions_and_tells_watchers() {
        let hub = hub(8);
        let (watcher, mut rx) = Inbox::new(8);
        let alice = Member {
            client: "c1".into(),
            user: Some("alice".into()),
        };
        let bob = Member {
            client: "c2".into(),
            user: None,
        };
        let (_w, _) = hub
            .open(
                &"t".parse().unwrap(),
                &watcher,
                Some(alice.clone()),
                None,
                true,
                None,
            )
            .await
            .unwrap();
        let (other, _rx2) = Inbox::new(8);
        let (b, _) = hub
            .open(
                &"t".parse().unwrap(),
                &other,
                Some(bob.clone()),
                None,
                false,
                None,
            )
            .await
            .unwrap();
        let _raw = hub.subscribe("t").unwrap();
        let (count, members) = hub.presence(&"t".parse().unwrap(), 1000).await.unwrap();
        assert_eq!(count, 2, "raw subscribers are not counted");
        assert!(members.contains(&alice) && members.contains(&bob));
        drop(b);
        let mut events = Vec::new();
        while let Ok(Queued::Presence(e)) = rx.try_recv() {
            events.push((e.joined, e.member.client.to_string()));
        }
        assert_eq!(
            events,
            [
                (true, "c1".into()),
                (true, "c2".into()),
                (false, "c2".into())
            ]
        );
        assert_eq!(
            hub.presence(&"t".parse().unwrap(), 1000).await.unwrap().0,
            1
        );
    }
}
