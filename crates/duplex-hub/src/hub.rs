//! Topics and their subscribers: subscribe, publish, and what happens to a
//! subscriber that cannot keep up.
//!
//! Each subscriber has its own bounded queue (a tokio `mpsc` channel of
//! [`HubConfig::queue`] messages). Publishing never waits: a message goes
//! into every queue that has room, and a subscriber whose queue is full is
//! removed from the topic; its [`Subscription::recv`] then returns what was
//! queued and [`RecvError::Lagged`]. Memory is bounded by the queues, and a
//! payload queued for many subscribers is stored once (it is a `Bytes`).
//!
//! All topics sit behind one mutex, held while a publish fills the queues:
//! simple, and `try_send` is cheap; a topic map sharded by name would be the
//! next step for many busy topics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use duplex::{Broadcast, Message};
use tokio::sync::mpsc;

use crate::backplane::Outbound;
use crate::metrics::Metrics;

/// The longest topic name accepted.
pub const MAX_TOPIC_LEN: usize = 128;

/// Limits of a [`Hub`], each with the reason for its default. Start from
/// `HubConfig::default()` and change what you need, by field or with the
/// setter of the same name (`HubConfig::default().queue(1024)`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HubConfig {
    /// Messages queued for one subscriber before it counts as too slow and
    /// is dropped. Default 256: a burst of that many fits, and with the
    /// default 64 MiB message limit the worst case per subscriber is still
    /// bounded (in practice pushes are small).
    pub queue: usize,
    /// Topics with at least one subscriber, at most. Default 100,000: every
    /// topic costs a map entry, and a client must not be able to create them
    /// without bound.
    pub max_topics: usize,
    /// How long a subscriber's connection may take to take one message
    /// before the server drops it. Default 10 s. A subscriber that stops
    /// reading fills its socket and then blocks the write of the next
    /// message; its queue overflows meanwhile, but the connection itself is
    /// only freed by this timeout.
    pub send_timeout: Duration,
    /// The largest message relayed from the backplane: a payload from Redis
    /// over it is dropped and counted (`duplex_backplane_too_large_total`),
    /// not delivered. Default 64 MiB, the WebSocket default
    /// `max_message_size`: no node of the cluster accepts more from its
    /// clients, so a larger payload was not published by one, and
    /// delivering it would queue a copy of it per subscriber. Set it to the
    /// `max_message_size` of the service's config (`duplex serve` sets both
    /// from `--max-message-size`).
    pub max_message_size: usize,
    /// How long a `POST /topics/{name}` may take to send its body, from the
    /// end of its head; past it the answer is 408 and the connection is
    /// closed. Default 10 s, as the handshake timeout: a publish is a push,
    /// usually small, and 10 s carries a megabyte over a slow mobile link,
    /// while a client that drips its body a byte at a time cannot hold a
    /// request (and its buffer) open for longer.
    pub body_timeout: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            queue: 256,
            max_topics: 100_000,
            send_timeout: Duration::from_secs(10),
            max_message_size: 64 << 20,
            body_timeout: Duration::from_secs(10),
        }
    }
}

/// One setter per field, each named as its field.
macro_rules! setters {
    ($($name:ident: $ty:ty),* $(,)?) => {
        impl HubConfig {
            $(
                #[doc = concat!("Sets [`", stringify!($name), "`](HubConfig::", stringify!($name), ").")]
                #[must_use]
                pub fn $name(mut self, value: $ty) -> Self {
                    self.$name = value;
                    self
                }
            )*
        }
    };
}

setters! {
    queue: usize,
    max_topics: usize,
    send_timeout: Duration,
    max_message_size: usize,
    body_timeout: Duration,
}

/// Why a subscription could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum HubError {
    /// The topic name is empty, too long, or has a character outside
    /// `A-Z a-z 0-9 - _ . :`.
    #[error("invalid topic name {0:?}: 1-128 characters of A-Z a-z 0-9 - _ . :")]
    InvalidTopic(String),
    /// [`HubConfig::max_topics`] topics already have subscribers.
    #[error("too many topics (at most {0})")]
    TooManyTopics(usize),
}

/// Why [`Subscription::recv`] returned no message.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
#[non_exhaustive]
pub enum RecvError {
    /// The subscriber's queue overflowed and it was removed from the topic.
    #[error("slow consumer: the subscriber's queue of {0} messages overflowed")]
    Lagged(usize),
    /// The hub is gone.
    #[error("the hub is closed")]
    Closed,
}

/// Checks a topic name: 1 to 128 characters of `A-Z a-z 0-9 - _ . :`, so that
/// it is safe in a URL path, a Redis channel name and a log line.
pub fn validate_topic(name: &str) -> Result<(), HubError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TOPIC_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if ok {
        Ok(())
    } else {
        let shown: String = name.chars().take(MAX_TOPIC_LEN).collect();
        Err(HubError::InvalidTopic(shown))
    }
}

/// The topics of one server. Cheap to clone: clones share the topics.
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: HubConfig,
    topics: Mutex<HashMap<String, Topic>>,
    next_id: AtomicU64,
    metrics: Metrics,
    /// Set once a backplane is attached: where local publishes go out.
    outbound: OnceLock<Outbound>,
    /// This node's id on the backplane.
    node: [u8; 16],
}

#[derive(Debug, Default)]
struct Topic {
    subscribers: HashMap<u64, Subscriber>,
}

#[derive(Debug)]
struct Subscriber {
    queue: mpsc::Sender<Arc<Broadcast>>,
    lagged: Arc<AtomicBool>,
}

impl Hub {
    /// A hub with no topics.
    pub fn new(config: HubConfig) -> Hub {
        let config = HubConfig {
            queue: config.queue.max(1),
            max_topics: config.max_topics.max(1),
            ..config
        };
        Hub {
            inner: Arc::new(Inner {
                config,
                topics: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
                metrics: Metrics::default(),
                outbound: OnceLock::new(),
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

    /// Subscribes to `topic`, which exists as long as it has subscribers.
    pub fn subscribe(&self, topic: &str) -> Result<Subscription, HubError> {
        validate_topic(topic)?;
        let (queue, rx) = mpsc::channel(self.inner.config.queue);
        let lagged = Arc::new(AtomicBool::new(false));
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut topics = self.topics();
            if !topics.contains_key(topic) && topics.len() >= self.inner.config.max_topics {
                return Err(HubError::TooManyTopics(self.inner.config.max_topics));
            }
            let subscriber = Subscriber {
                queue,
                lagged: Arc::clone(&lagged),
            };
            topics
                .entry(topic.to_owned())
                .or_default()
                .subscribers
                .insert(id, subscriber);
            self.inner.metrics.set_topics(topics.len());
        }
        self.inner.metrics.subscribed();
        Ok(Subscription {
            hub: self.clone(),
            topic: topic.to_owned(),
            id,
            rx,
            lagged,
        })
    }

    /// Publishes `message` to every subscriber of `topic` on this node and,
    /// with a backplane, on every other node. Returns how many local
    /// subscribers it was queued for. Never waits.
    pub fn publish(&self, topic: &str, message: Message) -> Result<usize, HubError> {
        validate_topic(topic)?;
        self.inner.metrics.published();
        if let Some(outbound) = self.inner.outbound.get() {
            outbound.send(topic, &message, &self.inner.metrics);
        }
        Ok(self.deliver(topic, &message))
    }

    /// Queues `message` for the local subscribers of `topic`: one
    /// [`Broadcast`] for all, so that it is compressed at most once.
    pub(crate) fn deliver(&self, topic: &str, message: &Message) -> usize {
        let mut topics = self.topics();
        let Some(entry) = topics.get_mut(topic) else {
            return 0;
        };
        let broadcast = Arc::new(Broadcast::new(message.clone()));
        let mut delivered = 0;
        let mut lagged = 0;
        entry.subscribers.retain(|_, subscriber| {
            match subscriber.queue.try_send(Arc::clone(&broadcast)) {
                Ok(()) => {
                    delivered += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // Dropping the sender ends the subscription once its
                    // queue is drained; the flag says why.
                    subscriber.lagged.store(true, Ordering::Release);
                    lagged += 1;
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if entry.subscribers.is_empty() {
            topics.remove(topic);
        }
        self.inner.metrics.set_topics(topics.len());
        drop(topics);
        self.inner.metrics.delivered(delivered as u64);
        if lagged > 0 {
            tracing::info!(topic, lagged, "dropping slow subscribers");
            self.inner.metrics.lagged(lagged);
        }
        delivered
    }

    /// Topics with subscribers now.
    pub fn topic_count(&self) -> usize {
        self.topics().len()
    }

    /// Subscribers of `topic` now.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.topics().get(topic).map_or(0, |t| t.subscribers.len())
    }

    pub(crate) fn node(&self) -> [u8; 16] {
        self.inner.node
    }

    pub(crate) fn attach(&self, outbound: Outbound) -> bool {
        self.inner.outbound.set(outbound).is_ok()
    }

    fn topics(&self) -> MutexGuard<'_, HashMap<String, Topic>> {
        // The map is consistent whatever panicked while holding it.
        self.inner
            .topics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn unsubscribe(&self, topic: &str, id: u64) {
        let mut topics = self.topics();
        if let Some(entry) = topics.get_mut(topic) {
            entry.subscribers.remove(&id);
            if entry.subscribers.is_empty() {
                topics.remove(topic);
            }
        }
        self.inner.metrics.set_topics(topics.len());
        drop(topics);
        self.inner.metrics.unsubscribed();
    }
}

/// One subscriber's membership of a topic; leaving is dropping it.
#[derive(Debug)]
pub struct Subscription {
    hub: Hub,
    topic: String,
    id: u64,
    rx: mpsc::Receiver<Arc<Broadcast>>,
    lagged: Arc<AtomicBool>,
}

impl Subscription {
    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The next message published to the topic, shared with every other
    /// subscriber: send it with
    /// [`WebSocket::send_broadcast`](duplex::WebSocket::send_broadcast).
    pub async fn recv(&mut self) -> Result<Arc<Broadcast>, RecvError> {
        match self.rx.recv().await {
            Some(message) => Ok(message),
            None if self.lagged.load(Ordering::Acquire) => {
                Err(RecvError::Lagged(self.hub.inner.config.queue))
            }
            None => Err(RecvError::Closed),
        }
    }

    /// A message already queued, without waiting, to send what piled up in
    /// one write. `None` when nothing is queued, or when the subscription
    /// ended ([`recv`](Self::recv) says why).
    pub fn try_recv(&mut self) -> Option<Arc<Broadcast>> {
        self.rx.try_recv().ok()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.topic, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            hub.publish("t", Message::text(text)).unwrap();
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
        hub.publish("t", Message::text("once")).unwrap();
        let (a, b) = (a.recv().await.unwrap(), b.recv().await.unwrap());
        assert!(Arc::ptr_eq(&a, &b), "one Broadcast, so one compression");
    }

    #[tokio::test]
    async fn every_subscriber_of_a_topic_gets_each_message_once() {
        let hub = hub(8);
        let mut a = hub.subscribe("news").unwrap();
        let mut b = hub.subscribe("news").unwrap();
        let mut other = hub.subscribe("sport").unwrap();
        assert_eq!(hub.publish("news", Message::text("one")).unwrap(), 2);
        assert_eq!(
            hub.publish("news", Message::binary(&b"two"[..])).unwrap(),
            2
        );
        for sub in [&mut a, &mut b] {
            assert_eq!(*sub.recv().await.unwrap().message(), Message::text("one"));
            assert_eq!(
                *sub.recv().await.unwrap().message(),
                Message::binary(&b"two"[..])
            );
        }
        assert_eq!(hub.publish("sport", Message::text("goal")).unwrap(), 1);
        assert_eq!(
            *other.recv().await.unwrap().message(),
            Message::text("goal")
        );
        let snapshot = hub.metrics().snapshot();
        assert_eq!(snapshot.published, 3);
        assert_eq!(snapshot.delivered, 5);
    }

    #[test]
    fn a_topic_lives_as_long_as_its_subscribers() {
        let hub = hub(8);
        assert_eq!(hub.publish("empty", Message::text("x")).unwrap(), 0);
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
            hub.publish("t", Message::text(format!("{i}"))).unwrap();
            fast.recv().await.unwrap();
        }
        // The third does not fit the slow subscriber's queue of two.
        assert_eq!(hub.publish("t", Message::text("2")).unwrap(), 1);
        assert_eq!(hub.subscriber_count("t"), 1);
        assert_eq!(*slow.recv().await.unwrap().message(), Message::text("0"));
        assert_eq!(*slow.recv().await.unwrap().message(), Message::text("1"));
        assert!(matches!(slow.recv().await, Err(RecvError::Lagged(2))));
        assert_eq!(*fast.recv().await.unwrap().message(), Message::text("2"));
        assert_eq!(hub.metrics().snapshot().lagged, 1);
    }

    #[test]
    fn topic_names_are_checked() {
        for good in ["a", "news", "room-1_a.b:c", &"x".repeat(128)] {
            assert_eq!(validate_topic(good), Ok(()), "{good}");
        }
        for bad in ["", "a b", "a/b", "ü", "a\n", &"x".repeat(129)] {
            assert!(validate_topic(bad).is_err(), "{bad:?}");
        }
        let hub = hub(1);
        assert!(matches!(
            hub.subscribe("a/b"),
            Err(HubError::InvalidTopic(_))
        ));
        assert!(hub.publish("", Message::text("x")).is_err());
    }

    #[test]
    fn topics_are_limited() {
        let hub = Hub::new(HubConfig::default().queue(1).max_topics(2));
        let _a = hub.subscribe("a").unwrap();
        let _b = hub.subscribe("b").unwrap();
        let _b2 = hub.subscribe("b").unwrap();
        assert_eq!(hub.subscribe("c").unwrap_err(), HubError::TooManyTopics(2));
    }
}
